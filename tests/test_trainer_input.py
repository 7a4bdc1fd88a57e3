"""The Trainer's input pipeline: row order and alignment of the batches."""

from __future__ import annotations

import numpy as np
import pytest

from components import trainer_module

ROWS = 10
BATCH = 4


def _columns():
    ids = np.arange(ROWS, dtype=np.int64)
    return {"item": ids, "price": ids.astype(np.float32) * 0.5}


def _batches(dataset, count):
    iterator = iter(dataset)
    return [next(iterator) for _ in range(count)]


def test_batches_full_across_passes():
    # The passes repeat before batching, so no batch is cut short.
    batches = _batches(trainer_module._shuffled_batches(_columns(), BATCH, seed=7), 4)
    assert [len(b["item"]) for b in batches] == [4, 4, 4, 4]


def test_pass_covers_rows_once():
    # 5 batches of 4 are the 20 rows of two passes over the 10 rows.
    batches = _batches(trainer_module._shuffled_batches(_columns(), BATCH, seed=7), 5)
    stream = np.concatenate([b["item"].numpy() for b in batches])
    first, second = stream[:ROWS], stream[ROWS:]
    assert sorted(first.tolist()) == list(range(ROWS))
    assert sorted(second.tolist()) == list(range(ROWS))
    # A new order on each pass, and not the file order.
    assert first.tolist() != second.tolist()
    assert first.tolist() != list(range(ROWS))


def test_columns_stay_aligned():
    for batch in _batches(trainer_module._shuffled_batches(_columns(), BATCH, seed=3), 5):
        np.testing.assert_array_equal(batch["price"].numpy(), batch["item"].numpy() * 0.5)


def test_same_seed_same_order():
    def order(seed):
        batches = _batches(trainer_module._shuffled_batches(_columns(), BATCH, seed=seed), 3)
        return np.concatenate([b["item"].numpy() for b in batches]).tolist()

    assert order(11) == order(11)


def test_loaded_columns_join_batches_in_order():
    import tensorflow as tf

    # Three reader batches of 2, 2 and 1 rows. "country" is a sparse tensor,
    # the way the reader returns a varlen feature.
    def batch(start, size):
        rows = np.arange(start, start + size, dtype=np.int64)
        return {
            "item": tf.constant(rows[:, None]),
            "country": tf.sparse.from_dense(tf.constant(rows[:, None] + 100)),
            "unused": tf.constant(rows),
        }

    reader = [batch(0, 2), batch(2, 2), batch(4, 1)]
    columns = trainer_module._load_columns(reader, ["item", "country"])

    assert sorted(columns) == ["country", "item"]
    assert all(isinstance(c, tf.Tensor) for c in columns.values())
    arrays = trainer_module._as_arrays(columns)
    np.testing.assert_array_equal(arrays["item"], np.arange(5))
    np.testing.assert_array_equal(arrays["country"], np.arange(5) + 100)
    # The arrays are views of the tensors, which cannot be written through.
    assert not arrays["item"].flags.writeable
    # The input pipeline takes the tensors themselves.
    first = _batches(trainer_module._shuffled_batches(columns, 5, seed=2), 1)[0]
    assert sorted(first["item"].numpy().tolist()) == list(range(5))
    np.testing.assert_array_equal(first["country"].numpy(), first["item"].numpy() + 100)


def test_loaded_columns_of_an_empty_split_are_empty():
    columns = trainer_module._load_columns([], ["item"])
    assert trainer_module._as_arrays(columns)["item"].shape == (0,)


def _small_model():
    import tensorflow as tf

    tf.random.set_seed(5)
    return trainer_module.Recommender(
        user_feature="user",
        item_feature="item",
        num_users=8,
        num_items=8,
        categorical_sizes={"country": 3},
        dense_features=["price"],
        embedding_dim=4,
    )


def _eval_features(rows: int) -> dict[str, np.ndarray]:
    return {
        "user": np.arange(rows, dtype=np.int64) % 6,
        "item": np.arange(rows, dtype=np.int64) % 8,
        "country": np.arange(rows, dtype=np.int64) % 3,
        "price": np.linspace(0.0, 1.0, rows).astype(np.float32),
    }


def test_batched_logits_equal_one_pass(monkeypatch):
    import tensorflow as tf

    model = _small_model()
    rows = 10
    features = _eval_features(rows)
    whole = model({n: tf.constant(v) for n, v in features.items()}, training=False)
    # Batches of 4 rows: 4, 4 and 2.
    monkeypatch.setattr(trainer_module, "EVAL_BATCH_ROWS", 4)
    parts = [logits.numpy() for logits in trainer_module._batched_logits(model, features)]
    assert [len(p) for p in parts] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate(parts), whole["logits"].numpy(), rtol=1e-6)


