"""Dataset description: columns, their roles, and the policy that applies.

A description is a YAML file (see ``data/online_retail.yaml``). It is the
single place where a dataset's columns get a type and a role. Ingestion, the
curated schema, the anomaly gate, Transform and the Trainer all read it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

from components import csv_parsing

ROLES = (
    "user_id",
    "item_id",
    "interaction_count",
    "label",
    "numeric",
    "categorical",
    "time",
    "other",
)
TYPES = ("string", "float", "int")
IMPUTE_STRATEGIES = ("mean", "median", "constant")
# The texts that pandas writes for a missing value in a column of strings
# (str(float("nan")) and to_csv(na_rep="NaN")). A description without
# `string_na_tokens` gets these.
DEFAULT_STRING_NA_TOKENS = ("nan", "NaN")
NEGATIVE_HANDLING = ("missing", "clip", "keep")

DEFAULT_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "data",
    "online_retail.yaml",
)


class DescriptionError(ValueError):
    """Raised when a dataset description is invalid."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the dataset and how each stage treats it."""

    name: str
    type: str
    role: str
    min: float | None = None
    max: float | None = None
    negative: str = "keep"
    log1p: bool = False
    impute: str = "median"
    impute_value: float = 0.0

    @property
    def is_numeric(self) -> bool:
        return self.type in ("float", "int")


