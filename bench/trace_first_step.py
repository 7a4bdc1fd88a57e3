"""Times the first (tracing) step of GuardedLoop, with and without AutoGraph.

Builds the Trainer's model and input pipeline from a finished run (as
`bench/bench_trainer.py` does), then times the first `train_step`, which
traces the step function, and 100 more steps. `--no-autograph` recompiles
the step with `tf.function(..., autograph=False)`. Run each setting in a
fresh process, because AutoGraph caches its conversions per process.

    .venv/bin/python bench/trace_first_step.py --run-dir RUN_DIR [--no-autograph]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.dirname(BENCH_DIR))

import bench_trainer  # noqa: E402
import tensorflow as tf  # noqa: E402

from components import guarded_loop  # noqa: E402
from components import trainer_module as trainer  # noqa: E402
from components import transform_module as tm  # noqa: E402
from pipeline.dataset import load_description  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="run directory of a finished `recguard run`")
    parser.add_argument("--no-autograph", action="store_true", help="compile the step with autograph=False")
    args = parser.parse_args()

    description = load_description().to_dict()
    names = trainer._model_features(description)
    load_names = [names["user"], names["item"]] + names["categorical"] + names["dense"] + [tm.WEIGHT_FEATURE]
    columns, output = bench_trainer.load_train_columns(args.run_dir, load_names)
    model, dataset = bench_trainer.build(description, output, columns, seed=42)
    iterator = iter(dataset)
    loop = guarded_loop.GuardedLoop(
        model,
        tf.keras.optimizers.Adam(0.01),
        guarded_loop.GuardConfig(),
        checked_outputs=("logits", "user_embedding", "item_embedding"),
    )
    if args.no_autograph:
        loop._compiled_step = tf.function(loop._guarded_step, reduce_retracing=True, autograph=False)

    wall, cpu = time.perf_counter(), time.process_time()
    loop.train_step(*next(iterator))["loss"].numpy()
    first_wall, first_cpu = time.perf_counter() - wall, time.process_time() - cpu
    started = time.perf_counter()
    for _ in range(100):
        result = loop.train_step(*next(iterator))
    result["loss"].numpy()
    rate = 100 / (time.perf_counter() - started)
    print(
        f"autograph={'off' if args.no_autograph else 'on'}: first step {first_wall:.1f} s wall, "
        f"{first_cpu:.1f} s CPU; then {rate:.1f} steps/s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
