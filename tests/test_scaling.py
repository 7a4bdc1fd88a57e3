"""Scale-out by configuration: Beam presets and per-component arguments, the
Vertex AI spec, TFX's user-module wheel, and the multi-process DirectRunner.

The e2e tests run `recguard run` twice on the same two days of real data,
once on the in-process DirectRunner and once on the multi-process one, and
compare what the Beam stages wrote.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from pipeline import beam_config
from stats_match import assert_feature_stats_match, read_stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(REPO, "data", "online_retail_2010_12")
SLICE_FILES = ("2010-12-01.csv", "2010-12-02.csv")
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
BEAM_NODES = ("ExampleGen", "StatisticsGen", "Transform")


def run_cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Beam presets.


def test_local_preset_runs_in_process():
    assert beam_config.beam_args("local")[:2] == [
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
    ]


@pytest.mark.parametrize("preset", beam_config.LOCAL_PRESETS)
def test_local_preset_skips_tfx_package(preset, monkeypatch):
    from tfx.utils import dependency_utils

    def build():
        raise AssertionError("TFX built its sdist for a local preset")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", build)
    args = beam_config.beam_args(preset, workers=2)
    image = [a for a in args if a.startswith("--sdk_container_image=")]

    # TFX's check finds the image and returns the arguments unchanged.
    assert dependency_utils.make_beam_dependency_flags(args) == args
    assert image == [f"--sdk_container_image={_beam_default_image()}"]


def _beam_default_image() -> str:
    from apache_beam.transforms import environments

    return environments.DockerEnvironment.default_docker_image()


def test_multiprocess_preset_sets_workers():
    args = beam_config.beam_args("multiprocess", workers=3)
    assert "--direct_running_mode=multi_processing" in args
    assert "--direct_num_workers=3" in args


def test_extra_args_follow_preset():
    args = beam_config.beam_args("multiprocess", ["--direct_num_workers=2"], workers=4)
    # Beam's argument parser keeps the last value of a repeated flag.
    assert args[-1] == "--direct_num_workers=2"
    assert args.index("--direct_num_workers=4") < args.index("--direct_num_workers=2")


def test_unknown_preset_rejected():
    with pytest.raises(beam_config.BeamConfigError, match="unknown Beam preset 'yarn'"):
        beam_config.beam_args("yarn")


@pytest.mark.parametrize(
    "preset, flags",
    [
        ("flink", ["--flink_master=localhost:8081"]),
        ("spark", ["--spark_master_url=spark://localhost:7077"]),
        (
            "dataflow",
            ["--project=p", "--region=europe-west1", "--temp_location=gs://b/tmp"],
        ),
    ],
)
def test_cluster_preset_needs_address(preset, flags):
    with pytest.raises(beam_config.BeamConfigError, match=flags[0].split("=")[0]):
        beam_config.beam_args(preset)
    args = beam_config.beam_args(preset, flags)
    assert args[-len(flags) :] == flags
    # Cluster workers get TFX from the package TFX builds, or from the
    # user's own dependency flags.
    assert not [a for a in args if a.startswith("--sdk_container_image")]


def test_cluster_preset_accepts_split_flag():
    args = beam_config.beam_args("flink", ["--flink_master", "localhost:8081"])
    assert args[-2:] == ["--flink_master", "localhost:8081"]


# Beam arguments in create_pipeline().


@pytest.fixture(scope="module")
def description():
    from pipeline.dataset import DEFAULT_PATH, load_description

    return load_description(DEFAULT_PATH)


def _build(description, tmp_path, **kwargs):
    from pipeline import pipeline as pipeline_module

    return pipeline_module.create_pipeline(
        pipeline_name="scaling-test",
        pipeline_root=str(tmp_path / "root"),
        data_dir=BUNDLED,
        description=description,
        serving_model_dir=str(tmp_path / "serving"),
        metadata_path="",
        **kwargs,
    )


def _beam_args_by_node(built) -> dict[str, list[str] | None]:
    return {
        node.id: getattr(node.executor_spec, "beam_pipeline_args", None)
        for node in built.components
    }


def test_beam_node_ids_match_executors(description, tmp_path):
    from pipeline import pipeline as pipeline_module

    built = _build(description, tmp_path)
    beam_nodes = [
        node_id for node_id, args in _beam_args_by_node(built).items() if args is not None
    ]
    assert sorted(beam_nodes) == sorted(pipeline_module.BEAM_NODE_IDS)
    assert sorted(beam_nodes) == sorted(BEAM_NODES)


def test_pipeline_args_reach_beam_nodes(description, tmp_path):
    flags = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    built = _build(description, tmp_path, beam_pipeline_args=flags)
    by_node = _beam_args_by_node(built)
    for node_id in BEAM_NODES:
        assert by_node[node_id] == flags, node_id


def test_component_override_appended_once(description, tmp_path):
    flags = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    built = _build(
        description,
        tmp_path,
        beam_pipeline_args=flags,
        component_beam_args={"Transform": ["--direct_num_workers=1"]},
    )
    by_node = _beam_args_by_node(built)
    assert by_node["Transform"] == flags + ["--direct_num_workers=1"]
    assert by_node["StatisticsGen"] == flags
    assert by_node["ExampleGen"] == flags


def test_override_for_unbuilt_node_skipped(description, tmp_path):
    built = _build(
        description,
        tmp_path,
        stop_after_gate=True,
        component_beam_args={"Transform": ["--direct_num_workers=1"]},
    )
    assert "Transform" not in _beam_args_by_node(built)


@pytest.mark.parametrize("node_id", ["Trainer", "AnomalyGate", "Transfrom"])
def test_override_for_non_beam_node_rejected(description, tmp_path, node_id):
    with pytest.raises(ValueError, match=f"node '{node_id}'"):
        _build(description, tmp_path, component_beam_args={node_id: ["--x=1"]})


def test_module_files_by_default(description, tmp_path):
    from pipeline import pipeline as pipeline_module

    nodes = {node.id: node for node in _build(description, tmp_path).components}
    transform = nodes["Transform"].exec_properties
    trainer = nodes["Trainer"].exec_properties
    assert transform["module_file"] == pipeline_module.TRANSFORM_MODULE
    assert trainer["module_file"] == pipeline_module.TRAINER_MODULE


def test_import_path_user_code(description, tmp_path):
    from pipeline import pipeline as pipeline_module

    built = _build(description, tmp_path, package_user_modules=False)
    nodes = {node.id: node for node in built.components}
    transform = nodes["Transform"].exec_properties
    trainer = nodes["Trainer"].exec_properties
    assert transform["preprocessing_fn"] == pipeline_module.PREPROCESSING_FN
    assert not transform.get("module_file")
    assert trainer["run_fn"] == pipeline_module.RUN_FN
    assert not trainer.get("module_file")
    # Runners resolve pip dependencies before they compile; for import paths
    # that builds no user-module wheel.
    root = tmp_path / "root"
    for node_id in ("Transform", "Trainer"):
        nodes[node_id]._resolve_pip_dependencies(str(root))  # noqa: SLF001
        assert not nodes[node_id].exec_properties.get("module_path"), node_id
    assert not (root / "_wheels").exists()


def _custom_config(node) -> dict:
    return json.loads(node.exec_properties["custom_config"])


def test_code_version_in_every_node(description, tmp_path):
    from pipeline import pipeline as pipeline_module

    version = pipeline_module.user_code_version()
    for package in (True, False):
        nodes = {
            node.id: node
            for node in _build(
                description, tmp_path, package_user_modules=package
            ).components
        }
        for node_id in ("Transform", "Trainer"):
            assert _custom_config(nodes[node_id])["code_version"] == version, node_id
        for node_id in ("ExampleGen", "AnomalyGate", "PostTransformGate"):
            assert nodes[node_id].exec_properties["code_version"] == version, node_id


def test_code_version_follows_code(tmp_path, monkeypatch):
    from pipeline import pipeline as pipeline_module

    copy = tmp_path / "components"
    shutil.copytree(pipeline_module.COMPONENTS_DIR, copy)
    monkeypatch.setattr(pipeline_module, "COMPONENTS_DIR", str(copy))
    before = pipeline_module.user_code_version()
    assert pipeline_module.user_code_version() == before
    module = copy / "transform_module.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert pipeline_module.user_code_version() != before


@pytest.mark.parametrize(
    ("preset", "extra", "packaged"),
    [
        ("local", [], False),
        ("multiprocess", [], False),
        ("flink", ["--beam-arg=--flink_master=localhost:8081"], True),
        (
            "dataflow",
            [
                "--beam-arg=--project=p",
                "--beam-arg=--region=r",
                "--beam-arg=--temp_location=gs://b/t",
            ],
            True,
        ),
    ],
)
def test_cli_packages_remote_presets(
    tmp_path, monkeypatch, preset, extra, packaged
):
    from pipeline import cli, runner

    seen = {}

    class Stop(Exception):
        pass

    def fake_run(**kwargs):
        seen.update(kwargs)
        raise Stop("stopped before the pipeline ran")

    monkeypatch.setattr(runner, "run", fake_run)
    code = cli.main(
        ["validate", "--out", str(tmp_path / "out"), "--beam-preset", preset, *extra]
    )
    assert code == cli.EXIT_FAILED
    assert seen["package_user_modules"] is packaged


def test_import_paths_resolve():
    import importlib

    from pipeline import pipeline as pipeline_module

    for path in (pipeline_module.PREPROCESSING_FN, pipeline_module.RUN_FN):
        module_name, function_name = path.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module_name), function_name)), path


# Vertex AI pipeline spec.

VERTEX_BEAM_ARGS = (
    "--runner=DataflowRunner",
    "--project=recguard-test",
    "--region=europe-west1",
    "--temp_location=gs://recguard-test/tmp",
)


@pytest.fixture(scope="module")
def vertex_compile(tmp_path_factory):
    out = tmp_path_factory.mktemp("vertex") / "recguard_vertex.json"
    result = run_cli(
        "compile",
        "--target",
        "vertex",
        "--out",
        str(out),
        "--pipeline-root",
        "gs://recguard-test/root",
        "--data",
        "gs://recguard-test/data",
        *(f"--beam-arg={flag}" for flag in VERTEX_BEAM_ARGS),
    )
    spec = None
    if result.returncode == 0:
        with open(out, encoding="utf-8") as f:
            spec = json.load(f)
    return {"result": result, "spec": spec}


@pytest.fixture(scope="module")
def vertex_spec(vertex_compile):
    result = vertex_compile["result"]
    if result.returncode != 0:
        pytest.fail(f"recguard compile failed:\n{result.stderr[-3000:]}")
    return vertex_compile["spec"]["pipelineSpec"]


def test_vertex_compile_exits_zero(vertex_compile):
    result = vertex_compile["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote the Vertex AI pipeline spec" in result.stdout


def test_vertex_spec_has_every_component(vertex_spec):
    tasks = vertex_spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(NODES)
    executors = vertex_spec["deploymentSpec"]["executors"]
    for node in NODES:
        assert f"{node}_executor" in executors, node


def test_vertex_spec_gate_edges(vertex_spec):
    tasks = vertex_spec["root"]["dag"]["tasks"]
    gate_inputs = set(tasks["AnomalyGate"]["dependentTasks"])
    assert gate_inputs == {"ExampleGen", "StatisticsGen", "ExampleValidator", "ImportSchemaGen"}
    # Everything after the gate reads the gate's schema, so nothing trains
    # or pushes unless the gate passed.
    assert "AnomalyGate" in tasks["Transform"]["dependentTasks"]
    assert "AnomalyGate" in tasks["Trainer"]["dependentTasks"]
    assert "Transform" in tasks["PostTransformGate"]["dependentTasks"]
    assert "PostTransformGate" in tasks["Trainer"]["dependentTasks"]
    assert tasks["Pusher"]["dependentTasks"] == ["Trainer"]


def test_vertex_spec_beam_args(vertex_spec):
    executors = vertex_spec["deploymentSpec"]["executors"]
    for node in BEAM_NODES:
        args = executors[f"{node}_executor"]["container"]["args"]
        assert args[-len(VERTEX_BEAM_ARGS) :] == list(VERTEX_BEAM_ARGS), node


def test_vertex_spec_user_code_by_import_path(vertex_spec):
    from pipeline import pipeline as pipeline_module

    tasks = vertex_spec["root"]["dag"]["tasks"]
    transform = tasks["Transform"]["inputs"]["parameters"]
    trainer = tasks["Trainer"]["inputs"]["parameters"]
    def constant(parameter):
        return parameter["runtimeValue"]["constantValue"]["stringValue"]

    assert constant(transform["preprocessing_fn"]) == pipeline_module.PREPROCESSING_FN
    assert constant(trainer["run_fn"]) == pipeline_module.RUN_FN
    assert "module_path" not in transform
    assert "module_path" not in trainer


def test_compile_vertex_options(description, tmp_path):
    from pipeline import vertex

    out = tmp_path / "spec.json"
    vertex.compile_vertex(
        description,
        out_file=str(out),
        pipeline_root="gs://recguard-test/root",
        data_dir="gs://recguard-test/data",
        beam_pipeline_args=list(VERTEX_BEAM_ARGS),
        component_beam_args={"Transform": ["--machine_type=n1-highmem-8"]},
        schema_path="gs://recguard-test/schema.pbtxt",
    )
    with open(out, encoding="utf-8") as f:
        spec = json.load(f)["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"]
    transform_args = executors["Transform_executor"]["container"]["args"]
    statistics_args = executors["StatisticsGen_executor"]["container"]["args"]
    assert transform_args[-5:] == list(VERTEX_BEAM_ARGS) + ["--machine_type=n1-highmem-8"]
    assert "--machine_type=n1-highmem-8" not in statistics_args
    schema_file = spec["root"]["dag"]["tasks"]["ImportSchemaGen"]["inputs"]["parameters"][
        "schema_file"
    ]
    assert schema_file["runtimeValue"]["constantValue"]["stringValue"] == (
        "gs://recguard-test/schema.pbtxt"
    )


# TFX's user-module wheel, as Beam workers receive it.

_IMPORT_FROM_WHEEL = """
import importlib
import importlib.util
import json
import sys

