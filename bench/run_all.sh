#!/bin/sh
# Runs every benchmark and rewrites docs/benchmarks.md, lightest first, so
# the whole-year runs come last. Estimate: 1.5 to 2 hours on 2 cores.
# YEAR_RUNS sets the number of whole-year pipeline runs (default 1).
set -e
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY bench/bench_validation.py --sizes december --runs 3
$PY bench/bench_runners.py --size december --runs 1 --steps 200
$PY bench/bench_pipeline.py --runs 3 --year-runs "${YEAR_RUNS:-1}"
$PY bench/bench_trainer.py --run-dir /tmp/recguard-bench/runs/pipeline-local-quarter-0 --repeats 3
$PY bench/bench_peer.py --runs 3
$PY bench/profile_pipeline.py --size quarter
