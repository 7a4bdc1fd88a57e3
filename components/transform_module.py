"""Transform module: imputation, missing indicators, min-max scaling, vocabularies.

TFX's Transform calls `preprocessing_fn` with the raw features (every column
is a sparse feature, so absent cells stay absent) and ``custom_config``
holding the dataset description. TFT 1.16 has no imputation API and its
building blocks have traps, which this module avoids on purpose:

- `tft.min` and `tft.max` return NaN when one input is NaN, and
  `tft.scale_to_0_1` then maps every finite value to 1.0. The min, max,
  mean and median of a numeric column see only its finite present values
  (`tf.boolean_mask`), so absent, NaN and inf values never enter them, and
  neither does an imputed placeholder. The one exception is the mean behind
  `interaction_weight`: it covers every training row's scaled value, imputed
  rows included, so that the weight has mean 1.
- `tft.scale_to_0_1` falls back to a sigmoid of the raw value when
  min >= max. Scaling here is ``(x - min) / (max - min)`` clipped to [0, 1],
  and a constant or all-missing column scales to 0.0 in every row.
- Densifying a sparse feature leaves a NaN in place, because a NaN is a
  present value; NaN and inf are therefore treated as missing after
  densifying.

Output features, for a column ``c``: ``c_index`` (ids and categories),
``c_scaled`` (numbers in [0, 1]), ``c_missing`` (0/1), and for the
interaction count ``interaction_weight`` (mean 1 over the training split).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

MISSING_TOKEN = "__missing__"
NUM_OOV_BUCKETS = 1
WEIGHT_FEATURE = "interaction_weight"
# Approximation error of the median's rank (TFT's quantiles analyzer is
# approximate); 0.001 means within 0.1 % of the rows of the exact median.
MEDIAN_EPSILON = 0.001

ID_ROLES = ("user_id", "item_id", "categorical")
NUMERIC_ROLES = ("interaction_count", "numeric", "label")


def index_name(column: str) -> str:
    return f"{column}_index"


def scaled_name(column: str) -> str:
    return f"{column}_scaled"


def missing_name(column: str) -> str:
    return f"{column}_missing"


def vocabulary_name(column: str) -> str:
    return f"vocabulary_{column}"


def _first_value(sparse: tf.SparseTensor, default) -> tf.Tensor:
    """Returns the first value of each row as a [batch] tensor, `default` if none."""
    dense = tf.sparse.to_dense(sparse, default_value=default)
    batch = tf.shape(dense)[0]
    # A batch where no row has a value densifies to width 0; the padding
    # column gives every row its default.
    padding = tf.fill([batch, 1], tf.constant(default, dtype=dense.dtype))
    return tf.concat([dense, padding], axis=1)[:, 0]


def _densify(feature, default) -> tf.Tensor:
    if isinstance(feature, tf.SparseTensor):
        return _first_value(feature, default)
    if isinstance(feature, tf.RaggedTensor):
        return _first_value(feature.to_sparse(), default)
    return tf.reshape(feature, [-1])


def transform_ids(
    values: tf.Tensor, column: str, na_tokens: tuple[str, ...] = ()
) -> dict[str, tf.Tensor]:
    """Maps trimmed strings to vocabulary indices with missing and OOV buckets.

    Absent and empty values become `MISSING_TOKEN`, which is reserved as
    index 0 even when the training split has no missing value, so a missing
    id never shares the out-of-vocabulary index with an unseen one. Every
    index is in ``[0, vocabulary_size + NUM_OOV_BUCKETS)``.
    """
    trimmed = tf.strings.strip(values)
    is_missing = tf.equal(trimmed, "")
    if na_tokens:
        # Ingestion already drops NA tokens from training data. A serving
        # request still carries them, and they mean missing there too.
        matches = tf.equal(tf.expand_dims(trimmed, -1), tf.constant(list(na_tokens)))
        is_missing = tf.logical_or(is_missing, tf.reduce_any(matches, axis=-1))
    tokens = tf.where(is_missing, tf.constant(MISSING_TOKEN), trimmed)
    indices = tft.compute_and_apply_vocabulary(
        tokens,
        num_oov_buckets=NUM_OOV_BUCKETS,
        vocab_filename=vocabulary_name(column),
        reserved_tokens=[MISSING_TOKEN],
    )
    return {
        index_name(column): indices,
        missing_name(column): tf.cast(is_missing, tf.float32),
    }


def _bound_handling(values, is_finite, bound, below: bool, handling: str):
    """Applies the description's out-of-range handling to one bound."""
    if bound is None or handling == "keep":
        return values
    bound = tf.constant(float(bound), tf.float32)
    outside = tf.logical_and(
        is_finite, values < bound if below else values > bound
    )
    if handling == "clip":
        return tf.where(outside, bound, values)
    return tf.where(outside, tf.constant(float("nan")), values)