wheel, site_packages, module_name, function_name = sys.argv[1:5]
sys.path.insert(0, wheel)
sys.path.append(site_packages)
result = {
    "components_found": importlib.util.find_spec("components") is not None,
    "pipeline_found": importlib.util.find_spec("pipeline") is not None,
}
module = importlib.import_module(module_name)
result["module_file"] = module.__file__
result["callable"] = callable(getattr(module, function_name, None))
result["loaded"] = {
    name: getattr(sys.modules[name], "__file__", "")
    for name in ("guarded_loop", "transform_module", "trainer_module")
    if name in sys.modules
}
print(json.dumps(result))
"""


@pytest.fixture
def wheel_build_dir(monkeypatch):
    """Points `tempfile` and TMPDIR at a folder that is removed after the test.

    TFX's `package_user_module_file` (tfx 1.16) builds each wheel in three
    `tempfile.mkdtemp()` folders and leaves them behind, the wheel included.
    """
    with tempfile.TemporaryDirectory(prefix="recguard-wheel-build-") as folder:
        monkeypatch.setattr(tempfile, "tempdir", folder)
        monkeypatch.setenv("TMPDIR", folder)
        yield Path(folder)


@pytest.mark.parametrize(
    "component, module_name, function_name",
    [
        ("Transform", "transform_module", "preprocessing_fn"),
        ("Trainer", "trainer_module", "run_fn"),
    ],
)
def test_user_module_wheel_imports(
    tmp_path, wheel_build_dir, component, module_name, function_name
):
    from tfx.components.util import udf_utils

    from pipeline import pipeline as pipeline_module

    module_file = os.path.join(pipeline_module.COMPONENTS_DIR, f"{module_name}.py")
    wheel, user_module_path = udf_utils.package_user_module_file(
        component, module_file, str(tmp_path / "root")
    )
    assert user_module_path == f"{module_name}@{wheel}"
    # The build's copy of the wheel is in the folder that the fixture removes.
    assert list(wheel_build_dir.glob("*/tfx_user_code_*.whl")), "wheel built elsewhere"

    # -I ignores PYTHONPATH and the user site, and -S skips the site module,
    # so the .pth file of the editable recguard install is not read. The
    # subprocess imports only from the wheel and the installed third-party
    # packages.
    site_packages = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _IMPORT_FROM_WHEEL,
            wheel,
            site_packages,
            module_name,
            function_name,
        ],
        cwd=str(tmp_path),
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["components_found"], "the recguard package leaked onto sys.path"
    assert not report["pipeline_found"], "the recguard package leaked onto sys.path"
    assert report["module_file"].startswith(wheel), report["module_file"]
    assert report["callable"], f"{module_name}.{function_name} is missing"
    for name, path in report["loaded"].items():
        assert path.startswith(wheel), (name, path)
    if module_name == "trainer_module":
        assert "guarded_loop" in report["loaded"]


# Dask runner adapter (runs only where dask.distributed is installed).


def test_dask_runner_passes_only_dask_options():
    pytest.importorskip("distributed")
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from pipeline.dask_runner import dask_only_options

    options = PipelineOptions(
        [
            "--runner=pipeline.dask_runner.DaskRunner",
            "--dask_client_address=tcp://127.0.0.1:8786",
            "--dask_connection_timeout=30",
            "--extra_package=/tmp/tfx_user_code.whl",
            "--labels=team=recs",
        ]
    )
    passed = dask_only_options(options).view_as(DaskOptions).get_all_options(drop_default=True)
    assert passed == {"address": "tcp://127.0.0.1:8786", "timeout": 30}


# Multi-process DirectRunner against the in-process one, end to end.

MULTIPROCESS_WORKERS = 2
# A Beam SDK worker process logs this line when it stops. The in-process
# DirectRunner starts no such process.
SDK_WORKER_EXIT = 'message: "Python sdk harness exiting."'


@pytest.fixture(scope="module")
def paired_runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("slice")
    for name in SLICE_FILES:
        shutil.copy(os.path.join(BUNDLED, name), data / name)
    base = tmp_path_factory.mktemp("paired")
    modes = {
        "local": ["--beam-preset", "local"],
        "multiprocess": [
            "--beam-preset",
            "multiprocess",
            f"--beam-arg=--direct_num_workers={MULTIPROCESS_WORKERS}",
        ],
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    # Both runs start together to shorten the test, because the in-process run
    # keeps about one core busy. Their output goes to files, because two runs
    # writing to pipes that are read one after the other could block.
    started = {}
    runs = {}
    try:
        for mode, flags in modes.items():
            with open(base / f"{mode}.stdout", "w", encoding="utf-8") as stdout, open(
                base / f"{mode}.stderr", "w", encoding="utf-8"
            ) as stderr:
                started[mode] = subprocess.Popen(
                    [sys.executable, "-m", "pipeline.cli", "run", "--data", str(data)]
                    + ["--out", str(base / mode), "--steps", "5", *flags],
                    cwd=REPO,
                    env=env,
                    stdout=stdout,
                    stderr=stderr,
                )

        for mode, process in started.items():
            runs[mode] = {
                "out": str(base / mode),
                "returncode": process.wait(timeout=900),
                "stderr": (base / f"{mode}.stderr").read_text(encoding="utf-8"),
            }
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
    return runs


def _artifact_files(out: str, pattern: str) -> dict[str, str]:
    """Maps each path below the node's execution folder to its full path."""
    root = os.path.join(out, "pipeline_root")
    result = {}
    for path in sorted(glob.glob(os.path.join(root, pattern))):
        relative = os.path.relpath(path, root).split(os.sep)
        # Drop the execution id (the third part), which differs between runs.
        result["/".join(relative[:2] + relative[3:])] = path
    return result


