"""StatisticsGen's cost on a finished run: statistics options and reading alone.

Runs TFDV's `GenerateStatistics`, the Beam transform inside StatisticsGen, over
the train and eval splits that ExampleGen wrote in a finished `recguard run`,
in this process on the in-memory DirectRunner. Six variants alternate
within each repetition, with one of two readers:

- stock reader: tfx_bsl's `TFExampleRecord.BeamSource()`, which stock
  StatisticsGen uses. Beam hands every record to Python as an element;
- batched reader: recguard's StatisticsGen reader
  (`components/batched_read.py`), one Beam element per file, read with
  TensorFlow in batches of `statistics_gen.STATISTICS_BATCH_SIZE` examples
  and decoded with `tf.io.parse_example`, because ExampleGen declares its
  feature types.

The variants:

- stock_default: the stock reader and `tfdv.StatsOptions()`, what stock
  TFX computes;
- batched_default: the batched reader and the same options, what
  StatisticsGen computes in the pipeline;
- batched_sketch_topk: `use_sketch_based_topk_uniques=True`. The pipeline
  does not use it: the sketches depend on the order in which Beam merges
  partial results, so the in-process and the multi-process runner would
  give different top-k lists and unique counts;
- stock_read_only and batched_read_only: reading and decoding the examples
  into Arrow record batches with no statistics, the floor under the others;
- batched_tfx_bsl_read_only: the batched reader with tfx_bsl's decoder,
  which it uses for examples without ExampleGen's declaration.

Writes docs/benchmarks.md (section `statistics`) and
bench/results/statistics.json.

    .venv/bin/python bench/bench_statistics.py --run-dir RUN_DIR --runs 3
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import apache_beam as beam  # noqa: E402
from apache_beam.metrics import Metrics, MetricsFilter  # noqa: E402
import common  # noqa: E402
import tensorflow_data_validation as tfdv  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from components import batched_read, ingest, statistics_gen  # noqa: E402
from pipeline import dataset  # noqa: E402

# The feature types ExampleGen declares on its examples for the bundled description.
FEATURE_TYPES = ingest.feature_types(dataset.load_description().to_dict())

VARIANTS = (
    "stock_default",
    "batched_default",
    "batched_sketch_topk",
    "stock_read_only",
    "batched_read_only",
    "batched_tfx_bsl_read_only",
)


def example_files(run_dir: str) -> list[str]:
    """Returns the newest ExampleGen output's TFRecord files of both splits."""
    found = sorted(
        glob.glob(os.path.join(run_dir, "pipeline_root", "ExampleGen", "examples", "*")),
        key=lambda p: int(os.path.basename(p)),
    )
    if not found:
        raise FileNotFoundError(
            f"no ExampleGen/examples artifact under {run_dir}; run `recguard run` into it first"
        )
    files = sorted(glob.glob(os.path.join(found[-1], "Split-*", "*.gz")))
    if not files:
        raise FileNotFoundError(f"no Split-*/*.gz files in {found[-1]}")
    return files


def time_variant(variant: str, files: list[str]) -> tuple[float, float, int]:
    """Returns (wall s, CPU s, rows) of one variant over `files`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    pipeline = beam.Pipeline()
    if variant.startswith("stock"):
        batches = pipeline | "Read" >> tfxio.TFExampleRecord(
            file_pattern=files, telemetry_descriptors=["recguard", "bench"]
        ).BeamSource()
    else:
        batches = (
            pipeline
            | "ListFiles" >> beam.Create(files)
            | "Read"
            >> beam.ParDo(
                batched_read.ReadExampleBatches(
                    statistics_gen.STATISTICS_BATCH_SIZE,
                    feature_types=None if "tfx_bsl" in variant else FEATURE_TYPES,
                )
            )
        )
    if variant.endswith("read_only"):
        counted = batches | "Rows" >> beam.Map(lambda batch: batch.num_rows)
    else:
        options = tfdv.StatsOptions(
            use_sketch_based_topk_uniques=variant.endswith("sketch_topk")
        )
        counted = (
            batches
            | "Statistics" >> tfdv.GenerateStatistics(options)
            | "Rows" >> beam.Map(lambda stats: int(stats.datasets[0].num_examples))
        )
    _ = counted | "Count" >> beam.Map(_count_rows)
    result = pipeline.run()
    result.wait_until_finish()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    counters = result.metrics().query(MetricsFilter().with_name("rows"))["counters"]
    return wall, cpu, int(sum(c.committed for c in counters))


def _count_rows(rows: int) -> None:
    Metrics.counter("bench", "rows").inc(rows)


def write_doc(results: dict) -> None:
    if results["runs"] > 1:
        repeats = f"Median of {results['runs']} runs; the variants alternate within each. "
    else:
        repeats = "One run of each variant. "
    lines = common.header_lines(
        common.this_command(),
        repeats
        + f"Data: ExampleGen's output in `{results['run_dir']}` ({results['rows']:,} rows, "
        "train and eval splits), read in this process, so start-up is left out.",
    )
    rows = []
    for variant in VARIANTS:
        walls = results["wall_s"][variant]
        rows.append([
            variant,
            f"{common.median(walls):.1f}",
            common.spread(walls),
            f"{common.median(results['cpu_s'][variant]):.1f}",
        ])
    lines += common.table(["variant", "wall s", "range", "CPU s"], rows)
    def wall(variant):
        return common.median(results["wall_s"][variant])

    stock, batched = wall("stock_default"), wall("batched_default")
    sketch = wall("batched_sketch_topk")
    lines += [
        "",
        f"The batched reader takes {stock - batched:.1f} s off stock StatisticsGen "
        f"({batched / stock:.2f}x). Reading and decoding alone take "
        f"{wall('stock_read_only'):.1f} s with the stock reader, which hands every "
        f"record to Python as a Beam element, and {wall('batched_read_only'):.1f} s "
        "with the batched one, or "
        f"{wall('batched_tfx_bsl_read_only'):.1f} s with tfx_bsl's decoder in "
        "place of tf.io.parse_example. The sketch-based top-k would take another "
        f"{batched - sketch:.1f} s off; the pipeline keeps the exact default, "
        "because the sketches differ between runners.",
    ]
    common.write_section(
        "statistics", "StatisticsGen: readers, options and reading alone", lines
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="run directory of a finished `recguard run`")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per variant")
    args = parser.parse_args()

    files = example_files(args.run_dir)
    results = {
        "run_dir": args.run_dir,
        "runs": args.runs,
        "machine": common.machine(),
        "load_before": common.load_average(),
        "wall_s": {v: [] for v in VARIANTS},
        "cpu_s": {v: [] for v in VARIANTS},
    }
    for run in range(args.runs):
        for variant in VARIANTS:
            wall, cpu, rows = time_variant(variant, files)
            results["wall_s"][variant].append(wall)
            results["cpu_s"][variant].append(cpu)
            results["rows"] = rows
            print(f"run {run + 1} {variant}: {wall:.1f} s wall, {cpu:.1f} s CPU, {rows:,} rows", flush=True)
    results["load_after"] = common.load_average()
    common.save_results("statistics", results)
    write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