def test_batched_eval_loss_equals_one_pass(monkeypatch):
    import tensorflow as tf

    from components import guarded_loop

    model = _small_model()
    rows = 10
    features = _eval_features(rows)
    logits = tf.reshape(model({n: tf.constant(v) for n, v in features.items()})["logits"], [-1])
    # Positive rows and a round of the same rows as negatives, in one pass.
    expected, _ = guarded_loop.masked_bce_loss(
        tf.concat([tf.ones([rows]), tf.zeros([rows])], 0), tf.concat([logits, logits], 0)
    )

    monkeypatch.setattr(trainer_module, "EVAL_BATCH_ROWS", 4)
    scored = trainer_module._ScoredRows()
    positive = scored.score(model, features, 1.0)
    negative = scored.score(model, features, 0.0)

    assert scored.valid_rows == 2 * rows
    assert scored.loss == pytest.approx(float(expected.numpy()), rel=1e-6)
    np.testing.assert_allclose(positive, tf.sigmoid(logits).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(positive, negative)


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    # Scores rounded to one decimal, so many positives tie with negatives.
    positive = np.round(rng.uniform(0.2, 1.0, 300), 1).astype(np.float32)
    negative = np.round(rng.uniform(0.0, 0.8, 700), 1).astype(np.float32)
    labels = np.concatenate([np.ones(300), np.zeros(700)])
    expected = roc_auc_score(labels, np.concatenate([positive, negative]))

    assert trainer_module._auc(positive, negative) == pytest.approx(expected, abs=1e-12)
    # Hand values: one win, one tie and one loss out of 3 pairs.
    assert trainer_module._auc(np.array([0.5]), np.array([0.2, 0.5, 0.9])) == pytest.approx(0.5)
    assert trainer_module._auc(np.array([0.5]), np.array([], np.float32)) == 0.5


def test_auc_names_nan_scores():
    with pytest.raises(ValueError, match="1 of 2 evaluation scores are NaN"):
        trainer_module._auc(np.array([0.5, np.nan]), np.array([0.1]))


def test_top_k_breaks_ties_by_item_index():
    scores = np.array([[1.0, 3.0, 3.0, 0.5, 3.0]])
    np.testing.assert_array_equal(trainer_module.top_k_items(scores, 3), [[1, 2, 4]])


def test_top_k_matches_stable_argsort_with_ties():
    # Scores from five values over 500 items: almost every score is tied.
    scores = np.random.default_rng(3).integers(0, 5, (64, 500)).astype(np.float32)

    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]

    np.testing.assert_array_equal(trainer_module.top_k_items(scores, 10), expected)


def test_top_k_with_k_above_item_count():
    scores = np.array([[0.2, 0.9, 0.5]])
    np.testing.assert_array_equal(trainer_module.top_k_items(scores, 10), [[1, 2, 0]])


def test_ranking_metrics_match_hand_values():
    top = np.array([[2, 0], [1, 0], [4, 5]])
    relevant = [{2}, {0, 3}, set()]

    recalls, ndcgs = trainer_module.ranking_metrics(top, relevant, k=2)

    # The user without held-out items is left out.
    assert len(recalls) == 2
    np.testing.assert_allclose(recalls, [1.0, 0.5])
    # The second user: one hit at rank 2, two held-out items.
    second = (1.0 / np.log2(3)) / (1.0 + 1.0 / np.log2(3))
    np.testing.assert_allclose(ndcgs, [1.0, second])


def test_evaluation_in_user_blocks_equals_one_block(monkeypatch):
    rows = 12
    names = {"user": "user", "item": "item", "categorical": ["country"], "dense": ["price"]}
    eval_ = {
        "user": np.arange(rows, dtype=np.int64) % 7,
        "item": (np.arange(rows, dtype=np.int64) * 3) % 6,
        "country": np.arange(rows, dtype=np.int64) % 3,
        "price": np.linspace(0.0, 1.0, rows).astype(np.float32),
    }
    train_items = np.array([0, 0, 1, 2, 2, 2, 5], np.int64)
    model = _small_model()

    def run():
        return trainer_module.evaluate(
            model, names, train_items, eval_, num_items=6, missing_user_index=-1,
            k=3, negatives=2, seed=1,
        )

    whole = run()
    # Blocks of 2 users: the 7 users are ranked in 4 blocks.
    monkeypatch.setattr(trainer_module, "RANKING_BLOCK_USERS", 2)
    blocked = run()

    assert whole["eval_users"] == 7
    assert blocked == whole
    # The popularity list is items 2, 0, 1; compare with a hand count.
    held_out = {}
    for user, item in zip(eval_["user"], eval_["item"]):
        held_out.setdefault(int(user), set()).add(int(item))
    expected = np.mean([len(items & {2, 0, 1}) / len(items) for items in held_out.values()])
    assert whole["popularity_recall_at_3"] == pytest.approx(expected)
