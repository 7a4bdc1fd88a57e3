"""Tests for `components.transform_module.preprocessing_fn`, run through tft_beam.

One module-scoped fixture analyzes TRAIN_COLUMNS once, transforms TRAIN_COLUMNS
and TEST_COLUMNS with the result, and writes the transform graph that the
serving signature loads. Every expected value is worked out by hand from the
tables below, where ``None`` is an absent cell.
"""

from __future__ import annotations

import functools
import math
import os
from types import SimpleNamespace

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io  # noqa: E402

from components import transform_module as tm  # noqa: E402
from pipeline.contract import SERVING_ROLES  # noqa: E402
from pipeline.dataset import parse_description  # noqa: E402

NAN = float("nan")
INF = float("inf")

DESCRIPTION = parse_description(
    {
        "name": "transform_test",
        "columns": {
            "user": {"type": "string", "role": "user_id"},
            "item": {"type": "string", "role": "item_id"},
            "country": {"type": "string", "role": "categorical"},
            "quantity": {
                "type": "float",
                "role": "interaction_count",
                "min": 0,
                "max": 1000,
                "negative": "clip",
                "log1p": True,
                "impute": "median",
            },
            "price": {
                "type": "float",
                "role": "numeric",
                "min": 0,
                "max": 100,
                "negative": "missing",
                "impute": "median",
            },
            "rating": {"type": "float", "role": "numeric", "impute": "median"},
            "discount": {"type": "float", "role": "numeric", "impute": "mean"},
            "weight": {
                "type": "float",
                "role": "numeric",
                "impute": "constant",
                "impute_value": 7.0,
            },
            "stock": {"type": "float", "role": "numeric", "impute": "mean"},
            "blank": {"type": "float", "role": "numeric", "impute": "median"},
            "age": {"type": "int", "role": "numeric", "impute": "median"},
        },
    }
).to_dict()

TRAIN_COLUMNS = {
    "user": ["u1", " u1 ", "u1\t", "u2", "", None],
    "item": ["i1", "i1", "i1", "i2", "i2", "i3"],
    "country": ["UK", "UK ", " UK", "UK", "FR", "FR"],
    "quantity": [9.0, 99.0, -5.0, 0.0, 5000.0, None],
    "price": [1.0, -2.0, 3.0, 200.0, 5.0, None],
    "rating": [10.0, None, NAN, 20.0, 30.0, INF],
    "discount": [2.0, None, 4.0, NAN, 9.0, None],
    "weight": [2.0, None, 12.0, None, NAN, 4.5],
    "stock": [5.0, 5.0, 5.0, None, 5.0, 5.0],
    "blank": [None, NAN, None, INF, None, None],
    "age": [20, 40, None, 30, 30, 40],
}

# Rows transformed with the training split's analyzer outputs, as at serving.
TEST_COLUMNS = {
    "user": [" u2 ", None, "zz"],
    "item": ["i9", "", " i2 "],
    "country": ["DE", None, "FR"],
    "quantity": [1e6, None, 99.0],
    "price": [50.0, 0.5, NAN],
    "rating": [NAN, 40.0, 5.0],
    "discount": [INF, -INF, 4.0],
    "weight": [100.0, None, 7.0],
    "stock": [7.0, None, 5.0],
    "blank": [3.0, None, NAN],
    "age": [100, None, 10],
}

# Hand-computed statistics of the training split (finite present values only).
# quantity: clip to [0, 1000] gives [9, 99, 0, 0, 1000, absent], and log1p
# gives [ln 10, ln 100, 0, 0, ln 1001]. So min 0, max ln 1001, median ln 10.
QUANTITY_MAX = math.log(1001.0)
QUANTITY_MEDIAN = math.log(10.0)
# rating: [10, 20, 30] with median 20, so a missing value scales to
# (20 - 10) / (30 - 10) = 0.5.
RATING_MISSING = (20.0 - 10.0) / (30.0 - 10.0)
# discount: [2, 4, 9] with mean 5, so a missing value scales to (5 - 2) / (9 - 2).
DISCOUNT_MISSING = (5.0 - 2.0) / (9.0 - 2.0)
# price: -2 (negative) and 200 (above max 100) become missing, leaving
# [1, 3, 5] with median 3, so a missing value scales to (3 - 1) / (5 - 1) = 0.5.
PRICE_MISSING = (3.0 - 1.0) / (5.0 - 1.0)

