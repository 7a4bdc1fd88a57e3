"""Tests for the data contract: curation rules and the checked-in schema.

The regression tests compute TFDV statistics for data as ExampleGen writes
it (components/csv_parsing.py and `ingest._to_example`) and show that the
schema TFDV infers, which is what SchemaGen writes, flags no NaN and no inf,
while the curated contract flags both.
"""

from __future__ import annotations

import os

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx_bsl.coders import example_coder

from components import csv_parsing
from components.ingest import _column_specs, _to_example
from pipeline import contract
from pipeline.dataset import load_description

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(REPO, "schema", "schema.pbtxt")

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
# Four clean rows, one NaN and one inf in UnitPrice.
NON_FINITE_CSV = (
    HEADER
    + "536365,85123A,Mug,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    + "536365,71053,Lantern,6,2010-12-01 08:26:00,nan,17850.0,United Kingdom\n"
    + "536366,22633,Hand warmer,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom\n"
    + "536367,84879,Bird ornament,32,2010-12-01 08:34:00,inf,13047.0,United Kingdom\n"
    + "536367,22745,Poppy's playhouse,6,2010-12-01 08:34:00,2.10,13047.0,United Kingdom\n"
    + "536368,22960,Jam making set,6,2010-12-01 08:34:00,4.25,13047.0,United Kingdom\n"
)
NON_FINITE_TYPES = {"FLOAT_TYPE_HAS_NAN", "FLOAT_TYPE_HAS_INF"}
SERVING_ONLY_ABSENT = ("InvoiceNo", "Description", "Quantity", "InvoiceDate")


@pytest.fixture(scope="module")
def description():
    return load_description()


def statistics_for(text: str, description, drop: tuple[str, ...] = ()):
    """Returns TFDV statistics of `text` parsed and encoded as ExampleGen does."""
    as_dict = description.to_dict()
    types = {name: spec["type"] for name, spec in as_dict["columns"].items()}
    examples = []
    for item in csv_parsing.parse_csv_text(
        text,
        "contract.csv",
        _column_specs(as_dict),
        frozenset(description.na_tokens),
        description.time_column,
        description.time_format,
        string_na_tokens=frozenset(description.string_na_tokens),
    ):
        assert isinstance(item, csv_parsing.ParsedRow), item
        for name in drop:
            item.values[name] = None
        examples.append(_to_example(item, types))
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(examples)
    return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


def anomaly_types(anomalies: anomalies_pb2.Anomalies, feature: str) -> set[str]:
    info = anomalies.anomaly_info.get(feature)
    if info is None:
        return set()
    return {anomalies_pb2.AnomalyInfo.Type.Name(reason.type) for reason in info.reason}


def test_inferred_schema_misses_non_finite(description):
    statistics = statistics_for(NON_FINITE_CSV, description)
    # SchemaGen (tfx 1.16) runs this inference with infer_feature_shape=False.
    inferred = tfdv.infer_schema(statistics, infer_feature_shape=False)
    anomalies = tfdv.validate_statistics(statistics, inferred)
    assert anomaly_types(anomalies, "UnitPrice") & NON_FINITE_TYPES == set()
    assert not tfdv.get_feature(inferred, "UnitPrice").float_domain.disallow_nan
    assert not tfdv.get_feature(inferred, "UnitPrice").float_domain.disallow_inf


def test_curated_schema_flags_non_finite(description):
    statistics = statistics_for(NON_FINITE_CSV, description)
    inferred = tfdv.infer_schema(statistics, infer_feature_shape=False)
    curated = contract.curate_schema(description, inferred)
    anomalies = tfdv.validate_statistics(statistics, curated)
    assert anomaly_types(anomalies, "UnitPrice") >= NON_FINITE_TYPES


def test_curated_schema_passes_clean_data(description):
    clean = NON_FINITE_CSV.replace(",nan,", ",2.00,").replace(",inf,", ",3.00,")
    statistics = statistics_for(clean, description)
    anomalies = tfdv.validate_statistics(statistics, contract.curate_schema(description))
    assert dict(anomalies.anomaly_info) == {}


