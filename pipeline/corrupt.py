"""Fault injector: write a corrupted copy of a CSV dataset and a manifest of changes.

The robustness tests run the pipeline on such copies and compare the report's counts
with the manifest's. Each manifest entry should therefore add exactly one new defect.
So the cell kinds skip cells that already contain a defect the report counts. These
are missing values (empty or an NA token, and ``nan`` or ``NaN`` in columns that do
not hold numbers) and, in numeric columns, values that are not finite numbers or are
negative. Skipped cells stay unchanged and are counted under ``skipped`` in the
manifest.

The module uses only the standard library. Input files must be UTF-8 with LF line
endings. Every output file is rewritten with ``csv.QUOTE_MINIMAL`` and ``"\\n"``, which
reproduces minimally quoted input byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import math
import random
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.dataset import DEFAULT_STRING_NA_TOKENS

KINDS = (
    "empty",
    "na_token",
    "nan",
    "inf",
    "negative",
    "extreme",
    "non_numeric",
    "drop_column",
    "rename_column",
    "duplicate_rows",
    "truncate_last_line",
    "wrong_delimiter",
    "non_utf8",
)
NUMERIC_KINDS = ("nan", "inf", "negative", "extreme", "non_numeric")
CELL_KINDS = ("empty", "na_token", *NUMERIC_KINDS, "non_utf8")
COLUMN_KINDS = ("drop_column", "rename_column")
# Kinds that change whole rows or files, so `columns` does not apply to them.
ROW_KINDS = ("duplicate_rows", "truncate_last_line", "wrong_delimiter")

DEFAULT_NA_TOKENS = ("NA", "N/A", "n/a", "?", "null", "NULL", "None", "-")
# Missing values in the columns that do not hold numbers, the default of a
# description's string_na_tokens. In numeric columns they are NaN.
STRING_NA_TOKENS = DEFAULT_STRING_NA_TOKENS
# The float columns and the free-text column of data/online_retail.yaml.
DEFAULT_NUMERIC_COLUMNS = ("Quantity", "UnitPrice")
DEFAULT_STRING_COLUMNS = ("Description",)

# NOTE: data/online_retail.yaml sets no `max` for the float columns, so the report
# flags this value only if the pipeline applies an upper bound of its own.
EXTREME_VALUE = "1e30"
NON_NUMERIC_VALUE = "twelve"
RENAME_SUFFIX = "_renamed"
WRONG_DELIMITER = ";"
# The `column` of manifest entries that change a whole row or file.
ROW_COLUMN = "*"
MANIFEST_JSON_NAME = "corruption_manifest.json"
# Tab-separated, so the data readers' "*.csv" pattern never picks it up as data.
MANIFEST_TABLE_NAME = "corruption_manifest.tsv"
MANIFEST_FIELDS = ("file", "line", "column", "old_value", "new_value", "kind")

# Placeholder for the 0xFF byte while a row is formatted as text, so the csv module
# makes the quoting decision. U+FDD0 is a Unicode noncharacter, which text data
# should not contain. Kind `non_utf8` rejects input that does contain it.
_BYTE_MARKER = "\ufdd0"
_INVALID_BYTE = b"\xff"
# Manifest text for the invalid byte, equal to what decoding the output with
# errors="backslashreplace" returns.
_INVALID_BYTE_TEXT = "\\xff"

_NUMBER_PATTERN = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class CorruptionError(ValueError):
    """Invalid arguments or input data for `corrupt_dataset`."""


@dataclasses.dataclass
class Change:
    """One manifest entry. `line` is the 1-based physical line in the output file."""

    file: str
    line: int
    column: str
    old_value: str
    new_value: str
    kind: str


@dataclasses.dataclass
class _Table:
    name: str
    header: list[str]
    rows: list[list[str]]


@dataclasses.dataclass
class _Result:
    outputs: dict[str, bytes]
    changes: list[Change]
    rows_changed: int
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


class _OutputFile:
    """Formatted records of one output file and the line the next record starts on."""

    def __init__(self, name: str, delimiter: str = ",", invalid_bytes: bool = False):
        self.name = name
        self.next_line = 1
        self._delimiter = delimiter
        self._invalid_bytes = invalid_bytes
        self._parts: list[str] = []

    def add(self, fields: Sequence[str]) -> int:
        """Append one record and return the physical line it starts on."""
        return self.add_text(format_record(fields, self._delimiter))

    def add_text(self, text: str) -> int:
        line = self.next_line
        self._parts.append(text)
        self.next_line += text.count("\n")
        return line

    def to_bytes(self) -> bytes:
        data = "".join(self._parts).encode("utf-8")
        if self._invalid_bytes:
            data = data.replace(_BYTE_MARKER.encode("utf-8"), _INVALID_BYTE)
        return data


def format_record(fields: Sequence[str], delimiter: str = ",") -> str:
    """Format one CSV record with minimal quoting, ending in a single ``"\\n"``."""
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\n"
    )
    writer.writerow(fields)
    return buffer.getvalue()


def corrupt_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    kind: str,
    rate: float,
    columns: Sequence[str] | None = None,
    seed: int = 0,
    na_tokens: Sequence[str] = DEFAULT_NA_TOKENS,
    numeric_columns: Sequence[str] | None = None,
) -> dict:
    """Write a corrupted copy of every CSV file in `data_dir` and a manifest.

    Every ``*.csv`` file of `data_dir` (not of its sub-folders) is copied to
    `out_dir` under the same name, in name order, with the corruption applied. The
    manifest goes to ``corruption_manifest.json`` and ``corruption_manifest.tsv`` in
    `out_dir`, one entry per change. An input file with the manifest's CSV name is
    skipped, so the output of one run can be the input of the next.

    Kinds and what one manifest entry records:

    - ``empty``, ``na_token``: a cell set to ``""`` or to the next of `na_tokens`.
    - ``nan``, ``inf``, ``extreme``, ``non_numeric``: a number set to ``nan``,
      ``inf`` and ``-inf`` in turn, ``1e30`` or ``twelve``.
    - ``negative``: a positive number negated (zero is skipped).
    - ``non_utf8``: one character of a cell replaced by the byte 0xFF. The manifest
      shows the byte as the text ``\\xff``.
    - ``drop_column``, ``rename_column``: a header name removed or renamed to
      ``<name>_renamed``. One entry per file and column, on line 1.
    - ``duplicate_rows``: a row written twice. The entry is on the line of the copy.
    - ``truncate_last_line``: the last line of the last file cut in the middle of a
      field, without a trailing newline. The entry contains the old and new line.
    - ``wrong_delimiter``: one file, chosen with the seed, written with ``;``. One
      entry on line 1, with old value ``,`` and new value ``;``.

    Args:
        data_dir: Folder with the input CSV files.
        out_dir: Folder for the copies and the manifest. It is created if missing.
            It must not be `data_dir` and must not contain other CSV files, because
            the pipeline would read them as data.
        kind: One of `KINDS`.
        rate: Number from 0 to 1. For cell kinds it is the probability that a row's
            cell in each target column is picked, and for ``duplicate_rows`` the
            probability that a row is copied. The other kinds apply when rate > 0.
            Rate 0 writes an unchanged copy for every kind.
        columns: Target columns. Defaults: `numeric_columns` for the numeric kinds,
            every column for ``empty`` and ``na_token``, ``Description`` for
            ``non_utf8``, and one column chosen with the seed for ``drop_column``
            and ``rename_column``. Row and file kinds reject this argument.
        seed: Seed of the ``random.Random`` that picks cells, rows and files. The
            same input, arguments and seed give byte-identical output.
        na_tokens: Tokens that count as missing values, and that ``na_token``
            writes in turn.
        numeric_columns: Columns that hold numbers. Defaults to ``Quantity`` and
            ``UnitPrice``, the float columns of data/online_retail.yaml, where
            present in the header.

    Returns:
        The manifest: ``kind``, ``rate``, ``seed``, ``columns`` (target columns),
        ``files`` (output file names), ``changes`` (entries with ``file``,
        ``line``, ``column``, ``old_value``, ``new_value`` and ``kind``),
        ``counts`` (entries per column, 0 for target columns left unchanged),
        ``skipped`` (picked cells that already held a defect, per column),
        ``rows_total`` (data rows of the input) and ``rows_changed`` (data rows
        that differ in the output, including added copies).

    Raises:
        CorruptionError: On an unknown kind, a rate outside [0, 1], a column that
            is not in a file's header, a missing or empty `data_dir`, an
            `out_dir` that is `data_dir` or holds other CSV files, or an input
            file that is empty or not UTF-8.
    """
    _validate_arguments(kind, rate, seed, na_tokens)
    data_path = Path(data_dir)
    out_path = Path(out_dir)
    input_paths = _list_input_files(data_path)
    _validate_output_dir(data_path, out_path, [path.name for path in input_paths])
    tables = [_read_table(path) for path in input_paths]
    if kind == "non_utf8":
        _reject_byte_marker(tables)

    rng = random.Random(seed)
    numeric = _resolve_numeric_columns(tables, numeric_columns)
    targets = _resolve_columns(tables, kind, columns, numeric, rng)
    result = _apply_kind(tables, kind, rate, targets, rng, tuple(na_tokens), numeric)

    manifest = _build_manifest(kind, rate, seed, targets, tables, result)
    _write_outputs(out_path, result.outputs, manifest)
    return manifest


def _validate_arguments(
    kind: str, rate: float, seed: int, na_tokens: Sequence[str]
) -> None:
    if kind not in KINDS:
        raise CorruptionError(
            f"unknown corruption kind {kind!r}; use one of: {', '.join(KINDS)}"
        )
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise CorruptionError(f"invalid rate {rate!r}: pass a number from 0 to 1")
    if not 0.0 <= rate <= 1.0:
        raise CorruptionError(
            f"rate (--rate) {rate!r} is outside [0, 1]; pass a number from 0 to 1"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CorruptionError(f"invalid seed {seed!r}: pass an integer")
    if isinstance(na_tokens, str):
        raise CorruptionError(
            f"na_tokens must be a sequence of strings, got the string {na_tokens!r}"
        )
    if kind == "na_token" and not na_tokens:
        raise CorruptionError(
            "kind 'na_token' needs at least one NA token in na_tokens"
        )


def _list_input_files(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        raise CorruptionError(
            f"data folder {str(data_dir)!r} not found; pass a folder with *.csv files"
        )
    paths = sorted(
        path
        for path in data_dir.glob("*.csv")
        if path.is_file() and path.name != MANIFEST_TABLE_NAME
    )
    if not paths:
        raise CorruptionError(
            f"data folder {str(data_dir)!r} contains no *.csv files; pass the folder "
            "that holds the dataset's CSV files"
        )
    return paths


def _validate_output_dir(data_dir: Path, out_dir: Path, names: list[str]) -> None:
    if out_dir.resolve() == data_dir.resolve():
        raise CorruptionError(
            f"output folder {str(out_dir)!r} is the data folder; pass a different "
            "--out so the original files stay unchanged"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise CorruptionError(
            f"output path {str(out_dir)!r} exists and is not a folder"
        )
    if not out_dir.is_dir():
        return
    allowed = set(names) | {MANIFEST_TABLE_NAME}
    stale = sorted(
        path.name for path in out_dir.glob("*.csv") if path.name not in allowed
    )
    if stale:
        raise CorruptionError(
            f"output folder {str(out_dir)!r} already contains CSV files that are not "
            f"in the data folder ({', '.join(stale)}); the pipeline would read them as "
            "data, so pass an empty or new folder"
        )


def _read_table(path: Path) -> _Table:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            records = list(csv.reader(handle))
    except UnicodeDecodeError as error:
        raise CorruptionError(
            f"{path} is not valid UTF-8 ({error}); convert it to UTF-8 first"
        ) from error
    except csv.Error as error:
        raise CorruptionError(f"{path} is not a readable CSV file: {error}") from error
    if not records:
        raise CorruptionError(f"{path} is empty; every CSV file needs a header line")
    return _Table(path.name, records[0], records[1:])


def _reject_byte_marker(tables: list[_Table]) -> None:
    for table in tables:
        for record in itertools.chain([table.header], table.rows):
            if any(_BYTE_MARKER in field for field in record):
                raise CorruptionError(
                    f"{table.name} contains the character U+FDD0, which kind "
                    "'non_utf8' uses as a marker; remove it from the input first"
                )


def _check_columns(tables: list[_Table], columns: Sequence[str], argument: str) -> None:
    for table in tables:
        for column in columns:
            if column not in table.header:
                raise CorruptionError(
                    f"column {column!r} from {argument} is not in the header of "
                    f"{table.name} ({', '.join(table.header)}); pass columns from "
                    "that header"
                )


def _resolve_numeric_columns(
    tables: list[_Table], numeric_columns: Sequence[str] | None
) -> tuple[str, ...]:
    if numeric_columns is None:
        header = tables[0].header
        return tuple(column for column in DEFAULT_NUMERIC_COLUMNS if column in header)
    if isinstance(numeric_columns, str):
        raise CorruptionError(
            f"numeric_columns must be a sequence of names, got {numeric_columns!r}"
        )
    _check_columns(tables, numeric_columns, "numeric_columns (--numeric-columns)")
    return tuple(numeric_columns)


def _resolve_columns(
    tables: list[_Table],
    kind: str,
    columns: Sequence[str] | None,
    numeric_columns: tuple[str, ...],
    rng: random.Random,
) -> tuple[str, ...]:
    """Return the target columns of `kind`, checked against every file's header."""
    if kind in ROW_KINDS:
        if columns is not None:
            raise CorruptionError(
                f"kind {kind!r} changes whole rows or files; leave out the columns"
            )
        return ()
    if isinstance(columns, str):
        raise CorruptionError(f"columns must be a sequence of names, got {columns!r}")
    if columns is not None and not columns:
        raise CorruptionError(
            f"columns (--columns) is empty for kind {kind!r}; pass at least one "
            "column or leave it out for the default"
        )
    if columns is None:
        columns = _default_columns(tables, kind, numeric_columns, rng)
    if len(set(columns)) != len(columns):
        raise CorruptionError(
            f"columns (--columns) {list(columns)!r} lists a column twice; pass each once"
        )
    _check_columns(tables, columns, "columns (--columns)")
    return tuple(columns)