def _paired_files(runs, pattern: str) -> list[tuple[str, str, str]]:
    local = _artifact_files(runs["local"]["out"], pattern)
    multi = _artifact_files(runs["multiprocess"]["out"], pattern)
    assert local, f"no files match {pattern} in the in-process run"
    assert sorted(local) == sorted(multi), pattern
    return [(key, local[key], multi[key]) for key in sorted(local)]


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["local", "multiprocess"])
def test_paired_run_exits_zero(paired_runs, mode):
    run = paired_runs[mode]
    assert run["returncode"] == 0, run["stderr"][-3000:]


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["local", "multiprocess"])
def test_paired_run_completes_every_node(paired_runs, mode):
    from pipeline.metadata import executions_by_node

    states = executions_by_node(os.path.join(paired_runs[mode]["out"], "metadata.sqlite"))
    for node in NODES:
        assert states.get(node) == ["COMPLETE"], (node, states.get(node))


@pytest.mark.e2e
def test_multiprocess_run_used_worker_processes(paired_runs):
    def worker_exits(mode):
        with open(os.path.join(paired_runs[mode]["out"], "logs", "run.log"), encoding="utf-8") as f:
            return f.read().count(SDK_WORKER_EXIT)

    # Each worker process of each Beam node logs one exit line. A line is lost
    # when a worker stops before its log is sent, so fewer are required.
    assert worker_exits("multiprocess") >= MULTIPROCESS_WORKERS
    assert worker_exits("local") == 0


