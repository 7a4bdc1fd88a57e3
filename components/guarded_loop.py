"""A custom training loop that survives NaN and inf values in dirty training data.

`GuardedLoop` trains a tf-keras model whose call returns a dict with a
``"logits"`` tensor, using binary cross-entropy from logits with per-example
weights. It does not use ``model.fit``. Each step is one ``tf.function`` and
does the following:

1. It computes the loss with `masked_bce_loss`, which leaves out and counts
   rows whose label, weight, logit or per-example loss is not finite.
2. It optionally runs ``tf.debugging.assert_all_finite`` on the loss, the
   logits and the other model outputs named in ``checked_outputs``, on every
   step, every k-th step or never (`GuardConfig.check_mode`).
3. It computes the gradients and their global norm. When the norm is not
   finite, which includes a float32 overflow of very large finite gradients,
   the step is skipped inside a ``tf.cond``: no model or optimizer
   variable is written, and the loop prints the step, the batch index and the
   variables with non-finite gradients to stderr. Otherwise it clips the
   gradients with ``tf.clip_by_global_norm`` and applies them.

The finiteness test has to come before clipping. One inf entry makes the
global norm inf, and ``tf.clip_by_global_norm`` then returns NaN for every
gradient of every variable (observed with TensorFlow 2.16).

Counters and the stop decision are kept in ``tf.Variable`` objects on the
device, so a step needs no host synchronisation. Once the skips exceed
`GuardConfig.max_consecutive_skips` or `GuardConfig.max_skip_fraction`, the
loop halts. Later steps then change no variable, and `GuardedLoop.run`
raises `NonFiniteTrainingError` at its next log point or at the end of the
data.

``GuardConfig(guards=False)`` gives the same loop without masking, checks or
skips, for benchmarks that measure what the guards cost.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

logger = logging.getLogger(__name__)

CHECK_MODES = ("every_step", "every_k", "off")
LOGITS_KEY = "logits"

# Codes stored in GuardedLoop's halt-reason variable.
_HALTED_CONSECUTIVE = 1
_HALTED_FRACTION = 2
# Halt step count while no skip limit is exceeded.
_NO_HALT = 2**63 - 1

# Finds the tensor name in the message of a failed assert_all_finite check,
# which TensorFlow 2.16 formats as "<message> : Tensor had NaN values".
_FAILED_CHECK = re.compile(r"non-finite values in (\S+) :")

# The skip branch prints the first _PRINT_FIRST_SKIPS skipped steps and then
# every _PRINT_EVERY_SKIPS-th one, so a long run with rare skips cannot flood
# stderr.
_PRINT_FIRST_SKIPS = 10
_PRINT_EVERY_SKIPS = 100


@dataclasses.dataclass
class GuardConfig:
    """Settings of `GuardedLoop`.

    Attributes:
        clip_norm: Maximum global norm of the gradients that are applied.
        check_mode: When to run ``tf.debugging.assert_all_finite`` on the
            loss, the logits and the checked model outputs. One of
            "every_step", "every_k" (steps whose index is a multiple of
            ``check_every``) and "off".
        check_every: Interval in steps for ``check_mode="every_k"``.
        max_consecutive_skips: Maximum number of consecutive skipped steps.
            One more skipped step halts training.
        max_skip_fraction: Maximum fraction of skipped steps among all steps
            run, from 0 to 1.
        min_steps_for_fraction: Number of steps after which
            ``max_skip_fraction`` is enforced, so that one early skip does not
            halt training.
        guards: When False, the loop computes a plain weighted loss, clips and
            applies the gradients on every step, and runs no masking, no
            checks and no skips.
    """

    clip_norm: float = 1.0
    check_mode: str = "every_step"
    check_every: int = 100
    max_consecutive_skips: int = 5
    max_skip_fraction: float = 0.05
    min_steps_for_fraction: int = 20
    guards: bool = True

    def __post_init__(self) -> None:
        if not _is_number(self.clip_norm) or not (
            math.isfinite(self.clip_norm) and self.clip_norm > 0
        ):
            raise ValueError(
                "GuardConfig.clip_norm must be a finite number > 0, "
                f"got {self.clip_norm!r}"
            )
        if self.check_mode not in CHECK_MODES:
            raise ValueError(
                f"GuardConfig.check_mode must be one of {', '.join(CHECK_MODES)}, "
                f"got {self.check_mode!r}"
            )
        if not _is_integer(self.check_every) or self.check_every < 1:
            raise ValueError(
                "GuardConfig.check_every must be an integer >= 1, "
                f"got {self.check_every!r}"
            )
        if (
            not _is_integer(self.max_consecutive_skips)
            or self.max_consecutive_skips < 0
        ):
            raise ValueError(
                "GuardConfig.max_consecutive_skips must be an integer >= 0, "
                f"got {self.max_consecutive_skips!r}"
            )
        if not _is_number(self.max_skip_fraction) or not (
            0.0 <= self.max_skip_fraction <= 1.0
        ):
            raise ValueError(
                "GuardConfig.max_skip_fraction must be a number from 0 to 1, "
                f"got {self.max_skip_fraction!r}"
            )
        if (
            not _is_integer(self.min_steps_for_fraction)
            or self.min_steps_for_fraction < 1
        ):
            raise ValueError(
                "GuardConfig.min_steps_for_fraction must be an integer >= 1, "
                f"got {self.min_steps_for_fraction!r}"
            )
        if not isinstance(self.guards, bool):
            raise ValueError(f"GuardConfig.guards must be a bool, got {self.guards!r}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class NonFiniteTrainingError(RuntimeError):
    """Raised when too many training steps were skipped for non-finite gradients.

    Attributes:
        step: Index of the step at which the loop halted.
        batch_index: Index of that step's batch within the `GuardedLoop.run`
            call.
        names: Names of the variables whose gradient had non-finite entries
            at the last skipped step. Empty when only the global norm
            overflowed.
    """

    def __init__(
        self, message: str, *, step: int, batch_index: int, names: Sequence[str]
    ):
        super().__init__(message)
        self.step = step
        self.batch_index = batch_index
        self.names = tuple(names)


@dataclasses.dataclass
class TrainResult:
    """Summary of one `GuardedLoop.run` call.

    Attributes:
        steps: Steps run by this call.
        skipped_steps: Steps of this call whose update was skipped.
        masked_examples: Examples of this call left out of the loss.
        final_loss: Loss of the last step, or NaN when there was no step.
        loss_history: ``(step, mean loss)`` at each log point, where the mean
            is over the steps since the previous log point.
        examples_per_second: Training throughput, measured from the end of the
            first step so that ``tf.function`` tracing is excluded. It covers
            all steps when the run had only one.
    """

    steps: int
    skipped_steps: int
    masked_examples: int
    final_loss: float
    loss_history: list[tuple[int, float]]
    examples_per_second: float


def masked_bce_loss(
    labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Compute weighted sigmoid cross-entropy over the rows with finite values.

    A row is left out when its label, weight, logit or per-example loss is not
    finite, or when its weight is negative. The logits of left-out rows are
    replaced with zeros by ``tf.math.multiply_no_nan``, whose gradient is 0
    there even when the gradient flowing back is NaN, and their losses are
    multiplied by a zero weight the same way. A plain multiplication by a zero
    mask would still give NaN (``0 * NaN = NaN``) in the loss and its gradient.

    Args:
        labels: Labels of shape ``[batch]`` or ``[batch, 1]``.
        logits: Logits of the same number of rows.
        weights: Per-example weights of the same number of rows. None gives
            every row weight 1.

    Returns:
        ``(loss, num_masked)``: the float32 scalar ``sum(w * l) / sum(w)``
        over the kept rows, or 0.0 when their weights sum to 0, and the int32
        number of left-out rows.
    """
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])

    # label * logit is not finite when the label or the logit is not. It can
    # also overflow for finite values, but then the row's loss overflows too
    # and the row is left out below in any case.
    row_check = labels * logits
    if weights is not None:
        weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
        # sqrt(w) is NaN for a negative or NaN weight and inf for an inf one.
        # A finite sqrt(w) is at most 1.9e19, far below the spacing of float32
        # values near their maximum, so adding it cannot overflow.
        row_check += tf.math.sqrt(weights)
    valid = tf.math.is_finite(row_check)

    # multiply_no_nan(x, mask) and its gradient are 0 where the mask is 0,
    # even for an inf or NaN x. For 2,560 rows on one CPU thread it measured
    # about 3x faster than tf.where (TensorFlow 2.16). The labels stay as they
    # are, because a left-out row's loss, even NaN, gets a zero weight below,
    # and the gradient that reaches its logit is zeroed here.
    per_example = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=labels,
        logits=tf.math.multiply_no_nan(logits, tf.cast(valid, tf.float32)),
    )
    # A finite label far outside [0, 1] can overflow the loss to inf even
    # when label * logit is finite. Such a row is left out here.
    valid &= tf.math.is_finite(per_example)
    kept_weights = tf.cast(valid, tf.float32)
    if weights is not None:
        kept_weights = tf.math.multiply_no_nan(weights, kept_weights)
    loss = tf.math.divide_no_nan(
        tf.reduce_sum(tf.math.multiply_no_nan(per_example, kept_weights)),
        tf.reduce_sum(kept_weights),
    )
    num_masked = tf.reduce_sum(tf.cast(tf.logical_not(valid), tf.int32))
    return loss, num_masked


