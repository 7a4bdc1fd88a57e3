"""Unit tests for cell and row parsing (components/csv_parsing.py).

Every expected value is written by hand. The float column has the range of
UnitPrice in data/online_retail.yaml (0 to 100,000), the int column a range
of 0 to 10.
"""

from __future__ import annotations

import io
import math

import pytest
import tensorflow as tf

from components.csv_parsing import (
    CellCache,
    ColumnSpec,
    FileFinding,
    MalformedRow,
    ParsedRow,
    RowBlock,
    decode_file_bytes,
    parse_cell,
    parse_csv_blocks,
    line_sort_key,
    parse_csv_text,
    shown_text,
)
from apache_beam.io.tfrecordio import _TFRecordUtil

from components import ingest
from components.ingest import (
    _FileTimeRange,
    _MergeCounts,
    _ExampleEncoder,
    _ParseAndEncode,
    _to_example,
    frame_tfrecords,
)

NA_TOKENS = frozenset(["NA", "N/A", "n/a", "?", "null", "NULL", "None", "-"])
PRICE = ColumnSpec("UnitPrice", "float", min=0.0, max=100000.0)
COUNT = ColumnSpec("Count", "int", min=0, max=10)
WIDE_INT = ColumnSpec("Wide", "int")
TEXT = ColumnSpec("Country", "string")

COLUMNS = [
    ColumnSpec("StockCode", "string"),
    ColumnSpec("InvoiceDate", "string"),
    PRICE,
    ColumnSpec("Country", "string"),
]
HEADER = "StockCode,InvoiceDate,UnitPrice,Country\n"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse(text: str, columns=COLUMNS, file_name: str = "f.csv") -> list:
    return list(
        parse_csv_text(text, file_name, columns, NA_TOKENS, "InvoiceDate", TIME_FORMAT)
    )


def rows_of(items: list) -> list[ParsedRow]:
    return [item for item in items if isinstance(item, ParsedRow)]


# (raw cell, column, expected value, expected kind). NaN is compared with
# math.isnan below, because nan != nan.
CELL_CASES = [
    ("", PRICE, None, "empty"),
    ("   ", PRICE, None, "empty"),
    (" NA ", PRICE, None, "na_token"),
    ("\tN/A", PRICE, None, "na_token"),
    ("n/a  ", PRICE, None, "na_token"),
    (" ? ", PRICE, None, "na_token"),
    (" null", PRICE, None, "na_token"),
    ("NULL ", PRICE, None, "na_token"),
    ("  None  ", PRICE, None, "na_token"),
    (" - ", PRICE, None, "na_token"),
    ("nan", PRICE, math.nan, "nan"),
    ("NaN", PRICE, math.nan, "nan"),
    (" nan ", PRICE, math.nan, "nan"),
    ("inf", PRICE, math.inf, "posinf"),
    ("Infinity", PRICE, math.inf, "posinf"),
    ("+inf", PRICE, math.inf, "posinf"),
    ("-inf", PRICE, -math.inf, "neginf"),
    ("-Infinity", PRICE, -math.inf, "neginf"),
    # Finite as a double, inf once stored as float32 in the tf.Example.
    ("1e39", PRICE, math.inf, "posinf"),
    ("-1e39", PRICE, -math.inf, "neginf"),
    ("2.55", PRICE, 2.55, None),
    (" 3 ", PRICE, 3.0, None),
    ("0", PRICE, 0.0, None),
    ("100000", PRICE, 100000.0, None),
    ("-0.01", PRICE, -0.01, "out_of_range"),
    ("100000.5", PRICE, 100000.5, "out_of_range"),
    ("abc", PRICE, None, "unreadable"),
    ("1,5", PRICE, None, "unreadable"),
    ("1_000", PRICE, None, "unreadable"),
    ("١٢", PRICE, None, "unreadable"),
    ("2.5\udcff", PRICE, None, "unreadable"),
    ("3", COUNT, 3, None),
    ("3.0", COUNT, 3, None),
    ("1e1", COUNT, 10, None),
    ("11", COUNT, 11, "out_of_range"),
    ("-1", COUNT, -1, "out_of_range"),
    ("3.5", COUNT, None, "unreadable"),
    ("abc", COUNT, None, "unreadable"),
    ("nan", COUNT, None, "nan"),
    ("inf", COUNT, None, "posinf"),
    ("-inf", COUNT, None, "neginf"),
    (" NA ", COUNT, None, "na_token"),
    ("", COUNT, None, "empty"),
    ("9007199254740993", WIDE_INT, 9007199254740993, None),
    ("9223372036854775807", WIDE_INT, 9223372036854775807, None),
    ("9223372036854775808", WIDE_INT, None, "unreadable"),
    ("United Kingdom", TEXT, "United Kingdom", None),
    (" EIRE ", TEXT, " EIRE ", None),
    ("nan", TEXT, "nan", None),
    ("inf", TEXT, "inf", None),
    ("abc", TEXT, "abc", None),
    (" None ", TEXT, None, "na_token"),
    ("-", TEXT, None, "na_token"),
    ("", TEXT, None, "empty"),
    ("Caf\udce9", TEXT, None, "unreadable"),
]


