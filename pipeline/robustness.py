"""Robustness matrix: corrupt a real data slice, run the pipeline, check the outcome.

Each cell of `MATRIX` is a corruption (a kind of `pipeline.corrupt`, its target
columns and a rate) applied to three days of the bundled data, together with
the outcome that the policy in ``data/online_retail.yaml`` predicts:

- ``blocked``: ``recguard validate`` exits 2, the report blocks on the
  corrupted columns only, and no Transform, PostTransformGate, Trainer or
  Pusher execution exists in the metadata store.
- ``repaired``: ``recguard run --steps N`` exits 0, the post-transform check
  finds no non-finite value, the training loop skipped no step and masked no
  example, and the pushed model returns finite scores for every row of the
  corrupted data.

In every cell the report's counts must match the corruption manifest. The
counts on the corrupted copy minus the counts on the clean slice must equal
the manifest's count per column. Rows plus malformed rows may change only by
the rows the corruption added. A cell passes when its observed outcome is the
expected one and every check holds. A crash, a hang (timeout), a traceback on
the console or a count mismatch fails it.

Run the whole matrix and write the outcome table into ``docs/robustness.md``:

    .venv/bin/python -m pipeline.robustness matrix --out docs/robustness.md

The pushed model scores the corrupted rows in a child process
(`pipeline.serving_probe`), so that a crash of TensorFlow shows up as that
process's exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from components import csv_parsing
from pipeline import corrupt

REPO = Path(__file__).resolve().parents[1]
BUNDLED_DATA = REPO / "data" / "online_retail_2010_12"
# Three days of real data: 7,419 rows, 2,202 of them in the eval split. The
# clean slice already has empty CustomerIDs and negative quantities.
SLICE_FILES = ("2010-12-01.csv", "2010-12-02.csv", "2010-12-03.csv")
DEFAULT_WORK_DIR = REPO / "runs" / "robustness"
DEFAULT_STEPS = 50
# Wall-clock limits per pipeline command. A full run takes 1 to 4 minutes on
# 2 shared cores; a longer one counts as a hang.
RUN_TIMEOUT_SECONDS = 1800
VALIDATE_TIMEOUT_SECONDS = 900
SCORE_TIMEOUT_SECONDS = 600

BLOCKED = "blocked"
REPAIRED = "repaired"
EXIT_OK = 0
EXIT_BLOCKED = 2
EXIT_NON_FINITE = 3
DOWNSTREAM_OF_GATE = ("Transform", "PostTransformGate", "Trainer", "Pusher")
TRACEBACK_MARKER = "Traceback (most recent call last)"

# The report's count kinds that one manifest entry of a cell kind adds.
REPORT_KINDS = {
    "empty": ("empty",),
    "na_token": ("na_token",),
    "nan": ("nan",),
    "inf": ("posinf", "neginf"),
    "negative": ("out_of_range",),
    "extreme": ("out_of_range",),
    "non_numeric": ("unreadable",),
    "non_utf8": ("unreadable",),
}
# The count kinds behind each kind of blocking finding in the report.
BLOCKING_COUNT_KINDS = {
    "missing": csv_parsing.MISSING_KINDS,
    "non_finite": csv_parsing.NON_FINITE_KINDS,
    "unreadable": ("unreadable",),
    "out_of_range": ("out_of_range",),
    "missing_column": ("absent",),
}
# Kinds whose output is the same for every rate above 0.
RATE_INDEPENDENT_KINDS = (*corrupt.COLUMN_KINDS, "truncate_last_line", "wrong_delimiter")

MATRIX_BEGIN = "<!-- robustness-matrix:begin -->"
MATRIX_END = "<!-- robustness-matrix:end -->"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One corruption and the outcome the policy predicts for it."""

    kind: str
    rate: float
    expected: str
    columns: tuple[str, ...] | None = None
    seed: int = 0
    reason: str = ""

    @property
    def name(self) -> str:
        target = "+".join(self.columns) if self.columns else "all"
        if self.kind in corrupt.ROW_KINDS:
            target = "rows"
        if self.kind in RATE_INDEPENDENT_KINDS:
            rate = "any"
        else:
            rate = f"{100 * self.rate:g}%"
        name = f"{self.kind}-{target}-{rate}"
        return name if self.seed == 0 else f"{name}-seed{self.seed}"