def _default_columns(
    tables: list[_Table],
    kind: str,
    numeric_columns: tuple[str, ...],
    rng: random.Random,
) -> tuple[str, ...]:
    header = tables[0].header
    if kind in ("empty", "na_token"):
        return tuple(header)
    if kind in COLUMN_KINDS:
        return (rng.choice(header),)
    if kind == "non_utf8":
        defaults = DEFAULT_STRING_COLUMNS
    else:
        defaults = numeric_columns
    if not defaults or any(column not in header for column in defaults):
        raise CorruptionError(
            f"kind {kind!r} has no default column in the header of {tables[0].name} "
            f"({', '.join(header)}); pass columns (--columns)"
        )
    return tuple(defaults)


def _apply_kind(
    tables: list[_Table],
    kind: str,
    rate: float,
    columns: tuple[str, ...],
    rng: random.Random,
    na_tokens: tuple[str, ...],
    numeric_columns: tuple[str, ...],
) -> _Result:
    if kind in CELL_KINDS:
        # `non_utf8` picks the replaced character with its own generator, so the
        # cells picked by `rng` stay the same for every cell kind.
        position_rng = random.Random(rng.random())
        replace = _make_replacer(kind, position_rng, na_tokens, numeric_columns)
        return _corrupt_cells(tables, kind, rate, columns, rng, replace)
    if rate == 0:
        return _copy_unchanged(tables)
    if kind == "drop_column":
        return _drop_columns(tables, columns)
    if kind == "rename_column":
        return _rename_columns(tables, columns)
    if kind == "duplicate_rows":
        return _duplicate_rows(tables, rate, rng)
    if kind == "truncate_last_line":
        return _truncate_last_line(tables, rng)
    return _use_wrong_delimiter(tables, rng)


