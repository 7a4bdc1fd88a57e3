"""Trainer module: an embedding recommender trained with the guarded loop.

TFX's Trainer calls `run_fn`. The model's logit for a (user, item) pair is
the dot product of a user vector and an item embedding, plus an item bias
and a linear term on the scaled numeric features and missing indicators.
The user vector is the user embedding plus the embeddings of the
categorical features. Data with only
positive interactions is trained against sampled negative items, with the
positive rows weighted by the scaled interaction count.

The exported SavedModel has two signatures:

- ``serving_default``: serialized `tf.Example`s with raw columns, any
  non-key column absent or NaN; applies the Transform graph and returns
  ``score`` in [0, 1].
- ``top_k``: raw user ids; returns the ``top_k`` item ids and scores.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

try:
    from components import guarded_loop, memory
    from components import transform_module as tm
except ImportError:
    # TFX ships this file to remote workers in its user-module wheel, which
    # contains the files of this folder as top-level modules.
    import guarded_loop  # type: ignore[no-redef]
    import memory  # type: ignore[no-redef]
    import transform_module as tm  # type: ignore[no-redef]

tf_keras = tf.keras

METRICS_FILE = "metrics.json"
SERVING_ROLES = ("user_id", "item_id", "numeric", "categorical")


def _columns(description, *roles):
    return [n for n, s in description["columns"].items() if s["role"] in roles]


class Recommender(tf_keras.Model):
    """Two-tower scorer with item bias and a linear term on numeric features."""

    def __init__(
        self,
        user_feature: str,
        item_feature: str,
        num_users: int,
        num_items: int,
        categorical_sizes: dict[str, int],
        dense_features: list[str],
        embedding_dim: int,
    ):
        super().__init__()
        self.user_feature = user_feature
        self.item_feature = item_feature
        self.dense_features = list(dense_features)
        self.categorical_names = sorted(categorical_sizes)
        regularizer = tf_keras.regularizers.l2(1e-6)
        self.user_embedding = tf_keras.layers.Embedding(
            num_users, embedding_dim, embeddings_regularizer=regularizer, name="user_embedding"
        )
        self.item_embedding = tf_keras.layers.Embedding(
            num_items, embedding_dim, embeddings_regularizer=regularizer, name="item_embedding"
        )
        self.item_bias = tf_keras.layers.Embedding(
            num_items, 1, embeddings_initializer="zeros", name="item_bias"
        )
        self.categorical_embeddings = [
            tf_keras.layers.Embedding(
                categorical_sizes[name], embedding_dim, name=f"{name}_embedding"
            )
            for name in self.categorical_names
        ]
        self.dense = tf_keras.layers.Dense(1, name="numeric_linear")

    def user_vector(self, features):
        vector = self.user_embedding(features[self.user_feature])
        for name, layer in zip(self.categorical_names, self.categorical_embeddings):
            vector = vector + layer(features[name])
        return vector

    def call(self, features, training=False):
        user = self.user_vector(features)
        item = self.item_embedding(features[self.item_feature])
        logits = tf.reduce_sum(user * item, axis=-1)
        logits += tf.squeeze(self.item_bias(features[self.item_feature]), -1)
        if self.dense_features:
            dense = tf.stack(
                [tf.cast(features[n], tf.float32) for n in self.dense_features], axis=-1
            )
            logits += tf.squeeze(self.dense(dense), -1)
        return {"logits": logits, "user_embedding": user, "item_embedding": item}

    def score_all_items(self, features):
        """Returns [batch, num_items] logits without the numeric term."""
        user = self.user_vector(features)
        logits = tf.matmul(user, self.item_embedding.embeddings, transpose_b=True)
        return logits + tf.reshape(self.item_bias.embeddings, [1, -1])


def _model_features(description) -> dict[str, list[str]]:
    user = tm.index_name(_columns(description, "user_id")[0])
    item = tm.index_name(_columns(description, "item_id")[0])
    categorical = [tm.index_name(c) for c in _columns(description, "categorical")]
    dense = []
    for column in _columns(description, "numeric"):
        dense += [tm.scaled_name(column), tm.missing_name(column)]
    for column in _columns(description, "categorical"):
        dense.append(tm.missing_name(column))
    return {"user": user, "item": item, "categorical": categorical, "dense": dense}


def _read_split(file_pattern, data_accessor, tf_transform_output, batch_size):
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=False, num_epochs=1),
        tf_transform_output.transformed_metadata.schema,
    )


def _load_columns(dataset, names) -> dict[str, tf.Tensor]:
    """Read whole columns of a transformed split into memory, one tensor each.

    The columns stay TensorFlow tensors, so the input pipeline uses them
    without a copy, and `_as_arrays` gives NumPy views of the same memory.
    With TensorFlow 2.16, ``tf.constant`` of a 381 MiB int64 NumPy array
    raised RSS by 765 MiB, so converting NumPy columns costs more than
    their size.
    """
    parts: dict[str, list[tf.Tensor]] = {n: [] for n in names}
    for batch in dataset:
        for name in names:
            value = batch[name]
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(value)
            parts[name].append(tf.reshape(value, [-1]))
    columns = {}
    for name in names:
        # Each column's batches are freed before the next column is joined.
        batches = parts.pop(name)
        columns[name] = tf.concat(batches, 0) if batches else tf.zeros([0])
        del batches
    return columns


def _as_arrays(columns: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    """Return read-only NumPy views that share the memory of the columns' tensors."""
    return {name: np.asarray(values) for name, values in columns.items()}


