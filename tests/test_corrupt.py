"""Tests for the fault injector in pipeline/corrupt.py."""

import argparse
import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from pipeline import corrupt
from pipeline.corrupt import CorruptionError, corrupt_dataset

REAL_DATA = Path(__file__).resolve().parents[1] / "data" / "online_retail_2010_12"
# The two smallest daily files, to keep the real-data tests fast.
REAL_FILES = ("2010-12-19.csv", "2010-12-22.csv")

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
COLUMNS = HEADER.strip().split(",")
# Rows taken from the real data, plus a negative quantity, a zero price, an empty
# description and CustomerID, and an NA token, which the cell kinds must skip.
FILE_A = HEADER + (
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    '536381,82567,"AIRLINE LOUNGE,METAL SIGN",2,2010-12-01 09:41:00,2.1,15311.0,United Kingdom\n'
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom\n"
    "536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom\n"
    '536477,22041,"RECORD FRAME 7"" SINGLE SIZE ",48,2010-12-01 12:27:00,2.1,16210.0,United Kingdom\n'
)
FILE_B = HEADER + (
    "536520,21123,SET/10 IVORY POLKADOT PARTY CANDLES,1,2010-12-01 12:43:00,NA,14729.0,United Kingdom\n"
    "536520,22138,BAKING SET 9 PIECE RETROSPOT,3,2010-12-01 12:43:00,4.95,14729.0,Ireland\n"
)
FIXTURE = {"a.csv": FILE_A, "b.csv": FILE_B}

# Changed cells per column at rate 1, counted by hand from FIXTURE. Numeric kinds
# skip Quantity -1 and UnitPrice NA, `negative` also skips UnitPrice 0.0, and
# `empty`, `na_token` and `non_utf8` skip the empty cells, the NA token and -1.
NUMERIC_COUNTS = {"Quantity": 6, "UnitPrice": 6}
EXPECTED_COUNTS_AT_RATE_1 = {
    "empty": {
        "InvoiceNo": 7,
        "StockCode": 7,
        "Description": 6,
        "Quantity": 6,
        "InvoiceDate": 7,
        "UnitPrice": 6,
        "CustomerID": 6,
        "Country": 7,
    },
    "nan": NUMERIC_COUNTS,
    "inf": NUMERIC_COUNTS,
    "negative": {"Quantity": 6, "UnitPrice": 5},
    "extreme": NUMERIC_COUNTS,
    "non_numeric": NUMERIC_COUNTS,
    "non_utf8": {"Description": 6},
}
EXPECTED_COUNTS_AT_RATE_1["na_token"] = EXPECTED_COUNTS_AT_RATE_1["empty"]
EXPECTED_SKIPPED_AT_RATE_1 = {
    "nan": {"Quantity": 1, "UnitPrice": 1},
    "negative": {"Quantity": 1, "UnitPrice": 2},
    "empty": {
        "InvoiceNo": 0,
        "StockCode": 0,
        "Description": 1,
        "Quantity": 1,
        "InvoiceDate": 0,
        "UnitPrice": 1,
        "CustomerID": 1,
        "Country": 0,
    },
}


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, text in FIXTURE.items():
        (folder / name).write_bytes(text.encode("utf-8"))
    return folder