FEATURE_SPEC = {
    name: tf.io.VarLenFeature(
        {"string": tf.string, "float": tf.float32, "int": tf.int64}[spec["type"]]
    )
    for name, spec in DESCRIPTION["columns"].items()
}


def _instances(columns: dict[str, list]) -> list[dict[str, list]]:
    """Turns a column table into tft_beam instance dicts (absent -> [])."""
    size = len(next(iter(columns.values())))
    return [
        {name: [] if values[i] is None else [values[i]] for name, values in columns.items()}
        for i in range(size)
    ]


def _example(instance: dict[str, list]) -> bytes:
    """Serializes one instance dict as a tf.Example, leaving absent cells out."""
    feature = {}
    for name, values in instance.items():
        if not values:
            continue
        kind = DESCRIPTION["columns"][name]["type"]
        if kind == "string":
            feature[name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[v.encode() for v in values])
            )
        elif kind == "int":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """Analyzes the training rows once and transforms both tables."""
    temp = tmp_path_factory.mktemp("transform")
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(FEATURE_SPEC)
    preprocessing_fn = functools.partial(
        tm.preprocessing_fn, custom_config={"description": DESCRIPTION}
    )
    output_dir = str(temp / "transform_output")
    with tft_beam.Context(temp_dir=str(temp / "tmp")):
        (train, _), transform_fn = (
            _instances(TRAIN_COLUMNS),
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        test, _ = (
            (_instances(TEST_COLUMNS), metadata),
            transform_fn,
        ) | tft_beam.TransformDataset()
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
    # WriteTransformFn leaves out the raw schema. TFX's Transform writes it
    # to the same folder, and raw_feature_spec() reads it from there.
    raw_metadata_dir = os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR)
    metadata_io.write_metadata(metadata, raw_metadata_dir)
    return SimpleNamespace(
        train=train, test=test, output=tft.TFTransformOutput(output_dir)
    )


def _column(rows, name):
    return [row[name] for row in rows]


def _approx(values):
    return pytest.approx(values, rel=1e-5, abs=1e-6)


def _serve(output, spec, instances):
    """Applies the saved transform graph as the serving signature does."""
    layer = output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(serialized):
        return layer(tf.io.parse_example(serialized, spec))

    result = serve(tf.constant([_example(i) for i in instances]))
    return {name: value.numpy().tolist() for name, value in result.items()}


# Numeric features on the training split.


def test_median_imputes_absent_nan_inf(transformed):
    # Rows: 10, absent, NaN, 20, 30, inf.
    expected = [0.0, RATING_MISSING, RATING_MISSING, 0.5, 1.0, RATING_MISSING]
    assert _column(transformed.train, "rating_scaled") == _approx(expected)


def test_indicator_marks_absent_nan_inf(transformed):
    expected = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert _column(transformed.train, "rating_missing") == expected


def test_mean_skips_missing_values(transformed):
    # Rows: 2, absent, 4, NaN, 9, absent. Filling first with 0 and then
    # analyzing would give min 0 and mean 15 / 6 = 2.5, so row 0 would scale
    # to 2 / 9 and a missing row to 2.5 / 9 instead of these values.
    expected = [
        0.0,
        DISCOUNT_MISSING,
        (4.0 - 2.0) / (9.0 - 2.0),
        DISCOUNT_MISSING,
        1.0,
        DISCOUNT_MISSING,
    ]
    assert _column(transformed.train, "discount_scaled") == _approx(expected)


