"""Benchmark 4: Trainer steps per second, guarded loop against its alternatives.

Reads the transformed train split of a finished `recguard run` and trains
the Trainer's `Recommender` on the Trainer's input pipeline (shuffled
positives plus sampled negatives, `_with_negatives`) three ways:

- guarded: `GuardedLoop` with the description's guard settings, which is
  what the Trainer runs (data/online_retail.yaml: finite checks every 50
  steps, the skip guard and the masked loss on every step);
- unguarded: `GuardedLoop` with `GuardConfig(guards=False)`;
- guarded_every_step: the same with the finite checks on every
  step (`check_mode="every_step"`);
- guarded_checks_off (optional): the same with `check_mode="off"`;
- fit: `model.fit` with Adam(global_clipnorm=1.0) and weighted binary
  cross-entropy from logits.

Each variant builds a fresh model with the same seed and its own batch
iterator, runs `--warmup` steps (tracing) and then, in each of `--repeats`
repetitions, `--steps` timed steps. The variants take turns within every
repetition, so a slow spell of the shared machine slows all of them, and the
ratio to the unguarded loop is taken within each repetition. Runs in this
process, so the numbers exclude start-up. Writes docs/benchmarks.md (section `trainer`) and
bench/results/trainer.json.

    .venv/bin/python bench/bench_trainer.py --run-dir RUN_DIR --repeats 3
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
sys.path.insert(0, os.path.dirname(BENCH_DIR))

import common  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from components import guarded_loop  # noqa: E402
from components import trainer_module as trainer  # noqa: E402
from components import transform_module as tm  # noqa: E402
from pipeline.dataset import load_description  # noqa: E402

tf_keras = tf.keras
VARIANTS = ("guarded", "guarded_every_step", "unguarded", "fit")
# Optional: the guarded loop without the assert_all_finite checks, which
# splits the guards' cost into the checks and the masked loss plus tf.cond.
OPTIONAL_VARIANTS = ("guarded_checks_off",)
# Target: the guarded loop at 0.95x or better of the unguarded loop.
TARGET_RATIO = 0.95


class _LogitsOnly(tf_keras.Model):
    """Exposes only the Recommender's logits, so `compile` needs one loss."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, features, training=False):
        # Keras' binary cross-entropy averages over the last axis, so the
        # logits and the labels get a trailing axis of size 1.
        return self.inner(features, training=training)["logits"][:, None]


class _EpochTimer(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def latest_artifact(run_dir: str, path: str) -> str:
    found = sorted(
        glob.glob(os.path.join(run_dir, "pipeline_root", "Transform", path, "*")),
        key=lambda p: int(os.path.basename(p)),
    )
    if not found:
        raise FileNotFoundError(
            f"no Transform/{path} artifact under {run_dir}; run `recguard run` into it first"
        )
    return found[-1]


def load_train_columns(run_dir: str, names: list[str]) -> tuple[dict, tft.TFTransformOutput]:
    output = tft.TFTransformOutput(latest_artifact(run_dir, "transform_graph"))
    files = glob.glob(os.path.join(latest_artifact(run_dir, "transformed_examples"), "Split-train", "*"))
    spec = output.transformed_feature_spec()
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(4096)
        .map(lambda records: tf.io.parse_example(records, spec))
    )
    return trainer._load_columns(dataset, names), output