def test_curated_schema_flags_range(description):
    negative = NON_FINITE_CSV.replace(",nan,", ",-1.00,").replace(",inf,", ",2.00,")
    statistics = statistics_for(negative, description)
    anomalies = tfdv.validate_statistics(statistics, contract.curate_schema(description))
    assert anomaly_types(anomalies, "UnitPrice") == {"FLOAT_TYPE_SMALL_FLOAT"}


def test_serving_environment_drops_training_columns(description):
    clean = NON_FINITE_CSV.replace(",nan,", ",2.00,").replace(",inf,", ",3.00,")
    statistics = statistics_for(clean, description, drop=SERVING_ONLY_ABSENT)
    curated = contract.curate_schema(description)
    serving = tfdv.validate_statistics(statistics, curated, environment="SERVING")
    training = tfdv.validate_statistics(statistics, curated, environment="TRAINING")
    assert dict(serving.anomaly_info) == {}
    assert set(training.anomaly_info) == {"Quantity", "InvoiceDate"}


@pytest.fixture(scope="module")
def checked_in():
    return contract.read_schema(SCHEMA_PATH)


def test_schema_matches_description(checked_in, description):
    assert checked_in == contract.curate_schema(description)


def test_schema_floats_disallow_non_finite(checked_in):
    floats = [f for f in checked_in.feature if f.type == schema_pb2.FLOAT]
    assert [f.name for f in floats] == ["Quantity", "UnitPrice"]
    for feature in floats:
        assert feature.float_domain.disallow_nan, feature.name
        assert feature.float_domain.disallow_inf, feature.name


def test_schema_float_ranges(checked_in):
    for name in ("Quantity", "UnitPrice"):
        domain = tfdv.get_feature(checked_in, name).float_domain
        assert (domain.min, domain.max) == (0.0, 100000.0), name


def test_schema_environments(checked_in):
    assert list(checked_in.default_environment) == ["TRAINING", "SERVING"]
    not_served = sorted(
        f.name for f in checked_in.feature if "SERVING" in f.not_in_environment
    )
    assert not_served == ["Description", "InvoiceDate", "InvoiceNo", "Quantity"]


def test_schema_required_keys(checked_in):
    required = sorted(
        f.name for f in checked_in.feature if f.presence.min_fraction == 1.0
    )
    assert required == ["InvoiceDate", "StockCode"]


# (feature, min_fraction, min_count): 1 - max_missing of the role in
# data/online_retail.yaml, and no minimum count where a column may be
# missing throughout.
PRESENCE = [
    ("InvoiceNo", 0.0, 0),
    ("StockCode", 1.0, 1),
    ("Description", 0.0, 0),
    ("Quantity", 0.95, 1),
    ("InvoiceDate", 1.0, 1),
    ("UnitPrice", 0.8, 1),
    ("CustomerID", 0.4, 1),
    ("Country", 0.8, 1),
]


@pytest.mark.parametrize("name, min_fraction, min_count", PRESENCE)
def test_schema_presence(checked_in, name, min_fraction, min_count):
    presence = tfdv.get_feature(checked_in, name).presence
    assert presence.min_fraction == pytest.approx(min_fraction)
    assert presence.min_count == min_count


def test_schema_one_value_per_cell(checked_in):
    for feature in checked_in.feature:
        assert (feature.value_count.min, feature.value_count.max) == (1, 1), feature.name
        assert not feature.HasField("shape"), feature.name


def test_schema_types_from_description(checked_in):
    types = {f.name: schema_pb2.FeatureType.Name(f.type) for f in checked_in.feature}
    assert types == {
        "InvoiceNo": "BYTES",
        "StockCode": "BYTES",
        "Description": "BYTES",
        "Quantity": "FLOAT",
        "InvoiceDate": "BYTES",
        "UnitPrice": "FLOAT",
        "CustomerID": "BYTES",
        "Country": "BYTES",
    }
