"""Benchmark 3: in-process against multi-process Beam DirectRunner.

Runs `recguard run --no-cache` with `--beam-preset local` (in-memory
DirectRunner, one worker) and `--beam-preset multiprocess` (one worker
process per CPU), alternating, on the same data. Only the Beam-based
components (ExampleGen, StatisticsGen, SchemaGen, ExampleValidator,
Transform) see the preset. Writes docs/benchmarks.md (section `runners`)
and bench/results/runners.json.

    .venv/bin/python bench/bench_runners.py --size quarter --runs 2 --steps 200
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_pipeline  # noqa: E402
import common  # noqa: E402

PRESETS = ("local", "multiprocess")
BEAM_COMPONENTS = ("ExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform")


def write_doc(results: dict) -> None:
    lines = common.header_lines(
        common.this_command(),
        f"Data: {results['size']} ({results['rows']:,} rows); Trainer steps: "
        f"{results['steps']}. Each cell is the median of the runs counted.",
    )
    header = ["preset", "runs", "wall s", "CPU s", "peak RSS GiB", *BEAM_COMPONENTS, "Trainer", "load before"]
    rows = []
    for preset in PRESETS:
        runs = results["runs"][preset]
        if not runs:
            continue
        rows.append([
            preset,
            len(runs),
            f"{common.median([r['wall_s'] for r in runs]):.1f}",
            f"{common.median([r['cpu_s'] for r in runs]):.0f}",
            f"{common.median([r['peak_rss_gib'] for r in runs]):.2f}",
            *(f"{common.median([r['components'].get(c, 0.0) for r in runs]):.1f}" for c in (*BEAM_COMPONENTS, "Trainer")),
            ", ".join(r["load_before"] for r in runs),
        ])
    lines += ["Component columns are wall seconds.", ""]
    lines += common.table(header, rows)
    common.write_section("runners", "3. In-process against multi-process DirectRunner", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="quarter", help="data set: december, quarter or year")
    parser.add_argument("--runs", type=int, default=2, help="runs per preset")
    parser.add_argument("--steps", type=int, default=200, help="Trainer steps (default: %(default)s)")
    args = parser.parse_args()

    results = {
        "size": args.size,
        "rows": common.count_rows(common.data_dir(args.size)),
        "steps": args.steps,
        "machine": common.machine(),
        "runs": {p: [] for p in PRESETS},
    }
    for index in range(args.runs):
        for preset in PRESETS:
            result = bench_pipeline.run_pipeline(args.size, index, args.steps, preset)
            results["runs"][preset].append(result)
            print(f"{preset} {index + 1}/{args.runs}: wall {result['wall_s']:.1f} s, "
                  f"CPU {result['cpu_s']:.0f} s, peak {result['peak_rss_gib']:.2f} GiB", flush=True)
            common.save_results("runners", results)
            write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