def _plain_bce_loss(
    labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Compute the weighted sigmoid cross-entropy mean without any masking.

    Returns:
        ``(loss, 0)``, in the same form as `masked_bce_loss`.
    """
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    if weights is None:
        loss = tf.reduce_mean(per_example)
    else:
        weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
        loss = tf.reduce_sum(weights * per_example) / tf.reduce_sum(weights)
    return loss, tf.constant(0, tf.int32)


def _as_output_dict(outputs: Any) -> Mapping[str, tf.Tensor]:
    if isinstance(outputs, Mapping):
        if LOGITS_KEY not in outputs:
            raise KeyError(
                f"the model output has no {LOGITS_KEY!r} entry, only "
                f"{sorted(outputs)}. Return the logits under {LOGITS_KEY!r}."
            )
        return outputs
    # A model that returns one tensor returns the logits.
    return {LOGITS_KEY: outputs}


def _gradient_values(gradient: tf.Tensor | tf.IndexedSlices) -> tf.Tensor:
    # Embedding lookups give IndexedSlices, whose rows are in `.values`.
    if isinstance(gradient, tf.IndexedSlices):
        return gradient.values
    return gradient


def _build_optimizer(optimizer: Any, variables: Sequence[tf.Variable]) -> None:
    """Create the optimizer's slot variables before any step is traced.

    ``apply_gradients`` runs inside a ``tf.cond`` branch, and a variable
    cannot be created there, so the slots must exist beforehand.
    """
    if hasattr(optimizer, "build"):
        # tf_keras.optimizers.Optimizer, the base class of tf_keras.optimizers.Adam
        # and the other optimizers outside tf_keras.optimizers.legacy.
        optimizer.build(variables)
    elif hasattr(optimizer, "_create_all_weights"):
        # NOTE: tf_keras.optimizers.legacy has no public method for this, so
        # this calls a private one (present in tf-keras 2.16).
        optimizer._create_all_weights(variables)
    else:
        raise TypeError(
            f"unsupported optimizer {type(optimizer).__name__}: expected a "
            "tf_keras optimizer with build() or a tf_keras.optimizers.legacy one"
        )


class GuardedLoop:
    """Train a model with masked loss, finite checks and skipped bad updates.

    Step indices and batch indices start at 0. ``step`` counts the steps run
    by this loop over all `run` calls, and the batch index counts the batches
    of the current `run` call.

    Attributes:
        step: Number of steps run before the halt, if any (int64 variable).
        skipped_steps: Number of steps skipped for a non-finite gradient
            global norm (int64 variable).
        consecutive_skips: Number of skipped steps since the last applied
            update (int64 variable).
        masked_examples: Number of examples left out of the loss (int64
            variable).
    """

    def __init__(
        self,
        model: tf.keras.Model,
        optimizer: Any,
        config: GuardConfig | None = None,
        checked_outputs: Sequence[str] = (LOGITS_KEY,),
    ):
        """Set up the loop.

        Args:
            model: A tf-keras model. ``model(features, training=True)`` must
                return a dict with a ``"logits"`` entry, or the logits tensor.
            optimizer: A tf-keras optimizer. It must not be shared with
                another training loop.
            config: Guard settings. None uses the `GuardConfig` defaults.
            checked_outputs: Model outputs that the finite checks cover,
                besides the loss. Embedding outputs such as
                ``"user_embedding"`` belong here.
        """
        self._model = model
        self._optimizer = optimizer
        self._config = config if config is not None else GuardConfig()
        self._checked_outputs = tuple(checked_outputs)

        def counter(name: str) -> tf.Variable:
            return tf.Variable(tf.constant(0, tf.int64), trainable=False, name=name)

        self.step = counter("step")
        self.skipped_steps = counter("skipped_steps")
        self.consecutive_skips = counter("consecutive_skips")
        self.masked_examples = counter("masked_examples")
        # Value of `step` when the current `run` call started. Until the loop
        # halts every step is applied or skipped, so a step's batch index is
        # its step index minus this value.
        self._run_start_step = counter("run_start_step")
        # The loop halts once `step` reaches this value, which stays at the
        # int64 maximum until a skip limit is exceeded.
        self._halt_at_steps = tf.Variable(
            tf.constant(_NO_HALT, tf.int64), trainable=False, name="halt_at_steps"
        )
        self._halt_reason = counter("halt_reason")
        self._last_skip_step = counter("last_skip_step")
        self._last_skip_batch = counter("last_skip_batch")
        # Created in _build, once the number of trainable variables is known:
        # 1 where the gradient had a non-finite entry at the last skipped step.
        self._last_skip_flags: tf.Variable | None = None

        self._variables: list[tf.Variable] = []
        self._built = False
        step_fn = self._guarded_step if self._config.guards else self._unguarded_step
        # The step branches with tf.cond itself, so AutoGraph has nothing to
        # convert. Skipping it cut the first step's tracing from 11.6 s to
        # 1.8 s of CPU in bench/trace_first_step.py on a 2-core machine.
        self._compiled_step = tf.function(
            step_fn, reduce_retracing=True, autograph=False
        )

    @property
    def config(self) -> GuardConfig:
        """The loop's guard settings."""
        return self._config

    def train_step(
        self,
        features: Mapping[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """Run one compiled training step on a batch.

        The halt decision stays on the device. A caller that does not use
        `run` reads it with `raise_if_halted`.

        Args:
            features: Model inputs, passed to ``model(features, training=True)``.
            labels: Labels of shape ``[batch]`` or ``[batch, 1]``.
            weights: Per-example weights of the same number of rows. None
                gives every row weight 1.

        Returns:
            A dict of tensors: ``loss`` (float32), ``grad_norm`` (global norm
            before clipping), ``skipped`` (bool, True when no update was
            applied) and ``num_masked`` (int32, rows left out of the loss).

        Raises:
            tf.errors.InvalidArgumentError: When a finite check runs on this
                step and finds a non-finite value. The message names the
                tensor, for example "non-finite values in logits".
        """
        if not self._built:
            self._build(features)
        return self._compiled_step(features, labels, weights)

    def run(
        self,
        dataset: Iterable[tuple[Any, ...]],
        max_steps: int | None,
        log_every: int = 100,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
    ) -> TrainResult:
        """Train on ``(features, labels, weights)`` or ``(features, labels)`` batches.

        The loop reads values from the device only at log points, at the end
        and on errors.

        Args:
            dataset: A ``tf.data.Dataset`` or any iterable of batches.
            max_steps: Maximum number of steps. None runs until the data ends.
            log_every: Number of steps between log points.
            on_log: Called at each log point with the step index and a dict
                with ``loss`` (mean since the previous log point),
                ``grad_norm``, ``skipped_steps``, ``consecutive_skips`` and
                ``masked_examples``.

        Returns:
            A `TrainResult` for the steps of this call.

        Raises:
            NonFiniteTrainingError: When the loop halted because too many
                steps were skipped, at the next log point or at the end.
            tf.errors.InvalidArgumentError: When a finite check fails. The
                message names the tensor, the step and the batch index.
            ValueError: When ``max_steps`` or ``log_every`` is invalid.
        """
        if max_steps is not None and (not _is_integer(max_steps) or max_steps < 0):
            raise ValueError(
                f"max_steps must be None or an integer >= 0, got {max_steps!r}"
            )
        if not _is_integer(log_every) or log_every < 1:
            raise ValueError(f"log_every must be an integer >= 1, got {log_every!r}")

        self.raise_if_halted()
        start_step = int(self.step.numpy())
        self._run_start_step.assign(start_step)
        start_skipped = int(self.skipped_steps.numpy())
        start_masked = int(self.masked_examples.numpy())

        loss_history: list[tuple[int, float]] = []
        window_losses: list[tf.Tensor] = []
        outputs: dict[str, tf.Tensor] | None = None
        steps = 0
        examples_after_first = 0
        run_start = time.perf_counter()
        timer_start = run_start

        # islice stops before fetching a batch beyond max_steps.
        for batch in itertools.islice(dataset, max_steps):
            features, labels, weights = _unpack_batch(batch)
            outputs = self._run_step(features, labels, weights, start_step, steps)
            steps += 1
            window_losses.append(outputs["loss"])
            if steps == 1:
                # Reading the loss waits for the first step, whose time
                # includes tracing, so the throughput clock starts after it.
                outputs["loss"].numpy()
                timer_start = time.perf_counter()
            else:
                examples_after_first += _batch_size(labels)

            if steps % log_every == 0:
                step = start_step + steps - 1
                mean_loss = self._log_point(step, window_losses, outputs, on_log)
                loss_history.append((step, mean_loss))
                window_losses = []
                self.raise_if_halted()

        if outputs is None:
            return TrainResult(0, 0, 0, float("nan"), [], 0.0)
        if window_losses:
            step = start_step + steps - 1
            mean_loss = self._log_point(step, window_losses, outputs, on_log)
            loss_history.append((step, mean_loss))
        final_loss = float(outputs["loss"].numpy())
        elapsed = time.perf_counter() - timer_start
        if steps == 1:
            examples_after_first = _batch_size(labels)
            elapsed = time.perf_counter() - run_start
        self.raise_if_halted()

        return TrainResult(
            steps=steps,
            skipped_steps=int(self.skipped_steps.numpy()) - start_skipped,
            masked_examples=int(self.masked_examples.numpy()) - start_masked,
            final_loss=final_loss,
            loss_history=loss_history,
            examples_per_second=examples_after_first / elapsed if elapsed > 0 else 0.0,
        )

    def raise_if_halted(self) -> None:
        """Raise `NonFiniteTrainingError` if the skip limits halted the loop.

        When the loop has not halted, this reads two variables from the device.
        """
        halt_at_steps = int(self._halt_at_steps.numpy())
        steps_run = int(self.step.numpy())
        if steps_run < halt_at_steps:
            return

        config = self._config
        reason = int(self._halt_reason.numpy())
        step = halt_at_steps - 1
        batch = step - int(self._run_start_step.numpy())
        skipped = int(self.skipped_steps.numpy())
        if reason == _HALTED_CONSECUTIVE:
            cause = (
                f"{int(self.consecutive_skips.numpy())} consecutive steps had a "
                "non-finite gradient global norm, more than "
                f"max_consecutive_skips={config.max_consecutive_skips}"
            )
        else:
            cause = (
                f"{skipped} of {steps_run} steps ({skipped / steps_run:.1%}) were "
                "skipped for a non-finite gradient global norm, more than "
                f"max_skip_fraction={config.max_skip_fraction}"
            )

        flags = self._last_skip_flags.numpy()
        names = [v.name for v, flag in zip(self._variables, flags) if flag]
        last_step = int(self._last_skip_step.numpy())
        last_batch = int(self._last_skip_batch.numpy())
        if names:
            where = f"had non-finite gradient values in: {', '.join(names)}"
        else:
            where = (
                "had only finite gradient values, but the sum of their squares "
                "overflowed float32, so the global norm was inf"
            )
        message = (
            f"Training halted at step {step} (batch {batch}): {cause}. "
            f"The last skipped step, {last_step} (batch {last_batch}), {where}. "
            "Check the features feeding these variables for NaN, inf or extreme "
            "values, then the learning rate. Raise the GuardConfig limits only if "
            "such batches are expected."
        )
        raise NonFiniteTrainingError(message, step=step, batch_index=batch, names=names)

    def _run_step(
        self,
        features: Mapping[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor | None,
        start_step: int,
        batch_index: int,
    ) -> dict[str, tf.Tensor]:
        try:
            return self.train_step(features, labels, weights)
        except tf.errors.InvalidArgumentError as error:
            step = start_step + batch_index
            failed_check = _FAILED_CHECK.search(error.message)
            if failed_check is None:
                summary = f"Step {step} (batch {batch_index}) failed"
            else:
                summary = (
                    f"non-finite values in {failed_check.group(1)} at step {step} "
                    f"(batch {batch_index}). Check this batch's features for NaN "
                    "or inf values. With GuardConfig.check_mode='off' the loop "
                    "leaves out rows with non-finite logits and skips steps with "
                    "non-finite gradients instead of failing"
                )
            raise tf.errors.InvalidArgumentError(
                error.node_def, error.op, f"{summary}.\n\n{error.message}"
            ) from error

    def _log_point(
        self,
        step: int,
        window_losses: list[tf.Tensor],
        outputs: dict[str, tf.Tensor],
        on_log: Callable[[int, dict[str, float]], None] | None,
    ) -> float:
        """Log the counters and return the mean loss over ``window_losses``."""
        logs = {
            "loss": float(tf.reduce_mean(tf.stack(window_losses)).numpy()),
            "grad_norm": float(outputs["grad_norm"].numpy()),
            "skipped_steps": int(self.skipped_steps.numpy()),
            "consecutive_skips": int(self.consecutive_skips.numpy()),
            "masked_examples": int(self.masked_examples.numpy()),
        }
        logger.info(
            "step %s: loss %.6g, gradient global norm %.6g, %s skipped steps, "
            "%s masked examples",
            step,
            logs["loss"],
            logs["grad_norm"],
            logs["skipped_steps"],
            logs["masked_examples"],
        )
        if on_log is not None:
            on_log(step, logs)
        return logs["loss"]

    def _build(self, features: Mapping[str, tf.Tensor]) -> None:
        """Create the model's and the optimizer's variables outside any graph."""
        if not self._model.built:
            # A subclassed model creates its variables on the first call.
            self._model(features, training=False)
        self._variables = list(self._model.trainable_variables)
        if not self._variables:
            raise ValueError("the model has no trainable variables")
        _build_optimizer(self._optimizer, self._variables)
        self._last_skip_flags = tf.Variable(
            tf.zeros([len(self._variables)], tf.int64),
            trainable=False,
            name="last_skip_flags",
        )
        self._built = True

    def _forward(
        self,
        features: Mapping[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor | None,
        loss_fn: Callable[..., tuple[tf.Tensor, tf.Tensor]],
    ) -> tuple[tf.Tensor, tf.Tensor, Mapping[str, tf.Tensor], list[Any]]:
        """Run the model and the loss under a tape.

        Returns:
            ``(loss, num_masked, outputs, gradients)``, where the loss includes
            the layers' regularization losses and ``gradients`` follows
            ``self._variables``, with None for variables the loss does not use.
        """
        with tf.GradientTape() as tape:
            outputs = _as_output_dict(self._model(features, training=True))
            loss, num_masked = loss_fn(labels, outputs[LOGITS_KEY], weights)
            if self._model.losses:
                loss += tf.add_n(self._model.losses)
        gradients = tape.gradient(loss, self._variables)
        if all(gradient is None for gradient in gradients):
            raise ValueError(
                "no trainable variable receives a gradient from the loss. Check "
                f"that the model's {LOGITS_KEY!r} output depends on its variables."
            )
        return loss, num_masked, outputs, gradients

    def _unguarded_step(
        self,
        features: Mapping[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor | None,
    ) -> dict[str, tf.Tensor]:
        loss, _, _, gradients = self._forward(
            features, labels, weights, _plain_bce_loss
        )
        pairs = [(g, v) for g, v in zip(gradients, self._variables) if g is not None]
        clipped, grad_norm = tf.clip_by_global_norm(
            [g for g, _ in pairs], self._config.clip_norm
        )
        self._optimizer.apply_gradients(zip(clipped, [v for _, v in pairs]))
        self.step.assign_add(1)
        return {
            "loss": loss,
            "grad_norm": grad_norm,
            "skipped": tf.constant(False),
            "num_masked": tf.constant(0, tf.int32),
        }

    def _guarded_step(
        self,
        features: Mapping[str, tf.Tensor],
        labels: tf.Tensor,
        weights: tf.Tensor | None,
    ) -> dict[str, tf.Tensor]:
        config = self._config
        step = self.step.read_value()

        loss, num_masked, outputs, gradients = self._forward(
            features, labels, weights, masked_bce_loss
        )
        checked = self._check_finite(loss, outputs, step)

        pairs = [(g, v) for g, v in zip(gradients, self._variables) if g is not None]
        with tf.control_dependencies([checked]):
            grad_norm = tf.linalg.global_norm([g for g, _ in pairs])
        active = step < self._halt_at_steps.read_value()

        # A step is applied, skipped, or ignored once the loop has halted.
        # Each kind writes only in its own tf.cond branch. A skipped step
        # writes only counters, so model weights and optimizer state
        # (iterations, moments) stay bit-identical. A lowered cond runs a
        # Switch op on every step for each tensor, variable and optimizer
        # slot that it captures, so skipping and ignoring share one false
        # branch instead of having a cond of their own.
        # NOTE: tested only under the default distribution strategy. Other
        # strategies may reject apply_gradients inside a tf.cond branch.
        def apply_update() -> tf.Tensor:
            clipped, _ = tf.clip_by_global_norm(
                [g for g, _ in pairs], config.clip_norm, use_norm=grad_norm
            )
            self._optimizer.apply_gradients(zip(clipped, [v for _, v in pairs]))
            self.step.assign_add(1)
            self.consecutive_skips.assign(0)
            self.masked_examples.assign_add(tf.cast(num_masked, tf.int64))
            return tf.constant(False)

        def skip_update() -> tf.Tensor:
            steps_run = self.step.assign_add(1)
            skipped_total = self.skipped_steps.assign_add(1)
            consecutive = self.consecutive_skips.assign_add(1)
            self.masked_examples.assign_add(tf.cast(num_masked, tf.int64))
            batch_index = step - self._run_start_step.read_value()
            self._record_skip(pairs, grad_norm, step, batch_index, skipped_total)
            self._schedule_halt(steps_run, skipped_total, consecutive)
            return tf.constant(True)

        # The skip branch has about 90 ops, and the executor passes over each
        # of them on every applied step. Called as a function that is not
        # inlined, the branch is one op in the step's graph.
        skip_call = tf.function(
            skip_update, autograph=False, experimental_attributes={"_noinline": True}
        )

        def skip_unless_halted() -> tf.Tensor:
            return tf.cond(active, skip_call, lambda: tf.constant(True))

        # Each branch returns whether the update was left out.
        skipped = tf.cond(
            tf.math.is_finite(grad_norm) & active, apply_update, skip_unless_halted
        )

        return {
            "loss": loss,
            "grad_norm": grad_norm,
            "skipped": skipped,
            "num_masked": num_masked,
        }

    def _check_finite(
        self, loss: tf.Tensor, outputs: Mapping[str, tf.Tensor], step: tf.Tensor
    ) -> tf.Tensor:
        """Assert that the loss and the checked outputs are finite, per check_mode.

        Returns:
            A bool tensor to use as a control dependency. It is computed only
            after the checks passed.
        """
        config = self._config
        if config.check_mode == "off":
            return tf.constant(True)

        missing = [name for name in self._checked_outputs if name not in outputs]
        if missing:
            raise KeyError(
                f"checked_outputs names {missing}, which the model does not "
                f"return. Its outputs are {sorted(outputs)}."
            )
        tensors = {"loss": loss}
        tensors.update({name: outputs[name] for name in self._checked_outputs})

        def run_checks() -> tf.Tensor:
            checks = [
                tf.debugging.assert_all_finite(tensor, f"non-finite values in {name}")
                for name, tensor in tensors.items()
            ]
            with tf.control_dependencies(checks):
                return tf.identity(tf.constant(True))

        if config.check_mode == "every_step":
            return run_checks()
        is_check_step = tf.equal(step % config.check_every, 0)
        return tf.cond(is_check_step, run_checks, lambda: tf.constant(True))

    def _record_skip(
        self,
        pairs: list[tuple[Any, tf.Variable]],
        grad_norm: tf.Tensor,
        step: tf.Tensor,
        batch_index: tf.Tensor,
        skipped_total: tf.Tensor,
    ) -> tf.Tensor:
        """Store and print which variables had non-finite gradients."""
        nonfinite_by_variable = {
            v.ref(): tf.logical_not(
                tf.reduce_all(tf.math.is_finite(_gradient_values(g)))
            )
            for g, v in pairs
        }
        flags = tf.stack(
            [
                nonfinite_by_variable.get(v.ref(), tf.constant(False))
                for v in self._variables
            ]
        )
        self._last_skip_flags.assign(tf.cast(flags, tf.int64))
        self._last_skip_step.assign(step)
        self._last_skip_batch.assign(batch_index)

        names = tf.constant([v.name for v in self._variables])
        bad_names = tf.strings.reduce_join(
            tf.boolean_mask(names, flags), separator=", "
        )

        def print_skip() -> tf.Tensor:
            tf.print(
                "guarded_loop: skipped step",
                step,
                "batch",
                batch_index,
                "because the gradient global norm is",
                grad_norm,
                "- non-finite gradient values in: [",
                bad_names,
                "] - skipped steps so far:",
                skipped_total,
                output_stream=sys.stderr,
            )
            return tf.constant(True)

        should_print = (skipped_total <= _PRINT_FIRST_SKIPS) | tf.equal(
            skipped_total % _PRINT_EVERY_SKIPS, 0
        )
        return tf.cond(should_print, print_skip, lambda: tf.constant(False))

    def _schedule_halt(
        self,
        steps_run: tf.Tensor,
        skipped_total: tf.Tensor,
        consecutive: tf.Tensor,
    ) -> None:
        """Set the step count and the reason of the halt when a limit is exceeded.

        Runs only on skipped steps taken while the loop was not halted, so the
        first exceeded limit is the one recorded. Applied steps only lower the
        skip fraction, so only a skipped step can push it over the limit, and
        applied steps need no check. Before ``min_steps_for_fraction`` steps
        have run, the fraction is taken over ``min_steps_for_fraction`` steps.
        When that exceeds the limit, the loop halts after the step that
        reaches ``min_steps_for_fraction``, unless too many consecutive skips
        halt it earlier.
        """
        config = self._config
        too_many_consecutive = consecutive > config.max_consecutive_skips
        fraction_steps = tf.maximum(steps_run, config.min_steps_for_fraction)
        fraction = tf.cast(skipped_total, tf.float64) / tf.cast(
            fraction_steps, tf.float64
        )
        too_large_fraction = fraction > config.max_skip_fraction
        halts = too_many_consecutive | too_large_fraction
        halt_at_steps = tf.where(too_many_consecutive, steps_run, fraction_steps)
        reason = tf.where(
            too_many_consecutive,
            tf.constant(_HALTED_CONSECUTIVE, tf.int64),
            tf.constant(_HALTED_FRACTION, tf.int64),
        )
        self._halt_at_steps.assign(
            tf.where(halts, halt_at_steps, self._halt_at_steps)
        )
        self._halt_reason.assign(tf.where(halts, reason, self._halt_reason))


def _unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
    if not isinstance(batch, (tuple, list)):
        raise TypeError(
            "each batch must be a tuple (features, labels) or "
            f"(features, labels, weights), got {type(batch).__name__}"
        )
    if len(batch) == 2:
        return batch[0], batch[1], None
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    raise ValueError(
        "each batch must be a tuple (features, labels) or "
        f"(features, labels, weights), got a tuple of length {len(batch)}"
    )


def _batch_size(labels: Any) -> int:
    # The shape of an eager tensor is known on the host, so reading it does
    # not wait for the device.
    return int(labels.shape[0])
