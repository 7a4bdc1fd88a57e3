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
