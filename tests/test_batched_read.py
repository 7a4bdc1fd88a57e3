"""The batched tf.Example reader against tfx_bsl's stock reader, and its use in Transform.

The reader must give the same rows, columns and types as
`TFExampleRecord.BeamSource` for the same files and schema, because
Transform's analysis and transform read through it.
"""

from __future__ import annotations

import inspect
import math
import os
import uuid

import apache_beam as beam
import pyarrow as pa
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.transform import executor as stock_transform
from tfx.proto import example_gen_pb2
from tfx_bsl.public import tfxio

from components import batched_read, transform_executor

ROWS_PER_FILE = 1300


def _example(row: int) -> bytes:
    example = tf.train.Example()
    features = example.features.feature
    if row % 7:
        features["item"].bytes_list.value.append(f"item-{row % 40}".encode())
    if row % 5:
        features["price"].float_list.value.append(math.nan if row % 11 == 0 else row * 0.5)
    features["count"].int64_list.value.append(row % 9 - 2)
    return example.SerializeToString()


SCHEMA = schema_pb2.Schema()
for name, kind in (
    ("item", schema_pb2.BYTES),
    ("price", schema_pb2.FLOAT),
    ("count", schema_pb2.INT),
    ("never_present", schema_pb2.FLOAT),
):
    SCHEMA.feature.add(name=name, type=kind)


@pytest.fixture(scope="module")
def example_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    for index in range(2):
        path = os.path.join(folder, f"data_tfrecord-{index:05d}-of-00002.gz")
        with tf.io.TFRecordWriter(path, "GZIP") as writer:
            for row in range(index * ROWS_PER_FILE, (index + 1) * ROWS_PER_FILE):
                writer.write(_example(row))
    return os.path.join(folder, "*")


def _save_batch(batch: pa.RecordBatch, folder: str) -> None:
    path = os.path.join(folder, f"{uuid.uuid4().hex}.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)


def _read_table(source: tfxio.TFXIO, folder) -> pa.Table:
    """Runs the source's BeamSource and returns its rows as one table.

    The batches go through files, because the runner's workers do not share
    this process's memory.
    """
    folder = str(folder)
    os.makedirs(folder)
    with beam.Pipeline() as pipeline:
        _ = pipeline | source.BeamSource() | beam.Map(_save_batch, folder)
    tables = []
    for name in sorted(os.listdir(folder)):
        with pa.OSFile(os.path.join(folder, name)) as source_file:
            tables.append(pa.ipc.open_file(source_file).read_all())
    # Without a schema, a batch lacks the features none of its rows has.
    return pa.concat_tables(tables, promote=True).combine_chunks()


TYPES = {"item": "bytes", "price": "float", "count": "int"}


def _assert_same_batch(actual: pa.RecordBatch, expected: pa.RecordBatch) -> None:
    assert actual.schema == expected.schema
    assert actual.num_rows == expected.num_rows
    for name in expected.schema.names:
        assert actual.column(name).null_count == expected.column(name).null_count, name
    # repr compares NaN with NaN, which Arrow's equality does not.
    assert repr(actual.to_pylist()) == repr(expected.to_pylist())


def _decode_both(records: list[bytes], schema=None):
    from tfx_bsl.coders import example_coder

    expected = example_coder.ExamplesToRecordBatchDecoder(
        None if schema is None else schema.SerializeToString()
    ).DecodeBatch(records)
    actual = batched_read.SingleValueDecoder(TYPES, schema).DecodeBatch(records)
    return actual, expected


def _special_example(**values) -> bytes:
    example = tf.train.Example()
    for name, value in values.items():
        feature = example.features.feature[name]
        kind = TYPES[name]
        getattr(feature, f"{'int64' if kind == 'int' else kind}_list").value.append(value)
    return example.SerializeToString()


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["no_schema", "schema"])
def test_single_value_decoder_equals_tfx_bsl(schema):
    records = [_example(row) for row in range(100)]
    records += [
        _special_example(price=math.inf, count=-(2**63)),
        _special_example(price=-math.inf, item="é€".encode()),
        _special_example(price=-0.0, count=2**63 - 1, item=b"\xff\x00"),
        _special_example(),
    ]
    actual, expected = _decode_both(records, schema)
    _assert_same_batch(actual, expected)


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["no_schema", "schema"])
def test_single_value_decoder_feature_absent_from_batch(schema):
    # Rows 0, 7 and 14 have no item.
    actual, expected = _decode_both([_example(row) for row in (0, 7, 14)], schema)
    _assert_same_batch(actual, expected)
    assert ("item" in actual.schema.names) == (schema is not None)


def test_single_value_decoder_examples_without_features():
    actual, expected = _decode_both([_special_example(), _special_example()])
    _assert_same_batch(actual, expected)
    assert actual.num_rows == 2


def test_single_value_decoder_rejects_mismatched_types():
    supports = batched_read.SingleValueDecoder.supports
    assert supports(TYPES, None)
    assert supports(TYPES, SCHEMA)
    assert not supports({**TYPES, "count": "float"}, SCHEMA)
    assert not supports({**TYPES, "count": "list"}, None)


def _artifact(declared: str | None):
    from tfx.types import standard_artifacts

    artifact = standard_artifacts.Examples()
    if declared is not None:
        artifact.set_string_custom_property(batched_read.SINGLE_VALUE_FEATURES_PROPERTY, declared)
    return artifact


