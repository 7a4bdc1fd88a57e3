"""Beam pipeline arguments: named presets for the runners people use.

Every Beam-based component (ExampleGen, StatisticsGen, Transform) receives
the same arguments, so the data stages move from the in-process DirectRunner
to a cluster by configuration. `create_pipeline(component_beam_args=...)`
adds arguments for one of them. SchemaGen, ExampleValidator and the Trainer
do not run Beam. docs/scaling.md has the commands for each runner.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

# Each preset is a list of Beam flags, and `{workers}` is replaced by the
# number of worker processes. Cluster presets carry only the runner-specific
# flags that never change. The address, project, region and staging location
# come from the user as extra --beam-arg flags (docs/scaling.md shows them).
# LOOPBACK runs the Python code of every stage in the launching process, so
# the cluster must be able to connect back to this machine. To run that code
# on the cluster, pass --environment_type=DOCKER and --environment_config=IMAGE.
PRESETS: dict[str, list[str]] = {
    "local": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "multiprocess": [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers={workers}",
    ],
    "flink": ["--runner=FlinkRunner", "--environment_type=LOOPBACK"],
    "spark": ["--runner=SparkRunner", "--environment_type=LOOPBACK"],
    "dataflow": ["--runner=DataflowRunner", "--experiments=use_runner_v2"],
}
# Presets whose Beam stages run in processes on this machine, in the venv
# that has recguard installed, so they need no user-module wheel.
LOCAL_PRESETS = ("local", "multiprocess")

# Flags a cluster preset cannot run without, checked before the run starts.
REQUIRED_FLAGS: dict[str, list[str]] = {
    "flink": ["--flink_master"],
    "spark": ["--spark_master_url"],
    "dataflow": ["--project", "--region", "--temp_location"],
}




def _default_sdk_image() -> str:
    """Returns Beam's default SDK container image for this Python and Beam.

    The name follows apache_beam.transforms.environments.DockerEnvironment,
    without importing Beam before the run starts.
    """
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"apache/beam_python{python}_sdk:{importlib.metadata.version('apache-beam')}"


class BeamConfigError(ValueError):
    """Raised for an unknown preset or a missing required flag."""


def beam_args(preset: str, extra: list[str] | None = None, workers: int | None = None) -> list[str]:
    """Returns the Beam arguments for `preset` followed by `extra`.

    Args:
        preset: a key of `PRESETS`.
        extra: user flags, appended, so they override the preset's.
        workers: worker processes for the multi-process preset; defaults to
            the number of CPUs.

    Raises:
        BeamConfigError: for an unknown preset or a missing required flag.
    """
    if preset not in PRESETS:
        raise BeamConfigError(
            f"unknown Beam preset {preset!r}; use one of {', '.join(sorted(PRESETS))}"
        )
    workers = workers or os.cpu_count() or 1
    args = [flag.format(workers=workers) for flag in PRESETS[preset]]
    if preset in LOCAL_PRESETS:
        # TFX's Beam executors build an sdist of the installed TFX for remote
        # workers unless a dependency flag is given (docs/scaling.md). The
        # DirectRunner uses no image, so naming the default one skips the build.
        args.append(f"--sdk_container_image={_default_sdk_image()}")
    args += list(extra or [])
    given = {flag.split("=", 1)[0] for flag in args}
    missing = [flag for flag in REQUIRED_FLAGS.get(preset, []) if flag not in given]
    if missing:
        raise BeamConfigError(
            f"Beam preset {preset!r} needs {', '.join(missing)}; pass each with "
            f"--beam-arg, for example --beam-arg={missing[0]}=VALUE"
        )
    return args