def _cells(
    kind: str,
    columns: tuple[str, ...] | None,
    outcomes: tuple[str, str, str],
    reason: str,
) -> list[Cell]:
    """Return the cells of one kind at rates 0.1 %, 5 % and 60 %."""
    return [
        Cell(kind, rate, expected, columns, reason=reason)
        for rate, expected in zip((0.001, 0.05, 0.6), outcomes)
    ]


# Expected outcomes, decided by hand from the policy in data/online_retail.yaml
# and the clean slice's own findings. Limits are per split: train has 5,217
# rows and eval 2,202. The rate is the probability that a cell is picked, and
# cells that are already missing or negative are skipped, so a 5 % rate adds
# 5 % of the rows give or take about 0.5 %. No 5 % cell sits at a 5 % limit.
MATRIX: tuple[Cell, ...] = (
    *_cells(
        "empty",
        ("CustomerID",),
        (REPAIRED, REPAIRED, BLOCKED),
        "user_id allows 60 % missing; the slice already has 23 % (train) and "
        "49 % (eval) empty CustomerIDs, and 60 % more of the rest exceeds it",
    ),
    *_cells(
        "empty",
        ("StockCode",),
        (BLOCKED, BLOCKED, BLOCKED),
        "item_id allows no missing value",
    ),
    *_cells(
        "empty",
        None,
        (BLOCKED, BLOCKED, BLOCKED),
        "every column: StockCode (item_id) and InvoiceDate (time) allow no "
        "missing value",
    ),
    *_cells(
        "na_token",
        ("Country",),
        (REPAIRED, REPAIRED, BLOCKED),
        "categorical allows 20 % missing",
    ),
    *_cells(
        "nan",
        ("UnitPrice",),
        (REPAIRED, BLOCKED, BLOCKED),
        "numeric allows 1 % non-finite",
    ),
    *_cells(
        "inf",
        ("Quantity",),
        (REPAIRED, BLOCKED, BLOCKED),
        "interaction_count allows 1 % non-finite",
    ),
    *_cells(
        "negative",
        ("Quantity",),
        (REPAIRED, BLOCKED, BLOCKED),
        "5 % out of range allowed; the slice already has 1.4 % (train) and "
        "1.9 % (eval) negative quantities",
    ),
    *_cells(
        "extreme",
        ("Quantity",),
        (REPAIRED, BLOCKED, BLOCKED),
        "1e30 is above the max of 100,000, so out of range; 5 % allowed on "
        "top of the slice's 1.4 to 1.9 %",
    ),
    *_cells(
        "non_numeric",
        ("UnitPrice",),
        (REPAIRED, BLOCKED, BLOCKED),
        "1 % unreadable values allowed",
    ),
    *_cells(
        "non_utf8",
        ("Description",),
        (REPAIRED, BLOCKED, BLOCKED),
        "the 1 % unreadable limit applies to every role, `other` included",
    ),
    *_cells(
        "duplicate_rows",
        None,
        (REPAIRED, REPAIRED, REPAIRED),
        "no limit on duplicates; each copy is an extra row",
    ),
    Cell(
        "truncate_last_line",
        0.05,
        REPAIRED,
        seed=1,
        reason="the cut leaves 2 of 8 fields: 1 malformed row, below the 1 % limit",
    ),
    Cell(
        "truncate_last_line",
        0.05,
        REPAIRED,
        seed=0,
        reason="the cut falls inside the last field, so the row keeps 8 fields; "
        "it must still be counted as malformed",
    ),
    Cell(
        "wrong_delimiter",
        0.05,
        BLOCKED,
        reason="the file's header reads as one unknown column, so every "
        "column is missing from that file",
    ),
    Cell(
        "drop_column",
        0.05,
        BLOCKED,
        ("UnitPrice",),
        reason="a missing numeric column blocks",
    ),
    Cell(
        "drop_column",
        0.05,
        BLOCKED,
        ("Description",),
        reason="a column missing from a file blocks whatever its role, even "
        "`other`, which no stage reads",
    ),
    Cell(
        "rename_column",
        0.05,
        BLOCKED,
        ("CustomerID",),
        reason="CustomerID is missing and CustomerID_renamed is unexpected",
    ),
)


