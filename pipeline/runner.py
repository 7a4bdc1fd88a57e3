"""Runs the pipeline locally with TFX's LocalDagRunner."""

from __future__ import annotations

import os
from typing import Any

from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from pipeline import pipeline as pipeline_module
from pipeline.dataset import Description


def run_paths(out_dir: str) -> dict[str, str]:
    """Returns the locations inside a run directory."""
    return {
        "pipeline_root": os.path.join(out_dir, "pipeline_root"),
        "metadata": os.path.join(out_dir, "metadata.sqlite"),
        "serving_model": os.path.join(out_dir, "serving_model"),
        "report": os.path.join(out_dir, "report"),
    }


def run(
    *,
    description: Description,
    data_dir: str,
    out_dir: str,
    pipeline_root: str | None = None,
    schema_path: str | None = None,
    train_steps: int | None = None,
    beam_pipeline_args: list[str] | None = None,
    component_beam_args: dict[str, list[str]] | None = None,
    guard: dict[str, Any] | None = None,
    stop_after_gate: bool = False,
    enable_cache: bool = True,
    package_user_modules: bool = False,
) -> None:
    """Builds the pipeline for a run directory and runs it to the end.

    `package_user_modules` is passed to `create_pipeline`: a run whose Beam
    stages execute on remote workers needs the user-module wheel, a local run
    imports the installed `components` package instead.

    Raises:
        Exception: whatever the failing component raised, for example
            `components.anomaly_gate.GateBlockedError`.
    """
    paths = run_paths(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    steps = train_steps or int(description.model.get("train_steps", 1000))
    built = pipeline_module.create_pipeline(
        pipeline_name=f"recguard-{description.name}".replace("_", "-"),
        pipeline_root=pipeline_root or paths["pipeline_root"],
        data_dir=data_dir,
        description=description,
        schema_path=schema_path or pipeline_module.DEFAULT_SCHEMA,
        serving_model_dir=paths["serving_model"],
        metadata_path=paths["metadata"],
        report_dir=paths["report"],
        train_steps=steps,
        beam_pipeline_args=beam_pipeline_args,
        component_beam_args=component_beam_args,
        guard=guard,
        stop_after_gate=stop_after_gate,
        enable_cache=enable_cache,
        package_user_modules=package_user_modules,
    )
    LocalDagRunner().run(built)