@pytest.mark.parametrize(
    "raw, column, value, kind",
    CELL_CASES,
    ids=[f"{c[1].type}-{c[0]!r}" for c in CELL_CASES],
)
def test_parse_cell_kind(raw, column, value, kind):
    parsed_value, parsed_kind = parse_cell(raw, column, NA_TOKENS)
    assert parsed_kind == kind
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(parsed_value)
    else:
        assert parsed_value == value
    assert type(parsed_value) is type(value)


def test_na_tokens_are_configurable():
    tokens = frozenset(["missing"])
    assert parse_cell(" missing ", TEXT, tokens) == (None, "na_token")
    assert parse_cell("NA", TEXT, tokens) == ("NA", None)
    assert parse_cell("NA", PRICE, tokens) == (None, "unreadable")


def test_rows_get_line_numbers():
    text = HEADER + "A1,2010-12-01 08:00:00,1.5,UK\n\nA2,2010-12-01 09:00:00,2.5,UK\n"
    rows = rows_of(parse(text))
    assert [row.line_ref for row in rows] == ["f.csv:2", "f.csv:4"]


def test_row_values_and_findings():
    text = (
        HEADER
        + "A1,2010-12-01 08:00:00, NA ,UK\n"
        + "A2,2010-12-01 09:00:00,nan,\n"
        + "A3,2010-12-01 10:00:00,abc,FR\n"
    )
    rows = rows_of(parse(text))
    assert rows[0].values["UnitPrice"] is None
    assert rows[0].findings == [("UnitPrice", "na_token")]
    assert math.isnan(rows[1].values["UnitPrice"])
    assert rows[1].values["Country"] is None
    assert rows[1].findings == [("UnitPrice", "nan"), ("Country", "empty")]
    assert rows[2].values["UnitPrice"] is None
    assert rows[2].findings == [("UnitPrice", "unreadable")]
    assert rows[2].values["Country"] == "FR"


def test_row_timestamp_is_utc():
    rows = rows_of(parse(HEADER + "A1,2010-12-01 08:26:00,1.5,UK\n"))
    # 2010-12-01T08:26:00Z, counted by hand from 2010-12-01T00:00:00Z = 1291161600.
    assert rows[0].timestamp == 1291161600 + 8 * 3600 + 26 * 60


def test_unreadable_time_is_absent():
    rows = rows_of(parse(HEADER + "A1,yesterday,1.5,UK\n"))
    assert rows[0].timestamp is None
    assert rows[0].values["InvoiceDate"] is None
    assert rows[0].findings == [("InvoiceDate", "unreadable")]


def test_missing_time_has_no_timestamp():
    rows = rows_of(parse(HEADER + "A1, NA ,1.5,UK\n"))
    assert rows[0].timestamp is None
    assert rows[0].findings == [("InvoiceDate", "na_token")]


def test_numeric_time_is_epoch_seconds():
    columns = [ColumnSpec("StockCode", "string"), ColumnSpec("InvoiceDate", "int")]
    text = "StockCode,InvoiceDate\nA1,1291191960\nA2,nan\nA3,soon\n"
    rows = rows_of(parse(text, columns))
    assert rows[0].timestamp == 1291191960.0
    assert rows[0].values["InvoiceDate"] == 1291191960
    assert rows[0].findings == []
    assert rows[1].timestamp is None
    assert rows[1].findings == [("InvoiceDate", "nan")]
    assert rows[2].timestamp is None
    assert rows[2].findings == [("InvoiceDate", "unreadable")]


def test_float_time_nan_counted_once():
    columns = [ColumnSpec("StockCode", "string"), ColumnSpec("InvoiceDate", "float")]
    rows = rows_of(parse("StockCode,InvoiceDate\nA1,inf\n", columns))
    assert rows[0].values["InvoiceDate"] is None
    assert rows[0].findings == [("InvoiceDate", "posinf")]


def test_header_missing_column():
    text = "StockCode,InvoiceDate,UnitPrice\nA1,2010-12-01 08:00:00,1.5\n"
    items = parse(text)
    findings = [item for item in items if isinstance(item, FileFinding)]
    assert [(f.file, f.kind, f.column) for f in findings] == [
        ("f.csv", "missing_column", "Country")
    ]
    rows = rows_of(items)
    assert rows[0].values["Country"] is None
    assert rows[0].findings == [("Country", "absent")]


def test_header_unexpected_column():
    text = (
        "StockCode,InvoiceDate,Discount,UnitPrice,Country\n"
        "A1,2010-12-01 08:00:00,abc,1.5,UK\n"
    )
    items = parse(text)
    findings = [item for item in items if isinstance(item, FileFinding)]
    assert [(f.kind, f.column) for f in findings] == [("unexpected_column", "Discount")]
    rows = rows_of(items)
    assert "Discount" not in rows[0].values
    assert rows[0].findings == []
    assert rows[0].values["UnitPrice"] == 1.5