@dataclasses.dataclass
class Check:
    """One condition of a cell's result and the numbers behind it."""

    name: str
    passed: bool
    detail: str = ""


@dataclasses.dataclass
class CellResult:
    """Outcome and checks of one cell."""

    cell: Cell
    outcome: str
    exit_code: int | None
    seconds: float
    checks: list[Check]
    run_dir: str
    injected: int = 0
    counted: int | None = None

    @property
    def passed(self) -> bool:
        return self.outcome == self.cell.expected and all(c.passed for c in self.checks)

    def failed_checks(self, prefix: str = "") -> list[Check]:
        return [c for c in self.checks if not c.passed and c.name.startswith(prefix)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell": self.cell.name,
            "kind": self.cell.kind,
            "columns": list(self.cell.columns or ()),
            "rate": self.cell.rate,
            "seed": self.cell.seed,
            "expected": self.cell.expected,
            "outcome": self.outcome,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 1),
            "injected": self.injected,
            "counted": self.counted,
            "run_dir": self.run_dir,
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }


@dataclasses.dataclass
class CommandResult:
    """Exit code and output of a child process; `timed_out` after a kill."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run_command(args: list[str], timeout: float, cwd: Path = REPO) -> CommandResult:
    """Run a command in its own process group and kill the group on timeout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.monotonic()
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        timed_out = True
    return CommandResult(
        None if timed_out else process.returncode,
        stdout,
        stderr,
        time.monotonic() - started,
        timed_out,
    )


def run_cli(args: list[str], timeout: float) -> CommandResult:
    """Run ``recguard ARGS`` with this interpreter, as a user would."""
    return run_command([sys.executable, "-m", "pipeline.cli", *args], timeout)


def prepare_slice(target: Path, source: Path = BUNDLED_DATA) -> Path:
    """Copy the slice's CSV files into `target` and return it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SLICE_FILES:
        shutil.copy(source / name, target / name)
    return target


def load_report(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "report" / "report.json"
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def count_totals(report: dict[str, Any]) -> Counter:
    """Return the report's finding counts per (column, kind), summed over splits.

    Summing over splits keeps the comparison exact when a corruption moves a
    row to another split, as an emptied InvoiceDate does.
    """
    totals: Counter = Counter()
    for entry in report["features"]:
        for kind, count in entry["counts"].items():
            totals[(entry["feature"], kind)] += count
    return totals


def total_rows(report: dict[str, Any]) -> int:
    return sum(split["rows"] for split in report["splits"].values())


def run_baseline(clean_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Validate the clean slice and return its report.

    Raises:
        RuntimeError: when the clean slice does not pass the gate, because
            then no cell can be judged.
    """
    run_dir = work_dir / "baseline"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result = run_cli(
        ["validate", "--data", str(clean_dir), "--out", str(run_dir)],
        VALIDATE_TIMEOUT_SECONDS,
    )
    report = load_report(run_dir)
    if result.returncode != EXIT_OK or report is None:
        raise RuntimeError(
            f"validating the clean slice {clean_dir} failed with exit code "
            f"{result.returncode}; see {run_dir}/logs/run.log. stderr:\n"
            f"{result.stderr[-2000:]}"
        )
    return report


