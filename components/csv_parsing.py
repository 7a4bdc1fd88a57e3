"""CSV cell and row parsing that keeps missing and non-finite signals apart.

Stock CsvExampleGen (tfx 1.16) stores an empty cell as a present feature with
an empty value list, turns a numeric column into strings on the first `N/A`,
and never reports a value it could not read. The functions here classify
every cell instead:

- an empty cell or an NA token becomes an absent feature, counted as
  ``empty`` or ``na_token``. In a string column a string NA token, such as
  the ``nan`` that pandas writes for a missing string, counts as
  ``na_token`` too;
- in a float column `nan`, `inf`, `-inf` and `Infinity` stay non-finite
  floats, counted as ``nan``, ``posinf`` or ``neginf``. A number too large
  for float32 counts as inf too, because the tf.Example stores it as inf;
- a value that cannot be read as the column's type is counted as
  ``unreadable`` and left absent, so the column keeps its type;
- a finite value outside the description's ``min``/``max`` is kept and
  counted as ``out_of_range``.

`parse_csv_blocks` reads a file in blocks of rows held by column, so each
distinct cell text of a block is parsed once; `parse_csv_text` gives the
same rows one by one.

Pure Python, no TensorFlow: Beam workers and the `schema` command share it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import io
import itertools
import math
import operator
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
    """A row that could not be parsed at all, so it is counted, not emitted.

    Attributes:
        line_ref: ``"file:line"`` of the row.
        reason: Why the row was rejected.
        first_of_record: False for the second and later lines of a record
            that spans several lines. Their reason repeats the first line's,
            so a report lists only the first line as a sample.
    """

    line_ref: str
    reason: str
    first_of_record: bool = True


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
        self._by_column: dict[Any, dict[str, tuple]] = {}

    def for_column(self, key: Any) -> dict[str, tuple]:
        """Returns the text-to-result dictionary of a column key, emptied when full."""
        entries = self._by_column.get(key)
        if entries is None or len(entries) > self._max_entries:
            entries = self._by_column[key] = {}
        return entries


# Data rows per `RowBlock`.
BLOCK_ROWS = 4096


@dataclasses.dataclass
class RowBlock:
    """Consecutive data rows of one file, held column by column.

    Each cell's result is looked up by its text in ``parsed``, so a text
    that repeats is parsed once per block at most. A result is the
    ``(value, kind)`` pair of `parse_cell`. The time column's results have
    the row's timestamp as a third item. When the format cannot read a
    time, the value is None and the kind is ``unreadable``.

    Attributes:
        file_name: The file the rows come from.
        lines: The first physical line of each row, from 1 for the header.
        texts: The cell texts of each described column the header has.
        parsed: For each column in ``texts``, the result of every cell text.
        absent: Described columns the header lacks, absent in every row.
        flagged: Columns with at least one finding in this block, the absent
            columns included.
        timestamps: Each row's time in seconds since the epoch, or None
            when the row has no readable time or the data has no time column.
    """

    file_name: str
    lines: list[int]
    texts: dict[str, list[str]]
    parsed: dict[str, dict[str, tuple]]
    absent: tuple[str, ...]
    flagged: frozenset[str]
    timestamps: list[float | None]

    def results(self, name: str) -> list[tuple]:
        """Returns each row's result for a described column."""
        texts = self.texts.get(name)
        if texts is None:
            return [_ABSENT] * len(self.lines)
        return list(map(self.parsed[name].__getitem__, texts))

    def line_ref(self, row: int) -> str:
        """Returns ``file:line`` of a row of the block."""
        return f"{self.file_name}:{self.lines[row]}"


_ABSENT = (None, "absent")


def shows_text(kind: str, raw: str) -> bool:
    """Tells whether a finding's samples show the cell text next to the line.

    They do for unreadable cells and for numbers too large for float32, whose
    stored inf does not say what the file held.
    """
    return kind == "unreadable" or (kind in INF_KINDS and _is_overflow(raw))


def _parse_time_cell(
    raw: str, column: ColumnSpec, na_tokens: frozenset[str], time_format: str
) -> tuple[Any, str | None, float | None]:
    """Parses a time column cell into ``(value, kind, timestamp)``.

    A present value whose time cannot be read leaves the value absent. It
    counts as ``unreadable`` unless the cell already has a kind, such as
    ``nan`` in a numeric time column.
    """
    value, kind = parse_cell(raw, column, na_tokens)
    if value is None:
        return None, kind, None
    timestamp = parse_time(value, time_format)
    if timestamp is None:
        return None, kind or "unreadable", None
    return value, kind, timestamp


_LINE_REF = re.compile(r"^(.*?):(\d+)(?::|$)")