@pytest.mark.e2e
def test_multiprocess_statistics_match(paired_runs):
    pairs = _paired_files(paired_runs, "StatisticsGen/statistics/*/Split-*/FeatureStats.pb")
    assert {key.split("/")[-2] for key, _, _ in pairs} == {"Split-train", "Split-eval"}
    for key, local_path, multi_path in pairs:
        local = read_stats(local_path)
        multi = read_stats(multi_path)
        assert len(local.datasets) == len(multi.datasets) == 1, key
        a, b = local.datasets[0], multi.datasets[0]
        assert a.num_examples == b.num_examples, key
        assert a.num_examples > 0, key
        local_features = {tuple(f.path.step): f for f in a.features}
        multi_features = {tuple(f.path.step): f for f in b.features}
        assert sorted(local_features) == sorted(multi_features), key
        for path, feature in local_features.items():
            assert_feature_stats_match(f"{key} {'.'.join(path)}", feature, multi_features[path])


@pytest.mark.e2e
def test_multiprocess_anomalies_match(paired_runs):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    pairs = _paired_files(paired_runs, "ExampleValidator/anomalies/*/Split-*/SchemaDiff.pb")
    assert {key.split("/")[-2] for key, _, _ in pairs} == {"Split-train", "Split-eval"}
    for key, local_path, multi_path in pairs:
        local = anomalies_pb2.Anomalies()
        multi = anomalies_pb2.Anomalies()
        with open(local_path, "rb") as f:
            local.ParseFromString(f.read())
        with open(multi_path, "rb") as f:
            multi.ParseFromString(f.read())
        assert sorted(local.anomaly_info) == sorted(multi.anomaly_info), key
        assert local == multi, key