def _count_checks(
    cell: Cell, manifest: dict[str, Any], report: dict[str, Any], baseline: dict[str, Any]
) -> tuple[list[Check], int | None]:
    """Compare the report's counts, minus the clean slice's, with the manifest.

    Returns the checks and the number of corruptions the report counted.
    """
    delta = count_totals(report)
    delta.subtract(count_totals(baseline))
    rows_delta = total_rows(report) - total_rows(baseline)
    malformed_delta = report["malformed_rows"] - baseline["malformed_rows"]
    if cell.kind in REPORT_KINDS:
        return _cell_kind_checks(cell, manifest, delta, rows_delta, malformed_delta)
    if cell.kind == "duplicate_rows":
        added = len(manifest["changes"])
        checks = [
            Check(
                "counts: rows added",
                rows_delta == added,
                f"report +{rows_delta} rows, manifest {added} copies",
            ),
            Check("rows: no malformed row", malformed_delta == 0, f"+{malformed_delta}"),
        ]
        return checks, rows_delta
    if cell.kind == "truncate_last_line":
        checks = [
            Check(
                "counts: malformed rows",
                malformed_delta == 1,
                f"report +{malformed_delta} malformed rows, manifest 1 truncated line "
                f"({manifest['changes'][0]['file']}:{manifest['changes'][0]['line']})",
            ),
            Check(
                "rows: none lost",
                rows_delta + malformed_delta == 0,
                f"rows {rows_delta:+}, malformed {malformed_delta:+}",
            ),
        ]
        return checks, malformed_delta
    if cell.kind == "wrong_delimiter":
        return _wrong_delimiter_checks(manifest, report, delta, rows_delta, malformed_delta)
    return _column_kind_checks(cell, manifest, report, delta, rows_delta, malformed_delta)


def _cell_kind_checks(cell, manifest, delta, rows_delta, malformed_delta):
    checks = []
    kinds = REPORT_KINDS[cell.kind]
    counted = 0
    for column in manifest["columns"]:
        observed = sum(delta[(column, kind)] for kind in kinds)
        expected = manifest["counts"][column]
        counted += observed
        checks.append(
            Check(
                f"counts: {column} {'+'.join(kinds)}",
                observed == expected,
                f"report +{observed}, manifest {expected}",
            )
        )
    targets = set(manifest["columns"])
    for (column, kind), change in sorted(delta.items()):
        if change and not (column in targets and kind in kinds):
            checks.append(
                Check(
                    f"counts: {column} {kind} unchanged",
                    False,
                    f"report {change:+} on a column or kind the corruption did not touch",
                )
            )
    checks.append(
        Check(
            "rows: none lost",
            rows_delta == 0 and malformed_delta == 0,
            f"rows {rows_delta:+}, malformed {malformed_delta:+}",
        )
    )
    return checks, counted


def _wrong_delimiter_checks(manifest, report, delta, rows_delta, malformed_delta):
    changed_file = manifest["changes"][0]["file"]
    description_columns = {entry["feature"] for entry in report["features"]}
    missing = {
        finding["column"]
        for finding in report["file_findings"]
        if finding["kind"] == "missing_column" and finding["file"] == changed_file
    }
    elsewhere = sorted(
        f"{finding['file']}:{finding['column']}"
        for finding in report["file_findings"]
        if finding["kind"] == "missing_column" and finding["file"] != changed_file
    )
    # Each row of the file either has no comma (one field, so every column is
    # absent) or has more fields than the one-field header (malformed).
    absent_rows = delta[(sorted(description_columns)[0], "absent")]
    checks = [
        Check(
            f"counts: every column missing from {changed_file}",
            missing == description_columns,
            f"missing {sorted(missing)}",
        ),
        Check("counts: no other file affected", not elsewhere, ", ".join(elsewhere)),
        Check(
            f"counts: rows of {changed_file}",
            absent_rows + malformed_delta == manifest["rows_changed"],
            f"{absent_rows} rows without any column + {malformed_delta} malformed, "
            f"manifest {manifest['rows_changed']} rows in the file",
        ),
        Check(
            "rows: none lost",
            rows_delta + malformed_delta == 0,
            f"rows {rows_delta:+}, malformed {malformed_delta:+}",
        ),
    ]
    return checks, absent_rows + malformed_delta