@pytest.mark.parametrize(
    "delimiter, name", [(";", "';' (semicolon)"), ("\t", "a tab"), ("|", "'|' (pipe)")]
)
def test_header_other_delimiter_named(delimiter, name):
    header = HEADER.strip().replace(",", delimiter)
    text = f"{header}\nA1{delimiter}2010-12-01 08:00:00{delimiter}1.5{delimiter}UK\n"
    findings = [item for item in parse(text) if isinstance(item, FileFinding)]
    unexpected = [f for f in findings if f.kind == "unexpected_column"]
    assert [f.column for f in unexpected] == [header]
    assert unexpected[0].detail == (
        f"column {header!r} is not in the dataset description; not read. It joins "
        f"column names with {name}, so the file likely uses that delimiter instead "
        "of a comma"
    )
    assert len([f for f in findings if f.kind == "missing_column"]) == len(COLUMNS)


def test_header_unexpected_column_without_delimiter():
    # A semicolon in a name that joins no described column is no delimiter hint.
    text = (
        "StockCode,InvoiceDate,UnitPrice,Country,Notes;Tags\n"
        "A1,2010-12-01 08:00:00,1.5,UK,x\n"
    )
    (finding,) = [item for item in parse(text) if isinstance(item, FileFinding)]
    assert finding.detail == (
        "column 'Notes;Tags' is not in the dataset description; not read"
    )


def test_header_order_is_free():
    text = "Country,UnitPrice,InvoiceDate,StockCode\nUK,1.5,2010-12-01 08:00:00,A1\n"
    rows = rows_of(parse(text))
    assert rows[0].values == {
        "StockCode": "A1",
        "InvoiceDate": "2010-12-01 08:00:00",
        "UnitPrice": 1.5,
        "Country": "UK",
    }


def test_wrong_field_count_is_malformed():
    text = (
        HEADER
        + "A1,2010-12-01 08:00:00,1.5,UK\n"
        + "A2,2010-12-01 09:00:00,2.5\n"
        + "A3,2010-12-01 10:00:00,2.5,UK,extra\n"
    )
    items = parse(text)
    malformed = [item for item in items if isinstance(item, MalformedRow)]
    assert [(m.line_ref, m.reason) for m in malformed] == [
        ("f.csv:3", "expected 4 fields, found 3"),
        ("f.csv:4", "expected 4 fields, found 5"),
    ]
    assert [row.line_ref for row in rows_of(items)] == ["f.csv:2"]


def test_csv_error_is_malformed():
    huge = "x" * (200 * 1024)  # Above the csv module's default field limit.
    text = HEADER + f"A1,2010-12-01 08:00:00,1.5,{huge}\nA2,2010-12-01 09:00:00,2.5,UK\n"
    items = parse(text)
    malformed = [item for item in items if isinstance(item, MalformedRow)]
    assert [m.line_ref for m in malformed] == ["f.csv:2"]
    assert malformed[0].reason.startswith("CSV error: field larger than field limit")
    assert [row.line_ref for row in rows_of(items)] == ["f.csv:3"]


def test_multiline_field_first_line():
    text = (
        HEADER
        + 'A1,2010-12-01 08:00:00,1.5,"United\nKingdom"\n'
        + "A2,2010-12-01 09:00:00,abc,UK\n"
    )
    items = parse(text)
    rows = rows_of(items)
    assert rows[0].values["Country"] == "United\nKingdom"
    assert [row.line_ref for row in rows] == ["f.csv:2", "f.csv:4"]
    # The record is valid, but the report lists it.
    findings = [item for item in items if isinstance(item, FileFinding)]
    assert [(f.kind, f.file) for f in findings] == [("multiline_records", "f.csv")]
    assert findings[0].detail.startswith(
        "1 record spans several lines, each read as one row (the first: lines 2 to 3)"
    )


def test_quote_closed_later_reports_merged_lines():
    # The stray quote on line 3 is closed by the quote on line 5, and the
    # joined record happens to have 4 fields, so it parses as one row.
    text = (
        HEADER
        + "A1,2010-12-01 08:00:00,1.5,UK\n"
        + 'A2,2010-12-01 09:00:00,2.5,"UK\n'
        + "A3,2010-12-01 10:00:00,2.5,UK\n"
        + 'A4,2010-12-01 11:00:00,3.5,UK"\n'
        + "A5,2010-12-01 12:00:00,4.5,UK\n"
        + 'A6,2010-12-01 13:00:00,5.5,"Isle\nof Man"\n'
    )
    items = parse(text)
    assert [row.line_ref for row in rows_of(items)] == ["f.csv:2", "f.csv:3", "f.csv:6", "f.csv:7"]
    (finding,) = [item for item in items if isinstance(item, FileFinding)]
    assert finding.kind == "multiline_records"
    assert finding.detail == (
        "2 records span several lines, each read as one row (the first: lines 3 "
        "to 5). If no field of this file contains a line break, check for an "
        "unbalanced quote on line 3"
    )


def test_single_line_records_have_no_multiline_finding():
    items = parse(HEADER + "A1,2010-12-01 08:00:00,1.5,UK\n")
    assert not [item for item in items if isinstance(item, FileFinding)]