def _float_key(value: float) -> tuple[bool, float]:
    # NaN equals nothing, itself included, so it gets a key of its own.
    return (True, 0.0) if math.isnan(value) else (False, value)


def _read_rows(split_dir: str) -> list[tuple]:
    """Returns the examples of one split as sorted tuples of (name, kind, values).

    Float values become `_float_key` pairs, so rows with NaN sort and compare.
    """
    import tensorflow as tf

    rows = []
    for path in sorted(glob.glob(os.path.join(split_dir, "*.gz"))):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            row = []
            for name in sorted(example.features.feature):
                feature = example.features.feature[name]
                kind = feature.WhichOneof("kind")
                values = getattr(feature, kind).value
                if kind == "float_list":
                    values = [_float_key(v) for v in values]
                row.append((name, kind, tuple(values)))
            rows.append(tuple(row))
    rows.sort()
    return rows


@pytest.mark.e2e
def test_multiprocess_examples_match(paired_runs):
    pairs = _paired_files(paired_runs, "ExampleGen/examples/*/Split-*")
    for key, local_dir, multi_dir in pairs:
        local = _read_rows(local_dir)
        assert local, key
        assert local == _read_rows(multi_dir), key


@pytest.mark.e2e
def test_multiprocess_vocabularies_match(paired_runs):
    pairs = _paired_files(paired_runs, "Transform/transform_graph/*/transform_fn/assets/*")
    for key, local_path, multi_path in pairs:
        with open(local_path, "rb") as a, open(multi_path, "rb") as b:
            assert a.read() == b.read(), key