def _column_kind_checks(cell, manifest, report, delta, rows_delta, malformed_delta):
    checks = []
    counted = 0
    for column in manifest["columns"]:
        expected_files = sorted(
            change["file"] for change in manifest["changes"] if change["column"] == column
        )
        files = sorted(
            finding["file"]
            for finding in report["file_findings"]
            if finding["kind"] == "missing_column" and finding["column"] == column
        )
        counted += len(files)
        checks.append(
            Check(
                f"counts: {column} missing from files",
                files == expected_files,
                f"report {len(files)} files, manifest {len(expected_files)}",
            )
        )
        absent = delta[(column, "absent")]
        checks.append(
            Check(
                f"counts: {column} absent rows",
                absent == manifest["rows_total"],
                f"report +{absent}, manifest {manifest['rows_total']} rows",
            )
        )
        if cell.kind == "rename_column":
            new_name = column + corrupt.RENAME_SUFFIX
            unexpected = sorted(
                finding["file"]
                for finding in report["file_findings"]
                if finding["kind"] == "unexpected_column" and finding["column"] == new_name
            )
            checks.append(
                Check(
                    f"counts: {new_name} unexpected in files",
                    unexpected == expected_files,
                    f"report {len(unexpected)} files, manifest {len(expected_files)}",
                )
            )
    checks.append(
        Check(
            "rows: none lost",
            rows_delta == 0 and malformed_delta == 0,
            f"rows {rows_delta:+}, malformed {malformed_delta:+}",
        )
    )
    return checks, counted


def _corrupted_columns(cell: Cell, manifest: dict[str, Any], report: dict[str, Any]):
    if cell.kind == "wrong_delimiter":
        return {entry["feature"] for entry in report["features"]}
    return set(manifest["columns"])


def _blocked_checks(
    cell: Cell,
    manifest: dict[str, Any],
    report: dict[str, Any],
    result: CommandResult,
    run_dir: Path,
) -> list[Check]:
    from pipeline.metadata import executions_by_node

    blocking = report["blocking"]
    corrupted = _corrupted_columns(cell, manifest, report)
    features = {(e["feature"], e["split"]): e for e in report["features"]}
    checks = [
        Check("blocked: report decision", report["decision"] == "block", report["decision"]),
        Check("blocked: at least one finding", bool(blocking), f"{len(blocking)} findings"),
    ]
    others = sorted({b["feature"] or "(dataset)" for b in blocking} - corrupted)
    checks.append(
        Check(
            "blocked: only corrupted columns block",
            not others,
            f"also blocked: {', '.join(others)}" if others else "",
        )
    )
    for item in blocking:
        label = f"{item['feature']} {item['split']} {item['kind']}"
        checks.append(
            Check(
                f"blocked: message names {item['feature']}",
                f"column {item['feature']}" in result.stderr,
                label,
            )
        )
        entry = features.get((item["feature"], item["split"]))
        count_kinds = BLOCKING_COUNT_KINDS.get(item["kind"])
        if item["kind"] == "missing":
            # Cells that block on their own, as unreadable values or as a
            # missing column, are not counted again among the missing values.
            own = {
                b["kind"]
                for b in blocking
                if (b["feature"], b["split"]) == (item["feature"], item["split"])
            }
            left_out = set()
            if "unreadable" in own:
                left_out.add("unreadable")
            if "missing_column" in own:
                left_out.add("absent")
            count_kinds = tuple(k for k in count_kinds if k not in left_out)
        if entry is not None and count_kinds is not None:
            counted = sum(entry["counts"][kind] for kind in count_kinds)
            checks.append(
                Check(
                    f"blocked: {label} count",
                    item["count"] == counted,
                    f"blocking finding {item['count']}, feature counts {counted}",
                )
            )
    states = executions_by_node(str(run_dir / "metadata.sqlite"))
    gate_states = states.get("AnomalyGate", [])
    checks.append(
        Check(
            "blocked: AnomalyGate failed",
            gate_states[-1:] == ["FAILED"],
            f"AnomalyGate states {gate_states}",
        )
    )
    for node in DOWNSTREAM_OF_GATE:
        checks.append(
            Check(
                f"blocked: {node} did not execute",
                not states.get(node),
                f"{node} states {states.get(node, [])}",
            )
        )
    return checks


