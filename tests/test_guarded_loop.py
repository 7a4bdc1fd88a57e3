"""Tests for components.guarded_loop on a small two-tower model."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from components.guarded_loop import (  # noqa: E402
    GuardConfig,
    GuardedLoop,
    NonFiniteTrainingError,
    masked_bce_loss,
)

NUM_USERS = 8
NUM_ITEMS = 6
BATCH_SIZE = 8


@tf.custom_gradient
def _inject_inf_gradient(value, poison):
    """Pass ``value`` through, but make its gradient inf when any poison is > 0."""

    def gradient(upstream):
        poisoned = tf.reduce_any(poison > 0)
        inf = tf.constant(np.inf, upstream.dtype)
        return tf.where(poisoned, inf, upstream), tf.zeros_like(poison)

    return tf.identity(value), gradient


class TinyRecommender(tf_keras.Model):
    """User and item embeddings, a dense score and a price term.

    ``price_weight`` starts at 0, so an inf or NaN price gives a NaN logit and a
    NaN gradient for ``price_weight`` only. A ``poison`` feature > 0 makes the
    gradient of ``price_weight`` inf while every output stays finite.
    """

    def __init__(self, seed=0):
        super().__init__()
        init = tf_keras.initializers.RandomUniform(-0.1, 0.1, seed=seed)
        self.user_embedding = tf_keras.layers.Embedding(
            NUM_USERS, 4, embeddings_initializer=init, name="user_embedding"
        )
        self.item_embedding = tf_keras.layers.Embedding(
            NUM_ITEMS, 4, embeddings_initializer=init, name="item_embedding"
        )
        self.score = tf_keras.layers.Dense(1, kernel_initializer=init, name="score")
        self.price_weight = self.add_weight(
            name="price_weight", shape=(), initializer="zeros"
        )

    def call(self, features, training=False):
        user = self.user_embedding(features["user_id"])
        item = self.item_embedding(features["item_id"])
        price_weight = _inject_inf_gradient(
            tf.convert_to_tensor(self.price_weight), features["poison"]
        )
        score = tf.squeeze(self.score(tf.concat([user, item], axis=-1)), axis=-1)
        logits = score + price_weight * features["price"]
        return {"logits": logits, "user_embedding": user, "item_embedding": item}


def make_batch(seed=0, price=None, poison=False, labels=None, weights=None):
    rng = np.random.default_rng(seed)
    user_id = rng.integers(0, NUM_USERS, BATCH_SIZE)
    if price is None:
        price = rng.uniform(0.0, 1.0, BATCH_SIZE)
    features = {
        "user_id": tf.constant(user_id, tf.int64),
        "item_id": tf.constant(rng.integers(0, NUM_ITEMS, BATCH_SIZE), tf.int64),
        "price": tf.constant(price, tf.float32),
        "poison": tf.fill([BATCH_SIZE], 1.0 if poison else 0.0),
    }
    if labels is None:
        labels = (user_id % 2).astype(np.float32)
    if weights is None:
        weights = rng.uniform(0.5, 2.0, BATCH_SIZE)
    return features, tf.constant(labels, tf.float32), tf.constant(weights, tf.float32)


def build_loop(optimizer=None, **config):
    model = TinyRecommender()
    if optimizer is None:
        optimizer = tf_keras.optimizers.Adam(learning_rate=0.01)
    loop = GuardedLoop(
        model,
        optimizer,
        GuardConfig(**config),
        checked_outputs=("logits", "user_embedding", "item_embedding"),
    )
    return model, optimizer, loop


def optimizer_variables(optimizer):
    variables = optimizer.variables
    # tf_keras.optimizers.legacy exposes variables() as a method.
    return variables() if callable(variables) else variables


def snapshot(variables):
    return [np.array(v.numpy(), copy=True) for v in variables]


def sigmoid_cross_entropy(labels, logits):
    """Written-out formula: max(x, 0) - x * z + log(1 + exp(-|x|))."""
    x = logits.astype(np.float64)
    z = labels.astype(np.float64)
    return np.maximum(x, 0.0) - x * z + np.log1p(np.exp(-np.abs(x)))


def weighted_mean_loss(labels, logits, weights):
    per_example = sigmoid_cross_entropy(labels, logits)
    return np.sum(weights * per_example) / np.sum(weights)


# --- GuardConfig -------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("clip_norm", 0.0),
        ("clip_norm", float("inf")),
        ("clip_norm", float("nan")),
        ("check_mode", "sometimes"),
        ("check_every", 0),
        ("max_consecutive_skips", -1),
        ("max_skip_fraction", 1.5),
        ("min_steps_for_fraction", 0),
        ("guards", "yes"),
    ],
)
def test_config_rejects_invalid_value(field, value):
    with pytest.raises(ValueError, match=f"GuardConfig.{field} .*{value!r}"):
        GuardConfig(**{field: value})


# --- masked_bce_loss ---------------------------------------------------------


def test_masked_loss_nan_label_matches_hand():
    labels = np.array([1.0, np.nan, 0.0, 1.0], np.float32)
    logits = np.array([0.5, -1.0, 2.0, -0.3], np.float32)
    weights = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    valid = np.array([0, 2, 3])
    expected = weighted_mean_loss(labels[valid], logits[valid], weights[valid])

    logits_tensor = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_tensor)
        loss, num_masked = masked_bce_loss(
            tf.constant(labels), logits_tensor, tf.constant(weights)
        )
    gradient = tape.gradient(loss, logits_tensor).numpy()

    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert int(num_masked) == 1
    assert np.all(np.isfinite(gradient))
    assert gradient[1] == 0.0


@pytest.mark.parametrize(
    "row_label, row_logit, row_weight",
    [
        (1.0, 0.5, np.nan),  # NaN weight
        (1.0, 0.5, -1.0),  # negative weight
        (1.0, np.inf, 1.0),  # inf logit
        (1.0, np.nan, 1.0),  # NaN logit
        (-np.inf, 0.5, 1.0),  # inf label
        (3e38, 10.0, 1.0),  # finite label whose loss overflows to -inf
    ],
)
def test_masked_loss_leaves_out_invalid_row(row_label, row_logit, row_weight):
    labels = np.array([1.0, row_label, 0.0], np.float32)
    logits = np.array([0.7, row_logit, -0.2], np.float32)
    weights = np.array([2.0, row_weight, 1.0], np.float32)
    valid = np.array([0, 2])
    expected = weighted_mean_loss(labels[valid], logits[valid], weights[valid])

    loss, num_masked = masked_bce_loss(
        tf.constant(labels), tf.constant(logits), tf.constant(weights)
    )

    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert int(num_masked) == 1


def test_masked_loss_gradient_is_zero_for_overflowing_row():
    labels = tf.constant([1.0, 3e38, 0.0])
    logits = tf.constant([0.7, 10.0, -0.2])
    weights = tf.constant([2.0, 1.0, 1.0])

    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss, num_masked = masked_bce_loss(labels, logits, weights)
    gradient = tape.gradient(loss, logits).numpy()

    assert int(num_masked) == 1
    assert np.all(np.isfinite(gradient))
    assert gradient[1] == 0.0
    # d/dx of the weighted mean over the two kept rows: w * (sigmoid(x) - z) / sum(w).
    sigmoid = 1.0 / (1.0 + np.exp(-np.array([0.7, -0.2])))
    expected = np.array([2.0, 1.0]) * (sigmoid - np.array([1.0, 0.0])) / 3.0
    np.testing.assert_allclose(gradient[[0, 2]], expected, rtol=1e-5)


def test_masked_loss_without_valid_rows_is_zero():
    logits = tf.constant([[0.3], [0.1]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss, num_masked = masked_bce_loss(tf.constant([[np.nan], [np.inf]]), logits)
    gradient = tape.gradient(loss, logits).numpy()

    assert float(loss) == 0.0
    assert int(num_masked) == 2
    assert np.array_equal(gradient, np.zeros((2, 1), np.float32))


def test_masked_loss_default_weights_are_one():
    labels = np.array([1.0, 0.0, 1.0], np.float32)
    logits = np.array([0.2, -0.4, 1.5], np.float32)
    expected = np.mean(sigmoid_cross_entropy(labels, logits))

    loss, num_masked = masked_bce_loss(tf.constant(labels), tf.constant(logits))

    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert int(num_masked) == 0


# --- GuardedLoop.train_step --------------------------------------------------


def test_step_nan_label_loss_matches_hand():
    model, _, loop = build_loop()
    features, labels, weights = make_batch(labels=[1, 0, np.nan, 1, 0, 1, 1, 0])
    logits = model(features, training=False)["logits"].numpy()
    valid = np.array([0, 1, 3, 4, 5, 6, 7])
    expected = weighted_mean_loss(
        labels.numpy()[valid], logits[valid], weights.numpy()[valid]
    )

    result = loop.train_step(features, labels, weights)

    assert float(result["loss"]) == pytest.approx(expected, rel=1e-5)
    assert int(result["num_masked"]) == 1
    assert not bool(result["skipped"])
    assert int(loop.masked_examples.numpy()) == 1


@pytest.mark.parametrize(
    "optimizer_class",
    [tf_keras.optimizers.Adam, tf_keras.optimizers.legacy.Adam],
    ids=["adam", "legacy_adam"],
)
def test_inf_gradient_keeps_state_bit_identical(optimizer_class):
    model, optimizer, loop = build_loop(optimizer_class(learning_rate=0.01))
    # A healthy step first, so the optimizer has non-zero moments to protect.
    loop.train_step(*make_batch(seed=1))
    model_before = snapshot(model.variables)
    optimizer_before = snapshot(optimizer_variables(optimizer))

    result = loop.train_step(*make_batch(seed=2, poison=True))

    assert bool(result["skipped"])
    assert not np.isfinite(float(result["grad_norm"]))
    for before, after in zip(model_before, snapshot(model.variables)):
        assert np.array_equal(before, after)
    for before, after in zip(
        optimizer_before, snapshot(optimizer_variables(optimizer))
    ):
        assert np.array_equal(before, after)
    assert int(loop.skipped_steps.numpy()) == 1
    assert int(loop.consecutive_skips.numpy()) == 1
    assert int(loop.step.numpy()) == 2


def test_healthy_step_resets_consecutive_skips():
    model, _, loop = build_loop()
    loop.train_step(*make_batch(seed=1, poison=True))
    before = snapshot(model.trainable_variables)

    result = loop.train_step(*make_batch(seed=2))

    assert not bool(result["skipped"])
    assert int(loop.consecutive_skips.numpy()) == 0
    assert int(loop.skipped_steps.numpy()) == 1
    changed = [
        not np.array_equal(b, a)
        for b, a in zip(before, snapshot(model.trainable_variables))
    ]
    assert any(changed)


def test_skipped_step_prints_step_and_variable(capfd):
    _, _, loop = build_loop()
    loop.train_step(*make_batch(seed=1))

    loop.train_step(*make_batch(seed=2, poison=True))

    stderr = capfd.readouterr().err
    assert "skipped step 1 batch 1" in stderr
    assert "price_weight" in stderr
    assert "user_embedding" not in stderr


def test_large_finite_gradient_is_clipped():
    clip_norm = 0.5
    optimizer = tf_keras.optimizers.SGD(learning_rate=1.0)
    model, _, loop = build_loop(optimizer, clip_norm=clip_norm)
    features, labels, weights = make_batch(price=np.full(BATCH_SIZE, 1000.0))
    model(features)
    before = snapshot(model.trainable_variables)

    result = loop.train_step(features, labels, weights)

    # With SGD at learning rate 1 the weight change is the clipped gradient.
    deltas = [a - b for b, a in zip(before, snapshot(model.trainable_variables))]
    delta_norm = np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in deltas))
    assert float(result["grad_norm"]) > 100 * clip_norm
    assert delta_norm <= clip_norm + 1e-6
    assert delta_norm == pytest.approx(clip_norm, rel=1e-3)


def test_overflowing_norm_skips_step():
    _, _, loop = build_loop(max_consecutive_skips=0)
    # price_weight starts at 0, so the logits stay finite, but its gradient is
    # about 1e29 and its square overflows float32.
    batch = make_batch(price=np.full(BATCH_SIZE, 1e30))

    with pytest.raises(NonFiniteTrainingError, match="overflowed float32") as raised:
        loop.run([batch], max_steps=None)

    assert raised.value.names == ()
    assert int(loop.skipped_steps.numpy()) == 1


def test_every_step_check_names_logits():
    _, _, loop = build_loop(check_mode="every_step")
    price = np.full(BATCH_SIZE, 0.5)
    price[3] = np.nan

    with pytest.raises(
        tf.errors.InvalidArgumentError, match="non-finite values in logits"
    ):
        loop.train_step(*make_batch(price=price))


def test_every_step_check_names_embedding():
    model = TinyRecommender()
    features, labels, weights = make_batch()
    model(features)
    table = model.user_embedding.embeddings
    table.assign(tf.fill(table.shape, np.nan))
    loop = GuardedLoop(
        model,
        tf_keras.optimizers.Adam(),
        GuardConfig(),
        checked_outputs=("user_embedding",),
    )

    with pytest.raises(
        tf.errors.InvalidArgumentError, match="non-finite values in user_embedding"
    ):
        loop.train_step(features, labels, weights)


def test_check_off_skips_nonfinite_logit():
    model, _, loop = build_loop(check_mode="off")
    price = np.full(BATCH_SIZE, 0.5)
    price[3] = np.inf
    features, labels, weights = make_batch(price=price)
    model(features)
    before = snapshot(model.variables)

    result = loop.train_step(features, labels, weights)

    assert int(result["num_masked"]) == 1
    assert np.isfinite(float(result["loss"]))
    # 0 * inf in the price_weight gradient is NaN, so the step is skipped.
    assert bool(result["skipped"])
    for b, a in zip(before, snapshot(model.variables)):
        assert np.array_equal(b, a)


def test_every_k_checks_only_multiples_of_k():
    _, _, loop = build_loop(check_mode="every_k", check_every=2)
    price = np.full(BATCH_SIZE, 0.5)
    price[0] = np.nan
    bad_batch = make_batch(price=price)

    loop.train_step(*make_batch(seed=1))
    unchecked = loop.train_step(*bad_batch)
    assert bool(unchecked["skipped"])

    with pytest.raises(tf.errors.InvalidArgumentError, match="logits"):
        loop.train_step(*bad_batch)


def test_unguarded_matches_guarded_clean_data():
    batch = make_batch(seed=3)
    results = []
    for guards in (True, False):
        model = TinyRecommender()
        loop = GuardedLoop(
            model,
            tf_keras.optimizers.SGD(learning_rate=0.1),
            GuardConfig(guards=guards),
        )
        output = loop.train_step(*batch)
        results.append((float(output["loss"]), snapshot(model.trainable_variables)))

    (guarded_loss, guarded_weights), (plain_loss, plain_weights) = results
    assert guarded_loss == pytest.approx(plain_loss, rel=1e-6)
    for guarded, plain in zip(guarded_weights, plain_weights):
        np.testing.assert_allclose(guarded, plain, rtol=1e-6, atol=1e-7)


def test_unguarded_loss_is_nan_for_nan_label():
    model = TinyRecommender()
    loop = GuardedLoop(model, tf_keras.optimizers.SGD(), GuardConfig(guards=False))

    output = loop.train_step(*make_batch(labels=[np.nan] + [1.0] * 7))

    assert np.isnan(float(output["loss"]))
    assert int(loop.skipped_steps.numpy()) == 0


# --- GuardedLoop.run ---------------------------------------------------------


def test_consecutive_skips_stop_run():
    model, _, loop = build_loop(max_consecutive_skips=2)
    batches = [make_batch(seed=i, poison=True) for i in range(6)]
    model(batches[0][0])
    before = snapshot(model.variables)

    with pytest.raises(NonFiniteTrainingError) as raised:
        loop.run(batches, max_steps=None)

    message = str(raised.value)
    assert "halted at step 2 (batch 2)" in message
    assert "3 consecutive steps" in message
    assert "price_weight" in message
    assert raised.value.step == 2
    assert raised.value.batch_index == 2
    assert [name.split(":")[0] for name in raised.value.names] == ["price_weight"]
    # Steps after the halt change nothing either.
    for b, a in zip(before, snapshot(model.variables)):
        assert np.array_equal(b, a)
    assert int(loop.step.numpy()) == 3


def test_skip_fraction_raises():
    _, _, loop = build_loop(
        max_consecutive_skips=100, max_skip_fraction=0.1, min_steps_for_fraction=10
    )
    # Every third batch is poisoned: 4 of the first 10 steps are skipped.
    batches = [make_batch(seed=i, poison=i % 3 == 0) for i in range(12)]

    with pytest.raises(NonFiniteTrainingError, match="max_skip_fraction") as raised:
        loop.run(batches, max_steps=None, log_every=5)

    assert "halted at step 9 (batch 9)" in str(raised.value)
    assert "4 of 10 steps" in str(raised.value)


def test_fraction_halt_on_healthy_step():
    _, _, loop = build_loop(
        max_consecutive_skips=100, max_skip_fraction=0.1, min_steps_for_fraction=10
    )
    # 2 skips among the first 10 steps; step 9 itself is healthy.
    batches = [make_batch(seed=i, poison=i < 2) for i in range(14)]

    with pytest.raises(NonFiniteTrainingError, match="max_skip_fraction") as raised:
        loop.run(batches, max_steps=None, log_every=100)

    assert "halted at step 9 (batch 9)" in str(raised.value)
    assert "2 of 10 steps" in str(raised.value)
    assert int(loop.step.numpy()) == 10


def test_fraction_halt_in_later_run():
    _, _, loop = build_loop(
        max_consecutive_skips=100, max_skip_fraction=0.1, min_steps_for_fraction=10
    )
    # Steps 0 and 1 are skipped in the first run. The limit applies from step
    # 9, which is batch 5 of the second run.
    loop.run([make_batch(seed=i, poison=i < 2) for i in range(4)], max_steps=None)
    later_batches = [make_batch(seed=i) for i in range(4, 14)]

    with pytest.raises(NonFiniteTrainingError, match="max_skip_fraction") as raised:
        loop.run(later_batches, max_steps=None, log_every=100)

    assert "halted at step 9 (batch 5)" in str(raised.value)
    assert "2 of 10 steps" in str(raised.value)
    assert raised.value.step == 9
    assert raised.value.batch_index == 5
    assert int(loop.step.numpy()) == 10


def test_halted_loop_ignores_steps():
    model, optimizer, loop = build_loop(max_consecutive_skips=0)
    loop.train_step(*make_batch(seed=1, poison=True))
    model_before = snapshot(model.variables)
    optimizer_before = snapshot(optimizer_variables(optimizer))

    result = loop.train_step(*make_batch(seed=2))

    assert bool(result["skipped"])
    for before, after in zip(model_before, snapshot(model.variables)):
        assert np.array_equal(before, after)
    for before, after in zip(
        optimizer_before, snapshot(optimizer_variables(optimizer))
    ):
        assert np.array_equal(before, after)
    assert int(loop.step.numpy()) == 1
    assert int(loop.skipped_steps.numpy()) == 1
    with pytest.raises(NonFiniteTrainingError) as raised:
        loop.raise_if_halted()
    assert "halted at step 0 (batch 0)" in str(raised.value)


def test_fraction_below_limit_trains_on():
    _, _, loop = build_loop(
        max_consecutive_skips=100, max_skip_fraction=0.1, min_steps_for_fraction=10
    )
    # 1 skip in 12 steps stays under the limit at step 9 and after.
    batches = [make_batch(seed=i, poison=i == 0) for i in range(12)]

    result = loop.run(batches, max_steps=None, log_every=100)

    assert result.steps == 12
    assert result.skipped_steps == 1
    assert int(loop.consecutive_skips.numpy()) == 0


def test_run_adds_step_to_check_error():
    _, _, loop = build_loop()
    price = np.full(BATCH_SIZE, 0.5)
    price[2] = np.nan
    batches = [make_batch(seed=1), make_batch(seed=2, price=price)]

    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match="non-finite values in logits at step 1 \\(batch 1\\)",
    ):
        loop.run(batches, max_steps=None)


def test_healthy_run_reduces_loss():
    tf_keras.utils.set_random_seed(0)
    _, _, loop = build_loop(tf_keras.optimizers.Adam(learning_rate=0.05))
    batches = [make_batch(seed=i) for i in range(16)]
    features = {key: tf.stack([b[0][key] for b in batches]) for key in batches[0][0]}
    labels = tf.stack([b[1] for b in batches])
    weights = tf.stack([b[2] for b in batches])
    # Each element of the dataset is one batch of BATCH_SIZE rows.
    dataset = tf.data.Dataset.from_tensor_slices((features, labels, weights)).repeat()
    logged = []

    result = loop.run(
        dataset,
        max_steps=200,
        log_every=50,
        on_log=lambda step, logs: logged.append(step),
    )

    first_loss = result.loss_history[0][1]
    last_loss = result.loss_history[-1][1]
    assert result.steps == 200
    assert result.skipped_steps == 0
    assert result.masked_examples == 0
    assert logged == [49, 99, 149, 199]
    assert [step for step, _ in result.loss_history] == logged
    assert last_loss < 0.5 * first_loss
    assert result.examples_per_second > 0


def test_run_stops_at_max_steps():
    _, _, loop = build_loop()
    batches = [make_batch(seed=i) for i in range(5)]

    result = loop.run(batches, max_steps=3, log_every=2)

    assert result.steps == 3
    assert [step for step, _ in result.loss_history] == [1, 2]
    assert int(loop.step.numpy()) == 3
