"""Stock TFX validation stages, as a baseline: no curation and no gate.

Runs CsvExampleGen, StatisticsGen, SchemaGen and ExampleValidator (against
the inferred schema) on a CSV folder with LocalDagRunner and the in-process
DirectRunner, prints one "NAME done in N s" line per component and a final
`BENCH_JSON {...}` line with the seconds spent in `LocalDagRunner.run`.

    .venv/bin/python bench/stock_tfx_validation.py --data DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipeline.cli import ProgressHandler  # noqa: E402


def build(data: str, out: str) -> tfx.dsl.Pipeline:
    example_gen = tfx.components.CsvExampleGen(input_base=data)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
    )
    return tfx.dsl.Pipeline(
        pipeline_name="stock-tfx-validation",
        pipeline_root=os.path.join(out, "pipeline_root"),
        components=[example_gen, statistics_gen, schema_gen, example_validator],
        enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(out, "metadata.sqlite")
        ),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the CSV files")
    parser.add_argument("--out", required=True, help="scratch folder for artifacts")
    args = parser.parse_args()

    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        handler.setLevel(logging.ERROR)
    absl_logging.get_absl_handler().setLevel(logging.ERROR)
    root.addHandler(ProgressHandler())

    started = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(build(os.path.abspath(args.data), os.path.abspath(args.out)))
    print("BENCH_JSON " + json.dumps({"work_s": time.perf_counter() - started}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
