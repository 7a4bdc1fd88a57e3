"""The peer: an in-memory recommender script of the kind people write by hand.

pandas reads every CSV file, `fillna` imputes, scikit-learn's MinMaxScaler
scales the numeric columns, category codes index the ids, and a tf-keras
embedding model trains for one epoch on the positives plus 4 sampled
negatives each. No validation, no report, no guards: a NaN or inf in the
data goes straight into training. The split is by time, as in recguard:
the latest 20 % of the time range is held out (and unused here).

Prints a final `BENCH_JSON {...}` line with the phase times and the training
examples per second.

    .venv/bin/python bench/peer_inmemory.py --data DIR
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

tf_keras = tf.keras
NEGATIVES = 4
BATCH = 512 * (1 + NEGATIVES)
EMBEDDING_DIM = 32


def prepare(frame: pd.DataFrame) -> tuple[dict, np.ndarray, int]:
    frame["InvoiceDate"] = pd.to_datetime(frame["InvoiceDate"])
    low, high = frame["InvoiceDate"].min(), frame["InvoiceDate"].max()
    train = frame[frame["InvoiceDate"] < high - 0.2 * (high - low)].copy()

    numeric = ["Quantity", "UnitPrice"]
    for name in numeric:
        train[name] = train[name].clip(lower=0)
        train[name] = train[name].fillna(train[name].median())
    train[numeric] = MinMaxScaler().fit_transform(np.log1p(train[numeric]))
    train["CustomerID"] = train["CustomerID"].fillna(-1).astype(str)
    train["Country"] = train["Country"].fillna("unknown")
    features = {
        name: train[name].astype("category").cat.codes.to_numpy().astype(np.int64)
        for name in ("CustomerID", "StockCode", "Country")
    }
    features["numeric"] = train[numeric].to_numpy(np.float32)
    weights = (train["Quantity"].to_numpy(np.float32) > 0).astype(np.float32)
    return features, weights, len(train)


def build_model(num_users: int, num_items: int, num_countries: int) -> tf_keras.Model:
    user = tf_keras.Input((), dtype=tf.int64, name="CustomerID")
    item = tf_keras.Input((), dtype=tf.int64, name="StockCode")
    country = tf_keras.Input((), dtype=tf.int64, name="Country")
    numeric = tf_keras.Input((2,), dtype=tf.float32, name="numeric")
    user_vector = tf_keras.layers.Embedding(num_users, EMBEDDING_DIM)(user) + tf_keras.layers.Embedding(
        num_countries, EMBEDDING_DIM
    )(country)
    item_vector = tf_keras.layers.Embedding(num_items, EMBEDDING_DIM)(item)
    dot = tf_keras.layers.Dot(axes=1)([user_vector, item_vector])
    bias = tf_keras.layers.Flatten()(tf_keras.layers.Embedding(num_items, 1)(item))
    logit = dot + bias + tf_keras.layers.Dense(1)(numeric)
    return tf_keras.Model([user, item, country, numeric], logit)


def with_negatives(features: dict, weights: np.ndarray, num_items: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = len(weights)
    merged = {name: np.concatenate([v] + [v] * NEGATIVES) for name, v in features.items()}
    merged["StockCode"][rows:] = rng.integers(0, num_items, rows * NEGATIVES)
    labels = np.concatenate([np.ones(rows), np.zeros(rows * NEGATIVES)]).astype(np.float32)
    sample_weights = np.concatenate([weights, np.ones(rows * NEGATIVES, np.float32)])
    return merged, labels, sample_weights


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the CSV files")
    args = parser.parse_args()
    times = {}

    started = time.perf_counter()
    paths = sorted(glob.glob(os.path.join(args.data, "*.csv")))
    frame = pd.concat([pd.read_csv(p, encoding_errors="replace") for p in paths], ignore_index=True)
    times["read_s"] = time.perf_counter() - started

    mark = time.perf_counter()
    features, weights, train_rows = prepare(frame)
    num_users, num_items, num_countries = (
        int(features[n].max()) + 1 for n in ("CustomerID", "StockCode", "Country")
    )
    inputs, labels, sample_weights = with_negatives(features, weights, num_items, seed=42)
    times["prepare_s"] = time.perf_counter() - mark

    tf.random.set_seed(42)
    model = build_model(num_users, num_items, num_countries)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(0.01),
        loss=tf_keras.losses.BinaryCrossentropy(from_logits=True),
    )
    mark = time.perf_counter()
    history = model.fit(
        inputs, labels[:, None], sample_weight=sample_weights,
        batch_size=BATCH, epochs=1, shuffle=True, verbose=0,
    )
    times["fit_s"] = time.perf_counter() - mark
    times["total_s"] = time.perf_counter() - started
    examples = len(labels)
    print("BENCH_JSON " + json.dumps({
        **times,
        "work_s": times["total_s"],
        "rows": len(frame),
        "train_rows": train_rows,
        "train_examples": examples,
        "examples_per_s": examples / times["fit_s"],
        "final_loss": float(history.history["loss"][-1]),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
