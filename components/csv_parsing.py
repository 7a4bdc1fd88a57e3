"""CSV cell and row parsing that keeps missing and non-finite signals apart.

Stock CsvExampleGen (tfx 1.16) stores an empty cell as a present feature with
an empty value list, turns a numeric column into strings on the first `N/A`,
and never reports a value it could not read. The functions here classify
every cell instead:

- an empty cell or an NA token becomes an absent feature, counted as
  ``empty`` or ``na_token``;
- in a float column `nan`, `inf`, `-inf` and `Infinity` stay non-finite
  floats, counted as ``nan``, ``posinf`` or ``neginf``. A number too large
  for float32 counts as inf too, because the tf.Example stores it as inf;
- a value that cannot be read as the column's type is counted as
  ``unreadable`` and left absent, so the column keeps its type;
- a finite value outside the description's ``min``/``max`` is kept and
  counted as ``out_of_range``.

Pure Python, no TensorFlow: Beam workers and the `schema` command share it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import io
import math
import re
from typing import Any, Iterator

# The strptime format of a string time column whose description gives none.
DEFAULT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# The finding kinds, in report order.
COUNT_KINDS = (
    "absent",
    "empty",
    "na_token",
    "nan",
    "posinf",
    "neginf",
    "unreadable",
    "out_of_range",
)
# Kinds after which the feature is absent from the tf.Example.
MISSING_KINDS = ("absent", "empty", "na_token", "unreadable")
NON_FINITE_KINDS = ("nan", "posinf", "neginf")
INF_KINDS = ("posinf", "neginf")

# Physical line references kept per column and kind, so a person can open
# the file at the right place without the report growing with the data.
MAX_SAMPLE_LINES = 5

# tf.train.FloatList stores float32, so a larger magnitude is stored as inf.
# The bound is the largest double that protobuf 3.20 (C++ implementation)
# still stores as the float32 maximum, 2**128 - 2**104, instead of inf.
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclasses.dataclass
class ColumnSpec:
    """The parts of a description column that parsing needs."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None


@dataclasses.dataclass
class ParsedRow:
    """One data row: typed values (None when absent) and its findings."""

    values: dict[str, Any]
    findings: list[tuple[str, str]]
    timestamp: float | None
    line_ref: str
    # The cell text, by column, of each cell whose finding a message shows
    # with its text: unreadable cells and numbers too large for float32.
    shown_texts: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MalformedRow:
    """A row that could not be parsed at all, so it is counted, not emitted."""

    line_ref: str
    reason: str


@dataclasses.dataclass
class FileFinding:
    """A finding about a whole file, such as a column missing from its header."""

    file: str
    kind: str
    column: str
    detail: str


def parse_cell(
    raw: str, column: ColumnSpec, na_tokens: frozenset[str]
) -> tuple[Any, str | None]:
    """Classifies one cell and converts it to the column's type.

    Returns:
        ``(value, kind)``: ``value`` is None when the feature must be absent,
        ``kind`` is one of `COUNT_KINDS` or None for a clean value.
    """
    stripped = raw.strip()
    if stripped == "":
        return None, "empty"
    if stripped in na_tokens:
        return None, "na_token"
    if column.type == "string":
        if _has_surrogates(raw):
            # Undecodable bytes: the cell is unreadable as UTF-8 text.
            return None, "unreadable"
        return raw, None

    if not stripped.isascii() or "_" in stripped:
        # float() also reads "1_000" and non-ASCII digits such as "١٢", which
        # are not numbers in a CSV file.
        return None, "unreadable"
    try:
        number = float(stripped)
    except ValueError:
        return None, "unreadable"
    if column.type == "float" and abs(number) > FLOAT32_OVERFLOW:
        # Finite as a double, but the float32 tf.Example value is inf.
        number = math.copysign(math.inf, number)
    if math.isnan(number):
        kind = "nan"
    elif math.isinf(number):
        kind = "posinf" if number > 0 else "neginf"
    else:
        kind = None
    if column.type == "int":
        if kind is not None or number != int(number):
            # An int64 feature cannot hold NaN, inf or a fraction.
            return None, kind or "unreadable"
        number = _exact_int(stripped, number)
        if not INT64_MIN <= number <= INT64_MAX:
            # Int64List rejects it, which would fail the whole ExampleGen run.
            return None, "unreadable"
    if kind is None and _out_of_range(number, column):
        kind = "out_of_range"
    return number, kind


