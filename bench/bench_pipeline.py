"""Benchmark 1: the whole pipeline end to end at three sizes of the real data.

Runs `recguard run --no-cache` on December 2010, the first quarter and the
whole year, and writes per-component wall times, rows per second, CPU time
and the peak RSS of the process tree to docs/benchmarks.md (section
`pipeline`) and bench/results/pipeline.json.

    .venv/bin/python bench/bench_pipeline.py --runs 3 --year-runs 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from pipeline.pipeline import NODE_IDS  # noqa: E402

# Component order of the tables: the pipeline's execution order.
COMPONENTS = NODE_IDS
# Targets of the whole-year run on 2 cores.
TARGET_WALL_S = 180.0
TARGET_PEAK_GIB = 2.0


def run_pipeline(size: str, index: int, steps: int, preset: str) -> dict:
    """Runs the whole pipeline once on a data set and measures it."""
    data = common.data_dir(size)
    out = os.path.join(common.WORK_DIR, "runs", f"pipeline-{preset}-{size}-{index}")
    shutil.rmtree(out, ignore_errors=True)
    command = [
        common.RECGUARD, "run", "--data", data, "--out", out, "--steps", str(steps),
        "--beam-preset", preset, "--no-cache",
    ]
    result = common.measure(command, os.path.join(out + ".log"))
    result["run_dir"] = out
    return result


def component_rows(results: dict) -> list[list]:
    rows = []
    for name in COMPONENTS:
        cells = [name]
        for size in common.SIZE_ORDER:
            runs = results["sizes"].get(size, {}).get("runs", [])
            cells.append(
                f"{common.median([r['components'].get(name, 0.0) for r in runs]):.1f}" if runs else "-"
            )
        rows.append(cells)
    return rows


def summary_rows(results: dict) -> list[list]:
    rows = []
    for size in common.SIZE_ORDER:
        entry = results["sizes"].get(size)
        if not entry:
            continue
        runs = entry["runs"]
        walls = [r["wall_s"] for r in runs]
        wall = common.median(walls)
        rows.append([
            size,
            f"{entry['rows']:,}",
            len(runs),
            f"{wall:.1f}",
            common.spread(walls),
            f"{entry['rows'] / wall:,.0f}",
            f"{common.median([r['cpu_s'] for r in runs]):.0f}",
            f"{common.median([r['peak_rss_gib'] for r in runs]):.2f}",
            _anonymous_cell(runs),
            ", ".join(r["load_before"] for r in runs),
        ])
    return rows


def _anonymous_median(runs: list[dict]) -> float | None:
    # Results saved before the anonymous peak was measured have none.
    values = [r["peak_anonymous_gib"] for r in runs if "peak_anonymous_gib" in r]
    return common.median(values) if len(values) == len(runs) else None


def _anonymous_cell(runs: list[dict]) -> str:
    median = _anonymous_median(runs)
    return "-" if median is None else f"{median:.2f}"


def scaling_lines(results: dict) -> list[str]:
    sizes = results["sizes"]
    if "december" not in sizes or "year" not in sizes:
        return []
    small, large = sizes["december"], sizes["year"]
    row_ratio = large["rows"] / small["rows"]
    wall_ratio = common.median([r["wall_s"] for r in large["runs"]]) / common.median(
        [r["wall_s"] for r in small["runs"]]
    )
    peak_ratio = common.median([r["peak_rss_gib"] for r in large["runs"]]) / common.median(
        [r["peak_rss_gib"] for r in small["runs"]]
    )
    wall = common.median([r["wall_s"] for r in large["runs"]])
    peak = common.median([r["peak_rss_gib"] for r in large["runs"]])
    anonymous_small = _anonymous_median(small["runs"])
    anonymous_large = _anonymous_median(large["runs"])
    anonymous = ""
    if anonymous_small and anonymous_large:
        anonymous = f" and the peak anonymous memory {anonymous_large / anonymous_small:.2f}x"
    return [
        f"From December to the year the rows grow {row_ratio:.1f}x, the wall time "
        f"{wall_ratio:.2f}x, the peak RSS {peak_ratio:.2f}x{anonymous}.",
        "",
        f"Year targets: wall {wall:.0f} s against {TARGET_WALL_S:.0f} s "
        f"({'met' if wall <= TARGET_WALL_S else f'missed by {wall - TARGET_WALL_S:.0f} s'}); "
        f"peak RSS {peak:.2f} GiB against {TARGET_PEAK_GIB:.1f} GiB "
        f"({'met' if peak <= TARGET_PEAK_GIB else f'missed by {peak - TARGET_PEAK_GIB:.2f} GiB'}).",
    ]


def write_doc(results: dict) -> None:
    steps = results["steps"]
    lines = common.header_lines(
        common.this_command(),
        f"Each cell is the median of the runs counted in the table. Trainer steps: {steps}.",
    )
    # With --keep, some sizes come from an earlier invocation: name each one.
    commands = {
        size: results["sizes"][size].get("command")
        for size in common.SIZE_ORDER
        if size in results["sizes"]
    }
    if len(set(commands.values())) > 1:
        lines += [
            "The sizes come from different invocations: "
            + "; ".join(f"{size}: `{command or 'not recorded'}`" for size, command in commands.items())
            + ".",
            "",
        ]
    lines += [
        "Whole run, measured from outside the `recguard run` process. Peak RSS is "
        "the summed RSS of the process tree (psutil, sampled every 0.1 s); CPU is "
        "user plus system seconds of the tree. \"Peak anon\" is the peak of the same "
        "sum without file-backed and shared pages: the pages of shared libraries "
        "count in RSS, and how many stay mapped depends on the page cache, not on "
        "the run. Load is the 1/5/15-minute load average before each run.",
        "",
    ]
    lines += common.table(
        ["data", "rows", "runs", "wall s", "wall range s", "rows/s", "CPU s", "peak RSS GiB", "peak anon GiB", "load before"],
        summary_rows(results),
    )
    lines += ["", "Wall seconds per component (median), from the progress lines of `recguard run`:", ""]
    lines += common.table(["component", *common.SIZE_ORDER], component_rows(results))
    lines += [""] + scaling_lines(results)
    common.write_section("pipeline", "1. Whole pipeline at three sizes", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per size for December and the quarter")
    parser.add_argument("--year-runs", type=int, default=3, help="runs on the whole year")
    parser.add_argument("--sizes", default=",".join(common.SIZE_ORDER), help="comma-separated data sets")
    parser.add_argument("--steps", type=int, default=1000, help="Trainer steps (default: %(default)s)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the saved results of sizes not run now (bench/results/pipeline.json)",
    )
    args = parser.parse_args()

    results = {"steps": args.steps, "machine": common.machine(), "sizes": {}}
    previous = common.load_results("pipeline")
    if args.keep and previous:
        # Keeps the sizes this invocation does not run.
        results["sizes"] = {k: v for k, v in previous["sizes"].items() if k not in args.sizes.split(",")}
    for size in args.sizes.split(","):
        run_count = args.year_runs if size == "year" else args.runs
        entry = {
            "rows": common.count_rows(common.data_dir(size)),
            "runs": [],
            "command": common.this_command(),
        }
        results["sizes"][size] = entry
        for index in range(run_count):
            result = run_pipeline(size, index, args.steps, "local")
            entry["runs"].append(result)
            print(
                f"{size} run {index + 1}/{run_count}: wall {result['wall_s']:.1f} s, "
                f"peak {result['peak_rss_gib']:.2f} GiB, load {result['load_before']}",
                flush=True,
            )
            common.save_results("pipeline", results)
            write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
