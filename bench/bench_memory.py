"""Peak RSS per component: where the memory of a whole run goes.

Runs `recguard run --no-cache` once per data set and attributes every RSS
sample of the process tree (`common.measure`, every 0.1 s) to the component
whose "running ..." line came last. Writes docs/benchmarks.md (section
`memory`) and bench/results/memory.json.

    .venv/bin/python bench/bench_memory.py --sizes december,year
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_pipeline  # noqa: E402
import common  # noqa: E402

PHASES = ("start-up", *bench_pipeline.COMPONENTS, "between components")


def write_doc(results: dict) -> None:
    sizes = [size for size in common.SIZE_ORDER if size in results["sizes"]]
    lines = common.header_lines(
        common.this_command(),
        f"One run per data set; Trainer steps: {results['steps']}.",
    )
    lines += [
        "Peak RSS of the process tree, in GiB, while each component ran. "
        "\"start-up\" is the time before the first component starts (imports, "
        "building the pipeline) and \"between components\" the orchestration "
        "between one component's end and the next one's start. A \"-\" marks a "
        "component that started and ended between two samples. \"Anonymous "
        "pages only\" "
        "leaves out the file-backed pages of shared libraries, whose resident "
        "share depends on the page cache.",
        "",
    ]
    rows = []
    for phase in PHASES:
        cells = [phase]
        for size in sizes:
            value = results["sizes"][size]["peak_rss_by_component_gib"].get(phase)
            cells.append("-" if value is None else f"{value:.2f}")
        rows.append(cells)
    rows.append(
        ["whole run", *(f"{results['sizes'][s]['peak_rss_gib']:.2f}" for s in sizes)]
    )
    rows.append(
        [
            "whole run, anonymous pages only",
            *(
                f"{results['sizes'][s]['peak_anonymous_gib']:.2f}"
                if "peak_anonymous_gib" in results["sizes"][s]
                else "-"
                for s in sizes
            ),
        ]
    )
    lines += common.table(["phase", *sizes], rows)
    common.write_section("memory", "Peak memory per component", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="december,year", help="comma-separated data sets")
    parser.add_argument("--steps", type=int, default=1000, help="Trainer steps (default: %(default)s)")
    args = parser.parse_args()

    results = {"steps": args.steps, "machine": common.machine(), "sizes": {}}
    for size in args.sizes.split(","):
        result = bench_pipeline.run_pipeline(size, 0, args.steps, "local")
        results["sizes"][size] = result
        peaks = result["peak_rss_by_component_gib"]
        top = max(peaks, key=peaks.get)
        print(
            f"{size}: peak {result['peak_rss_gib']:.2f} GiB during {top}, "
            f"load {result['load_before']}",
            flush=True,
        )
        common.save_results("memory", results)
        write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