def _is_overflow(text: str) -> bool:
    """Tells whether an infinite float cell is a finite number too large for float32."""
    return "inf" not in text.lower()


def _exact_int(text: str, number: float) -> int:
    """Returns the integer in `text`, exact beyond 2**53 where floats round."""
    try:
        return int(text)
    except ValueError:
        return int(number)  # Written as "3.0" or "1e3".


def _out_of_range(number: float, column: ColumnSpec) -> bool:
    if column.min is not None and number < column.min:
        return True
    return column.max is not None and number > column.max


# decode_file_bytes keeps each undecodable byte as one of these surrogates.
_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def parse_time(raw: Any, time_format: str) -> float | None:
    """Returns seconds since the epoch (UTC) or None when unreadable.

    A string is read with `time_format`. A number, from a time column of
    type int or float, is already seconds since the epoch.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw) if math.isfinite(raw) else None
    if not isinstance(raw, str):
        return None
    return _parse_time_text(raw.strip(), time_format)


# Interaction logs repeat the same time on many rows (every line of one
# order), and strptime is the slowest step of parsing a row.
@functools.lru_cache(maxsize=65536)
def _parse_time_text(text: str, time_format: str) -> float | None:
    try:
        parsed = datetime.datetime.strptime(text, time_format)
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


class CellCache:
    """`parse_cell` results kept per column and cell text.

    Interaction logs repeat most cell texts (the same country, price, item
    and time on many rows), and `parse_cell` is pure, so a dictionary
    lookup replaces most calls. A column's entries are dropped when they
    pass `max_entries`, which bounds the memory on columns of unique texts.
    """

    def __init__(self, max_entries: int = 100_000):
        self._max_entries = max_entries
        self._by_column: dict[str, dict[str, tuple[Any, str | None]]] = {}

    def for_column(self, name: str) -> dict[str, tuple[Any, str | None]]:
        """Returns the column's text-to-result dictionary, emptied when full."""
        entries = self._by_column.get(name)
        if entries is None or len(entries) > self._max_entries:
            entries = self._by_column[name] = {}
        return entries