def build(description: dict, output: tft.TFTransformOutput, columns: dict, seed: int):
    """Builds the model and the batch dataset the way `trainer_module.run_fn` does."""
    names = trainer._model_features(description)
    model_config = description["model"]
    item_column = trainer._columns(description, "item_id")[0]
    user_column = trainer._columns(description, "user_id")[0]
    num_items = output.vocabulary_size_by_name(tm.vocabulary_name(item_column))
    num_users = output.vocabulary_size_by_name(tm.vocabulary_name(user_column))
    categorical_sizes = {
        tm.index_name(c): output.vocabulary_size_by_name(tm.vocabulary_name(c)) + tm.NUM_OOV_BUCKETS
        for c in trainer._columns(description, "categorical")
    }

    tf.random.set_seed(seed)
    model = trainer.Recommender(
        user_feature=names["user"],
        item_feature=names["item"],
        num_users=num_users + tm.NUM_OOV_BUCKETS,
        num_items=num_items + tm.NUM_OOV_BUCKETS,
        categorical_sizes=categorical_sizes,
        dense_features=names["dense"],
        embedding_dim=int(model_config["embedding_dim"]),
    )

    dataset = trainer._shuffled_batches(columns, int(model_config["batch_size"]), seed)
    dataset = trainer._with_negatives(
        dataset, names, num_items, int(model_config["negatives_per_positive"]), seed
    ).prefetch(2)
    return model, dataset