def test_stray_quote_counts_every_line():
    # The quote before "Cup opens a field that swallows lines 3 to 6, so the
    # reader returns one record of 3 fields. Each of its lines is counted.
    text = (
        HEADER
        + "A1,2010-12-01 08:00:00,1.5,UK\n"
        + 'A2,2010-12-01 09:00:00,"Cup,UK\n'
        + "A3,2010-12-01 10:00:00,2.5,UK\n"
        + "A4,2010-12-01 11:00:00,3.5,UK\n"
        + 'A5,2010-12-01 12:00:00,4.5,UK"\n'
        + "A6,2010-12-01 13:00:00,5.5,UK\n"
    )
    items = parse(text)
    malformed = [item for item in items if isinstance(item, MalformedRow)]
    assert [m.line_ref for m in malformed] == ["f.csv:3", "f.csv:4", "f.csv:5", "f.csv:6"]
    assert [m.first_of_record for m in malformed] == [True, False, False, False]
    assert malformed[0].reason == (
        "expected 4 fields, found 3; the record spans lines 3 to 6, so check "
        "for an unbalanced quote on line 3"
    )
    assert [row.line_ref for row in rows_of(items)] == ["f.csv:2", "f.csv:7"]


def test_unclosed_quote_counts_rest_of_file():
    body = "".join(f"A{i},2010-12-01 08:00:00,1.5,UK\n" for i in range(3, 10))
    text = HEADER + "A1,2010-12-01 08:00:00,1.5,UK\n" + 'A2,2010-12-01 08:00:00,"1.5,UK\n' + body
    items = parse(text)
    malformed = [item for item in items if isinstance(item, MalformedRow)]
    # Line 3 opens the quote, which runs to the last line, 10.
    assert [m.line_ref for m in malformed] == [f"f.csv:{line}" for line in range(3, 11)]
    assert [row.line_ref for row in rows_of(items)] == ["f.csv:2"]


def test_empty_file_finding():
    items = parse("")
    assert [(f.kind, f.file) for f in items] == [("empty_file", "f.csv")]
    assert items[0].detail.startswith("file is empty")


@pytest.mark.parametrize("text", [HEADER, HEADER + "\n\n"])
def test_header_only_file_finding(text):
    items = parse(text)
    assert [(f.kind, f.file) for f in items] == [("no_data_rows", "f.csv")]


def test_malformed_only_file_has_no_finding():
    items = parse(HEADER + "A1,2010-12-01 08:00:00\n")
    assert [type(item) for item in items] == [MalformedRow]


def test_invalid_utf8_string_unreadable():
    data = (HEADER + "A1,2010-12-01 08:00:00,1.5,Caf").encode() + b"\xe9\n"
    rows = rows_of(parse(decode_file_bytes(data)))
    assert rows[0].values["Country"] is None
    assert rows[0].findings == [("Country", "unreadable")]


def test_invalid_utf8_float_unreadable():
    data = (HEADER + "A1,2010-12-01 08:00:00,1.5").encode() + b"\xff,UK\n"
    rows = rows_of(parse(decode_file_bytes(data)))
    assert rows[0].findings == [("UnitPrice", "unreadable")]


def test_decode_strips_bom():
    text = decode_file_bytes(b"\xef\xbb\xbf" + HEADER.encode())
    assert text == HEADER


def test_example_omits_absent_features():
    rows = rows_of(parse(HEADER + "A1,2010-12-01 08:00:00, NA ,\n"))
    types = {c.name: c.type for c in COLUMNS}
    example = tf.train.Example.FromString(_to_example(rows[0], types))
    assert sorted(example.features.feature) == ["InvoiceDate", "StockCode"]


def test_example_keeps_non_finite():
    text = HEADER + "A1,2010-12-01 08:00:00,nan,UK\nA2,2010-12-01 09:00:00,-inf,UK\n"
    rows = rows_of(parse(text))
    types = {c.name: c.type for c in COLUMNS}
    first = tf.train.Example.FromString(_to_example(rows[0], types))
    second = tf.train.Example.FromString(_to_example(rows[1], types))
    assert math.isnan(first.features.feature["UnitPrice"].float_list.value[0])
    assert second.features.feature["UnitPrice"].float_list.value[0] == -math.inf


def test_example_holds_float32_overflow_as_inf():
    value, kind = parse_cell("1e39", PRICE, NA_TOKENS)
    row = ParsedRow({"UnitPrice": value}, [("UnitPrice", kind)], None, "f.csv:2")
    example = tf.train.Example.FromString(_to_example(row, {"UnitPrice": "float"}))
    assert example.features.feature["UnitPrice"].float_list.value[0] == math.inf


def _reference_bytes(values: dict, types: dict) -> bytes:
    """The example built field by field with protobuf, for comparison."""
    example = tf.train.Example()
    for name, value in values.items():
        if value is None:
            continue
        feature = example.features.feature[name]
        if types[name] == "string":
            feature.bytes_list.value.append(value.encode("utf-8"))
        elif types[name] == "int":
            feature.int64_list.value.append(value)
        else:
            feature.float_list.value.append(value)
    return example.SerializeToString(deterministic=True)


