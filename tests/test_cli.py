"""The CLI's checks of its arguments, made before any component runs."""

from __future__ import annotations

import os

import pytest

from pipeline import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_DATA = os.path.join(REPO, "data", "online_retail_2010_12")


def _run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["validate", *args])
    return code, capsys.readouterr().err


def test_data_file_named_as_file(tmp_path, capsys):
    day = os.path.join(BUNDLED_DATA, "2010-12-01.csv")
    code, err = _run(capsys, "--data", day, "--out", str(tmp_path / "run"))

    assert code == cli.EXIT_FAILED
    assert f"data folder {day} is a file, not a folder" in err
    assert "pass --data with a folder of CSV files" in err


def test_missing_schema_rejected_before_run(tmp_path, capsys):
    schema = tmp_path / "nope.pbtxt"
    code, err = _run(
        capsys, "--data", BUNDLED_DATA, "--schema", str(schema), "--out", str(tmp_path / "run")
    )

    assert code == cli.EXIT_FAILED
    assert f"schema file {schema} not found" in err
    assert not (tmp_path / "run").exists()


def test_out_file_rejected(tmp_path, capsys):
    out = tmp_path / "afile"
    out.write_text("not a folder\n")
    code, err = _run(capsys, "--data", BUNDLED_DATA, "--out", str(out))

    assert code == cli.EXIT_FAILED
    assert f"run directory {out} is a file" in err
    assert "Traceback" not in err


def test_folder_without_csv_rejected(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("not a data file\n")
    code, err = _run(capsys, "--data", str(data), "--out", str(tmp_path / "run"))

    assert code == cli.EXIT_FAILED
    assert f"data folder {data} has no file matching '*.csv'" in err
    assert not (tmp_path / "run").exists()


def _progress_with_running(node: str):
    import io
    import logging

    progress = cli.ProgressHandler(io.StringIO())
    record = logging.LogRecord("tfx", logging.INFO, "", 0, f"Component {node} is running.", None, None)
    progress.emit(record)
    return progress


@pytest.mark.parametrize(
    "blocked, outcome, code, message",
    [
        (True, "blocked", cli.EXIT_BLOCKED, "BLOCKED: 2 blocking findings"),
        (False, "failed", cli.EXIT_FAILED, "error: AnomalyGate failed: OSError: disk full"),
    ],
)
def test_failure_ends_progress_line(tmp_path, capsys, blocked, outcome, code, message):
    from components.anomaly_gate import GateBlockedError

    os.makedirs(tmp_path / "logs")
    progress = _progress_with_running("AnomalyGate")
    error = GateBlockedError("2 blocking findings") if blocked else OSError("disk full")

    assert cli._report_failure(error, str(tmp_path), progress) == code

    lines = progress.stream.getvalue().splitlines()
    assert lines[0] == "  AnomalyGate        running ..."
    assert lines[1].startswith(f"  AnomalyGate        {outcome} after ")
    assert lines[1].endswith(" s")
    assert message in capsys.readouterr().err
