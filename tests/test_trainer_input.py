"""The Trainer's input pipeline: row order and alignment of the batches."""

from __future__ import annotations

import numpy as np

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


def test_batched_logits_equal_one_pass(monkeypatch):
    import tensorflow as tf

    tf.random.set_seed(5)
    model = trainer_module.Recommender(
        user_feature="user",
        item_feature="item",
        num_users=6,
        num_items=8,
        categorical_sizes={"country": 3},
        dense_features=["price"],
        embedding_dim=4,
    )
    rows = 10
    features = {
        "user": np.arange(rows, dtype=np.int64) % 6,
        "item": np.arange(rows, dtype=np.int64) % 8,
        "country": np.arange(rows, dtype=np.int64) % 3,
        "price": np.linspace(0.0, 1.0, rows).astype(np.float32),
    }
    whole = model({n: tf.constant(v) for n, v in features.items()}, training=False)
    # Batches of 4 rows: 4, 4 and 2.
    monkeypatch.setattr(trainer_module, "EVAL_BATCH_ROWS", 4)
    batched = trainer_module._predict_logits(model, features)
    assert batched.shape == (rows,)
    np.testing.assert_allclose(batched, whole["logits"].numpy(), rtol=1e-6)