def test_constant_impute_value(transformed):
    # Rows: 2, absent, 12, absent, NaN, 4.5. Min 2, max 12, impute_value 7.
    imputed = (7.0 - 2.0) / (12.0 - 2.0)
    expected = [0.0, imputed, 1.0, imputed, imputed, (4.5 - 2.0) / (12.0 - 2.0)]
    assert _column(transformed.train, "weight_scaled") == _approx(expected)


def test_constant_column_scales_to_zero(transformed):
    # min == max == 5, so the contract is 0.0 (a sigmoid fallback gives 0.9933).
    assert _column(transformed.train, "stock_scaled") == [0.0] * 6


def test_constant_column_indicator(transformed):
    assert _column(transformed.train, "stock_missing") == [0, 0, 0, 1, 0, 0]


def test_all_missing_column_scales_to_zero(transformed):
    assert _column(transformed.train, "blank_scaled") == [0.0] * 6


def test_all_missing_column_indicator(transformed):
    assert _column(transformed.train, "blank_missing") == [1.0] * 6


def test_log1p_after_clip(transformed):
    # Rows: 9, 99, -5 (clipped to 0), 0, 5000 (clipped to 1000), absent.
    # Without the clip to 1000 the max would be ln 5001, not ln 1001.
    expected = [
        math.log(10.0) / QUANTITY_MAX,
        math.log(100.0) / QUANTITY_MAX,
        0.0,
        0.0,
        1.0,
        QUANTITY_MEDIAN / QUANTITY_MAX,
    ]
    assert _column(transformed.train, "quantity_scaled") == _approx(expected)


def test_clipped_values_are_present(transformed):
    assert _column(transformed.train, "quantity_missing") == [0, 0, 0, 0, 0, 1]


def test_interaction_weight_mean_one(transformed):
    scaled = [
        math.log(10.0) / QUANTITY_MAX,
        math.log(100.0) / QUANTITY_MAX,
        0.0,
        0.0,
        1.0,
        QUANTITY_MEDIAN / QUANTITY_MAX,
    ]
    mean = sum(scaled) / len(scaled)
    expected = [s / mean for s in scaled]
    assert _column(transformed.train, "interaction_weight") == _approx(expected)


def test_negative_and_above_max_missing(transformed):
    # Rows: 1, -2, 3, 200, 5, absent. Both -2 and 200 count as missing.
    assert _column(transformed.train, "price_missing") == [0, 1, 0, 1, 0, 1]


def test_negative_missing_scaling(transformed):
    expected = [0.0, PRICE_MISSING, 0.5, PRICE_MISSING, 1.0, PRICE_MISSING]
    assert _column(transformed.train, "price_scaled") == _approx(expected)


def test_int_column_median(transformed):
    # Rows: 20, 40, absent, 30, 30, 40. Median 30, min 20, max 40.
    expected = [0.0, 1.0, 0.5, 0.5, 0.5, 1.0]
    assert _column(transformed.train, "age_scaled") == _approx(expected)


# Numeric features at transform time, with the training split's statistics.


def test_nan_at_transform_time(transformed):
    assert transformed.test[0]["rating_scaled"] == _approx(RATING_MISSING)


def test_nan_indicator_at_transform_time(transformed):
    assert transformed.test[0]["rating_missing"] == 1.0


def test_inf_at_transform_time(transformed):
    # Rows: inf, -inf, 4.
    expected = [DISCOUNT_MISSING, DISCOUNT_MISSING, (4.0 - 2.0) / (9.0 - 2.0)]
    assert _column(transformed.test, "discount_scaled") == _approx(expected)


def test_inf_indicator_at_transform_time(transformed):
    assert _column(transformed.test, "discount_missing") == [1.0, 1.0, 0.0]


