"""Malformed requests to the exported signatures: a clean error or a finite score.

The module trains one small model with the `recguard` command, then sends
every case to the pushed SavedModel in a child process
(``python -m pipeline.serving_probe score-batches``). A crash of TensorFlow
therefore shows up as the child's exit code, and the result file names the
case that was running.
"""

import base64
import functools
import json
import os
import random
import shutil
import struct
import sys

import pytest

from pipeline import robustness, serving_probe

pytestmark = pytest.mark.e2e

SLICE_FILES = ("2010-12-01.csv", "2010-12-02.csv")
TRAIN_STEPS = 20
FINITE = "finite"
ERROR = "error"
# Exceptions that count as a clean error: TensorFlow's op errors, the
# argument errors a signature raises for a tensor of the wrong shape or type,
# and UnicodeDecodeError. TensorFlow 2.16 raises the latter in place of
# InvalidArgumentError when ParseExample rejects bytes that are not UTF-8,
# because its error message quotes the input and Python decodes the message.
CLEAN_ERRORS = ("InvalidArgumentError", "UnicodeDecodeError", "ValueError", "TypeError")
VALID_ROW = {
    "StockCode": b"85123A",
    "CustomerID": b"17850.0",
    "Country": b"United Kingdom",
    "UnitPrice": 2.55,
}


def _feature(value):
    import tensorflow as tf

    if isinstance(value, tf.train.Feature):
        return value
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def _example(**overrides):
    """Serialize `VALID_ROW` with features replaced, or removed when None."""
    import tensorflow as tf

    row = dict(VALID_ROW)
    row.update(overrides)
    feature = {name: _feature(value) for name, value in row.items() if value is not None}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _float_list(values):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _bytes_list(values):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _case(
    name, values, expected, signature="serving_default", input_name="examples", shape=None
):
    case = {
        "name": name,
        "signature": signature,
        "input": input_name,
        "values_b64": [base64.b64encode(v).decode("ascii") for v in values],
        "expected": expected,
    }
    if shape is not None:
        case["shape"] = shape
    return case


def _tensor_case(name, dtype, value, expected, signature="serving_default", input_name="examples"):
    return {
        "name": name,
        "signature": signature,
        "input": input_name,
        "tensor": {"dtype": dtype, "value": value},
        "expected": expected,
    }


@functools.lru_cache(maxsize=None)
def _cases():
    """Return the requests and, written by hand, the outcomes they may have."""
    import tensorflow as tf

    rng = random.Random(7)
    random_bytes = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(20)
    ]
    valid = _example()
    cases = [
        _case("valid row", [valid], {FINITE}),
        # An empty string is a valid encoding of an Example without features.
        _case("empty string", [b""], {FINITE}),
        _case("no features", [tf.train.Example().SerializeToString()], {FINITE}),
        _case("item only", [_example(CustomerID=None, Country=None, UnitPrice=None)], {FINITE}),
        _case("no item", [_example(StockCode=None)], {FINITE}),
        _case("empty value lists", [_example(
            StockCode=_bytes_list([]),
            CustomerID=_bytes_list([]),
            Country=_bytes_list([]),
            UnitPrice=_float_list([]),
        )], {FINITE}),
        _case("feature without kind", [_example(UnitPrice=tf.train.Feature())], {FINITE}),
        _case("StockCode as int64", [_example(StockCode=85123)], {ERROR}),
        _case("CustomerID as float", [_example(CustomerID=17850.0)], {ERROR}),
        _case("UnitPrice as bytes", [_example(UnitPrice=b"2.55")], {ERROR}),
        _case("UnitPrice as int64", [_example(UnitPrice=3)], {ERROR}),
        _case("UnitPrice 1e38", [_example(UnitPrice=1e38)], {FINITE}),
        _case("UnitPrice -1e38", [_example(UnitPrice=-1e38)], {FINITE}),
        _case("UnitPrice float32 max", [_example(UnitPrice=3.4028234663852886e38)], {FINITE}),
        _case("UnitPrice smallest subnormal", [_example(UnitPrice=1e-45)], {FINITE}),
        _case("UnitPrice NaN", [_example(UnitPrice=float("nan"))], {FINITE}),
        _case("UnitPrice +inf", [_example(UnitPrice=float("inf"))], {FINITE}),
        _case("UnitPrice -inf", [_example(UnitPrice=float("-inf"))], {FINITE}),
        _case(
            "UnitPrice 10,000 values",
            [_example(UnitPrice=_float_list([1e38, float("nan")] * 5000))],
            {FINITE},
        ),
        _case("StockCode 1 MB", [_example(StockCode=b"A" * 1_000_000)], {FINITE}),
        _case("StockCode invalid UTF-8", [_example(StockCode=b"\xff\xfe\x00")], {FINITE}),
        _case(
            "StockCode 1,000 values",
            [_example(StockCode=_bytes_list([b"85123A"] * 1000))],
            {FINITE},
        ),
        _case("unknown ids", [_example(StockCode=b"NOPE", CustomerID=b"x", Country=b"?")], {FINITE}),
        _case("extra feature", [_example(Extra=b"ignored", Quantity=b"text")], {FINITE}),
        # Cutting a serialized Example inside a field leaves an invalid message.
        _case("truncated example", [valid[:-3]], {ERROR}),
        _case("valid row then garbage", [valid, b"\xff" * 10], {ERROR}),
        _case("empty batch", [], {FINITE}),
        _case("20,000 rows", [valid] * 20_000, {FINITE}),
        _case("rank-2 batch", [valid], {ERROR}, shape=[1, 1]),
        _case("scalar", [valid], {ERROR}, shape=[]),
        _tensor_case("float batch", "float32", [1.0, 2.0], {ERROR}),
        _case("top_k empty batch", [], {FINITE}, "top_k", "user_id"),
        _case(
            "top_k odd ids",
            [b"", b" ", b"\xff\xfe", b"17850.0", b"x" * 1_000_000, b"\x00"],
            {FINITE},
            "top_k",
            "user_id",
        ),
        _tensor_case("top_k int ids", "int64", [1, 2], {ERROR}, "top_k", "user_id"),
    ]
    # Random bytes rarely form a valid Example; when they do, the features
    # they hold are parsed like any other request.
    for index, value in enumerate(random_bytes):
        cases.append(_case(f"random bytes {index}", [value], {FINITE, ERROR}))
    # A float that protobuf accepts but whose bits are a NaN with a payload.
    payload_nan = struct.unpack("<f", b"\x01\x00\xc0\x7f")[0]
    cases.append(_case("UnitPrice NaN payload", [_example(UnitPrice=payload_nan)], {FINITE}))
    return tuple(cases)