# A replacer returns the new value of a picked cell, or None to skip the cell
# because it already contains a defect.
_Replacer = Callable[[str, str], "str | None"]


def _parse_number(value: str) -> float | None:
    """Return the value as a float if it is a plain finite decimal number."""
    text = value.strip()
    if not _NUMBER_PATTERN.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _is_clean(
    value: str,
    column: str,
    na_tokens: tuple[str, ...],
    numeric_columns: tuple[str, ...],
) -> bool:
    """Return whether a cell contains no defect that the pipeline's report counts."""
    text = value.strip()
    if text == "" or text in na_tokens:
        return False
    if column in numeric_columns:
        number = _parse_number(value)
        return number is not None and number >= 0
    return text not in STRING_NA_TOKENS


def _make_replacer(
    kind: str,
    rng: random.Random,
    na_tokens: tuple[str, ...],
    numeric_columns: tuple[str, ...],
) -> _Replacer:
    tokens = itertools.cycle(na_tokens)
    infinities = itertools.cycle(("inf", "-inf"))

    def replace(value: str, column: str) -> str | None:
        if kind in ("empty", "na_token", "non_utf8"):
            if not _is_clean(value, column, na_tokens, numeric_columns):
                return None
            if kind == "empty":
                return ""
            if kind == "na_token":
                return next(tokens)
            position = rng.randrange(len(value))
            return value[:position] + _BYTE_MARKER + value[position + 1 :]

        # The numeric kinds change only non-negative finite numbers, in any target
        # column, because negative values already count as out of range.
        number = _parse_number(value)
        if number is None or number < 0:
            return None
        if kind == "nan":
            return "nan"
        if kind == "inf":
            return next(infinities)
        if kind == "extreme":
            return EXTREME_VALUE
        if kind == "non_numeric":
            return NON_NUMERIC_VALUE
        if number == 0:
            return None
        return "-" + value.strip().removeprefix("+")

    return replace


