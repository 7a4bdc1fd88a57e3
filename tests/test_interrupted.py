"""A run killed while Transform executes, then the same command again.

The first `recguard run` gets SIGKILL (its whole process group) while
Transform runs. The same command then runs again in the same run directory,
and a third run of the command in a fresh directory is the reference.

LocalDagRunner (TFX 1.16) leaves the killed run's Transform execution in
state RUNNING forever: nothing marks it failed. It does not block the rerun,
because the launcher reuses an execution only when it belongs to the same
pipeline-run context, and every LocalDagRunner call starts a new one (its run
id is the start time). The rerun takes ExampleGen through AnomalyGate from the
cache and executes Transform again as a new execution.
"""

import glob
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline import robustness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLICE_FILES = ("2010-12-01.csv", "2010-12-02.csv")
STEPS = "30"
UPSTREAM_OF_TRANSFORM = (
    "ExampleGen",
    "ImportSchemaGen",
    "StatisticsGen",
    "ExampleValidator",
    "SchemaGen",
    "AnomalyGate",
)
# Limit for the first run to reach Transform.
START_TIMEOUT_SECONDS = 900
# Time inside Transform before the kill, so that its Beam job is under way.
# Transform took 75 to 90 s on three days of data on 2 shared cores, so the
# kill lands well before it finishes.
SECONDS_INSIDE_TRANSFORM = 3


def _command(data, out):
    return [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        STEPS,
    ]


def _read_lines(stream, lines: queue.Queue):
    for line in stream:
        lines.put(line)
    lines.put(None)


def _kill_during_transform(data, out):
    """Start a run, SIGKILL its process group inside Transform, return the log."""
    process = subprocess.Popen(
        _command(data, out),
        cwd=robustness.REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    output = []
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    transform_started = False
    try:
        while time.monotonic() < deadline and not transform_started:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            output.append(line)
            transform_started = "Transform" in line and "running" in line
        # The launcher creates the output folders before the executor starts.
        graph_dirs = os.path.join(out, "pipeline_root", "Transform", "transform_graph", "*")
        while transform_started and not glob.glob(graph_dirs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(SECONDS_INSIDE_TRANSFORM)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        reader.join(timeout=10)
    return {"started": transform_started, "output": "".join(output), "code": process.returncode}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pipeline.metadata import executions_by_node

    data = tmp_path_factory.mktemp("interrupted_data")
    for name in SLICE_FILES:
        shutil.copy(robustness.BUNDLED_DATA / name, data / name)
    out = tmp_path_factory.mktemp("interrupted") / "run"
    killed = _kill_during_transform(data, out)
    states_after_kill = executions_by_node(os.path.join(out, "metadata.sqlite"))
    rerun = robustness.run_command(_command(data, out), robustness.RUN_TIMEOUT_SECONDS)
    reference_out = tmp_path_factory.mktemp("uninterrupted") / "run"
    reference = robustness.run_command(
        _command(data, reference_out), robustness.RUN_TIMEOUT_SECONDS
    )
    return {
        "out": str(out),
        "killed": killed,
        "states_after_kill": states_after_kill,
        "rerun": rerun,
        "reference_out": str(reference_out),
        "reference": reference,
    }


def _states(out):
    from pipeline.metadata import executions_by_node

    return executions_by_node(os.path.join(out, "metadata.sqlite"))


def test_kill_hit_transform(runs):
    assert runs["killed"]["started"], runs["killed"]["output"][-2000:]
    assert runs["killed"]["code"] == -signal.SIGKILL
    assert runs["states_after_kill"].get("Transform") == ["RUNNING"]
    assert "PostTransformGate" not in runs["states_after_kill"]


def test_rerun_exits_zero(runs):
    assert runs["rerun"].returncode == 0, runs["rerun"].stderr[-3000:]


def test_reference_exits_zero(runs):
    assert runs["reference"].returncode == 0, runs["reference"].stderr[-3000:]


def test_rerun_finishes_every_node(runs):
    states = _states(runs["out"])
    for node in (*UPSTREAM_OF_TRANSFORM, *robustness.DOWNSTREAM_OF_GATE):
        assert states.get(node, [])[-1:] in (["COMPLETE"], ["CACHED"]), (node, states.get(node))


def test_rerun_reuses_upstream_results(runs):
    states = _states(runs["out"])
    for node in UPSTREAM_OF_TRANSFORM:
        assert states[node] == ["COMPLETE", "CACHED"], (node, states[node])


def test_orphan_stays_running(runs):
    # The killed execution keeps its RUNNING state; the rerun adds a new one.
    assert _states(runs["out"])["Transform"] == ["RUNNING", "COMPLETE"]


def test_only_orphan_running(runs):
    states = _states(runs["out"])
    running = [node for node, node_states in states.items() if "RUNNING" in node_states]
    assert running == ["Transform"]


def test_rerun_pushed_model(runs):
    from pipeline.metadata import pushed_model_uris

    assert len(pushed_model_uris(os.path.join(runs["out"], "metadata.sqlite"))) == 1


def _report_counts(out):
    report = robustness.load_report(out)
    features = {
        (entry["feature"], entry["split"]): (entry["counts"], entry["decision"])
        for entry in report["features"]
    }
    return report["splits"], report["malformed_rows"], features


def test_report_matches_reference(runs):
    assert _report_counts(runs["out"]) == _report_counts(runs["reference_out"])


def _post_transform_check(out):
    import json

    path = os.path.join(out, "report", "post_transform_check.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_post_transform_check_matches(runs):
    assert _post_transform_check(runs["out"]) == _post_transform_check(runs["reference_out"])


def _completed_transform_dir(out, name):
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.metadata import open_store

    # The orphan's folder is still there, so pick the folder of the output
    # artifact that the metadata store records as live.
    store = open_store(os.path.join(out, "metadata.sqlite"))
    live = [
        artifact.uri
        for artifact in store.get_artifacts()
        if f"/Transform/{name}/" in artifact.uri + "/"
        and artifact.state == metadata_store_pb2.Artifact.LIVE
    ]
    assert len(live) == 1, live
    return live[0]


def _transformed_columns(out, split):
    import tensorflow as tf

    folder = _completed_transform_dir(out, "transformed_examples")
    files = glob.glob(os.path.join(folder, f"Split-{split}", "*"))
    columns: dict[str, list] = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        for name, feature in example.features.feature.items():
            values = feature.float_list.value or feature.int64_list.value
            columns.setdefault(name, []).append(values[0] if len(values) else None)
    return {name: sorted(values) for name, values in columns.items()}


@pytest.mark.parametrize("split", ["train", "eval"])
def test_transformed_rows_match(runs, split):
    rerun = _transformed_columns(runs["out"], split)
    reference = _transformed_columns(runs["reference_out"], split)
    assert sorted(rerun) == sorted(reference)
    for name in reference:
        assert len(rerun[name]) == len(reference[name]), name
        # Float sums in the analyzers may differ in the last bit between runs.
        np.testing.assert_allclose(rerun[name], reference[name], rtol=1e-6, err_msg=name)


def test_vocabularies_match(runs):
    def vocabularies(out):
        folder = _completed_transform_dir(out, "transform_graph")
        paths = sorted(glob.glob(os.path.join(folder, "transform_fn", "assets", "*")))
        return {os.path.basename(p): open(p, "rb").read() for p in paths}

    assert vocabularies(runs["out"]) == vocabularies(runs["reference_out"])
