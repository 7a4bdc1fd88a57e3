"""PostTransformGate: no NaN or inf may leave Transform.

Reads every split of Transform's output, counts the non-finite values of
each float feature and fails the run, naming the feature, when any is
found. When all values are finite it passes the transformed examples on
as ``checked_examples``, which is what the Trainer reads, so the Trainer
never starts on unchecked data.
"""


import json
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.dsl.component.experimental.annotations import (
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

CHECK_FILE = "post_transform_check.json"


class NonFiniteTransformOutputError(RuntimeError):
    """Raised when a transformed feature contains NaN or inf."""


def count_non_finite(
    file_pattern: str, feature_spec: dict, batch_size: int = 8192
) -> tuple[int, dict[str, dict[str, int]]]:
    """Counts rows and NaN, +inf and -inf values per float feature.

    Returns:
        ``(rows, {feature: {"nan": n, "posinf": n, "neginf": n}})``.
    """
    float_features = [
        name for name, spec in feature_spec.items() if spec.dtype in (tf.float32, tf.float64)
    ]
    counts = {name: {"nan": 0, "posinf": 0, "neginf": 0} for name in float_features}
    files = tf.io.gfile.glob(file_pattern)
    if not files:
        return 0, counts
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(batch_size)
        .map(lambda s: tf.io.parse_example(s, feature_spec))
    )
    rows = 0
    for batch in dataset:
        for name in float_features:
            value = batch[name]
            if isinstance(value, tf.SparseTensor):
                value = value.values
            array = value.numpy()
            counts[name]["nan"] += int(np.isnan(array).sum())
            counts[name]["posinf"] += int(np.isposinf(array).sum())
            counts[name]["neginf"] += int(np.isneginf(array).sum())
        first = next(iter(batch.values()))
        rows += int(first.dense_shape[0] if isinstance(first, tf.SparseTensor) else tf.shape(first)[0])
    return rows, counts


@component
def PostTransformGate(
    transformed_examples: InputArtifact[standard_artifacts.Examples],
    transform_graph: InputArtifact[standard_artifacts.TransformGraph],
    checked_examples: OutputArtifact[standard_artifacts.Examples],
    report_dir: Parameter[str] = "",
    code_version: Parameter[str] = "",
) -> None:
    """Fails on any non-finite transformed value; passes the examples on.

    Args:
        transformed_examples: Transform's output examples.
        transform_graph: Transform's graph, for the transformed feature spec.
        checked_examples: the same examples, copied after the check.
        report_dir: extra folder for ``post_transform_check.json``.
        code_version: a digest of recguard's component code. It is not read
            here: as a parameter it is part of TFX's cache key, so a code
            change reruns the check instead of reusing its cached result.
    """
    del code_version  # Only part of the cache key.
    feature_spec = tft.TFTransformOutput(transform_graph.uri).transformed_feature_spec()
    splits = artifact_utils.decode_split_names(transformed_examples.split_names)
    result = {"splits": {}, "findings": []}
    for split in splits:
        source = artifact_utils.get_split_uri([transformed_examples], split)
        rows, counts = count_non_finite(os.path.join(source, "*"), feature_spec)
        result["splits"][split] = {"rows": rows, "non_finite": counts}
        for name, by_kind in counts.items():
            total = sum(by_kind.values())
            if total:
                result["findings"].append(
                    {"feature": name, "split": split, "count": total, **by_kind}
                )
    text = json.dumps(result, indent=2, sort_keys=True)
    for folder in filter(None, [checked_examples.uri, report_dir]):
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(os.path.join(folder, CHECK_FILE), "w") as f:
            f.write(text)
    if result["findings"]:
        lines = [
            f"  - feature {f['feature']}, split {f['split']}: {f['nan']} NaN, "
            f"{f['posinf']} +inf, {f['neginf']} -inf"
            for f in result["findings"]
        ]
        raise NonFiniteTransformOutputError(
            "Transform produced non-finite values, so training would diverge:\n"
            + "\n".join(lines)
            + "\nCheck the preprocessing of these features and the policy that "
            "let their raw values through."
        )
    logging.info("Post-transform check: every float feature is finite in %s", splits)

    checked_examples.split_names = transformed_examples.split_names
    for split in splits:
        source = artifact_utils.get_split_uri([transformed_examples], split)
        target = os.path.join(checked_examples.uri, f"Split-{split}")
        tf.io.gfile.makedirs(target)
        for path in tf.io.gfile.glob(os.path.join(source, "*")):
            tf.io.gfile.copy(path, os.path.join(target, os.path.basename(path)), overwrite=True)