# Transformed floats may differ by a few float32 steps between the runs,
# because TensorFlow's vectorized kernels (log1p here) can round a value
# differently depending on its position in the batch, and the mean behind
# interaction_weight is summed in another order. Every other value is exact.
FLOAT_REL_TOL = 1e-6
FLOAT_ABS_TOL = 1e-6


def _split_row(row: tuple) -> tuple[tuple, tuple]:
    """Splits a row into its exact part and its flat float vector."""
    exact = []
    floats = []
    for name, kind, values in row:
        if kind == "float_list":
            exact.append((name, kind, tuple(is_nan for is_nan, _ in values)))
            floats.extend(value for _, value in values)
        else:
            exact.append((name, kind, values))
    return tuple(exact), tuple(floats)


def _floats_close(a: tuple, b: tuple) -> bool:
    return all(
        math.isclose(x, y, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL) for x, y in zip(a, b)
    )


def _unmatched_rows(local: list[tuple], multi: list[tuple]) -> list[tuple]:
    """Returns the rows of `local` that have no partner in `multi`.

    Partners have equal ids, indices and missing flags, and floats within the
    tolerance. Each row of `multi` is used once.
    """
    groups: dict[tuple, list[tuple]] = {}
    for row in multi:
        exact, floats = _split_row(row)
        groups.setdefault(exact, []).append(floats)
    unmatched = []
    for row in local:
        exact, floats = _split_row(row)
        candidates = groups.get(exact, [])
        match = next((i for i, other in enumerate(candidates) if _floats_close(floats, other)), None)
        if match is None:
            unmatched.append(row)
        else:
            candidates.pop(match)
    return unmatched


@pytest.mark.e2e
def test_multiprocess_transformed_data_match(paired_runs):
    pairs = _paired_files(paired_runs, "Transform/transformed_examples/*/Split-*")
    assert {key.split("/")[-1] for key, _, _ in pairs} == {"Split-train", "Split-eval"}
    for key, local_dir, multi_dir in pairs:
        local = _read_rows(local_dir)
        multi = _read_rows(multi_dir)
        assert local, key
        assert len(local) == len(multi), key
        unmatched = _unmatched_rows(local, multi)
        assert unmatched == [], (key, len(unmatched), unmatched[:2])