def _shuffled_batches(columns: dict[str, Any], batch_size: int, seed: int):
    """Batches of rows in a new random order on every pass over the data.

    Shuffles row numbers, not rows, and gathers each batch from the columns.
    A shuffle buffer of whole rows costs far more memory per row and, when
    smaller than the data, only shuffles within a window. Each pass is one
    permutation of one int64 vector: a ``Dataset.shuffle`` buffer of the
    row numbers took 80 MB more and twice the CPU per batch on the 360,208
    training rows of the Online Retail year.
    """
    rows = len(next(iter(columns.values())))
    # Tensors pass through unchanged. NumPy arrays are copied.
    tensors = {name: tf.convert_to_tensor(values) for name, values in columns.items()}
    return (
        tf.data.Dataset.from_tensors(tf.range(rows, dtype=tf.int64))
        .repeat()
        .map(lambda row_numbers: tf.random.shuffle(row_numbers, seed=seed))
        # The passes join before batching, so no batch is cut short.
        .unbatch()
        .batch(batch_size, drop_remainder=False)
        .map(
            lambda index: {name: tf.gather(t, index) for name, t in tensors.items()},
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    )


def _with_negatives(features, names, num_items, negatives, seed):
    """Builds a training batch: positives (label 1) and sampled items (label 0)."""

    def build(batch):
        size = tf.shape(batch[names["item"]])[0]
        positives = {k: batch[k] for k in [names["user"], names["item"]] + names["categorical"] + names["dense"]}
        tiled = {k: tf.tile(v, [negatives]) for k, v in positives.items()}
        tiled[names["item"]] = tf.random.uniform(
            [size * negatives], 0, num_items, dtype=tf.int64, seed=seed
        )
        merged = {k: tf.concat([positives[k], tiled[k]], 0) for k in positives}
        labels = tf.concat([tf.ones([size]), tf.zeros([size * negatives])], 0)
        weights = tf.concat(
            [tf.cast(batch[tm.WEIGHT_FEATURE], tf.float32), tf.ones([size * negatives])], 0
        )
        return merged, labels, weights

    return features.map(build, num_parallel_calls=tf.data.AUTOTUNE)


# Users scored at once when ranking every item. A block's [users, items]
# scores and their sort are the largest arrays of the evaluation. On the
# 1,938 eval users of the Online Retail year, ranking raised the Trainer's
# RSS by about 0.07 GiB with blocks of 1,024 users and 0.01 to 0.03 GiB
# with blocks of 256 (one run each).
RANKING_BLOCK_USERS = 256


def top_k_items(scores, k: int) -> np.ndarray:
    """Returns each row's k highest-scoring item indices, best first.

    Equal scores rank the lower item index first, as in `tf.math.top_k` and
    so in the serving signature. A full argsort would also sort every row
    into an int64 array as large as the scores.
    """
    scores = tf.convert_to_tensor(scores)
    return tf.math.top_k(scores, k=min(k, int(scores.shape[-1]))).indices.numpy()


def ranking_metrics(
    top: np.ndarray, relevant: list[set[int]], k: int
) -> tuple[list[float], list[float]]:
    """Returns per-user Recall@k and NDCG@k with binary relevance.

    Args:
        top: [users, <= k] item indices, best first (`top_k_items`).
        relevant: per user, the set of held-out item indices. Users with an
            empty set are left out.
        k: cut-off.
    """
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, items in zip(top, relevant):
        if not items:
            continue
        hits = np.array([item in items for item in row], dtype=np.float64)
        recalls.append(hits.sum() / len(items))
        ideal = discounts[: min(len(items), k)].sum()
        ndcgs.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return recalls, ndcgs


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Returns the exact ROC AUC, or 0.5 when one of the two classes is empty.

    The AUC is the probability that a positive row scores above a negative
    one, with ties counted as one half. Only the negatives are sorted, and
    for each positive score the negatives below and equal to it are counted.

    Raises:
        ValueError: a score is NaN. The message gives their count.
    """
    for scores in (positive_scores, negative_scores):
        nan = int(np.count_nonzero(np.isnan(scores)))
        if nan:
            raise ValueError(
                f"{nan} of {scores.size} evaluation scores are NaN, so the AUC is "
                "undefined. The model's variables or its transformed inputs contain "
                "non-finite values: check the post-transform check and the "
                "training log's skipped steps"
            )
    if positive_scores.size == 0 or negative_scores.size == 0:
        return 0.5
    negatives = np.sort(negative_scores)
    below = np.searchsorted(negatives, positive_scores, side="left")
    at_or_below = np.searchsorted(negatives, positive_scores, side="right")
    wins = below.sum(dtype=np.float64) + 0.5 * (at_or_below - below).sum(dtype=np.float64)
    return float(wins / (positive_scores.size * negative_scores.size))


# Rows per forward pass in evaluation. The activations of every layer and the
# loss's intermediates for one batch are alive at the same time. On the
# Online Retail year (908,505 rows with the negatives), scoring raised the
# Trainer's RSS by about 0.05 GiB with batches of 65,536 rows and 0.01 GiB
# with batches of 8,192.
EVAL_BATCH_ROWS = 8_192


class _ScoredRows:
    """Sigmoid scores and the masked cross-entropy of rows scored in batches."""

    def __init__(self):
        self.loss_sum = 0.0
        self.valid_rows = 0

    def score(self, model, features: dict[str, np.ndarray], label: float) -> np.ndarray:
        """Returns the model's scores for every row and adds their loss to the sum."""
        parts = []
        for logits in _batched_logits(model, features):
            labels = tf.fill(tf.shape(logits), label)
            loss, masked = guarded_loop.masked_bce_loss(labels, logits)
            valid = int(logits.shape[0]) - int(masked.numpy())
            self.loss_sum += float(loss.numpy()) * valid
            self.valid_rows += valid
            parts.append(tf.sigmoid(logits).numpy())
        return np.concatenate(parts) if parts else np.zeros([0], np.float32)

    @property
    def loss(self) -> float:
        """Mean loss over the rows with a finite loss, or 0.0 when there are none."""
        return self.loss_sum / self.valid_rows if self.valid_rows else 0.0


def _batched_logits(model, features: dict[str, np.ndarray]):
    """Yields the model's logits as vectors of EVAL_BATCH_ROWS rows or fewer."""
    rows = len(next(iter(features.values())))
    for start in range(0, rows, EVAL_BATCH_ROWS):
        batch = {n: tf.constant(v[start : start + EVAL_BATCH_ROWS]) for n, v in features.items()}
        yield tf.reshape(model(batch, training=False)["logits"], [-1])


def evaluate(model, names, train_items, eval_, num_items, missing_user_index, k, negatives, seed):
    """Computes eval loss, AUC, Recall@k and NDCG@k, with a popularity baseline.

    Ranking is over every in-vocabulary item; users are the eval split's users
    other than the missing-user token. The popularity baseline recommends
    the k items with the most training interactions (``train_items``, the
    item index of every training row) to every user.
    """
    rng = np.random.default_rng(seed)
    size = len(eval_[names["item"]])
    feature_names = [names["user"], names["item"]] + names["categorical"] + names["dense"]
    positives = {n: eval_[n] for n in feature_names}
    # Each round of negatives pairs every eval row with a sampled item. The
    # rounds are scored one by one, so no copy of the eval split is made
    # per round.
    scored = _ScoredRows()
    positive_scores = scored.score(model, positives, 1.0)
    negative_parts = []
    for _ in range(negatives):
        sampled = dict(positives)
        sampled[names["item"]] = rng.integers(0, num_items, size)
        negative_parts.append(scored.score(model, sampled, 0.0))
    negative_scores = (
        np.concatenate(negative_parts) if negative_parts else np.zeros([0], np.float32)
    )
    auc = _auc(positive_scores, negative_scores)

    user_items: dict[int, set[int]] = {}
    user_rows: dict[int, int] = {}
    for row, (user, item) in enumerate(zip(eval_[names["user"]], eval_[names["item"]])):
        if user == missing_user_index or item >= num_items:
            continue
        user_items.setdefault(int(user), set()).add(int(item))
        user_rows.setdefault(int(user), row)
    users = sorted(user_items)
    relevant = [user_items[u] for u in users]
    recalls, ndcgs = [], []
    for start in range(0, len(users), RANKING_BLOCK_USERS):
        rows = [user_rows[u] for u in users[start : start + RANKING_BLOCK_USERS]]
        user_features = {
            n: tf.constant(eval_[n][rows]) for n in [names["user"]] + names["categorical"]
        }
        scores = model.score_all_items(user_features)[:, :num_items]
        block_recalls, block_ndcgs = ranking_metrics(
            top_k_items(scores, k), relevant[start : start + RANKING_BLOCK_USERS], k
        )
        recalls += block_recalls
        ndcgs += block_ndcgs

    counts = np.bincount(
        train_items[train_items < num_items].astype(np.int64),
        minlength=num_items,
    ).astype(np.float64)
    # The popularity baseline gives every user the same list.
    popular = top_k_items(counts[None, :], k)[0]
    pop_recalls, pop_ndcgs = ranking_metrics(
        np.broadcast_to(popular, (len(users), len(popular))), relevant, k
    )
    return {
        "eval_loss": scored.loss,
        "auc": auc,
        f"recall_at_{k}": _mean(recalls),
        f"ndcg_at_{k}": _mean(ndcgs),
        f"popularity_recall_at_{k}": _mean(pop_recalls),
        f"popularity_ndcg_at_{k}": _mean(pop_ndcgs),
        "eval_users": len(users),
        "eval_examples": int(size),
    }


def _serving_signatures(model, tf_transform_output, description, names, k):
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_columns = _columns(description, *SERVING_ROLES)
    serving_spec = {c: raw_spec[c] for c in serving_columns if c in raw_spec}
    model.tft_layer = tf_transform_output.transform_features_layer()
    feature_names = [names["user"], names["item"]] + names["categorical"] + names["dense"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(serialized):
        raw = tf.io.parse_example(serialized, serving_spec)
        transformed = model.tft_layer(raw)
        features = {n: transformed[n] for n in feature_names}
        logits = model(features, training=False)["logits"]
        return {"score": tf.sigmoid(logits)}

    user_column = _columns(description, "user_id")[0]
    item_column = _columns(description, "item_id")[0]
    user_vocab = tf_transform_output.vocabulary_by_name(tm.vocabulary_name(user_column))
    item_vocab = tf_transform_output.vocabulary_by_name(tm.vocabulary_name(item_column))
    num_items = len(item_vocab)
    model.user_table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(user_vocab), tf.range(len(user_vocab), dtype=tf.int64)
        ),
        default_value=len(user_vocab),
    )
    model.item_ids = tf.Variable(tf.constant(item_vocab), trainable=False)
    top_k = min(k, num_items)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    def serve_top_k(user_ids):
        trimmed = tf.strings.strip(user_ids)
        tokens = tf.where(trimmed == "", tf.constant(tm.MISSING_TOKEN.encode()), trimmed)
        users = model.user_table.lookup(tokens)
        features = {names["user"]: users}
        for name in names["categorical"]:
            # Categorical user features are unknown here, so their OOV row is used.
            size = model.categorical_embeddings[model.categorical_names.index(name)].input_dim
            features[name] = tf.fill(tf.shape(users), tf.constant(size - 1, tf.int64))
        logits = model.score_all_items(features)[:, :num_items]
        values, indices = tf.math.top_k(logits, k=top_k)
        return {"item_ids": tf.gather(model.item_ids, indices), "scores": tf.sigmoid(values)}

    return {"serving_default": serve_examples, "top_k": serve_top_k}


