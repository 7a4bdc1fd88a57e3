"""Reading tf.Example TFRecord files in batches, one Beam element per file.

TFX's stock readers (tfx_bsl's `TFExampleRecord.BeamSource`) read examples
with Beam's TFRecord source, which hands every record to Python as its own
Beam element before tfx_bsl batches and decodes them. Here a DoFn reads a
whole file with TensorFlow's TFRecord reader, in batches of `BATCH_SIZE`
serialized examples, and decodes each batch to an Arrow RecordBatch with
the same tfx_bsl decoder. StatisticsGen and Transform read ExampleGen's
output this way (components/statistics_gen.py, components/transform_executor.py).

A file is the unit of parallel work, as it is for the stock reader, which
cannot split a gzip file either.
"""

from __future__ import annotations

from typing import List, Optional

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.coders import example_coder
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio import tensor_representation_util

# Serialized examples per decoded RecordBatch when the reader is given no
# batch size.
BATCH_SIZE = 1000


class ReadExampleBatches(beam.DoFn):
    """Reads one TFRecord file of tf.Examples as Arrow RecordBatches.

    With a schema, the decoder gives every schema feature a column of the
    schema's type, as the stock reader does. Without one, each batch's
    feature types come from the examples themselves.
    """

    def __init__(self, batch_size: int, schema: Optional[schema_pb2.Schema] = None):
        self._batch_size = batch_size
        # Serialized, so the DoFn pickles without the proto class.
        self._schema = None if schema is None else schema.SerializeToString()

    def setup(self):
        if self._schema is None:
            self._decoder = example_coder.ExamplesToRecordBatchDecoder()
        else:
            self._decoder = example_coder.ExamplesToRecordBatchDecoder(self._schema)

    def process(self, path: str):
        compression = "GZIP" if path.endswith(".gz") else ""
        dataset = tf.data.TFRecordDataset(path, compression_type=compression)
        for records in dataset.batch(self._batch_size).as_numpy_iterator():
            yield self._decoder.DecodeBatch(list(records))


def list_files(patterns: List[str]) -> List[str]:
    """Returns the files that match any of the glob patterns, sorted."""
    return sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)})


class BatchedTFExampleRecord(tfxio.TFExampleRecord):
    """tfx_bsl's TFExampleRecord whose `BeamSource` reads each file in batches.

    Everything else (Arrow schema, tensor representations, projection, raw
    records) is TFExampleRecord's. A source that must attach the serialized
    records as a column uses the stock reader.
    """

    def BeamSource(self, batch_size: Optional[int] = None) -> beam.PTransform:
        if self.raw_record_column_name is not None:
            return super().BeamSource(batch_size)
        files = list_files(self._file_pattern)
        reader = ReadExampleBatches(batch_size or BATCH_SIZE, self._GetSchemaForDecoding())

        @beam.typehints.with_output_types(pa.RecordBatch)
        def read(pipeline):
            return (
                pipeline
                | "ListFiles" >> beam.Create(files)
                | "ReadBatches" >> beam.ParDo(reader)
            )

        return beam.ptransform_fn(read)()

    def _ProjectImpl(self, tensor_names: List[str]) -> tfxio.TFXIO:
        projected_schema = tensor_representation_util.ProjectTensorRepresentationsInSchema(
            self._schema, tensor_names
        )
        return BatchedTFExampleRecord(
            file_pattern=self._file_pattern,
            schema=projected_schema,
            raw_record_column_name=self.raw_record_column_name,
            telemetry_descriptors=self.telemetry_descriptors,
        )