@dataclasses.dataclass(frozen=True)
class Description:
    """A parsed dataset description."""

    name: str
    path: str
    data_dir: str
    file_pattern: str
    na_tokens: tuple[str, ...]
    # Read as missing in string columns only, in addition to `na_tokens`.
    string_na_tokens: tuple[str, ...]
    time_column: str | None
    time_format: str
    eval_fraction: float
    columns: tuple[Column, ...]
    policy: dict[str, Any]
    model: dict[str, Any]

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def columns_with_role(self, role: str) -> list[Column]:
        return [c for c in self.columns if c.role == role]

    def single_column(self, role: str) -> Column | None:
        """Returns the column with `role`, or None when the dataset has none."""
        matches = self.columns_with_role(role)
        return matches[0] if matches else None

    @property
    def user_column(self) -> Column:
        return self.columns_with_role("user_id")[0]

    @property
    def item_column(self) -> Column:
        return self.columns_with_role("item_id")[0]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def model_input_columns(self) -> list[Column]:
        """Returns the columns the model reads as features at serving time."""
        return [
            c
            for c in self.columns
            if c.role in ("user_id", "item_id", "numeric", "categorical")
        ]

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable form, passed to Transform and Trainer."""
        return {
            "name": self.name,
            "path": self.path,
            "data_dir": self.data_dir,
            "file_pattern": self.file_pattern,
            "na_tokens": list(self.na_tokens),
            "string_na_tokens": list(self.string_na_tokens),
            "split": {
                "time_column": self.time_column,
                "time_format": self.time_format,
                "eval_fraction": self.eval_fraction,
            },
            "columns": {
                c.name: {
                    k: v
                    for k, v in dataclasses.asdict(c).items()
                    if k != "name"
                }
                for c in self.columns
            },
            "policy": self.policy,
            "model": self.model,
        }


def _require(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise DescriptionError(f"{path}: {message}")


def _parse_column(path: str, name: str, spec: dict[str, Any]) -> Column:
    where = f"{path}: column {name!r}"
    _require(isinstance(spec, dict), where, "must be a mapping")
    unknown = set(spec) - {f.name for f in dataclasses.fields(Column)}
    _require(not unknown, where, f"unknown keys {sorted(unknown)}")
    column = Column(name=name, **spec)
    _require(
        column.type in TYPES,
        where,
        f"type {column.type!r} is invalid; use one of {', '.join(TYPES)}",
    )
    _require(
        column.role in ROLES,
        where,
        f"role {column.role!r} is invalid; use one of {', '.join(ROLES)}",
    )
    _require(
        column.impute in IMPUTE_STRATEGIES,
        where,
        f"impute {column.impute!r} is invalid; use one of "
        f"{', '.join(IMPUTE_STRATEGIES)}",
    )
    _require(
        column.negative in NEGATIVE_HANDLING,
        where,
        f"negative {column.negative!r} is invalid; use one of "
        f"{', '.join(NEGATIVE_HANDLING)}",
    )
    if column.role in ("user_id", "item_id", "categorical"):
        _require(
            column.type == "string",
            where,
            f"role {column.role} needs type string, not {column.type}",
        )
    if column.role in ("interaction_count", "numeric", "label"):
        _require(
            column.is_numeric,
            where,
            f"role {column.role} needs type float or int, not {column.type}",
        )
    return column


def parse_description(raw: dict[str, Any], path: str = "<description>") -> Description:
    """Validates a description mapping and returns a `Description`.

    Raises:
        DescriptionError: naming the file, the key and the invalid value.
    """
    _require(isinstance(raw, dict), path, "top level must be a mapping")
    for key in ("name", "columns"):
        _require(key in raw, path, f"missing required key {key!r}")
    columns = tuple(
        _parse_column(path, name, spec or {}) for name, spec in raw["columns"].items()
    )
    names = [c.name for c in columns]
    for role in ("user_id", "item_id"):
        count = names and sum(c.role == role for c in columns)
        _require(
            count == 1,
            path,
            f"exactly one column must have role {role}, found {count}",
        )
    split = raw.get("split") or {}
    time_column = split.get("time_column")
    if time_column is not None:
        _require(
            time_column in names,
            path,
            f"split.time_column {time_column!r} is not a column",
        )
    eval_fraction = float(split.get("eval_fraction", 0.2))
    _require(
        0.0 < eval_fraction < 1.0,
        path,
        f"split.eval_fraction must be in (0, 1), not {eval_fraction}",
    )
    base = os.path.dirname(os.path.abspath(path)) if os.path.exists(path) else ""
    data_dir = raw.get("data_dir", "")
    if data_dir and not os.path.isabs(data_dir) and base:
        data_dir = os.path.join(base, data_dir)
    return Description(
        name=str(raw["name"]),
        path=os.path.abspath(path) if os.path.exists(path) else path,
        data_dir=data_dir,
        file_pattern=str(raw.get("file_pattern", "*.csv")),
        na_tokens=tuple(str(t) for t in raw.get("na_tokens", [])),
        string_na_tokens=tuple(
            str(t) for t in raw.get("string_na_tokens", DEFAULT_STRING_NA_TOKENS)
        ),
        time_column=time_column,
        time_format=str(split.get("time_format", csv_parsing.DEFAULT_TIME_FORMAT)),
        eval_fraction=eval_fraction,
        columns=columns,
        policy=dict(raw.get("policy") or {}),
        model=dict(raw.get("model") or {}),
    )


def load_description(path: str = DEFAULT_PATH) -> Description:
    """Reads and validates the dataset description at `path`."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise DescriptionError(
            f"{path}: dataset description not found; pass --description with "
            "the path of a YAML description"
        ) from e
    except yaml.YAMLError as e:
        raise DescriptionError(f"{path}: invalid YAML: {e}") from e
    return parse_description(raw, path)


def description_from_dict(raw: dict[str, Any]) -> Description:
    """Rebuilds a description from `Description.to_dict()` output."""
    columns = {
        name: {k: v for k, v in spec.items()} for name, spec in raw["columns"].items()
    }
    return parse_description(
        {
            "name": raw["name"],
            "data_dir": raw.get("data_dir", ""),
            "file_pattern": raw.get("file_pattern", "*.csv"),
            "na_tokens": raw.get("na_tokens", []),
            "string_na_tokens": raw.get("string_na_tokens", DEFAULT_STRING_NA_TOKENS),
            "split": raw.get("split", {}),
            "columns": columns,
            "policy": raw.get("policy", {}),
            "model": raw.get("model", {}),
        },
        raw.get("path", "<description>"),
    )