def test_single_value_features_needs_every_artifact():
    declared = '{"count": "int"}'
    assert batched_read.single_value_features([_artifact(declared)]) == {"count": "int"}
    assert batched_read.single_value_features([_artifact(declared), _artifact(None)]) is None
    assert (
        batched_read.single_value_features([_artifact(declared), _artifact('{"count": "float"}')])
        is None
    )


@pytest.mark.parametrize("schema", [None, SCHEMA], ids=["no_schema", "schema"])
def test_declared_types_rows_equal_stock(example_files, tmp_path, schema):
    stock = _read_table(tfxio.TFExampleRecord(example_files, schema=schema), tmp_path / "a")
    declared = _read_table(
        batched_read.BatchedTFExampleRecord(example_files, schema=schema, feature_types=TYPES),
        tmp_path / "b",
    )
    assert declared.num_rows == 2 * ROWS_PER_FILE
    assert sorted(declared.schema, key=str) == sorted(stock.schema, key=str)
    assert repr(_sorted_rows(declared)) == repr(_sorted_rows(stock))


def test_declared_types_projection_keeps_decoder(example_files):
    source = batched_read.BatchedTFExampleRecord(
        example_files, schema=SCHEMA, feature_types=TYPES
    )
    assert source.Project(["price"]).projected._feature_types == TYPES


def _sorted_rows(table: pa.Table) -> list:
    # Without a schema, the column order follows the first batch read, so
    # the rows are compared with their columns in name order.
    table = table.select(sorted(table.column_names))
    return sorted(table.to_pylist(), key=lambda row: (row["count"], repr(row)))


def test_batched_rows_equal_stock(example_files, tmp_path):
    stock = _read_table(tfxio.TFExampleRecord(example_files, schema=SCHEMA), tmp_path / "a")
    batched = _read_table(
        batched_read.BatchedTFExampleRecord(example_files, schema=SCHEMA), tmp_path / "b"
    )
    assert batched.num_rows == 2 * ROWS_PER_FILE
    assert batched.schema == stock.schema
    assert repr(_sorted_rows(batched)) == repr(_sorted_rows(stock))


def test_batched_reads_every_row(example_files, tmp_path):
    table = _read_table(
        batched_read.BatchedTFExampleRecord(example_files, schema=SCHEMA), tmp_path / "a"
    )
    counts = sorted(values[0] for values in table.column("count").to_pylist())
    assert counts == sorted(row % 9 - 2 for row in range(2 * ROWS_PER_FILE))


def test_projection_stays_batched(example_files, tmp_path):
    source = batched_read.BatchedTFExampleRecord(example_files, schema=SCHEMA)
    projected = source.Project(["price"])
    # tfx_bsl wraps the projection, and the wrapper reads with the projected TFXIO.
    assert isinstance(projected.projected, batched_read.BatchedTFExampleRecord)
    table = _read_table(projected, tmp_path / "a")
    assert table.column_names == ["price"]
    assert table.num_rows == 2 * ROWS_PER_FILE


def test_raw_record_column_uses_stock_reader(example_files, tmp_path):
    source = batched_read.BatchedTFExampleRecord(
        example_files, schema=SCHEMA, raw_record_column_name="raw"
    )
    table = _read_table(source, tmp_path / "a")
    assert "raw" in table.column_names
    assert table.num_rows == 2 * ROWS_PER_FILE


def _dataset(data_format=example_gen_pb2.FORMAT_TF_EXAMPLE, file_format="tfrecords_gzip"):
    return stock_transform._Dataset("/data/Split-train/*", file_format, data_format, None)


def test_transform_processor_reads_batched():
    processor = transform_executor._BatchedTransformProcessor()
    source = processor._CreateTFXIO(_dataset(), SCHEMA)
    assert isinstance(source, batched_read.BatchedTFExampleRecord)
    assert source._feature_types is None


def test_transform_processor_passes_declared_types(monkeypatch):
    monkeypatch.setattr(transform_executor._BatchedTransformProcessor, "feature_types", TYPES)
    source = transform_executor._BatchedTransformProcessor()._CreateTFXIO(_dataset(), SCHEMA)
    assert source._feature_types == TYPES


def test_transform_processor_keeps_other_formats(monkeypatch):
    monkeypatch.setattr(
        stock_transform.TransformProcessor, "_CreateTFXIO", lambda *args: "stock reader"
    )
    processor = transform_executor._BatchedTransformProcessor()
    dataset = _dataset(data_format=example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE)
    assert processor._CreateTFXIO(dataset, SCHEMA) == "stock reader"


def test_transform_executor_swaps_processor(monkeypatch):
    seen = []
    monkeypatch.setattr(
        stock_transform.Executor,
        "Do",
        lambda *args: seen.append(stock_transform.TransformProcessor),
    )
    declared = _artifact('{"count": "int"}')
    transform_executor.Executor().Do({"examples": [declared]}, {}, {})
    (processor,) = seen
    assert issubclass(processor, transform_executor._BatchedTransformProcessor)
    assert processor.feature_types == {"count": "int"}
    assert stock_transform.TransformProcessor is not processor
    assert not issubclass(stock_transform.TransformProcessor, transform_executor._BatchedTransformProcessor)


def test_stock_executor_creates_processor_by_name():
    # The swap above only works while TFX's Do looks the class up by this name.
    assert "TransformProcessor().Transform(" in inspect.getsource(stock_transform.Executor.Do)
