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
    return pa.concat_tables(tables).combine_chunks()


def _sorted_rows(table: pa.Table) -> list:
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
    transform_executor.Executor().Do({}, {}, {})
    assert seen == [transform_executor._BatchedTransformProcessor]
    assert stock_transform.TransformProcessor is not transform_executor._BatchedTransformProcessor


def test_stock_executor_creates_processor_by_name():
    # The swap above only works while TFX's Do looks the class up by this name.
    assert "TransformProcessor().Transform(" in inspect.getsource(stock_transform.Executor.Do)