def _corrupt_cells(
    tables: list[_Table],
    kind: str,
    rate: float,
    columns: tuple[str, ...],
    rng: random.Random,
    replace: _Replacer,
) -> _Result:
    """Pick each target cell with probability `rate` and replace it.

    One random number is drawn per row and target column whether or not the cell is
    replaced, so for one seed and rate the kinds pick the same cells.
    """
    outputs: dict[str, bytes] = {}
    changes: list[Change] = []
    skipped = {column: 0 for column in columns}
    rows_changed = 0
    for table in tables:
        output = _OutputFile(table.name, invalid_bytes=kind == "non_utf8")
        output.add(table.header)
        indexes = [table.header.index(column) for column in columns]
        for row in table.rows:
            new_row = list(row)
            row_changes: list[tuple[str, str, str]] = []
            for column, index in zip(columns, indexes):
                picked = rng.random() < rate
                # A short row has no cell here, so there is nothing to replace.
                if not picked or index >= len(row):
                    continue
                new_value = replace(row[index], column)
                if new_value is None or new_value == row[index]:
                    skipped[column] += 1
                    continue
                new_row[index] = new_value
                row_changes.append((column, row[index], new_value))
            line = output.add(new_row)
            for column, old_value, new_value in row_changes:
                manifest_value = new_value.replace(_BYTE_MARKER, _INVALID_BYTE_TEXT)
                changes.append(
                    Change(table.name, line, column, old_value, manifest_value, kind)
                )
            rows_changed += bool(row_changes)
        outputs[table.name] = output.to_bytes()
    return _Result(outputs, changes, rows_changed, skipped)