ENCODER_TYPES = {"item": "string", "count": "int", "price": "float"}
ENCODER_ROWS = [
    {"item": "85123A", "count": 6, "price": 2.55},
    {"item": "85123A", "count": 6, "price": 2.55},  # every entry from the cache
    {"item": "£ tag", "count": -80995, "price": -0.0},
    {"item": "£ tag", "count": 0, "price": 0.0},  # 0.0 after -0.0
    {"item": "x" * 300, "count": 2**63 - 1, "price": math.nan},
    {"item": "", "count": -(2**63), "price": math.inf},
    {"item": None, "count": None, "price": -math.inf},
    {"item": None, "count": None, "price": None},  # no feature at all
]


def test_encoder_bytes_equal_protobuf_serialization():
    encoder = _ExampleEncoder(ENCODER_TYPES)
    for values in ENCODER_ROWS:
        row = ParsedRow(values, [], None, "f.csv:2")
        assert encoder.encode(row) == _reference_bytes(values, ENCODER_TYPES), values


def test_encoder_keeps_sign_of_zero():
    encoder = _ExampleEncoder(ENCODER_TYPES)
    for price in (0.0, -0.0, 0.0):
        encoded = encoder.encode(ParsedRow({"price": price}, [], None, "f.csv:2"))
        stored = tf.train.Example.FromString(encoded).features.feature["price"]
        assert math.copysign(1.0, stored.float_list.value[0]) == math.copysign(1.0, price)


def test_encoder_full_cache_restarts():
    encoder = _ExampleEncoder(ENCODER_TYPES, max_entries=1)
    for values in ENCODER_ROWS * 2:
        row = ParsedRow(values, [], None, "f.csv:2")
        assert encoder.encode(row) == _reference_bytes(values, ENCODER_TYPES)
    assert all(len(entries) <= 2 for entries in encoder._entries.values())


def test_shared_cell_cache_same_rows():
    first = HEADER + "A1,2010-12-01 08:00:00,1.5,UK\nA1,2010-12-01 08:00:00,abc,UK\n"
    second = HEADER + "A1,2010-12-01 08:00:00,abc,?\nA2,2010-12-01 09:00:00,1.5,UK\n"
    cache = CellCache(max_entries=1)
    for text in (first, second, first):
        shared = parse_csv_text(
            text, "f.csv", COLUMNS, NA_TOKENS, "InvoiceDate", TIME_FORMAT, cache
        )
        assert list(shared) == parse(text)
    assert parse(second)[0].findings == [("UnitPrice", "unreadable"), ("Country", "na_token")]
    assert parse(second)[0].shown_texts == {"UnitPrice": "abc"}


def test_sample_order_numeric():
    refs = ["b.csv:2", "a.csv:12", "a.csv:3: CSV error: x", "a.csv:100"]
    assert sorted(refs, key=line_sort_key) == [
        "a.csv:3: CSV error: x",
        "a.csv:12",
        "a.csv:100",
        "b.csv:2",
    ]


def test_unterminated_last_line_is_malformed():
    # The second data row has all four fields but no line ending, as when a
    # write was cut off, so it is counted as malformed and not read.
    text = (
        "StockCode,InvoiceDate,UnitPrice,Country\n"
        "A1,2010-12-01 08:00:00,1.5,France\n"
        "A2,2010-12-01 09:00:00,2.5,Fra"
    )
    items = parse(text)
    malformed = [item for item in items if isinstance(item, MalformedRow)]
    assert [m.line_ref for m in malformed] == ["f.csv:3"]
    assert len(rows_of(items)) == 1


# The ingest DoFns, called directly on files without a Beam pipeline.

DESCRIPTION = {
    "columns": {
        "StockCode": {"type": "string"},
        "InvoiceDate": {"type": "string"},
        "UnitPrice": {"type": "float", "min": 0.0, "max": 100000.0},
        "Country": {"type": "string"},
    },
    "na_tokens": sorted(NA_TOKENS),
    "split": {"time_column": "InvoiceDate", "time_format": TIME_FORMAT},
}
DAY_TEXT = (
    HEADER
    + "A1,2010-12-01 08:00:00,1.0,UK\n"  # line 2
    + "A2,2010-12-01 09:00:00,nan,UK\n"  # line 3
    + "A3,2010-12-01 10:00:00,,\n"  # line 4: UnitPrice and Country empty
    + "A4,not a time,2.0,UK\n"  # line 5: unreadable time, goes to train
    + "A5,2010-12-01 12:00:00\n"  # line 6: malformed
    + "A6,2010-12-01 13:00:00,,UK\n"  # line 7
)


def _run_dofn(dofn, *args):
    dofn.setup()
    outputs: dict[str, list] = {}
    for item in dofn.process(*args):
        tag = getattr(item, "tag", None)
        outputs.setdefault(tag, []).append(getattr(item, "value", item))
    return outputs