def line_sort_key(line_ref: str):
    """Returns a key that orders ``file:line`` references by file, then line number.

    So "a.csv:3" comes before "a.csv:12", also when a reason with colons
    follows the line number.
    """
    match = _LINE_REF.match(line_ref)
    if match is None:
        return (line_ref, 0, line_ref)
    return (match.group(1), int(match.group(2)), line_ref)


def parse_csv_blocks(
    text: str,
    file_name: str,
    columns: list[ColumnSpec],
    na_tokens: frozenset[str],
    time_column: str | None,
    time_format: str,
    cell_cache: CellCache | None = None,
    block_rows: int = BLOCK_ROWS,
    string_na_tokens: frozenset[str] = frozenset(),
) -> Iterator[RowBlock | MalformedRow | FileFinding]:
    """Parses one CSV file's text into row blocks, malformed rows and file findings.

    The header decides which description columns the file has. A column of
    the description that the header lacks is reported once as a
    `FileFinding` and counted as ``absent`` in every row. A header column
    the description does not name is reported and not read. The items come
    in file order: a malformed row ends the block before it.

    A `CellCache` shared by the calls of one worker, for one description
    and one set of NA tokens, saves parsing the same cell text twice;
    without one, each call uses its own.

    `string_na_tokens` are NA tokens in string columns only. In a float
    column, ``nan`` must stay a non-finite value for the contract to count.
    """
    if cell_cache is None:
        cell_cache = CellCache()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield FileFinding(
            file_name,
            "empty_file",
            "",
            "file is empty: no header line and no rows; remove it or write it again",
        )
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
            detail = f"column {name!r} is not in the dataset description; not read"
            delimiter = joining_delimiter(name, known)
            if delimiter is not None:
                detail += (
                    f". It joins column names with {delimiter_name(delimiter)}, so "
                    f"the file likely uses that delimiter instead of a comma"
                )
            yield FileFinding(file_name, "unexpected_column", name, detail)

    def parser(column: ColumnSpec):
        tokens = na_tokens | string_na_tokens if column.type == "string" else na_tokens
        if column.name == time_column:
            return functools.partial(
                _parse_time_cell,
                column=column,
                na_tokens=tokens,
                time_format=time_format,
            )
        return functools.partial(parse_cell, column=column, na_tokens=tokens)

    readers = [
        (
            column.name,
            positions[column.name],
            parser(column),
            (column.name, time_format if column.name == time_column else None),
        )
        for column in columns
        if column.name in positions
    ]
    absent = tuple(c.name for c in columns if c.name not in positions)
    timed = time_column is not None and any(
        name == time_column for name, _, _, _ in readers
    )

    def block(lines: list[int], records: list[list[str]]) -> RowBlock:
        texts: dict[str, list[str]] = {}
        parsed: dict[str, dict[str, tuple]] = {}
        flagged = set(absent)
        for name, position, parse, cache_key in readers:
            column_texts = texts[name] = list(map(operator.itemgetter(position), records))
            results = parsed[name] = cell_cache.for_column(cache_key)
            for raw in set(column_texts):
                result = results.get(raw)
                if result is None:
                    result = results[raw] = parse(raw)
                if result[1] is not None:
                    flagged.add(name)
        if timed:
            results = parsed[time_column]
            timestamps = [results[raw][2] for raw in texts[time_column]]
        else:
            timestamps = [None] * len(lines)
        return RowBlock(
            file_name, lines, texts, parsed, absent, frozenset(flagged), timestamps
        )

    # A file cut off mid-write ends without a line ending, and its last
    # record may still have the right number of fields. That record is
    # counted as malformed, not read, because its last value may be cut.
    unterminated = bool(text) and not text.endswith(("\n", "\r"))
    last_line = text.count("\n") + 1 if unterminated else -1
    width = len(header)

    # Fast path: read records a block at a time. It applies while every
    # record is one whole line with the header's number of fields, so the
    # block's records are its lines in order.
    start = reader.line_num  # Lines read before the block.
    count = 0
    while True:
        try:
            records = list(itertools.islice(reader, block_rows))
        except csv.Error:
            break
        end = reader.line_num
        if (
            end - start != len(records)
            or (unterminated and end >= last_line)
            or not set(map(len, records)) <= {width}
            or (width == 1 and [""] in records)
        ):
            break
        if not records:
            if count == 0:
                yield _no_data_rows(file_name)
            return
        yield block(list(range(start + 1, end + 1)), records)
        count += len(records)
        start = end

    # Slow path, one record at a time, from the first line of the block
    # that broke the fast path's rule. A record always starts on a fresh
    # line, so a new reader that starts there reads the same records.
    physical = io.StringIO(text, newline="").readlines()
    reader = csv.reader(iter(physical[start:]))
    lines: list[int] = []
    records = []
    # Well-formed records that span several lines: their count and the
    # first one's line range.
    multiline = 0
    first_multiline: tuple[int, int] | None = None
    while True:
        line = start + reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            count += 1
            if lines:
                yield block(lines, records)
                lines, records = [], []
            yield from _malformed_lines(
                file_name, line, start + reader.line_num, f"CSV error: {e}"
            )
            continue
        if not fields or fields == [""]:
            continue  # Blank line: carries no row.
        count += 1
        last = start + reader.line_num
        if len(fields) != width or (unterminated and last >= last_line):
            if unterminated and last >= last_line:
                reason = "last line has no line ending; the file may be truncated"
            else:
                noun = "field" if width == 1 else "fields"
                reason = f"expected {width} {noun}, found {len(fields)}"
            if lines:
                yield block(lines, records)
                lines, records = [], []
            yield from _malformed_lines(file_name, line, last, reason)
            continue
        if last > line:
            multiline += 1
            first_multiline = first_multiline or (line, last)
        lines.append(line)
        records.append(fields)
        if len(lines) >= block_rows:
            yield block(lines, records)
            lines, records = [], []
    if lines:
        yield block(lines, records)
    if count == 0:
        yield _no_data_rows(file_name)
    if first_multiline is not None:
        yield _multiline_records(file_name, multiline, *first_multiline)