def _copy_unchanged(tables: list[_Table]) -> _Result:
    outputs = {}
    for table in tables:
        output = _OutputFile(table.name)
        for record in itertools.chain([table.header], table.rows):
            output.add(record)
        outputs[table.name] = output.to_bytes()
    return _Result(outputs, [], 0)


def _drop_columns(tables: list[_Table], columns: tuple[str, ...]) -> _Result:
    outputs = {}
    changes = []
    rows_changed = 0
    for table in tables:
        indexes = sorted((table.header.index(c) for c in columns), reverse=True)
        output = _OutputFile(table.name)
        for record in itertools.chain([table.header], table.rows):
            remaining = list(record)
            for index in indexes:
                # A short row has no field to remove at this index.
                if index < len(remaining):
                    del remaining[index]
            output.add(remaining)
        for column in columns:
            changes.append(Change(table.name, 1, column, column, "", "drop_column"))
        rows_changed += len(table.rows)
        outputs[table.name] = output.to_bytes()
    return _Result(outputs, changes, rows_changed)


def _rename_columns(tables: list[_Table], columns: tuple[str, ...]) -> _Result:
    outputs = {}
    changes = []
    for table in tables:
        header = list(table.header)
        for column in columns:
            new_name = column + RENAME_SUFFIX
            if new_name in table.header:
                raise CorruptionError(
                    f"cannot rename {column!r} to {new_name!r} because {table.name} "
                    "already has a column of that name; pick another column"
                )
            header[header.index(column)] = new_name
            changes.append(
                Change(table.name, 1, column, column, new_name, "rename_column")
            )
        output = _OutputFile(table.name)
        for record in itertools.chain([header], table.rows):
            output.add(record)
        outputs[table.name] = output.to_bytes()
    return _Result(outputs, changes, 0)


