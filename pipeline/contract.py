"""The data contract: curating a TFDV schema from a dataset description.

SchemaGen (tfx 1.16) never sets ``float_domain.disallow_nan`` or
``disallow_inf`` nor a value range, sets ``presence.min_fraction: 1.0`` on
every column it saw complete, and turns every string column with few values
into an enum domain. Such a schema misses NaN and inf and flags every future
gap and every new category. `curate_schema` rewrites an inferred schema into
the contract the pipeline enforces; ``schema/README.md`` gives the reason for
each rule.
"""

from __future__ import annotations

import os
import tempfile

from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.dataset import Column, Description

TRAINING = "TRAINING"
SERVING = "SERVING"
# Roles that the serving signature receives; the others (interaction count,
# label, time, other columns) exist only in training data.
SERVING_ROLES = ("user_id", "item_id", "numeric", "categorical")
# Roles that must be present in every row.
REQUIRED_ROLES = ("item_id", "time")

_TYPES = {
    "string": schema_pb2.BYTES,
    "float": schema_pb2.FLOAT,
    "int": schema_pb2.INT,
}


def _max_missing(description: Description, column: Column) -> float:
    roles = description.policy.get("roles", {})
    return float(roles.get(column.role, {}).get("max_missing", 0.0))


def curate_schema(
    description: Description, inferred: schema_pb2.Schema | None = None
) -> schema_pb2.Schema:
    """Returns the curated contract for `description`.

    Args:
        description: the dataset description, which fixes each column's type,
            role, range and tolerated missing fraction.
        inferred: SchemaGen's or `tfdv.infer_schema`'s schema for the data,
            or None. Only the columns of the description are kept from it,
            so an extra column in the data never enters the contract.
    """
    schema = schema_pb2.Schema()
    schema.default_environment.extend([TRAINING, SERVING])
    inferred_by_name = {f.name: f for f in inferred.feature} if inferred else {}
    for column in description.columns:
        feature = schema.feature.add()
        if column.name in inferred_by_name:
            feature.CopyFrom(inferred_by_name[column.name])
        feature.name = column.name
        feature.type = _TYPES[column.type]
        # One value per present cell. No `shape`, so Transform reads every
        # column as a sparse (VarLen) feature and keeps absent cells absent
        # instead of failing to parse them.
        feature.ClearField("shape")
        feature.value_count.min = 1
        feature.value_count.max = 1
        max_missing = _max_missing(description, column)
        if column.role in REQUIRED_ROLES:
            max_missing = 0.0
        feature.presence.min_fraction = round(1.0 - max_missing, 6)
        # A column that may be missing throughout needs no present value.
        feature.presence.min_count = 1 if max_missing < 1.0 else 0
        # Enum domains from one sample reject every new id or category,
        # which the vocabularies' out-of-vocabulary buckets handle instead.
        feature.ClearField("domain")
        feature.ClearField("string_domain")
        feature.ClearField("int_domain")
        feature.ClearField("float_domain")
        if column.type == "float":
            feature.float_domain.disallow_nan = True
            feature.float_domain.disallow_inf = True
            if column.min is not None:
                feature.float_domain.min = float(column.min)
            if column.max is not None:
                feature.float_domain.max = float(column.max)
        elif column.type == "int":
            if column.min is not None:
                feature.int_domain.min = int(column.min)
            if column.max is not None:
                feature.int_domain.max = int(column.max)
        if column.role not in SERVING_ROLES:
            feature.not_in_environment.append(SERVING)
        feature.ClearField("distribution_constraints")
        feature.ClearField("drift_comparator")
        feature.ClearField("skew_comparator")
    return schema


def write_schema(schema: schema_pb2.Schema, path: str, header: str = "") -> None:
    """Writes `schema` as text proto, atomically, with comment lines on top."""
    from google.protobuf import text_format

    text = text_format.MessageToString(schema)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False) as f:
        f.write(comment + text)
        temp = f.name
    os.replace(temp, path)


def read_schema(path: str) -> schema_pb2.Schema:
    """Reads a text-proto schema."""
    from google.protobuf import text_format

    with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())
