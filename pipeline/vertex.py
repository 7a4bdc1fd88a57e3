"""Compiles the pipeline into a Vertex AI (Kubeflow v2) pipeline spec, offline."""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline import pipeline as pipeline_module
from pipeline.dataset import Description

# The image must contain recguard and the locked packages; docs/scaling.md
# shows how to build it.
DEFAULT_IMAGE = "gcr.io/YOUR_PROJECT/recguard:latest"


def compile_vertex(
    description: Description,
    *,
    out_file: str,
    pipeline_root: str,
    data_dir: str,
    beam_pipeline_args: list[str] | None = None,
    component_beam_args: dict[str, list[str]] | None = None,
    schema_path: str = "",
    image: str = "",
    train_steps: int | None = None,
) -> str:
    """Writes the pipeline spec JSON for Vertex AI Pipelines and returns its path.

    Compiling needs no network access and no Google Cloud credentials. The
    Transform and Trainer code is referenced by import path, because with
    module files KubeflowV2DagRunner would build TFX's user-module wheel at
    compile time and copy it to ``pipeline_root/_wheels``, which for a
    ``gs://`` root needs Cloud Storage access. The image has recguard
    installed anyway, because the custom components run from it.

    Every path (`pipeline_root`, `data_dir`, `schema_path`) is used by the
    containers, so it must be a ``gs://`` path or exist in the image.
    `schema_path` defaults to ``schema/schema.pbtxt`` of this checkout.
    """
    built = pipeline_module.create_pipeline(
        pipeline_name=f"recguard-{description.name}".replace("_", "-"),
        pipeline_root=pipeline_root,
        data_dir=data_dir,
        description=description,
        schema_path=schema_path or pipeline_module.DEFAULT_SCHEMA,
        serving_model_dir=os.path.join(pipeline_root, "serving_model"),
        metadata_path="",
        train_steps=train_steps or int(description.model.get("train_steps", 1000)),
        beam_pipeline_args=beam_pipeline_args,
        component_beam_args=component_beam_args,
        package_user_modules=False,
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image or DEFAULT_IMAGE
        ),
        output_dir=os.path.dirname(os.path.abspath(out_file)),
        output_filename=os.path.basename(out_file),
    )
    runner.run(built, write_out=True)
    return os.path.abspath(out_file)
