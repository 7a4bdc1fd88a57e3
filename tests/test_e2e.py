"""End-to-end runs of the `recguard` command on the bundled real data.

These run the whole pipeline (LocalDagRunner, in-process DirectRunner) in a
subprocess, exactly as a user would, and check the results in the ML
Metadata store, the run directory and the pushed model.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(REPO, "data", "online_retail_2010_12")
# Written out instead of imported from pipeline.pipeline.NODE_IDS, so the
# tests check that list and the built pipeline against an independent one.
NODES = (
    "ExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "AnomalyGate",
    "Transform",
    "PostTransformGate",
    "Trainer",
    "Pusher",
)
DOWNSTREAM_OF_GATE = ("Transform", "PostTransformGate", "Trainer", "Pusher")

pytestmark = pytest.mark.e2e


def run_cli(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bundled") / "run")
    first = run_cli("run", "--out", out, "--steps", "600")
    second = run_cli("run", "--out", out, "--steps", "600")
    return {"out": out, "first": first, "second": second}


def _metrics(out):
    from pipeline.metadata import pushed_model_uris

    pushed = pushed_model_uris(os.path.join(out, "metadata.sqlite"))
    with open(os.path.join(pushed[-1], "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def test_run_exits_zero(bundled_run):
    result = bundled_run["first"]
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_component_completed(bundled_run):
    from pipeline.metadata import executions_by_node

    states = executions_by_node(os.path.join(bundled_run["out"], "metadata.sqlite"))
    for node in NODES:
        assert states.get(node, [])[:1] == ["COMPLETE"], (node, states.get(node))


def test_model_was_pushed(bundled_run):
    from pipeline.metadata import pushed_model_uris

    pushed = pushed_model_uris(os.path.join(bundled_run["out"], "metadata.sqlite"))
    assert len(pushed) >= 1
    assert os.path.exists(os.path.join(pushed[0], "saved_model.pb"))


def test_summary_names_results(bundled_run):
    output = bundled_run["first"].stdout
    assert "| train |" in output
    assert "| eval |" in output
    assert "Decision: PASS" in output
    assert "Recall@10" in output
    assert "model pushed to:" in output


def test_rerun_is_cached(bundled_run):
    from pipeline.metadata import executions_by_node

    result = bundled_run["second"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"cached: {len(NODES)} of {len(NODES)} components" in result.stdout
    states = executions_by_node(os.path.join(bundled_run["out"], "metadata.sqlite"))
    for node in NODES:
        assert states[node][-1] == "CACHED", (node, states[node])


def test_model_beats_popularity(bundled_run):
    metrics = _metrics(bundled_run["out"])
    assert metrics["recall_at_10"] > metrics["popularity_recall_at_10"], metrics


def test_training_had_no_bad_steps(bundled_run):
    metrics = _metrics(bundled_run["out"])
    assert metrics["skipped_steps"] == 0
    assert math.isfinite(metrics["final_train_loss"])


def _raw_examples(rows):
    import tensorflow as tf

    serialized = []
    for row in rows:
        feature = {}
        for name, value in row.items():
            if isinstance(value, float):
                feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            else:
                feature[name] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[value.encode()])
                )
        serialized.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    return serialized


def _data_rows(limit):
    import csv

    path = os.path.join(BUNDLED, "2010-12-20.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    result = []
    for row in rows:
        parsed = {
            "StockCode": row["StockCode"],
            "Country": row["Country"],
            "UnitPrice": float(row["UnitPrice"]),
        }
        if row["CustomerID"]:
            parsed["CustomerID"] = row["CustomerID"]
        result.append(parsed)
    return result


def test_pushed_model_scores_raw_rows(bundled_run):
    import tensorflow as tf

    from pipeline.metadata import pushed_model_uris

    model = tf.saved_model.load(
        pushed_model_uris(os.path.join(bundled_run["out"], "metadata.sqlite"))[-1]
    )
    rows = _data_rows(200)
    scores = model.signatures["serving_default"](examples=tf.constant(_raw_examples(rows)))
    values = scores["score"].numpy()
    assert values.shape == (200,)
    assert np.isfinite(values).all()


def test_pushed_model_scores_rows_with_gaps(bundled_run):
    import tensorflow as tf

    from pipeline.metadata import pushed_model_uris

    model = tf.saved_model.load(
        pushed_model_uris(os.path.join(bundled_run["out"], "metadata.sqlite"))[-1]
    )
    rows = [
        {"StockCode": "85123A"},
        {"StockCode": "85123A", "UnitPrice": float("nan"), "CustomerID": "17850.0"},
        {"StockCode": "NOT-AN-ITEM", "CustomerID": "no-such-user", "Country": "Atlantis"},
        {"StockCode": " 85123A ", "UnitPrice": float("inf"), "Country": ""},
        {"StockCode": "85123A", "UnitPrice": 1e30, "CustomerID": ""},
    ]
    scores = model.signatures["serving_default"](examples=tf.constant(_raw_examples(rows)))
    values = scores["score"].numpy()
    assert np.isfinite(values).all(), values


def test_top_k_signature(bundled_run):
    import tensorflow as tf

    from pipeline.metadata import pushed_model_uris

    model = tf.saved_model.load(
        pushed_model_uris(os.path.join(bundled_run["out"], "metadata.sqlite"))[-1]
    )
    result = model.signatures["top_k"](user_id=tf.constant(["17850.0", "", "unknown"]))
    assert result["item_ids"].shape == (3, 10)
    assert np.isfinite(result["scores"].numpy()).all()


@pytest.fixture(scope="module")
def blocked_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("blocked_data")
    for name in ("2010-12-01.csv", "2010-12-02.csv", "2010-12-03.csv"):
        shutil.copy(os.path.join(BUNDLED, name), data / name)
    # Every third UnitPrice of one day becomes text: far above the policy's
    # 1 % limit for unreadable values.
    path = data / "2010-12-02.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    price = header.index("UnitPrice")
    changed = 0
    for i in range(1, len(lines)):
        fields = lines[i].split(",")
        if len(fields) == len(header) and i % 3 == 0:
            fields[price] = "abc"
            lines[i] = ",".join(fields)
            changed += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = str(tmp_path_factory.mktemp("blocked") / "run")
    result = run_cli("run", "--data", str(data), "--out", out, "--steps", "50")
    return {"out": out, "result": result, "changed": changed}


def test_blocked_run_exits_nonzero(blocked_run):
    assert blocked_run["result"].returncode == 2, blocked_run["result"].stderr[-3000:]


def test_blocked_run_names_finding(blocked_run):
    stderr = blocked_run["result"].stderr
    assert "column UnitPrice" in stderr
    assert "unreadable" in stderr
    assert "report.html" in stderr


def test_blocked_count_matches_injected(blocked_run):
    with open(os.path.join(blocked_run["out"], "report", "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    counted = sum(
        entry["counts"]["unreadable"]
        for entry in report["features"]
        if entry["feature"] == "UnitPrice"
    )
    assert counted == blocked_run["changed"]


def test_blocked_run_skips_downstream(blocked_run):
    from pipeline.metadata import executions_by_node

    states = executions_by_node(os.path.join(blocked_run["out"], "metadata.sqlite"))
    for node in DOWNSTREAM_OF_GATE:
        assert states.get(node, []) == [], (node, states.get(node))
