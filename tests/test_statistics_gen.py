"""StatisticsGen's batched reader against the stock TFX executor.

Both executors read the same hand-made examples, with absent features, NaN
and inf, over more rows than one batch and over two files, and must give
the same statistics up to float summation order.
"""

from __future__ import annotations

import math
import os

import pytest
import tensorflow as tf
from stats_match import assert_feature_stats_match, read_stats
from tfx.components.statistics_gen import executor as stock_executor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts

from components import batched_read, statistics_gen

# Examples per batch in these tests, so that each train file has a batch of
# 1000 rows and one of 300.
BATCH_SIZE = 1000
ROWS_PER_FILE = 1300


def _example(row: int) -> bytes:
    example = tf.train.Example()
    features = example.features.feature
    if row % 7:
        features["item"].bytes_list.value.append(f"item-{row % 40}".encode())
    if row % 11 == 0:
        price = math.nan
    elif row % 13 == 0:
        price = math.inf
    else:
        price = row * 0.25
    if row % 5:
        features["price"].float_list.value.append(price)
    features["count"].int64_list.value.append(row % 9 - 2)
    return example.SerializeToString()


def _write_examples(root: str, rows_by_split: dict[str, list[list[int]]]):
    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(root, "examples")
    examples.split_names = artifact_utils.encode_split_names(list(rows_by_split))
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(examples, "tfrecords_gzip")
    for split, files in rows_by_split.items():
        folder = artifact_utils.get_split_uri([examples], split)
        os.makedirs(folder)
        for index, rows in enumerate(files):
            name = f"data_tfrecord-{index:05d}-of-{len(files):05d}.gz"
            with tf.io.TFRecordWriter(os.path.join(folder, name), "GZIP") as writer:
                for row in rows:
                    writer.write(_example(row))
    return examples


def _statistics(root: str, name: str) -> standard_artifacts.ExampleStatistics:
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = os.path.join(root, name)
    return statistics


ROWS = {
    "train": [list(range(ROWS_PER_FILE)), list(range(ROWS_PER_FILE, 2 * ROWS_PER_FILE))],
    "eval": [list(range(10))],
}


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("statistics"))
    examples = _write_examples(root, ROWS)
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(statistics_gen, "STATISTICS_BATCH_SIZE", BATCH_SIZE)
        for name, executor in (
            ("stock", stock_executor.Executor()),
            ("batched", statistics_gen.Executor()),
        ):
            statistics = _statistics(root, name)
            executor.Do({"examples": [examples]}, {"statistics": [statistics]}, {})
            outputs[name] = statistics
        # The examples have one value per feature or none, as ExampleGen
        # declares for its own, so the batched reader may use tf.io.parse_example.
        examples.set_string_custom_property(
            batched_read.SINGLE_VALUE_FEATURES_PROPERTY,
            '{"count": "int", "item": "bytes", "price": "float"}',
        )
        statistics = _statistics(root, "declared")
        statistics_gen.Executor().Do({"examples": [examples]}, {"statistics": [statistics]}, {})
        outputs["declared"] = statistics
    return outputs


def _split_stats(statistics, split: str):
    path = os.path.join(
        artifact_utils.get_split_uri([statistics], split), stock_executor.DEFAULT_FILE_NAME
    )
    (dataset,) = read_stats(path).datasets
    return dataset


@pytest.mark.parametrize("reader", ["batched", "declared"])
@pytest.mark.parametrize("split, rows", [("train", 2 * ROWS_PER_FILE), ("eval", 10)])
def test_batched_matches_stock(both_runs, split, rows, reader):
    stock = _split_stats(both_runs["stock"], split)
    batched = _split_stats(both_runs[reader], split)
    assert batched.num_examples == rows
    assert stock.num_examples == rows
    stock_features = {tuple(f.path.step): f for f in stock.features}
    batched_features = {tuple(f.path.step): f for f in batched.features}
    assert sorted(batched_features) == [("count",), ("item",), ("price",)]
    assert sorted(stock_features) == sorted(batched_features)
    for path, feature in stock_features.items():
        assert_feature_stats_match(f"{split} {path}", feature, batched_features[path])


def test_batched_counts_missing_values(both_runs):
    features = {tuple(f.path.step): f for f in _split_stats(both_runs["batched"], "train").features}
    rows = 2 * ROWS_PER_FILE
    # Rows 0, 5, 10, ... have no price, and rows 0, 7, 14, ... no item.
    price = features[("price",)].num_stats.common_stats
    item = features[("item",)].string_stats.common_stats
    assert price.num_missing == len(range(0, rows, 5))
    assert item.num_missing == len(range(0, rows, 7))
    assert features[("count",)].num_stats.min == -2


def test_batched_sets_artifact_properties(both_runs):
    statistics = both_runs["batched"]
    assert artifact_utils.decode_split_names(statistics.split_names) == ["train", "eval"]
    rates = statistics.get_json_value_custom_property(
        stock_executor.SAMPLE_RATE_BY_SPLIT_PROPERTY_NAME
    )
    assert '"train": 1.0' in rates


def test_excluded_split_not_read(tmp_path):
    examples = _write_examples(str(tmp_path), ROWS)
    statistics = _statistics(str(tmp_path), "out")
    statistics_gen.Executor().Do(
        {"examples": [examples]}, {"statistics": [statistics]}, {"exclude_splits": '["eval"]'}
    )
    assert artifact_utils.decode_split_names(statistics.split_names) == ["train"]
    assert os.listdir(statistics.uri) == ["Split-train"]


def test_other_payload_uses_stock_reader(tmp_path, monkeypatch):
    examples = _write_examples(str(tmp_path), {"train": [[1, 2]]})
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_PARQUET)
    calls = []
    monkeypatch.setattr(stock_executor.Executor, "Do", lambda *args: calls.append(args))
    statistics_gen.Executor().Do({"examples": [examples]}, {"statistics": []}, {})
    assert len(calls) == 1