def _duplicate_rows(tables: list[_Table], rate: float, rng: random.Random) -> _Result:
    outputs = {}
    changes = []
    for table in tables:
        output = _OutputFile(table.name)
        output.add(table.header)
        for row in table.rows:
            output.add(row)
            if rng.random() < rate:
                line = output.add(row)
                text = format_record(row)[:-1]
                changes.append(
                    Change(table.name, line, ROW_COLUMN, "", text, "duplicate_rows")
                )
        outputs[table.name] = output.to_bytes()
    return _Result(outputs, changes, len(changes))


def _truncate_last_line(tables: list[_Table], rng: random.Random) -> _Result:
    """Cut the last record of the last file in the middle of a field.

    The cut goes into a field that needs no quoting and has at least 2 characters,
    chosen with `rng`, so the output ends inside an unquoted field. Without such a
    field the formatted record is cut in half.
    """
    *earlier, last = tables
    if not last.rows:
        raise CorruptionError(
            f"{last.name} has no data row to truncate; kind 'truncate_last_line' "
            "needs a last file with at least one data row"
        )
    result = _copy_unchanged(earlier)
    output = _OutputFile(last.name)
    output.add(last.header)
    for row in last.rows[:-1]:
        output.add(row)

    row = last.rows[-1]
    old_text = format_record(row)[:-1]
    candidates = [
        index
        for index, field in enumerate(row)
        if len(field) >= 2 and format_record([field])[:-1] == field
    ]
    if candidates:
        index = rng.choice(candidates)
        cut = len(row[index]) // 2
        new_text = format_record([*row[:index], row[index][:cut]])[:-1]
    elif len(old_text) >= 2:
        new_text = old_text[: len(old_text) // 2]
    else:
        raise CorruptionError(
            f"the last line of {last.name} ({old_text!r}) is too short to cut"
        )
    line = output.add_text(new_text)
    result.outputs[last.name] = output.to_bytes()
    change = Change(
        last.name, line, ROW_COLUMN, old_text, new_text, "truncate_last_line"
    )
    return _Result(result.outputs, [change], 1)


def _use_wrong_delimiter(tables: list[_Table], rng: random.Random) -> _Result:
    chosen = tables[rng.randrange(len(tables))]
    result = _copy_unchanged([table for table in tables if table is not chosen])
    output = _OutputFile(chosen.name, delimiter=WRONG_DELIMITER)
    for record in itertools.chain([chosen.header], chosen.rows):
        output.add(record)
    result.outputs[chosen.name] = output.to_bytes()
    change = Change(chosen.name, 1, ROW_COLUMN, ",", WRONG_DELIMITER, "wrong_delimiter")
    return _Result(result.outputs, [change], len(chosen.rows))


def _build_manifest(
    kind: str,
    rate: float,
    seed: int,
    columns: tuple[str, ...],
    tables: list[_Table],
    result: _Result,
) -> dict:
    counts = {column: 0 for column in columns}
    for change in result.changes:
        counts[change.column] = counts.get(change.column, 0) + 1
    return {
        "kind": kind,
        "rate": float(rate),
        "seed": seed,
        "columns": list(columns),
        "files": [table.name for table in tables],
        "changes": [dataclasses.asdict(change) for change in result.changes],
        "counts": counts,
        "skipped": dict(result.skipped),
        "rows_total": sum(len(table.rows) for table in tables),
        "rows_changed": result.rows_changed,
    }


def _write_outputs(out_dir: Path, outputs: dict[str, bytes], manifest: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in outputs.items():
        (out_dir / name).write_bytes(data)
    with (out_dir / MANIFEST_JSON_NAME).open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    with (out_dir / MANIFEST_TABLE_NAME).open(
        "w", encoding="utf-8", newline=""
    ) as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=MANIFEST_FIELDS,
            delimiter="\t",
            quoting=csv.QUOTE_MINIMAL,
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(manifest["changes"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of the ``corrupt`` subcommand to `parser`."""
    parser.add_argument(
        "--data", required=True, type=Path, help="folder with the input *.csv files"
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder for the corrupted copy and the manifest; must differ from --data",
    )
    parser.add_argument("--kind", required=True, choices=KINDS, help="corruption kind")
    parser.add_argument(
        "--rate",
        required=True,
        type=float,
        help=(
            "probability from 0 to 1 that a row's cell in a target column (or, for "
            "duplicate_rows, a row) is changed; other kinds apply when it is above 0"
        ),
    )
    parser.add_argument(
        "--columns",
        nargs="+",
        default=None,
        help=(
            "target columns (default: Quantity and UnitPrice for numeric kinds, all "
            "columns for empty and na_token, Description for non_utf8)"
        ),
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--na-tokens",
        nargs="+",
        default=list(DEFAULT_NA_TOKENS),
        help="tokens that count as missing and that na_token writes",
    )
    parser.add_argument(
        "--numeric-columns",
        nargs="+",
        default=None,
        help="columns that hold numbers (default: Quantity and UnitPrice)",
    )


# The summary sentence of each cell kind, without the row count. `{cells}` is
# filled in with the changed cells per column.
_CELL_ACTIONS = {
    "empty": "Emptied {cells}",
    "na_token": "Replaced {cells} with NA tokens",
    "nan": "Set {cells} to nan",
    "inf": "Set {cells} to inf or -inf",
    "negative": "Negated {cells}",
    "extreme": f"Set {{cells}} to {EXTREME_VALUE}",
    "non_numeric": f"Set {{cells}} to the text {NON_NUMERIC_VALUE!r}",
    "non_utf8": "Replaced one character with the byte 0xFF in {cells}",
}


def _count_text(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _cells_text(counts: dict[str, int]) -> str:
    """Return "3 cells of Quantity" or "5 cells (3 in Quantity, 2 in UnitPrice)"."""
    total = sum(counts.values())
    if len(counts) == 1:
        (column,) = counts
        return f"{_count_text(total, 'cell')} of {column}"
    per_column = ", ".join(f"{count:,} in {column}" for column, count in counts.items())
    return f"{_count_text(total, 'cell')} ({per_column})"


def describe_changes(manifest: dict) -> str:
    """Return sentences that describe what `corrupt_dataset` changed, from its manifest.

    They name the kind of change, the columns or files, the changed cells per
    column, the changed data rows out of all data rows of the input and the
    picked cells left unchanged.
    """
    return _change_sentences(manifest) + _skipped_sentence(manifest)


def _change_sentences(manifest: dict) -> str:
    kind = manifest["kind"]
    changes = manifest["changes"]
    changed = manifest["rows_changed"]
    total = _count_text(manifest["rows_total"], "data row")
    rows = f"{changed:,} of {total} {'was' if changed == 1 else 'were'} changed."
    if not changes:
        return "Changed nothing: every file is an unchanged copy."

    if kind in CELL_KINDS:
        action = _CELL_ACTIONS[kind].format(cells=_cells_text(manifest["counts"]))
        return f"{action}. {rows}"
    files = _count_text(len(manifest["files"]), "file")
    if kind == "drop_column":
        dropped = [
            f"Dropped column {column} from {files}. " for column in manifest["columns"]
        ]
        return "".join(dropped) + rows
    if kind == "rename_column":
        renamed = [
            f"Renamed column {column} to {column}{RENAME_SUFFIX} in the header "
            f"of {files}. "
            for column in manifest["columns"]
        ]
        return "".join(renamed) + rows

    if kind == "duplicate_rows":
        return (
            f"Wrote a second copy of {changed:,} of {total}, each right after "
            "its original."
        )
    change = changes[0]
    if kind == "truncate_last_line":
        return (
            f"Cut the last line of {change['file']} (line {change['line']}) short "
            f"and removed its line ending. {rows}"
        )
    return (
        f"Wrote {change['file']} with {WRONG_DELIMITER!r} instead of ',' as the "
        f"delimiter. {rows}"
    )


def _skipped_sentence(manifest: dict) -> str:
    skipped = sum(manifest["skipped"].values())
    if not skipped:
        return ""
    kind = manifest["kind"]
    if kind == "negative":
        old_value = "no positive finite number"
    elif kind in NUMERIC_KINDS:
        old_value = "no non-negative finite number"
    else:
        old_value = (
            "a missing value or, in a numeric column, no non-negative finite number"
        )
    return (
        f" Left {_count_text(skipped, 'picked cell')} unchanged because "
        f"{'it' if skipped == 1 else 'they'} held {old_value}."
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run `corrupt_dataset` with parsed options and print what it changed.

    Returns 0 on success and 1 after printing a `CorruptionError` to stderr,
    the exit code of every value that recguard rejects after parsing.
    """
    try:
        manifest = corrupt_dataset(
            args.data,
            args.out,
            args.kind,
            args.rate,
            columns=args.columns,
            seed=args.seed,
            na_tokens=tuple(args.na_tokens),
            numeric_columns=args.numeric_columns,
        )
    except CorruptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(describe_changes(manifest))
    print(
        f"Kind {manifest['kind']}, rate {manifest['rate']:g}, seed {manifest['seed']}. "
        f"Manifest of every change: {Path(args.out) / MANIFEST_JSON_NAME}"
    )
    return 0