def test_above_training_max_clips(transformed):
    # rating 40 > 30, price 50 > 5 (within the declared max 100), age 100 > 40.
    assert transformed.test[1]["rating_scaled"] == 1.0
    assert transformed.test[0]["price_scaled"] == 1.0
    assert transformed.test[0]["age_scaled"] == 1.0


def test_below_training_min_clips(transformed):
    # rating 5 < 10, price 0.5 < 1, age 10 < 20.
    assert transformed.test[2]["rating_scaled"] == 0.0
    assert transformed.test[1]["price_scaled"] == 0.0
    assert transformed.test[2]["age_scaled"] == 0.0


def test_above_declared_max_clipped(transformed):
    # 1e6 is clipped to 1000, so log1p gives the training max ln 1001.
    assert transformed.test[0]["quantity_scaled"] == _approx(1.0)


def test_constant_column_at_transform_time(transformed):
    # Rows: 7, absent, 5. The 0.0 contract holds for unseen values too.
    assert _column(transformed.test, "stock_scaled") == [0.0, 0.0, 0.0]


def test_all_missing_column_at_transform_time(transformed):
    # Rows: 3, absent, NaN.
    assert _column(transformed.test, "blank_scaled") == [0.0, 0.0, 0.0]


def test_all_missing_indicator_at_transform_time(transformed):
    assert _column(transformed.test, "blank_missing") == [0.0, 1.0, 1.0]


# Ids and categories.


def test_vocabulary_by_frequency(transformed):
    # The missing token is reserved first. Then u1 (three times after
    # trimming) and u2 (once), by frequency.
    vocabulary = transformed.output.vocabulary_by_name(tm.vocabulary_name("user"))
    assert vocabulary == [tm.MISSING_TOKEN.encode(), b"u1", b"u2"]


def test_vocabulary_sizes(transformed):
    sizes = {
        column: transformed.output.vocabulary_size_by_name(tm.vocabulary_name(column))
        for column in ("user", "item", "country")
    }
    # Each vocabulary counts the reserved missing token: user has it plus u1
    # and u2, item three items, country two countries.
    assert sizes == {"user": 3, "item": 4, "country": 3}


def test_padded_id_trimmed(transformed):
    # "u1", " u1 " and "u1\t" are one id, index 1 after the missing token.
    assert _column(transformed.train, "user_index")[:3] == [1, 1, 1]


def test_padded_id_at_transform_time(transformed):
    # " u2 " maps to u2 (index 2) and " i2 " to i2 (index 2: the missing
    # token, then i1, then i2).
    assert transformed.test[0]["user_index"] == 2
    assert transformed.test[2]["item_index"] == 2


def test_missing_id_index(transformed):
    # Empty and absent ids in training, and an absent id at transform time,
    # all map to the reserved missing token at index 0.
    assert transformed.train[4]["user_index"] == 0
    assert transformed.train[5]["user_index"] == 0
    assert transformed.test[1]["user_index"] == 0


def test_missing_id_indicator(transformed):
    assert _column(transformed.train, "user_missing") == [0, 0, 0, 0, 1, 1]


def test_unseen_id_maps_to_oov(transformed):
    # The OOV index equals the vocabulary size: 3 for user, 4 for item and
    # 3 for country.
    assert transformed.test[2]["user_index"] == 3
    assert transformed.test[0]["item_index"] == 4
    assert transformed.test[0]["country_index"] == 3


def test_missing_token_unseen_in_training(transformed):
    # No item or country is missing in training, but the missing token is
    # reserved, so a missing value gets index 0 and not the OOV index.
    assert transformed.test[1]["item_index"] == 0
    assert transformed.test[1]["country_index"] == 0


def test_indices_within_range(transformed):
    for column in ("user", "item", "country"):
        size = transformed.output.vocabulary_size_by_name(tm.vocabulary_name(column))
        indices = _column(transformed.train + transformed.test, tm.index_name(column))
        outside = [i for i in indices if not 0 <= i < size + tm.NUM_OOV_BUCKETS]
        assert outside == [], column