def transform_numeric(values: tf.Tensor, column: str, spec: dict) -> dict[str, tf.Tensor]:
    """Imputes, optionally log-transforms and min-max scales one numeric column.

    Args:
        values: [batch] float32, NaN where the cell was absent.
        column: the column name.
        spec: the description's entry for the column (``min``, ``max``,
            ``negative``, ``log1p``, ``impute``, ``impute_value``).

    Returns:
        ``c_scaled`` in [0, 1] and ``c_missing`` in {0, 1}.
    """
    values = tf.cast(values, tf.float32)
    handling = spec.get("negative", "keep")
    finite = tf.math.is_finite(values)
    values = _bound_handling(values, finite, spec.get("min"), True, handling)
    values = _bound_handling(values, finite, spec.get("max"), False, handling)
    if spec.get("log1p"):
        # log1p of a value below -1 is NaN and then counts as missing.
        values = tf.math.log1p(values)
    is_missing = tf.logical_not(tf.math.is_finite(values))
    present = tf.boolean_mask(values, tf.logical_not(is_missing))

    low = tft.min(present, reduce_instance_dims=True)
    high = tft.max(present, reduce_instance_dims=True)
    impute = spec.get("impute", "median")
    if impute == "mean":
        statistic = tft.mean(present)
    elif impute == "median":
        boundaries = tft.quantiles(
            present, num_buckets=2, epsilon=MEDIAN_EPSILON, reduce_instance_dims=True
        )
        statistic = tf.reshape(boundaries, [-1])[0]
    else:
        statistic = tf.constant(float(spec.get("impute_value", 0.0)))
    fallback = tf.constant(float(spec.get("impute_value", 0.0)))
    # An all-missing training column has no statistic, so the constant is used.
    statistic = tf.where(tf.math.is_finite(statistic), statistic, fallback)
    filled = tf.where(is_missing, statistic, values)

    has_range = tf.logical_and(
        tf.logical_and(tf.math.is_finite(low), tf.math.is_finite(high)), high > low
    )
    span = tf.where(has_range, high - low, tf.constant(1.0))
    scaled = tf.clip_by_value((filled - low) / span, 0.0, 1.0)
    # Constant or all-missing column: 0.0 for every row, by contract.
    scaled = tf.where(has_range, scaled, tf.zeros_like(scaled))
    return {
        scaled_name(column): scaled,
        missing_name(column): tf.cast(is_missing, tf.float32),
    }


def preprocessing_fn(inputs, custom_config):
    """Transform calls this with raw features and the description.

    Args:
        inputs: raw features by column name (sparse tensors).
        custom_config: ``{"description": Description.to_dict()}``.

    Returns:
        Transformed features; see the module docstring for their names.
    """
    description = custom_config["description"]
    outputs = {}
    for column, spec in description["columns"].items():
        role = spec["role"]
        if column not in inputs:
            continue
        if role in ID_ROLES:
            # Ids are strings, so the string NA tokens mean missing too.
            na_tokens = tuple(description.get("na_tokens", ())) + tuple(
                description.get("string_na_tokens", ())
            )
            outputs.update(
                transform_ids(_densify(inputs[column], ""), column, na_tokens)
            )
        elif role in NUMERIC_ROLES:
            # Int columns arrive as int64, which cannot hold the NaN that
            # marks an absent cell, so cast before densifying.
            as_float = tf.cast(inputs[column], tf.float32)
            values = _densify(as_float, float("nan"))
            outputs.update(transform_numeric(values, column, spec))
            if role == "interaction_count":
                scaled = outputs[scaled_name(column)]
                mean = tft.mean(scaled)
                safe_mean = tf.where(mean > 0, mean, tf.constant(1.0))
                outputs[WEIGHT_FEATURE] = scaled / safe_mean
    return outputs