def _records(chunks: list[bytes]) -> list[bytes]:
    """Reads framed chunks back with Beam's TFRecord reader, which checks CRCs."""
    records = []
    for chunk in chunks:
        handle = io.BytesIO(chunk)
        while (record := _TFRecordUtil.read_record(handle)) is not None:
            records.append(record)
    return records


def test_framing_equals_beam_tfrecord_writer():
    records = [b"", b"a", b"\x00\xff" * 200, "£".encode() * 70_000]
    expected = io.BytesIO()
    for record in records:
        _TFRecordUtil.write_record(expected, record)
    assert frame_tfrecords(records) == expected.getvalue()
    assert _records([frame_tfrecords(records)]) == records


def test_time_range_of_file(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(DAY_TEXT)
    outputs = _run_dofn(_FileTimeRange(DESCRIPTION), str(path))
    low, high = outputs[None][0]
    assert low == 1291190400.0  # 2010-12-01 08:00:00 UTC
    assert high == 1291208400.0  # 2010-12-01 13:00:00 UTC


def test_time_range_no_times(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(HEADER + "A1,,1.0,UK\n")
    assert _run_dofn(_FileTimeRange(DESCRIPTION), str(path)) == {}


def test_encode_splits_and_counts(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(DAY_TEXT)
    cutoff = 1291197600.0  # 10:00: rows at or after it go to eval
    outputs = _run_dofn(_ParseAndEncode(DESCRIPTION), str(path), cutoff)

    def codes(tag):
        return [
            tf.train.Example.FromString(b).features.feature["StockCode"].bytes_list.value[0]
            for b in _records(outputs[tag])
        ]

    assert codes("train") == [b"A1", b"A2", b"A4"]
    assert codes("eval") == [b"A3", b"A6"]
    assert outputs["rows"] == [("train", 3), ("eval", 2)]
    counts = dict(outputs["counts"])
    assert counts == {
        ("cells", "train", "UnitPrice", "nan"): (1, ["day.csv:3"]),
        ("cells", "train", "InvoiceDate", "unreadable"): (1, ["day.csv:5: 'not a time'"]),
        ("cells", "eval", "UnitPrice", "empty"): (2, ["day.csv:4", "day.csv:7"]),
        ("cells", "eval", "Country", "empty"): (1, ["day.csv:4"]),
        ("malformed", "_unsplit", "", ""): (
            1,
            ["day.csv:6: expected 4 fields, found 2"],
        ),
    }
    assert "file_findings" not in outputs


def test_encode_samples_a_multiline_record_once(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(
        HEADER
        + "A1,2010-12-01 08:00:00,1.0,UK\n"  # line 2
        + 'A2,2010-12-01 09:00:00,"Cup,UK\n'  # line 3 opens a quote
        + "A3,2010-12-01 10:00:00,2.5,UK\n"  # line 4
        + 'A4,2010-12-01 11:00:00,3.5,UK"\n'  # line 5 closes it
        + "A5,2010-12-01 12\n"  # line 6: a second record, too short
        + "A6,2010-12-01 13\n"  # line 7: a third one
    )
    outputs = _run_dofn(_ParseAndEncode(DESCRIPTION), str(path), None)
    count, samples = dict(outputs["counts"])[("malformed", "_unsplit", "", "")]

    # Every line of the three records counts, and each record is one sample.
    assert count == 5
    assert samples == [
        "day.csv:3: expected 4 fields, found 3; the record spans lines 3 to 5, "
        "so check for an unbalanced quote on line 3",
        "day.csv:6: expected 4 fields, found 2",
        "day.csv:7: expected 4 fields, found 2",
    ]


def test_encode_shows_overflowing_number(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(
        HEADER
        + "A1,2010-12-01 08:00:00,1e39,UK\n"
        + "A2,2010-12-01 08:00:00,inf,UK\n"
        + "A3,2010-12-01 08:00:00,-1e400,UK\n"
    )
    outputs = _run_dofn(_ParseAndEncode(DESCRIPTION), str(path), None)
    counts = dict(outputs["counts"])
    assert counts[("cells", "train", "UnitPrice", "posinf")] == (
        2,
        ["day.csv:2: '1e39'", "day.csv:3"],
    )
    assert counts[("cells", "train", "UnitPrice", "neginf")] == (1, ["day.csv:4: '-1e400'"])


def test_encode_keeps_first_samples(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text(HEADER + "".join(f"A{i},2010-12-01 08:00:00,,UK\n" for i in range(8)))
    outputs = _run_dofn(_ParseAndEncode(DESCRIPTION), str(path), None)
    assert len(_records(outputs["train"])) == 8
    (key, (count, sample)), = outputs["counts"]
    assert key == ("cells", "train", "UnitPrice", "empty")
    assert count == 8
    assert sample == [f"day.csv:{line}" for line in range(2, 7)]


def test_encode_cuts_chunks_in_file_order(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "RECORDS_PER_CHUNK", 3)
    path = tmp_path / "day.csv"
    path.write_text(HEADER + "".join(f"A{i},2010-12-01 08:00:00,1.0,UK\n" for i in range(7)))
    outputs = _run_dofn(_ParseAndEncode(DESCRIPTION), str(path), None)
    assert [len(_records([chunk])) for chunk in outputs["train"]] == [3, 3, 1]
    codes = [
        tf.train.Example.FromString(b).features.feature["StockCode"].bytes_list.value[0]
        for b in _records(outputs["train"])
    ]
    assert codes == [f"A{i}".encode() for i in range(7)]
    assert "eval" not in outputs
    assert outputs["rows"] == [("train", 7), ("eval", 0)]


def test_encode_string_nan_is_missing(tmp_path):
    # The description's string NA tokens: "nan" and "NaN" are missing in the
    # string column Country, but stay NaN, a non-finite value, in UnitPrice.
    description = {**DESCRIPTION, "string_na_tokens": ["nan", "NaN"]}
    path = tmp_path / "day.csv"
    path.write_text(
        HEADER
        + "A1,2010-12-01 08:00:00,nan,nan\n"
        + "A2,2010-12-01 08:00:00,NaN, NaN \n"
        + "A3,2010-12-01 08:00:00,1.0,Nan\n"
    )
    outputs = _run_dofn(_ParseAndEncode(description), str(path), None)

    counts = dict(outputs["counts"])
    assert counts == {
        ("cells", "train", "Country", "na_token"): (2, ["day.csv:2", "day.csv:3"]),
        ("cells", "train", "UnitPrice", "nan"): (2, ["day.csv:2", "day.csv:3"]),
    }
    examples = [tf.train.Example.FromString(b) for b in _records(outputs["train"])]
    assert [("Country" in e.features.feature) for e in examples] == [False, False, True]
    assert examples[2].features.feature["Country"].bytes_list.value == [b"Nan"]
    prices = [e.features.feature["UnitPrice"].float_list.value[0] for e in examples]
    assert math.isnan(prices[0])
    assert math.isnan(prices[1])
    assert prices[2] == 1.0


def test_string_na_tokens_only_in_string_columns():
    columns = [ColumnSpec("CustomerID", "string"), PRICE]
    text = "CustomerID,UnitPrice\nnan,nan\n"
    tokens = frozenset({"nan"})
    items = parse_csv_text(
        text, "f.csv", columns, NA_TOKENS, None, TIME_FORMAT, string_na_tokens=tokens
    )
    (row,) = rows_of(items)
    assert row.values["CustomerID"] is None
    assert math.isnan(row.values["UnitPrice"])
    assert row.findings == [("CustomerID", "na_token"), ("UnitPrice", "nan")]


def test_string_nan_without_tokens_is_value():
    columns = [ColumnSpec("CustomerID", "string"), PRICE]
    text = "CustomerID,UnitPrice\nnan,1\n"
    items = parse_csv_text(text, "f.csv", columns, NA_TOKENS, None, TIME_FORMAT)
    (row,) = rows_of(items)
    assert row.values["CustomerID"] == "nan"
    assert row.findings == []


def test_encode_reports_missing_column(tmp_path):
    path = tmp_path / "day.csv"
    path.write_text("StockCode,InvoiceDate,UnitPrice\nA1,2010-12-01 08:00:00,1.0\n")
    outputs = _run_dofn(_ParseAndEncode(DESCRIPTION), str(path), None)
    (finding,) = outputs["file_findings"]
    assert finding["kind"] == "missing_column"
    assert finding["column"] == "Country"
    assert dict(outputs["counts"]) == {
        ("cells", "train", "Country", "absent"): (1, ["day.csv:2"])
    }


def test_merge_counts_across_files():
    merge = _MergeCounts()
    first = (3, ["b.csv:2", "b.csv:9", "b.csv:10"])
    second = (4, ["a.csv:7", "a.csv:8", "a.csv:20", "a.csv:100"])
    accumulator = merge.add_input(merge.create_accumulator(), first)
    accumulator = merge.merge_accumulators([accumulator, merge.add_input(merge.create_accumulator(), second)])
    count, sample = merge.extract_output(accumulator)
    assert count == 7
    assert sample == ["a.csv:7", "a.csv:8", "a.csv:20", "a.csv:100", "b.csv:2"]


def test_shown_text_escapes_undecodable_bytes():
    text = b"1\xff03".decode("utf-8", "surrogateescape")
    assert shown_text(text) == "'1\\xff03'"


def test_shown_text_quotes_and_cuts():
    assert shown_text("it's") == "'it\\'s'"
    assert shown_text("x" * 50) == "'" + "x" * 40 + "...'"


# Texts whose records break the block reader's fast path at different
# places: a quoted field over two lines, blank lines, a short record, a
# stray quote, CRLF line ends and a last line without its line end.
BLOCK_TEXTS = [
    HEADER + "".join(f"A{i},2010-12-01 08:00:00,{i}.5,UK\n" for i in range(7)),
    HEADER
    + "A1,2010-12-01 08:00:00,1.5,UK\n"
    + 'A2,2010-12-01 08:00:00,2.5,"United\nKingdom"\n'
    + "A3,2010-12-01 09:00:00,nan,UK\n\n\n"
    + "A4,2010-12-01 10:00:00,abc,UK\n",
    HEADER
    + "A1,2010-12-01 08:00:00,1.5,UK\n"
    + "A2,2010-12-01 08:00:00\n"
    + 'A3,"2010-12-01 09:00:00,3.5,UK\n'
    + "A4,2010-12-01 10:00:00,4.5,UK\n",
    HEADER.replace("\n", "\r\n")
    + "A1,2010-12-01 08:00:00,1e39,UK\r\n"
    + "A2,yesterday,NA,\r\n"
    + "A3,2010-12-01 10:00:00,3.5,UK",
    HEADER + "A1,2010-12-01 08:00:00,1.5,UK\n" + '"",,,\n' + "\n",
]


@pytest.mark.parametrize("text", BLOCK_TEXTS)
def test_block_size_does_not_change_rows(text):
    expected = parse(text)
    for block_rows in (1, 2, 3):
        items = list(
            parse_csv_text(
                text, "f.csv", COLUMNS, NA_TOKENS, "InvoiceDate", TIME_FORMAT,
                block_rows=block_rows,
            )
        )
        assert repr(items) == repr(expected), block_rows


def test_blocks_of_clean_file_number_lines():
    text = BLOCK_TEXTS[0]
    blocks = list(
        parse_csv_blocks(
            text, "f.csv", COLUMNS, NA_TOKENS, "InvoiceDate", TIME_FORMAT, block_rows=3
        )
    )
    assert [block.lines for block in blocks] == [[2, 3, 4], [5, 6, 7], [8]]
    assert all(block.flagged == frozenset() for block in blocks)
    assert blocks[1].texts["UnitPrice"] == ["3.5", "4.5", "5.5"]
    assert blocks[1].results("UnitPrice") == [(3.5, None), (4.5, None), (5.5, None)]


def test_multiline_record_keeps_its_first_line():
    rows = rows_of(parse(BLOCK_TEXTS[1]))
    assert [row.line_ref for row in rows] == ["f.csv:2", "f.csv:3", "f.csv:5", "f.csv:8"]
    assert rows[1].values["Country"] == "United\nKingdom"


def test_block_flags_columns_with_findings():
    (block,) = [
        item
        for item in parse_csv_blocks(
            HEADER.replace(",Country", "") + "A1,yesterday,1.5\nA2,2010-12-01 08:00:00,2.5\n",
            "f.csv", COLUMNS, NA_TOKENS, "InvoiceDate", TIME_FORMAT,
        )
        if isinstance(item, RowBlock)
    ]
    assert block.flagged == frozenset({"InvoiceDate", "Country"})
    assert block.absent == ("Country",)
    assert block.results("Country") == [(None, "absent"), (None, "absent")]
    assert block.results("InvoiceDate")[0] == (None, "unreadable", None)
    assert block.timestamps == [None, 1291190400.0]


BLOCK_ENCODER_COLUMNS = [
    ColumnSpec("item", "string"),
    ColumnSpec("count", "int"),
    ColumnSpec("price", "float"),
]
BLOCK_ENCODER_TEXT = (
    "item,count,price\n"
    "85123A,6,2.55\n"
    "85123A,6,2.55\n"
    "£ tag,-80995,-0\n"
    "£ tag,0,0\n"
    + "x" * 300 + ",9223372036854775807,nan\n"
    ",-9223372036854775808,-nan\n"
    "NA,NA,inf\n"
    ",,-inf\n"
    "a,1,3.4028234663852886e38\n"
    "a,1,3.40282356e38\n"
    "a,1,-3.4028235677973366e38\n"
    "a,1,1e-45\n"
    "a,1,1e-50\n"
    "a,abc,1e39\n"
)


def test_block_encoder_bytes_equal_protobuf_serialization():
    encoder = _ExampleEncoder(ENCODER_TYPES)
    items = list(
        parse_csv_blocks(BLOCK_ENCODER_TEXT, "f.csv", BLOCK_ENCODER_COLUMNS, NA_TOKENS, None, TIME_FORMAT)
    )
    (block,) = items
    encoded = encoder.encode_block(block)
    rows = rows_of(
        parse_csv_text(BLOCK_ENCODER_TEXT, "f.csv", BLOCK_ENCODER_COLUMNS, NA_TOKENS, None, TIME_FORMAT)
    )
    assert len(encoded) == len(rows) == 14
    for data, row in zip(encoded, rows):
        assert data == _reference_bytes(row.values, ENCODER_TYPES), row.line_ref
    # The second pass finds every entry in the encoder's cache.
    assert encoder.encode_block(block) == encoded


def test_block_encoder_leaves_out_unreadable_time():
    description_types = {c.name: c.type for c in COLUMNS}
    text = HEADER + "A1,yesterday,1.5,UK\n"
    (block,) = [
        item
        for item in parse_csv_blocks(text, "f.csv", COLUMNS, NA_TOKENS, "InvoiceDate", TIME_FORMAT)
        if isinstance(item, RowBlock)
    ]
    (data,) = _ExampleEncoder(description_types).encode_block(block)
    assert sorted(tf.train.Example.FromString(data).features.feature) == [
        "Country", "StockCode", "UnitPrice"
    ]