# Serving: the saved transform graph applied to parsed tf.Examples.


def test_serving_matches_training_path(transformed):
    instances = _instances(TRAIN_COLUMNS) + _instances(TEST_COLUMNS)
    expected_rows = transformed.train + transformed.test
    served = _serve(transformed.output, transformed.output.raw_feature_spec(), instances)
    for name in expected_rows[0]:
        assert served[name] == _approx(_column(expected_rows, name)), name


def test_serving_spec_prunes_interaction_count(transformed):
    # The serving signature parses only the serving roles, so quantity is
    # never fed. TFT 1.16 drops the outputs that depend on an unfed input.
    raw_spec = transformed.output.raw_feature_spec()
    serving_spec = {
        name: raw_spec[name]
        for name, spec in DESCRIPTION["columns"].items()
        if spec["role"] in SERVING_ROLES
    }
    served = _serve(transformed.output, serving_spec, _instances(TEST_COLUMNS))
    pruned = {"quantity_scaled", "quantity_missing", tm.WEIGHT_FEATURE}
    assert set(transformed.test[0]) - set(served) == pruned


def test_serving_spec_values_match(transformed):
    raw_spec = transformed.output.raw_feature_spec()
    serving_spec = {
        name: raw_spec[name]
        for name, spec in DESCRIPTION["columns"].items()
        if spec["role"] in SERVING_ROLES
    }
    served = _serve(transformed.output, serving_spec, _instances(TEST_COLUMNS))
    for name, values in served.items():
        assert values == _approx(_column(transformed.test, name)), name


def test_serving_column_absent_everywhere(transformed):
    # Training rows 0, 2 and 4 have no `blank` value, so the parsed sparse
    # tensor has width 0 for the whole batch.
    rows = [0, 2, 4]
    instances = [_instances(TRAIN_COLUMNS)[i] for i in rows]
    served = _serve(transformed.output, transformed.output.raw_feature_spec(), instances)
    expected = [transformed.train[i] for i in rows]
    for name in expected[0]:
        assert served[name] == _approx(_column(expected, name)), name


def _transform_user_ids(tmp_path, users: list[str], tokens: dict) -> list[dict]:
    """Runs `preprocessing_fn` on one user id column with the given NA token keys."""
    spec = {"user": tf.io.VarLenFeature(tf.string)}
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(spec)
    rows = [{"user": [user]} for user in users]
    description = {
        **tokens,
        "columns": {"user": {"type": "string", "role": "user_id"}},
    }

    def preprocessing_fn(inputs):
        return tm.preprocessing_fn(inputs, {"description": description})

    with tft_beam.Context(temp_dir=str(tmp_path)):
        (output, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn
        )
    return output


def test_na_token_id_is_missing(tmp_path):
    # Ingestion turns NA tokens into absent cells, but a serving request
    # can still carry one: "N/A" and " null " must map to the missing token
    # (index 0) and set the indicator, while "a" is a real id.
    users = ["a", "N/A", " null ", "a"]
    output = _transform_user_ids(tmp_path, users, {"na_tokens": ["N/A", "null"]})
    assert [row["user_index"] for row in output] == [1, 0, 0, 1]
    assert [row["user_missing"] for row in output] == [0.0, 1.0, 1.0, 0.0]


def test_string_na_token_id_is_missing(tmp_path):
    # A serving request may carry the "nan" that pandas writes for a missing
    # id. The description's string NA tokens map it to the missing token.
    tokens = {"na_tokens": ["N/A"], "string_na_tokens": ["nan", "NaN"]}
    output = _transform_user_ids(tmp_path, ["a", "nan", "NaN", "a"], tokens)
    assert [row["user_index"] for row in output] == [1, 0, 0, 1]
    assert [row["user_missing"] for row in output] == [0.0, 1.0, 1.0, 0.0]
