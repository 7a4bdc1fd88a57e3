"""Benchmark 5: the whole pipeline against the hand-written in-memory peer.

Runs `bench/peer_inmemory.py` on December 2010, the quarter and the whole
year. It compares the peer's wall time and peak RSS with the `recguard run`
results in bench/results/pipeline.json, so run `bench/bench_pipeline.py`
first. Sizes without pipeline results show only the peer.
Writes docs/benchmarks.md (section `peer`) and bench/results/peer.json.

    .venv/bin/python bench/bench_peer.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_inmemory.py")


def pipeline_results() -> dict:
    path = os.path.join(common.RESULTS_DIR, "pipeline.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("sizes", {})


def write_doc(results: dict) -> None:
    lines = common.header_lines(
        common.this_command(),
        "Peer cells are medians of the runs counted; pipeline cells are the "
        "medians in bench/results/pipeline.json (benchmark 1).",
    )
    pipeline = pipeline_results()
    rows = []
    for size, runs in results["sizes"].items():
        peer_wall = common.median([r["wall_s"] for r in runs])
        peer_peak = common.median([r["peak_rss_gib"] for r in runs])
        peer_cpu = common.median([r["cpu_s"] for r in runs])
        reports = [r["reports"][-1] for r in runs]
        examples = reports[0]["train_examples"]
        per_s = common.median([r["examples_per_s"] for r in reports])
        cells = [
            size, len(runs), f"{peer_wall:.1f}", f"{peer_cpu:.0f}", f"{peer_peak:.2f}",
            f"{examples:,}", f"{per_s:,.0f}",
        ]
        entry = pipeline.get(size)
        if entry and entry["runs"]:
            wall = common.median([r["wall_s"] for r in entry["runs"]])
            peak = common.median([r["peak_rss_gib"] for r in entry["runs"]])
            cpu = common.median([r["cpu_s"] for r in entry["runs"]])
            cells += [
                f"{wall:.1f}", f"{cpu:.0f}", f"{peak:.2f}",
                f"{wall / peer_wall:.1f}x", f"{cpu / peer_cpu:.1f}x", f"{peak / peer_peak:.1f}x",
            ]
        else:
            cells += ["-"] * 6
        cells.append(", ".join(r["load_before"] for r in runs))
        rows.append(cells)
    lines += common.table(
        ["data", "peer runs", "peer wall s", "peer CPU s", "peer peak GiB", "peer train examples",
         "peer fit examples/s", "pipeline wall s", "pipeline CPU s", "pipeline peak GiB",
         "wall ratio", "CPU ratio", "peak ratio", "peer load before"],
        rows,
    )
    lines += [
        "",
        "The peer trains one epoch over every training row plus 4 sampled negatives "
        "each. The pipeline trains a fixed number of steps (benchmark 1 gives the "
        "count) of 512 rows plus 4 negatives each, so at 1000 steps it trains on "
        "2,560,000 examples whatever the data size.",
    ]
    common.write_section("peer", "5. Whole pipeline against the in-memory peer script", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(common.SIZE_ORDER), help="comma-separated data sets")
    parser.add_argument("--runs", type=int, default=3, help="runs per size")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the saved results of sizes not run now (bench/results/peer.json)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the section from bench/results/peer.json and pipeline.json without running",
    )
    args = parser.parse_args()
    if args.render_only:
        write_doc(common.load_results("peer"))
        return 0

    results = {"machine": common.machine(), "sizes": {}}
    previous = common.load_results("peer")
    if args.keep and previous:
        # Keeps the sizes this invocation does not run.
        results["sizes"] = {k: v for k, v in previous["sizes"].items() if k not in args.sizes.split(",")}
    for size in args.sizes.split(","):
        data = common.data_dir(size)
        results["sizes"][size] = []
        for index in range(args.runs):
            log = os.path.join(common.WORK_DIR, "runs", f"peer-{size}-{index}.log")
            result = common.measure([common.PYTHON, PEER, "--data", data], log)
            results["sizes"][size].append(result)
            print(f"{size} peer {index + 1}/{args.runs}: wall {result['wall_s']:.1f} s, "
                  f"peak {result['peak_rss_gib']:.2f} GiB", flush=True)
            common.save_results("peer", results)
            write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
