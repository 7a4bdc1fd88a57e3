"""The TFX pipeline definition: one `create_pipeline()` for every runner."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from typing import Any

# The modules themselves, not tfx.v1, which also imports its Google Cloud
# extensions: importing tfx.v1 took 9.8 s and 0.84 GiB on the 2-core
# machine, importing only these modules 6.5 s and 0.71 GiB.
from tfx import components as tfx_components
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.orchestration import metadata as tfx_metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import pusher_pb2, trainer_pb2, transform_pb2

from components.anomaly_gate import AnomalyGate
from components.ingest import CsvIngestGen
from components.post_transform_gate import PostTransformGate
from components.statistics_gen import BatchedStatisticsGen
from components.transform_executor import BatchedTransform
from pipeline.dataset import Description

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPONENTS_DIR = os.path.join(PACKAGE_ROOT, "components")
TRANSFORM_MODULE = os.path.join(COMPONENTS_DIR, "transform_module.py")
TRAINER_MODULE = os.path.join(COMPONENTS_DIR, "trainer_module.py")
# The same user code by import path, for images that have recguard installed.
PREPROCESSING_FN = "components.transform_module.preprocessing_fn"
RUN_FN = "components.trainer_module.run_fn"
DEFAULT_SCHEMA = os.path.join(PACKAGE_ROOT, "schema", "schema.pbtxt")

# Node ids, in execution order; the CLI's summary and the tests use them.
NODE_IDS = (
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
STOP_AFTER_GATE = NODE_IDS[: NODE_IDS.index("AnomalyGate") + 1]
# Only these nodes run a Beam pipeline, so only they take Beam arguments.
BEAM_NODE_IDS = ("ExampleGen", "StatisticsGen", "Transform")


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_dir: str,
    description: Description,
    schema_path: str = DEFAULT_SCHEMA,
    serving_model_dir: str,
    metadata_path: str,
    report_dir: str = "",
    train_steps: int = 1000,
    beam_pipeline_args: list[str] | None = None,
    component_beam_args: dict[str, list[str]] | None = None,
    guard: dict[str, Any] | None = None,
    stop_after_gate: bool = False,
    enable_cache: bool = True,
    metadata_connection_config=None,
    package_user_modules: bool = True,
) -> tfx_pipeline.Pipeline:
    """Builds the pipeline.

    Args:
        pipeline_name: name in the metadata store.
        pipeline_root: folder for every component's artifacts.
        data_dir: folder with the CSV files.
        description: the dataset description.
        schema_path: the curated schema (the data contract).
        serving_model_dir: where Pusher copies the model.
        metadata_path: SQLite file of the ML Metadata store; ignored when
            `metadata_connection_config` is given.
        report_dir: extra folder where the gate writes its report.
        train_steps: training steps of the guarded loop.
        beam_pipeline_args: Beam arguments for every Beam-based component
            (ExampleGen, StatisticsGen, Transform).
        component_beam_args: per node id, arguments that TFX appends to
            `beam_pipeline_args` for that node only, so a flag given here
            overrides the pipeline-wide one.
        guard: `GuardConfig` fields for the Trainer's loop.
        stop_after_gate: build only the nodes up to the anomaly gate.
        enable_cache: reuse results of unchanged inputs (TFX caching).
        metadata_connection_config: a metadata store connection (for
            orchestrators that bring their own, such as Vertex AI).
        package_user_modules: pass the Transform and Trainer code as module
            files, which TFX packages into its user-module wheel under
            ``pipeline_root/_wheels`` and ships to Beam workers with
            ``--extra_package``; remote workers need that. False passes them
            by import path (`PREPROCESSING_FN`, `RUN_FN`) instead, for a
            local run or an image that has recguard installed: no wheel is
            built or installed then. Either way every recguard component and
            the Transform and Trainer custom config carry
            `user_code_version()`, so a change to `components/` invalidates
            their cached results.

    Raises:
        ValueError: when `component_beam_args` names a node that does not
            run Beam.
    """
    description_dict = description.to_dict()
    description_dict["data_dir"] = data_dir
    description_json = json.dumps(description_dict, sort_keys=True)

    # A digest of components/ in every recguard component's parameters, so a
    # code change reruns them instead of reusing cached results.
    code_version = user_code_version()
    example_gen = CsvIngestGen(
        input_base=data_dir, description=description_dict, code_version=code_version
    )
    example_gen = example_gen.with_id("ExampleGen")
    # Exact top-k and unique counts. The sketch-based ones cost about 3.5 s
    # less on the Online Retail year (bench/bench_statistics.py), but their
    # result depends on the order in which Beam merges partial results, so
    # the statistics would differ between runners. The executor reads each
    # examples file in batches, which saved 5 s of the stock reading on the
    # year (components/statistics_gen.py).
    statistics_gen = BatchedStatisticsGen(
        examples=example_gen.outputs["examples"]
    ).with_id("StatisticsGen")
    # SchemaGen's inferred schema is kept for comparison with the contract;
    # validation uses the curated schema only.
    schema_gen = tfx_components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
    )
    import_schema = ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx_components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=import_schema.outputs["schema"],
    )
    gate = AnomalyGate(
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        anomalies=example_validator.outputs["anomalies"],
        contract=import_schema.outputs["schema"],
        description_json=description_json,
        report_dir=report_dir,
        code_version=code_version,
    )
    nodes = [example_gen, statistics_gen, schema_gen, import_schema, example_validator, gate]

    if not stop_after_gate:
        if package_user_modules:
            transform_code = {"module_file": TRANSFORM_MODULE}
            trainer_code = {"module_file": TRAINER_MODULE}
        else:
            transform_code = {"preprocessing_fn": PREPROCESSING_FN}
            trainer_code = {"run_fn": RUN_FN}
        # TFX's Transform, reading the examples in batches
        # (components/transform_executor.py).
        transform = BatchedTransform(
            examples=example_gen.outputs["examples"],
            schema=gate.outputs["schema"],
            **transform_code,
            splits_config=transform_pb2.SplitsConfig(
                analyze=["train"], transform=["train", "eval"]
            ),
            custom_config={"description": description_dict, "code_version": code_version},
            # Transform's own pre- and post-transform statistics cost two more
            # passes over the data and check nothing the pipeline acts on:
            # PostTransformGate counts non-finite outputs in every split.
            disable_statistics=True,
        ).with_id("Transform")
        post_gate = PostTransformGate(
            transformed_examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            report_dir=report_dir,
            code_version=code_version,
        )
        trainer = tfx_components.Trainer(
            **trainer_code,
            examples=post_gate.outputs["checked_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=gate.outputs["schema"],
            train_args=trainer_pb2.TrainArgs(num_steps=train_steps),
            eval_args=trainer_pb2.EvalArgs(num_steps=1),
            custom_config={
                "description": description_dict,
                "guard": guard or {},
                "code_version": code_version,
            },
        )
        pusher = tfx_components.Pusher(
            model=trainer.outputs["model"],
            push_destination=pusher_pb2.PushDestination(
                filesystem=pusher_pb2.PushDestination.Filesystem(
                    base_directory=serving_model_dir
                )
            ),
        )
        nodes += [transform, post_gate, trainer, pusher]

    _add_component_beam_args(nodes, component_beam_args or {})

    if metadata_connection_config is None and metadata_path:
        metadata_connection_config = tfx_metadata.sqlite_metadata_connection_config(
            metadata_path
        )
    return tfx_pipeline.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=nodes,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []),
    )


def user_code_version() -> str:
    """Returns a digest of the Python files in `components/`.

    TFX keys its cache on the execution properties, not on the code of a
    custom component or of a function passed by import path. This digest,
    passed as a property, makes a code change rerun those components.
    """
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(COMPONENTS_DIR, "*.py"))):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _add_component_beam_args(nodes: list, component_beam_args: dict[str, list[str]]) -> None:
    """Gives each node listed in `component_beam_args` its own Beam arguments.

    TFX puts the pipeline-wide arguments in front of a node's own ones, so
    only the node's arguments are added here. A Beam node that is not built
    (Transform when `stop_after_gate` is set) is skipped.
    """
    by_id = {node.id: node for node in nodes}
    for node_id, args in component_beam_args.items():
        if node_id not in BEAM_NODE_IDS:
            raise ValueError(
                f"cannot set Beam arguments for node {node_id!r}: only "
                f"{', '.join(BEAM_NODE_IDS)} run Beam"
            )
        node = by_id.get(node_id)
        if node is not None:
            node.with_beam_pipeline_args(list(args))