@pytest.fixture
def real_dir(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for name in REAL_FILES:
        shutil.copyfile(REAL_DATA / name, folder / name)
    return folder


def read_records(path, delimiter=","):
    """Return (line, record) pairs; undecodable bytes become text like ``\\xff``."""
    text = path.read_bytes().decode("utf-8", errors="backslashreplace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records = []
    line = 1
    for record in reader:
        records.append((line, record))
        line = reader.line_num + 1
    return records


def changed_cells(in_dir, out_dir):
    """Return (file, line, column, old, new) for every cell that differs."""
    cells = set()
    for path in sorted(in_dir.glob("*.csv")):
        old_records = read_records(path)
        new_records = read_records(out_dir / path.name)
        header = old_records[0][1]
        for (line, old), (_, new) in zip(old_records[1:], new_records[1:]):
            for column, old_value, new_value in zip(header, old, new):
                if old_value != new_value:
                    cells.add((path.name, line, column, old_value, new_value))
    return cells


def manifest_cells(manifest):
    return {
        (c["file"], c["line"], c["column"], c["old_value"], c["new_value"])
        for c in manifest["changes"]
    }


def output_bytes(out_dir):
    return {path.name: path.read_bytes() for path in sorted(out_dir.iterdir())}


def manifest_count(manifest):
    return sum(manifest["counts"].values())


@pytest.mark.parametrize("kind", corrupt.CELL_KINDS)
def test_cell_kind_counts_at_rate_1(data_dir, tmp_path, kind):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", kind, 1.0)
    assert manifest["counts"] == EXPECTED_COUNTS_AT_RATE_1[kind]


@pytest.mark.parametrize("kind", sorted(EXPECTED_SKIPPED_AT_RATE_1))
def test_cell_kind_skipped_at_rate_1(data_dir, tmp_path, kind):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", kind, 1.0)
    assert manifest["skipped"] == EXPECTED_SKIPPED_AT_RATE_1[kind]


@pytest.mark.parametrize("kind", corrupt.CELL_KINDS)
@pytest.mark.parametrize("rate", [0.3, 1.0])
def test_cell_kind_manifest_matches_diff(data_dir, tmp_path, kind, rate):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, kind, rate, seed=5)
    diff = changed_cells(data_dir, out_dir)
    assert manifest_cells(manifest) == diff
    assert manifest_count(manifest) == len(diff)
    assert manifest["rows_changed"] == len({(f, line) for f, line, *_ in diff})


def test_cell_kind_headers_unchanged(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    corrupt_dataset(data_dir, out_dir, "empty", 1.0)
    for name in FIXTURE:
        assert read_records(out_dir / name)[0][1] == COLUMNS


def test_rate_between_0_and_1_changes_some(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "empty", 0.3, seed=5)
    assert 0 < manifest_count(manifest) < 52


@pytest.mark.parametrize("kind", corrupt.KINDS)
def test_same_seed_same_output(data_dir, tmp_path, kind):
    first = tmp_path / "first"
    second = tmp_path / "second"
    corrupt_dataset(data_dir, first, kind, 0.5, seed=11)
    corrupt_dataset(data_dir, second, kind, 0.5, seed=11)
    assert output_bytes(first) == output_bytes(second)


@pytest.mark.parametrize("kind", corrupt.KINDS)
def test_rate_0_copies_unchanged(data_dir, tmp_path, kind):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, kind, 0.0)
    assert manifest["changes"] == []
    assert manifest["rows_changed"] == 0
    for name, text in FIXTURE.items():
        assert (out_dir / name).read_bytes() == text.encode("utf-8")


def test_cell_kinds_pick_same_cells(data_dir, tmp_path):
    picked = {}
    for kind in ("nan", "extreme", "non_numeric"):
        manifest = corrupt_dataset(data_dir, tmp_path / kind, kind, 0.5, seed=2)
        picked[kind] = {
            (c["file"], c["line"], c["column"]) for c in manifest["changes"]
        }
    assert picked["nan"] == picked["extreme"]
    assert picked["nan"] == picked["non_numeric"]


def test_manifest_files_and_totals(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "nan", 1.0, seed=4)
    assert manifest["files"] == ["a.csv", "b.csv"]
    assert manifest["rows_total"] == 7
    # Every row has at least one number to replace, even the one with Quantity -1.
    assert manifest["rows_changed"] == 7
    assert manifest["columns"] == ["Quantity", "UnitPrice"]
    assert manifest["kind"] == "nan"
    assert manifest["rate"] == 1.0
    assert manifest["seed"] == 4


def test_manifest_files_match_return_value(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, "non_utf8", 1.0)
    saved = json.loads((out_dir / corrupt.MANIFEST_JSON_NAME).read_text("utf-8"))
    with (out_dir / corrupt.MANIFEST_TABLE_NAME).open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        row["line"] = int(row["line"])
    assert saved == manifest
    assert rows == manifest["changes"]


def test_nan_writes_nan(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "nan", 1.0)
    assert {c["new_value"] for c in manifest["changes"]} == {"nan"}


def test_inf_alternates_sign(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "inf", 1.0)
    values = [c["new_value"] for c in manifest["changes"]]
    assert values == ["inf", "-inf"] * 6


def test_negative_negates_value(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "negative", 1.0)
    for change in manifest["changes"]:
        assert float(change["new_value"]) == -float(change["old_value"])
        assert float(change["old_value"]) > 0


def test_extreme_writes_1e30(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "extreme", 1.0)
    assert {float(c["new_value"]) for c in manifest["changes"]} == {1e30}


def test_non_numeric_is_not_float(data_dir, tmp_path):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", "non_numeric", 1.0)
    for change in manifest["changes"]:
        with pytest.raises(ValueError):
            float(change["new_value"])


def test_na_token_cycles_tokens(data_dir, tmp_path):
    tokens = ("NA", "?", "null")
    manifest = corrupt_dataset(
        data_dir, tmp_path / "out", "na_token", 1.0, na_tokens=tokens
    )
    values = [c["new_value"] for c in manifest["changes"]]
    assert values == [tokens[i % 3] for i in range(52)]


def test_columns_argument_limits_targets(data_dir, tmp_path):
    manifest = corrupt_dataset(
        data_dir, tmp_path / "out", "empty", 1.0, columns=["CustomerID"]
    )
    assert manifest["counts"] == {"CustomerID": 6}


def test_numeric_kind_on_id_column(data_dir, tmp_path):
    manifest = corrupt_dataset(
        data_dir, tmp_path / "out", "nan", 1.0, columns=["CustomerID"]
    )
    assert manifest["counts"] == {"CustomerID": 6}


def test_quoting_survives_cell_kinds(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    corrupt_dataset(data_dir, out_dir, "nan", 1.0)
    text = (out_dir / "a.csv").read_text("utf-8")
    records = [record for _, record in read_records(out_dir / "a.csv")]
    assert '"AIRLINE LOUNGE,METAL SIGN"' in text
    assert '"RECORD FRAME 7"" SINGLE SIZE "' in text
    assert records[2][2] == "AIRLINE LOUNGE,METAL SIGN"
    assert {len(record) for record in records} == {8}


def test_drop_column_header_and_rows(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(
        data_dir, out_dir, "drop_column", 0.5, columns=["UnitPrice"]
    )
    kept = [column for column in COLUMNS if column != "UnitPrice"]
    for name in FIXTURE:
        old = [record for _, record in read_records(data_dir / name)]
        new = [record for _, record in read_records(out_dir / name)]
        assert new[0] == kept
        assert new[1:] == [record[:5] + record[6:] for record in old[1:]]
    assert manifest["counts"] == {"UnitPrice": 2}
    assert manifest_cells(manifest) == {
        ("a.csv", 1, "UnitPrice", "UnitPrice", ""),
        ("b.csv", 1, "UnitPrice", "UnitPrice", ""),
    }
    assert manifest["rows_changed"] == 7


def test_drop_column_keeps_quoting(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    corrupt_dataset(data_dir, out_dir, "drop_column", 1.0, columns=["Quantity"])
    text = (out_dir / "a.csv").read_text("utf-8")
    assert '"AIRLINE LOUNGE,METAL SIGN"' in text


def test_drop_column_default_is_seeded(data_dir, tmp_path):
    first = corrupt_dataset(data_dir, tmp_path / "first", "drop_column", 1.0, seed=8)
    second = corrupt_dataset(data_dir, tmp_path / "second", "drop_column", 1.0, seed=8)
    assert len(first["columns"]) == 1
    assert first["columns"] == second["columns"]


def test_rename_column_header_only(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(
        data_dir, out_dir, "rename_column", 1.0, columns=["Quantity"]
    )
    renamed = [c if c != "Quantity" else "Quantity_renamed" for c in COLUMNS]
    for name, text in FIXTURE.items():
        new_text = (out_dir / name).read_text("utf-8")
        assert new_text.split("\n", 1)[0] == ",".join(renamed)
        assert new_text.split("\n", 1)[1] == text.split("\n", 1)[1]
    assert manifest_cells(manifest) == {
        ("a.csv", 1, "Quantity", "Quantity", "Quantity_renamed"),
        ("b.csv", 1, "Quantity", "Quantity", "Quantity_renamed"),
    }
    assert manifest["rows_changed"] == 0


def test_duplicate_rows_at_rate_1(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, "duplicate_rows", 1.0)
    lines = (out_dir / "b.csv").read_text("utf-8").split("\n")
    old_lines = FILE_B.split("\n")
    assert lines == [
        old_lines[0],
        old_lines[1],
        old_lines[1],
        old_lines[2],
        old_lines[2],
        "",
    ]
    copy_lines = [(c["file"], c["line"]) for c in manifest["changes"]]
    assert copy_lines == [("a.csv", n) for n in (3, 5, 7, 9, 11)] + [
        ("b.csv", 3),
        ("b.csv", 5),
    ]
    assert manifest["counts"] == {"*": 7}
    assert manifest["rows_changed"] == 7


@pytest.mark.parametrize("source", ["fixture", "real"])
def test_duplicate_rows_manifest_lines(data_dir, real_dir, tmp_path, source):
    in_dir = data_dir if source == "fixture" else real_dir
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(in_dir, out_dir, "duplicate_rows", 0.4, seed=3)
    assert manifest_count(manifest) > 0
    for path in sorted(in_dir.glob("*.csv")):
        copies = {c["line"] for c in manifest["changes"] if c["file"] == path.name}
        lines = (out_dir / path.name).read_text("utf-8").split("\n")
        # Line n of the file is lines[n - 1]. Each copy repeats the line before it.
        for line in copies:
            assert lines[line - 1] == lines[line - 2]
        kept = [text for n, text in enumerate(lines, 1) if n not in copies]
        assert "\n".join(kept) == path.read_text("utf-8")


def test_truncate_last_line_cuts_field(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, "truncate_last_line", 0.5, seed=1)
    old_last = FILE_B.split("\n")[-2]
    new_text = (out_dir / "b.csv").read_text("utf-8")
    new_last = new_text.split("\n")[-1]
    assert not new_text.endswith("\n")
    assert new_text.split("\n")[:-1] == FILE_B.split("\n")[:-2]
    assert old_last.startswith(new_last)
    assert len(new_last) < len(old_last)
    assert new_last[-1] != ","
    assert old_last[len(new_last)] != ","
    assert (out_dir / "a.csv").read_text("utf-8") == FILE_A
    assert manifest_cells(manifest) == {("b.csv", 3, "*", old_last, new_last)}
    assert manifest["rows_changed"] == 1


def test_wrong_delimiter_one_file(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, "wrong_delimiter", 1.0, seed=0)
    changed = [
        name
        for name, text in FIXTURE.items()
        if (out_dir / name).read_text("utf-8") != text
    ]
    assert len(changed) == 1
    name = changed[0]
    old = read_records(data_dir / name)
    assert read_records(out_dir / name, delimiter=";") == old
    assert read_records(out_dir / name, delimiter=",") != old
    assert manifest_cells(manifest) == {(name, 1, "*", ",", ";")}
    assert manifest["rows_changed"] == len(old) - 1


def test_wrong_delimiter_keeps_comma_text(tmp_path):
    in_dir = tmp_path / "data"
    in_dir.mkdir()
    (in_dir / "a.csv").write_text(FILE_A, "utf-8")
    out_dir = tmp_path / "out"
    corrupt_dataset(in_dir, out_dir, "wrong_delimiter", 1.0)
    text = (out_dir / "a.csv").read_text("utf-8")
    assert "AIRLINE LOUNGE,METAL SIGN;" in text
    assert '"RECORD FRAME 7"" SINGLE SIZE ";' in text


def test_non_utf8_writes_ff_bytes(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(data_dir, out_dir, "non_utf8", 1.0)
    data = (out_dir / "a.csv").read_bytes() + (out_dir / "b.csv").read_bytes()
    assert data.count(b"\xff") == manifest_count(manifest)
    with pytest.raises(UnicodeDecodeError):
        (out_dir / "a.csv").read_bytes().decode("utf-8")


def test_non_utf8_keeps_record_structure(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    corrupt_dataset(data_dir, out_dir, "non_utf8", 1.0, seed=6)
    records = [record for _, record in read_records(out_dir / "a.csv")]
    assert len(records) == 6
    assert {len(record) for record in records} == {8}


def test_real_data_nan_matches_diff(real_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(real_dir, out_dir, "nan", 0.1, seed=7)
    diff = changed_cells(real_dir, out_dir)
    assert manifest_cells(manifest) == diff
    assert manifest_count(manifest) == len(diff)
    assert manifest["rows_total"] == 291 + 522


def test_real_data_rate_0_byte_identical(real_dir, tmp_path):
    out_dir = tmp_path / "out"
    corrupt_dataset(real_dir, out_dir, "empty", 0.0)
    for name in REAL_FILES:
        assert (out_dir / name).read_bytes() == (real_dir / name).read_bytes()


def test_real_data_non_utf8_matches_diff(real_dir, tmp_path):
    out_dir = tmp_path / "out"
    manifest = corrupt_dataset(real_dir, out_dir, "non_utf8", 0.2, seed=9)
    ff_bytes = sum((out_dir / name).read_bytes().count(b"\xff") for name in REAL_FILES)
    assert manifest_cells(manifest) == changed_cells(real_dir, out_dir)
    assert ff_bytes == manifest_count(manifest)


def test_output_can_be_corrupted_again(data_dir, tmp_path):
    first = tmp_path / "first"
    corrupt_dataset(data_dir, first, "nan", 0.5, seed=1)
    manifest = corrupt_dataset(first, tmp_path / "second", "empty", 0.5, seed=1)
    assert manifest["files"] == ["a.csv", "b.csv"]


def test_unknown_kind_rejected(data_dir, tmp_path):
    with pytest.raises(CorruptionError, match="unknown corruption kind 'zero'"):
        corrupt_dataset(data_dir, tmp_path / "out", "zero", 0.1)


@pytest.mark.parametrize("rate", [-0.1, 1.5, math.nan])
def test_rate_outside_range_rejected(data_dir, tmp_path, rate):
    with pytest.raises(CorruptionError, match=r"rate \(--rate\) .* is outside \[0, 1\]"):
        corrupt_dataset(data_dir, tmp_path / "out", "nan", rate)


def test_rate_not_number_rejected(data_dir, tmp_path):
    with pytest.raises(CorruptionError, match="invalid rate '0.1'"):
        corrupt_dataset(data_dir, tmp_path / "out", "nan", "0.1")


def test_unknown_column_rejected(data_dir, tmp_path):
    with pytest.raises(
        CorruptionError, match=r"'Price' from columns \(--columns\) is not in the header of a.csv"
    ):
        corrupt_dataset(data_dir, tmp_path / "out", "nan", 0.1, columns=["Price"])


def test_repeated_column_rejected(data_dir, tmp_path):
    with pytest.raises(
        CorruptionError, match=r"columns \(--columns\) \['Quantity', 'Quantity'\] lists a column twice"
    ):
        corrupt_dataset(data_dir, tmp_path / "out", "nan", 0.1, columns=["Quantity", "Quantity"])


def test_columns_for_row_kind_rejected(data_dir, tmp_path):
    with pytest.raises(CorruptionError, match="leave out the columns"):
        corrupt_dataset(
            data_dir, tmp_path / "out", "duplicate_rows", 0.1, columns=["Quantity"]
        )


def test_empty_data_dir_rejected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorruptionError, match="contains no \\*.csv files"):
        corrupt_dataset(empty, tmp_path / "out", "nan", 0.1)


def test_missing_data_dir_rejected(tmp_path):
    with pytest.raises(CorruptionError, match="not found"):
        corrupt_dataset(tmp_path / "missing", tmp_path / "out", "nan", 0.1)


def test_out_dir_same_as_data_rejected(data_dir):
    with pytest.raises(CorruptionError, match="is the data folder"):
        corrupt_dataset(data_dir, data_dir / ".." / data_dir.name, "nan", 0.1)


def test_out_dir_with_other_csv_rejected(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "old.csv").write_text(HEADER, "utf-8")
    with pytest.raises(CorruptionError, match="old.csv"):
        corrupt_dataset(data_dir, out_dir, "nan", 0.1)


def test_non_utf8_input_rejected(data_dir, tmp_path):
    (data_dir / "c.csv").write_bytes(HEADER.encode("utf-8") + b"\xff\n")
    with pytest.raises(CorruptionError, match="c.csv is not valid UTF-8"):
        corrupt_dataset(data_dir, tmp_path / "out", "nan", 0.1)


def test_rejected_call_writes_nothing(data_dir, tmp_path):
    out_dir = tmp_path / "out"
    with pytest.raises(CorruptionError):
        corrupt_dataset(data_dir, out_dir, "nan", 0.1, columns=["Price"])
    assert not out_dir.exists()


def test_cell_kinds_skip_string_nan(tmp_path):
    # "nan" and "NaN" are missing values in columns that do not hold numbers,
    # so emptying them would add no new defect.
    folder = tmp_path / "data"
    folder.mkdir()
    row = "536365,85123A,NaN,6,2010-12-01 08:26:00,2.55,nan,United Kingdom\n"
    (folder / "a.csv").write_text(HEADER + row, "utf-8")
    columns = ["Description", "CustomerID", "Country"]
    manifest = corrupt_dataset(folder, tmp_path / "out", "empty", 1.0, columns=columns)
    assert manifest["counts"] == {"Description": 0, "CustomerID": 0, "Country": 1}
    assert manifest["skipped"] == {"Description": 1, "CustomerID": 1, "Country": 0}


def test_run_from_args_prints_summary(data_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    corrupt.add_arguments(parser)
    out_dir = tmp_path / "out"
    args = parser.parse_args(
        ["--data", str(data_dir), "--out", str(out_dir), "--kind", "nan", "--rate", "1"]
    )
    assert corrupt.run_from_args(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Set 12 cells (6 in Quantity, 6 in UnitPrice) to nan. 7 of 7 data rows were "
        "changed. Left 2 picked cells unchanged because they held no non-negative "
        "finite number.",
        "Kind nan, rate 1, seed 0. Manifest of every change: "
        f"{out_dir / corrupt.MANIFEST_JSON_NAME}",
    ]


# The summary sentence of each kind on FIXTURE, with the arguments that give it.
SUMMARIES = [
    (
        "empty",
        {"rate": 1.0, "columns": ["CustomerID"]},
        "Emptied 6 cells of CustomerID. 6 of 7 data rows were changed. Left 1 picked "
        "cell unchanged because it held a missing value or, in a numeric column, no "
        "non-negative finite number.",
    ),
    (
        "na_token",
        {"rate": 1.0, "columns": ["Country"]},
        "Replaced 7 cells of Country with NA tokens. 7 of 7 data rows were changed.",
    ),
    (
        "inf",
        {"rate": 1.0, "columns": ["UnitPrice"]},
        "Set 6 cells of UnitPrice to inf or -inf. 6 of 7 data rows were changed. Left "
        "1 picked cell unchanged because it held no non-negative finite number.",
    ),
    (
        "negative",
        {"rate": 1.0},
        "Negated 11 cells (6 in Quantity, 5 in UnitPrice). 7 of 7 data rows were "
        "changed. Left 3 picked cells unchanged because they held no positive finite "
        "number.",
    ),
    (
        "extreme",
        {"rate": 1.0, "columns": ["Quantity"]},
        "Set 6 cells of Quantity to 1e30. 6 of 7 data rows were changed. Left 1 picked "
        "cell unchanged because it held no non-negative finite number.",
    ),
    (
        "non_numeric",
        {"rate": 1.0, "columns": ["Quantity"]},
        "Set 6 cells of Quantity to the text 'twelve'. 6 of 7 data rows were changed. "
        "Left 1 picked cell unchanged because it held no non-negative finite number.",
    ),
    (
        "non_utf8",
        {"rate": 1.0},
        "Replaced one character with the byte 0xFF in 6 cells of Description. 6 of 7 "
        "data rows were changed. Left 1 picked cell unchanged because it held a "
        "missing value or, in a numeric column, no non-negative finite number.",
    ),
    (
        "drop_column",
        {"rate": 1.0, "columns": ["Country"]},
        "Dropped column Country from 2 files. 7 of 7 data rows were changed.",
    ),
    (
        "rename_column",
        {"rate": 1.0, "columns": ["Country"]},
        "Renamed column Country to Country_renamed in the header of 2 files. 0 of 7 "
        "data rows were changed.",
    ),
    (
        "duplicate_rows",
        {"rate": 1.0},
        "Wrote a second copy of 7 of 7 data rows, each right after its original.",
    ),
    (
        "truncate_last_line",
        {"rate": 1.0},
        "Cut the last line of b.csv (line 3) short and removed its line ending. 1 of 7 "
        "data rows was changed.",
    ),
    (
        "wrong_delimiter",
        {"rate": 1.0, "seed": 0},
        "Wrote {file} with ';' instead of ',' as the delimiter. {rows} of 7 data rows "
        "were changed.",
    ),
    ("nan", {"rate": 0.0}, "Changed nothing: every file is an unchanged copy."),
]


@pytest.mark.parametrize(
    "kind, arguments, expected", SUMMARIES, ids=[s[0] for s in SUMMARIES]
)
def test_describe_changes_per_kind(data_dir, tmp_path, kind, arguments, expected):
    manifest = corrupt_dataset(data_dir, tmp_path / "out", kind, **arguments)
    if kind == "wrong_delimiter":
        # The seed picks the file, so the expected text takes its name and rows.
        name = manifest["changes"][0]["file"]
        rows = FIXTURE[name].count("\n") - 1
        expected = expected.format(file=name, rows=rows)
    assert corrupt.describe_changes(manifest) == expected


def test_run_from_args_reports_error(data_dir, capsys):
    parser = argparse.ArgumentParser()
    corrupt.add_arguments(parser)
    args = parser.parse_args(
        [
            "--data",
            str(data_dir),
            "--out",
            str(data_dir),
            "--kind",
            "nan",
            "--rate",
            "1",
        ]
    )
    assert corrupt.run_from_args(args) == 1
    err = capsys.readouterr().err
    # The same form as the errors of `recguard run` and `recguard validate`.
    assert err.startswith("error: ")
    assert "is the data folder" in err