CASE_NAMES = [case["name"] for case in _cases()]
ERROR_CASE_NAMES = [case["name"] for case in _cases() if ERROR in case["expected"]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz_data")
    for name in SLICE_FILES:
        shutil.copy(robustness.BUNDLED_DATA / name, data / name)
    out = tmp_path_factory.mktemp("fuzz") / "run"
    result = robustness.run_cli(
        ["run", "--data", str(data), "--out", str(out), "--steps", str(TRAIN_STEPS)],
        robustness.RUN_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from pipeline.metadata import pushed_model_uris

    return pushed_model_uris(os.path.join(out, "metadata.sqlite"))[-1]


@pytest.fixture(scope="module")
def fuzz(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_cases")
    cases = list(_cases())
    cases_path = folder / "cases.json"
    result_path = folder / "results.jsonl"
    sent = [{k: v for k, v in case.items() if k != "expected"} for case in cases]
    cases_path.write_text(json.dumps(sent), encoding="utf-8")
    process = robustness.run_command(
        [
            sys.executable,
            "-m",
            "pipeline.serving_probe",
            "score-batches",
            "--model",
            model_dir,
            "--cases",
            str(cases_path),
            "--result",
            str(result_path),
        ],
        robustness.SCORE_TIMEOUT_SECONDS,
    )
    return {
        "process": process,
        "expected": {case["name"]: case["expected"] for case in cases},
        "results": serving_probe.read_batch_results(str(result_path)),
    }


def test_process_survives(fuzz):
    process = fuzz["process"]
    running = [n for n, r in fuzz["results"].items() if r["status"] == "started"]
    assert process.returncode == 0, (
        f"exit code {process.returncode}, timed out {process.timed_out}, "
        f"running case {running}: {process.stderr[-2000:]}"
    )


def test_every_case_answered(fuzz):
    assert sorted(fuzz["results"]) == sorted(fuzz["expected"])


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_case_outcome(fuzz, case_name):
    record = fuzz["results"].get(case_name)
    assert record is not None, f"no result; child exit code {fuzz['process'].returncode}"
    assert record["status"] in fuzz["expected"][case_name], record


@pytest.mark.parametrize("case_name", ERROR_CASE_NAMES)
def test_case_error_is_clean(fuzz, case_name):
    record = fuzz["results"].get(case_name, {})
    if record.get("status") != ERROR:
        pytest.skip(f"status {record.get('status')}: the request was answered")
    assert record["error_type"] in CLEAN_ERRORS, record


def test_empty_batch_shape(fuzz):
    assert fuzz["results"]["empty batch"]["shape"] == [0]


def test_large_batch_shape(fuzz):
    assert fuzz["results"]["20,000 rows"]["shape"] == [20_000]


def test_top_k_shape(fuzz):
    assert fuzz["results"]["top_k odd ids"]["shape"] == [6, 10]