def _repaired_checks(
    cell: Cell, report: dict[str, Any], run_dir: Path, data_dir: Path, steps: int
) -> list[Check]:
    from pipeline.metadata import executions_by_node, pushed_model_uris

    checks = [Check("repaired: report decision", report["decision"] == "pass", report["decision"])]
    states = executions_by_node(str(run_dir / "metadata.sqlite"))
    unfinished = sorted(n for n, s in states.items() if s[-1:] != ["COMPLETE"])
    checks.append(
        Check("repaired: every node completed", not unfinished, ", ".join(unfinished))
    )

    check_path = run_dir / "report" / "post_transform_check.json"
    if not check_path.exists():
        checks.append(Check("repaired: post-transform check written", False, str(check_path)))
    else:
        post = json.loads(check_path.read_text(encoding="utf-8"))
        checks.append(
            Check(
                "repaired: post-transform values finite",
                not post["findings"],
                json.dumps(post["findings"])[:300],
            )
        )
        for split, info in sorted(report["splits"].items()):
            transformed = post["splits"].get(split, {}).get("rows")
            checks.append(
                Check(
                    f"rows: {split} rows reach Transform output",
                    transformed == info["rows"],
                    f"transformed {transformed}, report {info['rows']}",
                )
            )

    pushed = pushed_model_uris(str(run_dir / "metadata.sqlite"))
    checks.append(Check("repaired: model pushed", bool(pushed), f"{len(pushed)} models"))
    if not pushed:
        return checks
    metrics_path = Path(pushed[-1]) / "metrics.json"
    if not metrics_path.exists():
        checks.append(Check("repaired: metrics written", False, str(metrics_path)))
        return checks
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    checks.extend(
        [
            Check(
                "repaired: no skipped steps",
                metrics["skipped_steps"] == 0,
                f"skipped {metrics['skipped_steps']}",
            ),
            Check(
                "repaired: no masked examples",
                metrics["masked_examples"] == 0,
                f"masked {metrics['masked_examples']}",
            ),
            Check(
                "repaired: final loss finite",
                math.isfinite(metrics["final_train_loss"]),
                f"loss {metrics['final_train_loss']}",
            ),
            Check(
                "repaired: trained every step",
                metrics["train_steps"] == steps,
                f"{metrics['train_steps']} of {steps} steps",
            ),
        ]
    )
    checks.append(_score_check(pushed[-1], data_dir, total_rows(report)))
    return checks