class _Variant:
    """One variant's model, loop and batch iterator, kept across repetitions."""

    def __init__(self, name, description, output, columns, seed):
        self.name = name
        model, dataset = build(description, output, columns, seed)
        learning_rate = float(description["model"]["learning_rate"])
        clip_norm = float(description["model"].get("clip_norm", 1.0))
        if name == "fit":
            self.model = _LogitsOnly(model)
            self.model.compile(
                optimizer=tf_keras.optimizers.Adam(learning_rate, global_clipnorm=clip_norm),
                loss=tf_keras.losses.BinaryCrossentropy(from_logits=True),
            )
            self.dataset = dataset.map(
                lambda features, labels, weights: (features, labels[:, None], weights)
            )
            return
        settings = dict(description["model"].get("guard", {}))
        settings["clip_norm"] = clip_norm
        if name == "unguarded":
            settings["guards"] = False
        elif name == "guarded_every_step":
            settings["check_mode"] = "every_step"
        elif name == "guarded_checks_off":
            settings["check_mode"] = "off"
        self.loop = guarded_loop.GuardedLoop(
            model,
            tf_keras.optimizers.Adam(learning_rate),
            guarded_loop.GuardConfig(**settings),
            checked_outputs=("logits", "user_embedding", "item_embedding"),
        )
        self.iterator = iter(dataset)

    def run(self, steps: int) -> tuple[float, float]:
        """Runs `steps` steps and returns (steps per second, CPU ms per step)."""
        cpu_start = time.process_time()
        if self.name == "fit":
            # Each fit call makes a new iterator over the dataset; the epoch
            # timer leaves that set-up out.
            timer = _EpochTimer()
            self.model.fit(
                self.dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer]
            )
            seconds = timer.seconds[-1]
        else:
            started = time.perf_counter()
            # run() reads the final loss from the device, so the clock stops
            # after the last step has finished.
            self.loop.run(self.iterator, max_steps=steps, log_every=max(1, steps // 5))
            seconds = time.perf_counter() - started
        cpu_ms = (time.process_time() - cpu_start) * 1000.0 / steps
        return steps / seconds, cpu_ms


def paired_ratios(results: dict, variant: str, key: str = "steps_per_second") -> list[float]:
    """Per-repetition ratio of `variant` to the unguarded loop, as a speed ratio.

    Both variants of a ratio ran in the same repetition, minutes apart at
    most, so a slow spell of the machine affects both.
    """
    ours, base = results[key][variant], results[key]["unguarded"]
    if key == "cpu_ms_per_step":
        return [b / a for a, b in zip(ours, base)]
    return [a / b for a, b in zip(ours, base)]


def write_doc(results: dict) -> None:
    lines = common.header_lines(
        common.this_command(),
        f"{results['repeats']} repetitions of {results['steps']} timed steps per variant, "
        f"after {results['warmup']} warm-up steps. Each variant keeps its model and its "
        "batch iterator for the whole run, and the variants take turns within every "
        "repetition. "
        f"Data: the transformed train split of `{results['run_dir']}` "
        f"({results['train_rows']:,} rows); batch {results['batch']} positives plus "
        f"{results['negatives']} sampled negatives each.",
    )
    variants = list(results["steps_per_second"])
    rows = []
    for variant in variants:
        rates = results["steps_per_second"][variant]
        cpu = results["cpu_ms_per_step"][variant]
        paired = paired_ratios(results, variant)
        rows.append([
            variant,
            f"{common.median(rates):.1f}",
            common.spread(rates),
            f"{common.median(rates) * results['batch'] * (1 + results['negatives']):,.0f}",
            f"{common.median(cpu):.2f}",
            f"{common.median(paired):.2f}",
            f"{min(paired):.2f}-{max(paired):.2f}",
            f"{common.median(paired_ratios(results, variant, 'cpu_ms_per_step')):.2f}",
        ])
    lines += common.table(
        [
            "variant",
            "steps/s",
            "range",
            "examples/s",
            "CPU ms/step",
            "speed vs unguarded",
            "range",
            "CPU speed vs unguarded",
        ],
        rows,
    )
    ratio = common.median(paired_ratios(results, "guarded"))
    cpu_ratio = common.median(paired_ratios(results, "guarded", "cpu_ms_per_step"))
    verdict = "met" if ratio >= TARGET_RATIO else f"missed by {TARGET_RATIO - ratio:.2f}"
    guarded_pairs = paired_ratios(results, "guarded")
    if min(guarded_pairs) < TARGET_RATIO < max(guarded_pairs):
        verdict += (
            f", with repetitions from {min(guarded_pairs):.2f} to "
            f"{max(guarded_pairs):.2f}, on both sides of the target"
        )
    lines += [
        "",
        "\"speed vs unguarded\" is the median over the repetitions of the variant's "
        "steps per second divided by the unguarded loop's in the same repetition. "
        "\"CPU speed vs unguarded\" is the same ratio for CPU seconds per step, counting "
        "all threads of the process, the input pipeline's included.",
        "",
        f"Guarded / unguarded = {ratio:.2f} in wall time and {cpu_ratio:.2f} in CPU time "
        f"(target {TARGET_RATIO}: {verdict}). "
        f"Load average before the first and after the last repetition: "
        f"{results['load_before']}, {results['load_after']}.",
    ]
    common.write_section("trainer", "4. Trainer: guarded loop, unguarded loop, model.fit", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="run directory of a finished `recguard run`")
    parser.add_argument(
        "--repeats", type=int, default=3, help="repetitions per variant (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=30, help="untimed steps first (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=300, help="timed steps per repetition (default: %(default)s)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS + OPTIONAL_VARIANTS)} (default: %(default)s)",
    )
    args = parser.parse_args()
    variants = args.variants.split(",")

    description = load_description().to_dict()
    names = trainer._model_features(description)
    load_names = [names["user"], names["item"]] + names["categorical"] + names["dense"] + [tm.WEIGHT_FEATURE]
    columns, output = load_train_columns(args.run_dir, load_names)
    results = {
        "run_dir": args.run_dir,
        "train_rows": int(len(columns[names["item"]])),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "steps": args.steps,
        "batch": int(description["model"]["batch_size"]),
        "negatives": int(description["model"]["negatives_per_positive"]),
        "machine": common.machine(),
        "load_before": common.load_average(),
        "steps_per_second": {v: [] for v in variants},
        "cpu_ms_per_step": {v: [] for v in variants},
    }
    runners = {}
    for variant in variants:
        runners[variant] = _Variant(variant, description, output, columns, seed=42)
        runners[variant].run(args.warmup)
    for repeat in range(args.repeats):
        # Each repetition starts with the next variant, so that no variant
        # always runs first or last in a repetition.
        shift = repeat % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            rate, cpu_ms = runners[variant].run(args.steps)
            results["steps_per_second"][variant].append(rate)
            results["cpu_ms_per_step"][variant].append(cpu_ms)
            print(
                f"repeat {repeat + 1} {variant}: {rate:.1f} steps/s, {cpu_ms:.2f} CPU ms/step, "
                f"load {common.load_average()}",
                flush=True,
            )
    results["load_after"] = common.load_average()
    common.save_results("trainer", results)
    write_doc(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
