#!/bin/sh
# Runs every benchmark and rewrites docs/benchmarks.md, lightest first, so
# the whole-year runs come last within each script. Estimate: about one
# hour on an idle 2-core machine. YEAR_RUNS sets the number of whole-year
# pipeline runs (default 3). Run nothing else on the machine meanwhile.
set -e
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# The same default as bench/common.py. The StatisticsGen and Trainer
# benchmarks read the runs that bench_pipeline.py writes there.
WORK="${RECGUARD_BENCH_WORK:-/tmp/recguard-bench}"
$PY bench/bench_validation.py --sizes december,quarter,year --runs 3
$PY bench/bench_pipeline.py --runs 3 --year-runs "${YEAR_RUNS:-3}"
$PY bench/bench_statistics.py --run-dir "$WORK/runs/pipeline-local-year-0" --runs 3
$PY bench/bench_memory.py --sizes december,year
$PY bench/bench_runners.py --size quarter --runs 3 --steps 200
$PY bench/bench_trainer.py --run-dir "$WORK/runs/pipeline-local-quarter-0" --repeats 40 --steps 100 --warmup 50
$PY bench/bench_peer.py --runs 3
$PY bench/profile_pipeline.py --size quarter
