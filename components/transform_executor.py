"""Transform whose executor reads ExampleGen's examples in batches.

TFX's Transform executor reads the examples three times on a train/eval
run: train for the analysis, then train and eval for the transform. Each
read goes through tfx_bsl's `TFExampleRecord.BeamSource`, one Beam element
per example. This executor creates `batched_read.BatchedTFExampleRecord`
for tf.Example TFRecord input instead, which reads one Beam element per
file and decodes with the same schema and decoder. TFT's analysis, its
transform and the outputs are the stock ones. Any other input format
keeps TFX's reader.
"""

from __future__ import annotations

import contextlib

from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.transform import component as transform_component
from tfx.components.transform import executor as stock_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx_bsl.public import tfxio

from components import batched_read, memory


class _BatchedTransformProcessor(stock_executor.TransformProcessor):
    """TFX's TransformProcessor with the batched reader for tf.Examples."""

    # Feature types that the input Examples artifacts declare in
    # batched_read.SINGLE_VALUE_FEATURES_PROPERTY, set per run by Executor.Do.
    feature_types = None

    def _CreateTFXIO(self, dataset, schema: schema_pb2.Schema) -> tfxio.TFXIO:
        if (
            dataset.data_format == example_gen_pb2.FORMAT_TF_EXAMPLE
            and dataset.file_format in ("tfrecords_gzip", example_gen_pb2.FORMAT_TFRECORDS_GZIP)
            and dataset.data_view_uri is None
            and not self._ShouldDecodeAsRawExample(
                dataset.data_format, dataset.data_view_uri, schema
            )
        ):
            return batched_read.BatchedTFExampleRecord(
                file_pattern=dataset.file_pattern,
                schema=schema,
                telemetry_descriptors=["Transform"],
                feature_types=self.feature_types,
            )
        return super()._CreateTFXIO(dataset, schema)


@contextlib.contextmanager
def _processor_class(processor_class):
    """Sets the processor class of TFX's Transform executor module for the block."""
    original = stock_executor.TransformProcessor
    stock_executor.TransformProcessor = processor_class
    try:
        yield
    finally:
        stock_executor.TransformProcessor = original


class Executor(stock_executor.Executor):
    """TFX's Transform executor with the batched reader for tf.Examples."""

    @memory.releases_memory
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        # NOTE: tfx 1.16's Executor.Do creates its processor by the module
        # name TransformProcessor and offers no argument for another class,
        # so the name points at the batched processor during the call. A TFX
        # upgrade can break this, and tests/test_batched_read.py checks it.
        examples = input_dict.get(standard_component_specs.EXAMPLES_KEY, [])

        class Processor(_BatchedTransformProcessor):
            feature_types = batched_read.single_value_features(examples)

        with _processor_class(Processor):
            super().Do(input_dict, output_dict, exec_properties)


class BatchedTransform(transform_component.Transform):
    """TFX's Transform component with the batched reader."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