def _guard_config(custom_config) -> guarded_loop.GuardConfig:
    """Returns the loop's guards: the description's, then the run's overrides."""
    settings = dict(custom_config["description"].get("model", {}).get("guard", {}))
    settings.update(custom_config.get("guard", {}))
    return guarded_loop.GuardConfig(**settings)


def run_fn(fn_args):
    """Trainer calls this: train, evaluate, export the model and metrics."""
    custom_config = fn_args.custom_config
    description = custom_config["description"]
    model_config = description.get("model", {})
    batch_size = int(model_config.get("batch_size", 512))
    negatives = int(model_config.get("negatives_per_positive", 4))
    k = int(model_config.get("top_k", 10))
    seed = int(custom_config.get("seed", 42))
    tf.random.set_seed(seed)

    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    names = _model_features(description)
    user_column = _columns(description, "user_id")[0]
    item_column = _columns(description, "item_id")[0]
    num_items = tf_transform_output.vocabulary_size_by_name(tm.vocabulary_name(item_column))
    num_users = tf_transform_output.vocabulary_size_by_name(tm.vocabulary_name(user_column))
    categorical_sizes = {
        tm.index_name(c): tf_transform_output.vocabulary_size_by_name(tm.vocabulary_name(c))
        + tm.NUM_OOV_BUCKETS
        for c in _columns(description, "categorical")
    }
    user_vocab = tf_transform_output.vocabulary_by_name(tm.vocabulary_name(user_column))
    missing_user = (
        user_vocab.index(tm.MISSING_TOKEN.encode())
        if tm.MISSING_TOKEN.encode() in user_vocab
        else -1
    )

    load_names = [names["user"], names["item"]] + names["categorical"] + names["dense"] + [tm.WEIGHT_FEATURE]
    train_columns = _load_columns(
        _read_split(fn_args.train_files, fn_args.data_accessor, tf_transform_output, 4096),
        load_names,
    )
    eval_ = _as_arrays(
        _load_columns(
            _read_split(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, 4096),
            load_names,
        )
    )
    train = _as_arrays(train_columns)
    # The reader's batches are garbage now. Freeing them before the model and
    # the input pipeline allocate keeps them from adding to the peak.
    memory.release_unused_memory()
    for name in names["dense"]:
        if name.endswith("_scaled") and train[name].size and float(train[name].max()) == 0.0:
            logging.warning(
                "%s is 0.0 in every training row: the column is constant or "
                "missing throughout, so min-max scaling maps it to 0.0",
                name,
            )

    model = Recommender(
        user_feature=names["user"],
        item_feature=names["item"],
        num_users=num_users + tm.NUM_OOV_BUCKETS,
        num_items=num_items + tm.NUM_OOV_BUCKETS,
        categorical_sizes=categorical_sizes,
        dense_features=names["dense"],
        embedding_dim=int(model_config.get("embedding_dim", 32)),
    )
    dataset = _shuffled_batches(train_columns, batch_size, seed)
    dataset = _with_negatives(dataset, names, num_items, negatives, seed).prefetch(2)
    optimizer = tf_keras.optimizers.Adam(float(model_config.get("learning_rate", 0.01)))
    config = _guard_config(custom_config)
    loop = guarded_loop.GuardedLoop(
        model,
        optimizer,
        config,
        checked_outputs=("logits", "user_embedding", "item_embedding"),
    )
    writer = tf.summary.create_file_writer(fn_args.model_run_dir)

    def on_log(step, values):
        logging.info(
            "step %d: loss %.4f, grad norm %.3f, skipped %d, masked %d",
            step,
            values["loss"],
            values["grad_norm"],
            values["skipped_steps"],
            values["masked_examples"],
        )
        with writer.as_default(step=step):
            for key, value in values.items():
                tf.summary.scalar(f"train/{key}", value)

    steps = int(fn_args.train_steps or 1000)
    result = loop.run(dataset, max_steps=steps, log_every=max(1, steps // 10), on_log=on_log)

    train_examples = int(len(train[names["item"]]))
    train_items = train[names["item"]]
    # Evaluation needs only the training rows' items. The other training
    # columns and the input pipeline are freed first, so they do not add to
    # the peak of the evaluation and the export.
    del train, train_columns, dataset
    memory.release_unused_memory()
    metrics = evaluate(
        model, names, train_items, eval_, num_items, missing_user, k, negatives, seed
    )
    del train_items, eval_
    memory.release_unused_memory()
    metrics.update(
        {
            "train_steps": result.steps,
            "final_train_loss": result.final_loss,
            "skipped_steps": result.skipped_steps,
            "masked_examples": result.masked_examples,
            "examples_per_second": result.examples_per_second,
            "train_examples": train_examples,
        }
    )
    with writer.as_default(step=result.steps):
        for key, value in metrics.items():
            tf.summary.scalar(f"eval/{key}", value)
    writer.flush()
    logging.info("Evaluation: %s", json.dumps(metrics, sort_keys=True))

    signatures = _serving_signatures(model, tf_transform_output, description, names, k)
    tf.saved_model.save(model, fn_args.serving_model_dir, signatures=signatures)
    for folder in (fn_args.model_run_dir, fn_args.serving_model_dir):
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(os.path.join(folder, METRICS_FILE), "w") as f:
            f.write(json.dumps(metrics, indent=2, sort_keys=True))
