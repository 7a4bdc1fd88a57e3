"""The TFX pipeline definition: one `create_pipeline()` for every runner."""

from __future__ import annotations

import json
import os
from typing import Any

from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.ingest import CsvIngestGen
from components.post_transform_gate import PostTransformGate
from pipeline.dataset import Description

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPONENTS_DIR = os.path.join(PACKAGE_ROOT, "components")
TRANSFORM_MODULE = os.path.join(COMPONENTS_DIR, "transform_module.py")
TRAINER_MODULE = os.path.join(COMPONENTS_DIR, "trainer_module.py")
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
) -> tfx.dsl.Pipeline:
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
        beam_pipeline_args: Beam arguments for every Beam-based component.
        component_beam_args: per node id, arguments appended to those.
        guard: `GuardConfig` fields for the Trainer's loop.
        stop_after_gate: build only the nodes up to the anomaly gate.
        enable_cache: reuse results of unchanged inputs (TFX caching).
        metadata_connection_config: a metadata store connection (for
            orchestrators that bring their own, such as Vertex AI).
    """
    description_dict = description.to_dict()
    description_dict["data_dir"] = data_dir
    description_json = json.dumps(description_dict, sort_keys=True)

    example_gen = CsvIngestGen(input_base=data_dir, description=description_dict)
    example_gen = example_gen.with_id("ExampleGen")
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    )
    # SchemaGen's inferred schema is kept for comparison with the contract;
    # validation uses the curated schema only.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
    )
    import_schema = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
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
    )
    nodes = [example_gen, statistics_gen, schema_gen, import_schema, example_validator, gate]

    if not stop_after_gate:
        transform = tfx.components.Transform(
            examples=example_gen.outputs["examples"],
            schema=gate.outputs["schema"],
            module_file=TRANSFORM_MODULE,
            splits_config=tfx.proto.SplitsConfig(
                analyze=["train"], transform=["train", "eval"]
            ),
            custom_config={"description": description_dict},
        )
        post_gate = PostTransformGate(
            transformed_examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            report_dir=report_dir,
        )
        trainer = tfx.components.Trainer(
            module_file=TRAINER_MODULE,
            examples=post_gate.outputs["checked_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=gate.outputs["schema"],
            train_args=tfx.proto.TrainArgs(num_steps=train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=1),
            custom_config={"description": description_dict, "guard": guard or {}},
        )
        pusher = tfx.components.Pusher(
            model=trainer.outputs["model"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=serving_model_dir
                )
            ),
        )
        nodes += [transform, post_gate, trainer, pusher]

    per_node = component_beam_args or {}
    for node in nodes:
        extra = per_node.get(node.id)
        if extra and hasattr(node, "with_beam_pipeline_args"):
            node.with_beam_pipeline_args(list(beam_pipeline_args or []) + list(extra))

    if metadata_connection_config is None and metadata_path:
        metadata_connection_config = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path
        )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=nodes,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []),
    )