def _score_check(model_dir: str, data_dir: Path, expected_rows: int) -> Check:
    """Score every corrupted row with the pushed model in a child process."""
    result = run_command(
        [
            sys.executable,
            "-m",
            "pipeline.serving_probe",
            "score-csv",
            "--model",
            model_dir,
            "--data",
            str(data_dir),
        ],
        SCORE_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        return Check(
            "repaired: model scores finite",
            False,
            f"scoring process exit code {result.returncode}: {result.stderr[-500:]}",
        )
    try:
        summary = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return Check(
            "repaired: model scores finite",
            False,
            f"no JSON summary on the scoring process's stdout: {result.stdout[-500:]}",
        )
    return Check(
        "repaired: model scores finite",
        summary["non_finite"] == 0 and summary["rows"] == expected_rows,
        f"{summary['rows']} rows scored ({expected_rows} in the report), "
        f"{summary['non_finite']} non-finite scores",
    )


def classify(result: CommandResult, validate: bool) -> str:
    """Name the outcome of a pipeline command from its exit code."""
    if result.timed_out:
        return "hang"
    code = result.returncode
    if code is not None and code < 0:
        return f"crash (signal {-code})"
    if code == EXIT_BLOCKED:
        return BLOCKED
    if code == EXIT_NON_FINITE:
        return "stopped (non-finite)"
    if code == EXIT_OK:
        return "not blocked" if validate else "completed"
    return f"error (exit {code})"


def run_cell(
    cell: Cell,
    clean_dir: Path,
    baseline: dict[str, Any],
    work_dir: Path,
    steps: int = DEFAULT_STEPS,
) -> CellResult:
    """Corrupt the clean slice as `cell` specifies, run the pipeline, check the result.

    Cells expected to block run ``recguard validate``, which stops after the
    gate; the others run the whole pipeline with `steps` training steps.
    """
    cell_dir = work_dir / "cells" / cell.name
    if cell_dir.exists():
        shutil.rmtree(cell_dir)
    data_dir = cell_dir / "data"
    run_dir = cell_dir / "run"
    manifest = corrupt.corrupt_dataset(
        clean_dir, data_dir, cell.kind, cell.rate, columns=cell.columns, seed=cell.seed
    )
    injected = len(manifest["changes"])
    validate = cell.expected == BLOCKED
    if validate:
        args = ["validate", "--data", str(data_dir), "--out", str(run_dir)]
        result = run_cli(args, VALIDATE_TIMEOUT_SECONDS)
    else:
        args = ["run", "--data", str(data_dir), "--out", str(run_dir), "--steps", str(steps)]
        result = run_cli(args, RUN_TIMEOUT_SECONDS)
    (cell_dir / "stdout.txt").write_text(result.stdout, encoding="utf-8")
    (cell_dir / "stderr.txt").write_text(result.stderr, encoding="utf-8")

    outcome = classify(result, validate)
    checks = [
        Check(
            "console: no traceback",
            TRACEBACK_MARKER not in result.stdout + result.stderr,
            "a traceback reached stdout or stderr",
        )
    ]
    report = load_report(run_dir)
    counted = None
    if report is None:
        checks.append(Check("report written", False, f"no report in {run_dir}/report"))
    else:
        count_checks, counted = _count_checks(cell, manifest, report, baseline)
        checks.extend(count_checks)
        if outcome == BLOCKED:
            checks.extend(_blocked_checks(cell, manifest, report, result, run_dir))
        elif outcome == "completed":
            checks.extend(_repaired_checks(cell, report, run_dir, data_dir, steps))
            repaired = all(c.passed for c in checks if c.name.startswith("repaired:"))
            outcome = REPAIRED if repaired else "not repaired"
    return CellResult(
        cell,
        outcome,
        result.returncode,
        result.seconds,
        checks,
        str(run_dir),
        injected=injected,
        counted=counted,
    )


def _run_order(cell: Cell) -> tuple[float, int]:
    # Smaller rates first, rate-independent kinds with the smallest rate.
    rate = 0.0 if cell.kind in RATE_INDEPENDENT_KINDS else cell.rate
    return (rate, MATRIX.index(cell))


def select_cells(patterns: Iterable[str] | None) -> list[Cell]:
    """Return the matrix cells whose name contains any pattern, in run order."""
    patterns = list(patterns or [])
    cells = [c for c in MATRIX if not patterns or any(p in c.name for p in patterns)]
    return sorted(cells, key=_run_order)


def _format_rate(cell: Cell) -> str:
    if cell.kind in RATE_INDEPENDENT_KINDS:
        return "any"
    return f"{100 * cell.rate:g} %"


def render_table(results: dict[str, dict[str, Any]], header: str) -> str:
    """Render every matrix cell as a Markdown table row, with "not run" gaps."""
    lines = [
        header,
        "",
        "| cell | kind | columns | rate | expected | observed | result | "
        "injected | counted | time | failed checks |",
        "| --- | --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for cell in MATRIX:
        columns = ", ".join(cell.columns) if cell.columns else (
            "rows" if cell.kind in corrupt.ROW_KINDS else "every column"
        )
        result = results.get(cell.name)
        if result is None:
            observed, verdict, injected, counted, seconds, failed = (
                "not run", "not run", "", "", "", "",
            )
        else:
            observed = result["outcome"]
            verdict = "pass" if result["passed"] else "**FAIL**"
            injected = str(result["injected"])
            counted = "" if result["counted"] is None else str(result["counted"])
            seconds = f"{result['seconds']:.0f} s"
            failed = "; ".join(
                f"{c['name']} ({c['detail']})" for c in result["checks"] if not c["passed"]
            )
        lines.append(
            f"| `{cell.name}` | {cell.kind} | {columns} | {_format_rate(cell)} | "
            f"{cell.expected} | {observed} | {verdict} | {injected} | {counted} | "
            f"{seconds} | {failed.replace('|', '/')} |"
        )
    return "\n".join(lines)


def write_table(doc_path: Path, table: str) -> None:
    """Replace the text between the matrix markers of `doc_path` with `table`.

    A missing file, or one without both markers, gets the markers and the
    table appended.
    """
    block = f"{MATRIX_BEGIN}\n{table}\n{MATRIX_END}"
    text = doc_path.read_text(encoding="utf-8") if doc_path.exists() else ""
    start = text.find(MATRIX_BEGIN)
    end = text.find(MATRIX_END)
    if start == -1 or end == -1 or end < start:
        text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
    else:
        text = text[:start] + block + text[end + len(MATRIX_END):]
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(text, encoding="utf-8")


def _table_header(results: dict[str, dict[str, Any]], steps: int) -> str:
    names = {cell.name for cell in MATRIX}
    finished = [r for name, r in results.items() if name in names]
    passed = sum(r["passed"] for r in finished)
    dates = sorted({r["date"] for r in finished if r.get("date")})
    when = ""
    if dates:
        when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    versions = sorted({r.get("code", "unknown") for r in finished})
    if len(versions) == 1:
        code = f"commit {versions[0]}"
    else:
        code = f"commits {', '.join(versions)} (the code changed between cells)"
    return (
        f"{len(finished)} of {len(MATRIX)} cells run, {passed} passed. Measured "
        f"{when} at {code} with `python -m pipeline.robustness matrix` on "
        f"{os.cpu_count()} CPUs ({platform.machine()}, shared with other jobs), "
        f"slice {', '.join(SLICE_FILES)}, `--steps {steps}` for full runs. "
        "Time is wall-clock per cell, scoring included."
    )


def code_version() -> str:
    """Return the git commit of the code under test, marked when it has local changes.

    The harness itself (this module and `pipeline.serving_probe`) does not
    count as a local change.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            [
                "git",
                "diff",
                "--quiet",
                "HEAD",
                "--",
                "components",
                "pipeline",
                "data",
                "schema",
                ":!pipeline/robustness.py",
                ":!pipeline/serving_probe.py",
            ],
            cwd=REPO,
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} with local changes" if changed else commit


def run_matrix(
    cells: list[Cell],
    work_dir: Path,
    doc_path: Path | None,
    steps: int,
    log=print,
) -> dict[str, dict[str, Any]]:
    """Run `cells` in order, updating the results file and the doc after each."""
    work_dir.mkdir(parents=True, exist_ok=True)
    results_path = work_dir / "results.json"
    results: dict[str, dict[str, Any]] = {}
    if results_path.exists():
        results = json.loads(results_path.read_text(encoding="utf-8"))
    clean_dir = prepare_slice(work_dir / "clean")
    log(f"validating the clean slice in {work_dir / 'baseline'} ...")
    baseline = run_baseline(clean_dir, work_dir)
    for index, cell in enumerate(cells, 1):
        log(f"[{index}/{len(cells)}] {cell.name}: expected {cell.expected} ...")
        result = run_cell(cell, clean_dir, baseline, work_dir, steps)
        record = result.to_dict()
        record["date"] = datetime.date.today().isoformat()
        record["code"] = code_version()
        results[cell.name] = record
        results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
        verdict = "pass" if result.passed else "FAIL"
        log(f"    {verdict}: {result.outcome} in {result.seconds:.0f} s")
        for check in result.failed_checks():
            log(f"    failed check: {check.name}: {check.detail}")
        if doc_path is not None:
            write_table(doc_path, render_table(results, _table_header(results, steps)))
    return results


def _matrix_command(args: argparse.Namespace) -> int:
    cells = select_cells(args.cells)
    if not cells:
        print(f"error: no matrix cell matches {args.cells}", file=sys.stderr)
        return 1
    try:
        results = run_matrix(cells, Path(args.work).resolve(), args.out, args.steps)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    failed = [c.name for c in cells if not results[c.name]["passed"]]
    print(f"{len(cells) - len(failed)} of {len(cells)} cells passed")
    for name in failed:
        print(f"  failed: {name}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.robustness",
        description="Run the robustness matrix and write its outcome table.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    matrix = commands.add_parser("matrix", help="run the robustness matrix")
    matrix.add_argument(
        "--out", type=Path, default=None, help="Markdown file whose outcome table to rewrite"
    )
    matrix.add_argument(
        "--work",
        default=str(DEFAULT_WORK_DIR),
        help="folder for corrupted data, run directories and results.json "
        "(default: %(default)s)",
    )
    matrix.add_argument(
        "--cells",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="run only cells whose name contains one of these texts, e.g. nan- 0.1%%",
    )
    matrix.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="training steps of full runs (default: %(default)s)",
    )
    matrix.set_defaults(handler=_matrix_command)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