# Delimiters other than the comma that CSV writers commonly use, with their
# names in messages.
OTHER_DELIMITERS = {";": "';' (semicolon)", "\t": "a tab", "|": "'|' (pipe)"}


def joining_delimiter(field: str, column_names: set[str]) -> str | None:
    """Returns the delimiter that joins column names in a header field, or None.

    A file written with ``;`` between fields has a header that the comma
    reader returns as one field, "InvoiceNo;StockCode;...". The field counts
    as joined when splitting it at one of `OTHER_DELIMITERS` gives at least
    one name of `column_names`.
    """
    for delimiter in OTHER_DELIMITERS:
        parts = [part.strip().strip('"') for part in field.split(delimiter)]
        if len(parts) > 1 and any(part in column_names for part in parts):
            return delimiter
    return None


def delimiter_name(delimiter: str) -> str:
    """Returns a delimiter as a message names it, such as "';' (semicolon)"."""
    return OTHER_DELIMITERS.get(delimiter, repr(delimiter))


def _multiline_records(file_name: str, count: int, first: int, last: int) -> FileFinding:
    """Return the finding for a file's records that span several lines.

    Such a record, whose quoted field contains a line break, is valid CSV and
    is read as one row. An unbalanced quote that a later quote closes gives
    one too, and then the lines between are read as one row instead of
    several.
    """
    noun = "record spans" if count == 1 else "records span"
    return FileFinding(
        file_name,
        "multiline_records",
        "",
        f"{count:,} {noun} several lines, each read as one row (the first: "
        f"lines {first} to {last}). If no field of this file contains a line "
        f"break, check for an unbalanced quote on line {first}",
    )


def _no_data_rows(file_name: str) -> FileFinding:
    return FileFinding(
        file_name, "no_data_rows", "", "file has a header line but no data row"
    )


def parse_csv_text(
    text: str,
    file_name: str,
    columns: list[ColumnSpec],
    na_tokens: frozenset[str],
    time_column: str | None,
    time_format: str,
    cell_cache: CellCache | None = None,
    block_rows: int = BLOCK_ROWS,
    string_na_tokens: frozenset[str] = frozenset(),
) -> Iterator[ParsedRow | MalformedRow | FileFinding]:
    """Parses one CSV file's text into rows, malformed rows and file findings.

    The row by row view of `parse_csv_blocks`, with the same arguments and
    the same rules. A row's findings follow the description's column order.
    """
    for item in parse_csv_blocks(
        text,
        file_name,
        columns,
        na_tokens,
        time_column,
        time_format,
        cell_cache,
        block_rows,
        string_na_tokens,
    ):
        if not isinstance(item, RowBlock):
            yield item
            continue
        by_column = [(c.name, item.results(c.name), item.texts.get(c.name)) for c in columns]
        for row, timestamp in enumerate(item.timestamps):
            values: dict[str, Any] = {}
            findings: list[tuple[str, str]] = []
            shown_texts: dict[str, str] = {}
            for name, results, texts in by_column:
                result = results[row]
                values[name] = result[0]
                kind = result[1]
                if kind is not None:
                    findings.append((name, kind))
                    if texts is not None and shows_text(kind, texts[row]):
                        shown_texts[name] = texts[row]
            yield ParsedRow(values, findings, timestamp, item.line_ref(row), shown_texts)


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
        yield MalformedRow(f"{file_name}:{line}", reason, first_of_record=line == first)


def decode_file_bytes(data: bytes) -> str:
    """Decodes UTF-8 keeping invalid bytes as surrogates for `parse_cell`."""
    text = data.decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text