def parse_csv_text(
    text: str,
    file_name: str,
    columns: list[ColumnSpec],
    na_tokens: frozenset[str],
    time_column: str | None,
    time_format: str,
    cell_cache: CellCache | None = None,
) -> Iterator[ParsedRow | MalformedRow | FileFinding]:
    """Parses one CSV file's text into rows, malformed rows and file findings.

    The header decides which description columns the file has. A column of
    the description that the header lacks is reported once as a
    `FileFinding` and counted as ``absent`` in every row. A header column
    the description does not name is reported and not read.

    A `CellCache` shared by the calls of one worker, for one description
    and one set of NA tokens, saves parsing the same cell text twice;
    without one, each call uses its own.
    """
    if cell_cache is None:
        cell_cache = CellCache()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield FileFinding(file_name, "empty_file", "", "file has no header line")
        return
    header = [name.strip() for name in header]
    positions = {name: i for i, name in enumerate(header)}
    for column in columns:
        if column.name not in positions:
            yield FileFinding(
                file_name,
                "missing_column",
                column.name,
                f"column {column.name!r} is not in the header {header!r}",
            )
    known = {c.name for c in columns}
    for name in header:
        if name not in known:
            yield FileFinding(
                file_name,
                "unexpected_column",
                name,
                f"column {name!r} is not in the dataset description; not read",
            )

    # A file cut off mid-write ends without a line ending, and its last
    # record may still have the right number of fields. That record is
    # counted as malformed, not read, because its last value may be cut.
    unterminated = bool(text) and not text.endswith(("\n", "\r"))
    last_line = text.count("\n") + 1 if unterminated else -1
    # (column, its position in the record or None, its cached results)
    readers = [
        (column, positions.get(column.name), cell_cache.for_column(column.name))
        for column in columns
    ]
    records = 0
    for line, fields in _iterate_records(reader, file_name):
        if isinstance(fields, MalformedRow):
            records += 1
            yield fields
            continue
        line_ref = f"{file_name}:{line}"
        if fields == [] or fields == [""]:
            continue  # Blank line: carries no row.
        records += 1
        last = reader.line_num
        if unterminated and last >= last_line:
            reason = "last line has no line ending; the file may be truncated"
            yield from _malformed_lines(file_name, line, last, reason)
            continue
        if len(fields) != len(header):
            reason = f"expected {len(header)} fields, found {len(fields)}"
            yield from _malformed_lines(file_name, line, last, reason)
            continue
        values: dict[str, Any] = {}
        findings: list[tuple[str, str]] = []
        shown_texts: dict[str, str] = {}
        for column, position, cached in readers:
            if position is None:
                values[column.name] = None
                findings.append((column.name, "absent"))
                continue
            raw = fields[position]
            result = cached.get(raw)
            if result is None:
                result = cached[raw] = parse_cell(raw, column, na_tokens)
            value, kind = result
            values[column.name] = value
            if kind is not None:
                findings.append((column.name, kind))
                if kind == "unreadable" or (kind in INF_KINDS and _is_overflow(raw)):
                    shown_texts[column.name] = raw
        timestamp = None
        if time_column is not None:
            timestamp = parse_time(values.get(time_column), time_format)
            if timestamp is None and values.get(time_column) is not None:
                # Present but not a time in the declared format, or a NaN or
                # inf in a numeric time column, which is already counted.
                if all(name != time_column for name, _ in findings):
                    findings.append((time_column, "unreadable"))
                    shown_texts[time_column] = str(values[time_column])
                values[time_column] = None
        yield ParsedRow(values, findings, timestamp, line_ref, shown_texts)
    if records == 0:
        yield FileFinding(
            file_name, "no_data_rows", "", "file has a header line but no data row"
        )


# Maximum characters of a cell text in a message. A longer text is cut.
MAX_SHOWN_CHARS = 40


def shown_text(text: str) -> str:
    """Returns a cell text quoted for a message, with undecodable bytes escaped.

    Bytes that are not UTF-8 reach the parser as surrogate escapes. They are
    shown as ``\\xff``, and the rest of the text as it is.
    """
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + "..."
    raw = text.encode("utf-8", "surrogateescape")
    return "'" + raw.decode("utf-8", "backslashreplace").replace("'", "\\'") + "'"


def _malformed_lines(
    file_name: str, first: int, last: int, reason: str
) -> Iterator[MalformedRow]:
    """Yields one MalformedRow per physical line of a rejected record.

    A stray quote opens a field that runs over the following lines, so the
    reader returns them all as one record. Each of those lines may be a lost
    row, so each is counted, and the reason names the quote's line.
    """
    if last <= first:
        yield MalformedRow(f"{file_name}:{first}", reason)
        return
    reason = (
        f"{reason}; the record spans lines {first} to {last}, so check for an "
        f"unbalanced quote on line {first}"
    )
    for line in range(first, last + 1):
        yield MalformedRow(f"{file_name}:{line}", reason)


def _iterate_records(reader, file_name: str):
    """Yields ``(first line, record)`` pairs, with a csv.Error as a MalformedRow.

    The first physical line of the record, not `reader.line_num` after it, is
    the line to open when a quoted field spans several lines.
    """
    while True:
        line = reader.line_num + 1
        try:
            yield line, next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            for malformed in _malformed_lines(
                file_name, line, reader.line_num, f"CSV error: {e}"
            ):
                yield line, malformed


def decode_file_bytes(data: bytes) -> str:
    """Decodes UTF-8 keeping invalid bytes as surrogates for `parse_cell`."""
    text = data.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text
