"""Benchmark 2: validation stages against stock TFX and a pandas profile.

On the same files and in the same loop, one repetition after the other:

- ours: `recguard validate --no-cache` (ExampleGen to the anomaly gate);
- stock: `bench/stock_tfx_validation.py` (CsvExampleGen, StatisticsGen,
  SchemaGen, ExampleValidator; no curation, no gate);
- pandas: `bench/pandas_profile.py` (read, count NA/NaN/inf, describe).

Each is a fresh process. "Process wall" includes interpreter start and
imports (TensorFlow and TFX take several seconds). "Stage time" excludes
them: for the two pipelines it is the sum of the component times, for
pandas the read and profile time. Writes docs/benchmarks.md (section
`validation`) and bench/results/validation.json.

    .venv/bin/python bench/bench_validation.py --sizes december,quarter --runs 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("ours", "stock", "pandas")
# Target: our validation stages within 10x of the pandas profile.
TARGET_RATIO = 10.0


def command_for(variant: str, data: str, out: str) -> list[str]:
    if variant == "ours":
        return [common.RECGUARD, "validate", "--data", data, "--out", out, "--no-cache"]
    if variant == "stock":
        return [common.PYTHON, os.path.join(BENCH_DIR, "stock_tfx_validation.py"), "--data", data, "--out", out]
    return [common.PYTHON, os.path.join(BENCH_DIR, "pandas_profile.py"), "--data", data]


def stage_seconds(variant: str, result: dict) -> float:
    if variant == "pandas" or not result["components"]:
        return result["reports"][-1]["work_s"]
    return sum(result["components"].values())


def write_doc(results: dict) -> None:
    lines = common.header_lines(
        common.this_command(),
        "Each cell is the median of the runs counted in the table; the three "
        "variants alternate within each repetition.",
    )
    rows = []
    ratio_lines = []
    for size, entry in results["sizes"].items():
        medians = {}
        for variant in VARIANTS:
            runs = entry[variant]
            if not runs:
                continue
            walls = [r["wall_s"] for r in runs]
            stages = [r["stage_s"] for r in runs]
            cpus = [r["cpu_s"] for r in runs]
            medians[variant] = (common.median(walls), common.median(stages), common.median(cpus))
            rows.append([
                size, f"{entry['rows']:,}", variant, len(runs),
                f"{medians[variant][0]:.1f}", f"{medians[variant][1]:.1f}",
                common.spread(stages),
                f"{medians[variant][2]:.1f}",
                f"{common.median([r['peak_rss_gib'] for r in runs]):.2f}",
                ", ".join(r["load_before"] for r in runs),
            ])
        if all(v in medians for v in VARIANTS):
            ours, stock, pandas = (medians[v] for v in VARIANTS)
            # CPU seconds judge the target: other jobs on a shared machine
            # stretch wall times, and the stage time of pandas is too short
            # on small data to divide by.
            verdict = "met" if ours[2] <= TARGET_RATIO * pandas[2] else (
                f"missed by {ours[2] / pandas[2] / TARGET_RATIO:.1f}x"
            )
            ratio_lines.append(
                f"- {size}: ours / pandas = {ours[1] / pandas[1]:.1f}x stage time, "
                f"{ours[0] / pandas[0]:.1f}x process wall, {ours[2] / pandas[2]:.1f}x CPU. "
                f"Stock / pandas = {stock[1] / pandas[1]:.1f}x, {stock[0] / pandas[0]:.1f}x, "
                f"{stock[2] / pandas[2]:.1f}x. Ours / stock = {ours[1] / stock[1]:.2f}x, "
                f"{ours[0] / stock[0]:.2f}x, {ours[2] / stock[2]:.2f}x. "
                f"Target ours <= {TARGET_RATIO:.0f}x pandas CPU: {verdict}."
            )
    lines += common.table(
        ["data", "rows", "variant", "runs", "process wall s", "stage s", "stage range s",
         "CPU s", "peak RSS GiB", "load before"],
        rows,
    )
    lines += ["", "Ratios of medians:", "", *ratio_lines]
    common.write_section("validation", "2. Validation stages against stock TFX and pandas", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="december,quarter", help="comma-separated data sets")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per data set")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the saved results of sizes not run now (bench/results/validation.json)",
    )
    args = parser.parse_args()

    results = {"machine": common.machine(), "sizes": {}}
    previous = common.load_results("validation")
    if args.keep and previous:
        # Keeps the sizes this invocation does not run.
        results["sizes"] = {k: v for k, v in previous["sizes"].items() if k not in args.sizes.split(",")}
    for size in args.sizes.split(","):
        data = common.data_dir(size)
        entry = {"rows": common.count_rows(data), **{v: [] for v in VARIANTS}}
        results["sizes"][size] = entry
        for index in range(args.runs):
            for variant in VARIANTS:
                out = os.path.join(common.WORK_DIR, "runs", f"validation-{variant}-{size}-{index}")
                shutil.rmtree(out, ignore_errors=True)
                result = common.measure(command_for(variant, data, out), out + ".log")
                result["stage_s"] = stage_seconds(variant, result)
                entry[variant].append(result)
                print(
                    f"{size} {variant} {index + 1}/{args.runs}: wall {result['wall_s']:.1f} s, "
                    f"stage {result['stage_s']:.1f} s, load {result['load_before']}",
                    flush=True,
                )
                common.save_results("validation", results)
                write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
