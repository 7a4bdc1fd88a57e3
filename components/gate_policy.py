"""The anomaly gate's decisions: from counts, anomalies and a policy to a report.

Pure Python over plain dicts, so the rules are testable without TFX. The
`AnomalyGate` component (``components/anomaly_gate.py``) gathers the inputs
from the ExampleGen findings, the TFDV statistics and ExampleValidator's
anomalies, and calls `decide`.
"""

from __future__ import annotations

import datetime
from typing import Any

from components import report
from components.csv_parsing import (
    COUNT_KINDS,
    MISSING_KINDS,
    NON_FINITE_KINDS,
    delimiter_name,
    joining_delimiter,
    line_sort_key,
    shown_text,
)

# Roles whose findings Transform repairs. Findings on other roles are
# tolerated, because no stage reads those columns as model input, unless
# their policy blocks them (the time column has zero tolerance by default).
REPAIRED_ROLES = ("user_id", "item_id", "interaction_count", "numeric", "categorical")

# TFDV anomaly types that the counted findings already cover; the counts and
# the policy decide on them. Any other anomaly type on a feature blocks,
# because nothing downstream is known to repair it.
COVERED_ANOMALY_TYPES = frozenset(
    {
        "FLOAT_TYPE_HAS_NAN",
        "FLOAT_TYPE_HAS_INF",
        "FLOAT_TYPE_SMALL_FLOAT",
        "FLOAT_TYPE_BIG_FLOAT",
        "INT_TYPE_SMALL_INT",
        "INT_TYPE_BIG_INT",
        "FEATURE_TYPE_LOW_FRACTION_PRESENT",
        "FEATURE_TYPE_LOW_NUMBER_PRESENT",
        "FEATURE_TYPE_NOT_PRESENT",
        "SCHEMA_MISSING_COLUMN",
        "FEATURE_TYPE_LOW_NUMBER_VALUES",
    }
)

DEFAULT_POLICY = {
    "roles": {},
    "max_out_of_range": 0.05,
    "max_unreadable": 0.01,
    "max_malformed_rows": 0.01,
    "min_rows_per_split": 1,
}


def _role_limits(policy: dict[str, Any], role: str) -> tuple[float, float]:
    limits = policy.get("roles", {}).get(role, {})
    return float(limits.get("max_missing", 0.0)), float(limits.get("max_non_finite", 0.0))


def _fraction(count: int, rows: int) -> float:
    return count / rows if rows else 0.0


def _percent(fraction: float) -> str:
    return report.format_fraction(fraction)


def _repair_text(column: dict[str, Any], counts: dict[str, int], rows: int) -> str:
    """Says in words how Transform handles the findings on one column."""
    role = column["role"]
    missing = sum(counts[k] for k in MISSING_KINDS)
    non_finite = sum(counts[k] for k in NON_FINITE_KINDS)
    parts = []
    if role in ("user_id", "item_id", "categorical"):
        if missing:
            parts.append(
                f"{missing:,} missing values ({_percent(_fraction(missing, rows))}) "
                "map to the missing token, which has its own vocabulary entry"
            )
    else:
        impute = column.get("impute", "median")
        statistic = (
            f"the constant {column.get('impute_value', 0.0)}"
            if impute == "constant"
            else f"the training {impute}"
        )
        if missing or non_finite:
            parts.append(
                f"{missing + non_finite:,} missing or non-finite values "
                f"({_percent(_fraction(missing + non_finite, rows))}) are imputed "
                f"with {statistic} and flagged by the missing indicator"
            )
        if counts["out_of_range"]:
            handling = column.get("negative", "keep")
            action = {
                "clip": "clipped into the range",
                "missing": "treated as missing and imputed",
                "keep": "kept, and min-max scaling clips them at serving time",
            }[handling]
            parts.append(f"{counts['out_of_range']:,} out-of-range values are {action}")
    return "; ".join(parts) + "." if parts else ""


# At most this many files are named in a message. The report lists them all.
MAX_NAMED_FILES = 5


def _named_files(files: list[str]) -> str:
    """Returns the first `MAX_NAMED_FILES` file names, then "and N more"."""
    named = ", ".join(files[:MAX_NAMED_FILES])
    if len(files) > MAX_NAMED_FILES:
        named += f" and {len(files) - MAX_NAMED_FILES} more"
    return named


def _header_hints(
    column: str,
    files: list[str],
    unexpected: dict[str, list[str]],
    names: set[str],
    delimiters_explained: set[tuple[str, tuple[str, ...]]],
) -> list[str]:
    """Returns sentences that explain, from their headers, why files lack `column`.

    A header field that joins column names with another delimiter means that
    the file likely uses that delimiter. Otherwise, a header column the description
    does not name may be `column` renamed. `unexpected` lists each file's
    header columns that the description does not name.

    A wrong delimiter makes every column missing from the same files. The
    first column's reason explains it in full, and `delimiters_explained`
    records that, so the reasons of the other columns refer back to it.
    """
    by_delimiter: dict[str, list[str]] = {}
    by_columns: dict[tuple[str, ...], list[str]] = {}
    joined_field: dict[str, str] = {}
    for file in files:
        fields = unexpected.get(file, [])
        for field in fields:
            delimiter = joining_delimiter(field, names)
            if delimiter is not None:
                by_delimiter.setdefault(delimiter, []).append(file)
                joined_field.setdefault(delimiter, field)
                break
        else:
            if fields:
                by_columns.setdefault(tuple(fields), []).append(file)

    hints = []
    for delimiter, group in by_delimiter.items():
        single_file = len(group) == 1
        key = (delimiter, tuple(group))
        if key in delimiters_explained:
            hints.append(
                f"The {'header' if single_file else 'headers'} of {_named_files(group)} "
                f"{'joins' if single_file else 'join'} column names with "
                f"{delimiter_name(delimiter)}, as the first missing column's reason "
                "explains"
            )
            continue
        delimiters_explained.add(key)
        field = shown_text(joined_field[delimiter].replace("\t", "\\t"))
        subject = "the file likely uses" if single_file else "these files likely use"
        hints.append(
            f"The {'header' if single_file else 'headers'} of {_named_files(group)} "
            f"{'has the field' if single_file else 'have fields such as'} {field}, "
            f"which joins column names with {delimiter_name(delimiter)}, so {subject} "
            "that delimiter. recguard reads comma-separated files only: write "
            f"{'the file' if single_file else 'them'} again with ',' as the delimiter"
        )
    for fields, group in by_columns.items():
        single_file = len(group) == 1
        single_column = len(fields) == 1
        names_text = ", ".join(shown_text(field) for field in fields)
        noun = "column" if single_column else "columns"
        hints.append(
            f"The {'header' if single_file else 'headers'} of {_named_files(group)} "
            f"{'has' if single_file else 'have'} the {noun} "
            f"{names_text}, which the description does not name. If "
            f"{'it' if single_column else 'one of them'} is {column} renamed, "
            f"rename it back to {column} in the data or, if every file uses the "
            "new name, rename the column in the description"
        )
    return hints


def _empty_split_advice(
    split: str, rows: int, total_rows: int, files_without_rows: list[str]
) -> str:
    # ExampleGen puts the rows of the latest eval_fraction of the time range
    # into eval and the rest, with the rows that have no readable time, into
    # train. So an empty train split means that every row has the same time,
    # and an empty eval split that no row has a readable time.
    if total_rows == 0:
        if not files_without_rows:
            return (
                "No data row was read: every row is malformed (see "
                "malformed_rows in the report). Check the delimiter and quoting."
            )
        named = _named_files(files_without_rows)
        return (
            f"No data row was read. Files without data rows: {named}. Add the "
            "data rows, or point --data at the folder that has them."
        )
    if rows == 0 and split == "train":
        return (
            "Every row has the same time, so all rows are in the eval time "
            "range; add data from earlier times."
        )
    if rows == 0 and split == "eval":
        return (
            "No row has a time readable with split.time_format, so every row "
            "is in train; check the time column and split.time_format."
        )
    return "Add data that covers the eval time range or change split.eval_fraction."


def decide(
    description: dict[str, Any],
    split_rows: dict[str, int],
    cell_counts: dict[tuple[str, str], dict[str, int]],
    sample_lines: dict[tuple[str, str], dict[str, list[str]]],
    anomalies: dict[str, dict[str, list[dict[str, str]]]],
    dataset_anomalies: list[dict[str, str]],
    file_findings: list[dict[str, Any]],
    malformed: dict[str, Any],
) -> dict[str, Any]:
    """Builds the gate's report: a decision per feature and split.

    Args:
        description: `Description.to_dict()`, whose ``policy`` contains the limits.
        split_rows: rows per split.
        cell_counts: ``{(split, column): {kind: count}}`` from ExampleGen.
        sample_lines: ``{(split, column): {kind: ["file.csv:12", ...]}}``.
        anomalies: ``{split: {column: [{"type", "short", "description"}]}}``
            from ExampleValidator.
        dataset_anomalies: anomalies not tied to a column.
        file_findings: file-level findings (missing or unexpected columns).
        malformed: ``{"count": n, "sample_lines": [...]}`` for rows that could
            not be parsed.

    Returns:
        The report dict; its ``decision`` is ``block`` when any finding
        breaks the policy.
    """
    policy = {**DEFAULT_POLICY, **description.get("policy", {})}
    blocking: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []
    total_rows = sum(split_rows.values())

    def block(feature, split, kind, count, fraction, reason):
        blocking.append(
            {
                "feature": feature,
                "split": split,
                "kind": kind,
                "count": count,
                "fraction": fraction,
                "reason": reason,
            }
        )

    missing_columns: dict[str, list[str]] = {}
    unexpected_columns: dict[str, list[str]] = {}
    delimiters_explained: set[tuple[str, tuple[str, ...]]] = set()
    files_without_rows: list[str] = []
    for finding in file_findings:
        if finding["kind"] == "missing_column":
            missing_columns.setdefault(finding["column"], []).append(finding["file"])
        elif finding["kind"] == "unexpected_column":
            unexpected_columns.setdefault(finding["file"], []).append(finding["column"])
        elif finding["kind"] in ("empty_file", "no_data_rows"):
            dataset_anomalies.append(
                {
                    "type": finding["kind"].upper(),
                    "description": f"{finding['file']}: {finding['detail']}",
                }
            )
            files_without_rows.append(f"{finding['file']} ({finding['detail']})")
        elif finding["kind"] == "multiline_records":
            # Valid CSV, so it is listed but does not block.
            dataset_anomalies.append(
                {
                    "type": "MULTILINE_RECORDS",
                    "description": f"{finding['file']}: {finding['detail']}",
                }
            )

    malformed_count = int(malformed.get("count", 0))
    malformed_fraction = _fraction(malformed_count, total_rows + malformed_count)
    if malformed_fraction > float(policy["max_malformed_rows"]):
        block(
            "",
            "all",
            "malformed_rows",
            malformed_count,
            malformed_fraction,
            f"{malformed_count:,} rows could not be parsed "
            f"({_percent(malformed_fraction)}, limit "
            f"{_percent(float(policy['max_malformed_rows']))}); first: "
            f"{', '.join(malformed.get('sample_lines', []))}",
        )

    min_rows = int(policy["min_rows_per_split"])
    rows_needed = f"at least {min_rows} {'row is' if min_rows == 1 else 'rows are'} needed"
    if total_rows == 0:
        # One finding for the whole run, not the same advice once per split.
        block(
            "",
            "all",
            "empty_split",
            0,
            0.0,
            f"every split has 0 rows; {rows_needed} in each. "
            + _empty_split_advice("all", 0, 0, files_without_rows),
        )
    for split, rows in sorted(split_rows.items()):
        if total_rows and rows < min_rows:
            block(
                "",
                split,
                "empty_split",
                rows,
                0.0,
                f"split {split} has {rows} rows; {rows_needed}. "
                + _empty_split_advice(split, rows, total_rows, files_without_rows),
            )

    for split, rows in sorted(split_rows.items()):
        for name, column in description["columns"].items():
            role = column["role"]
            counts = {k: 0 for k in COUNT_KINDS}
            counts.update(cell_counts.get((split, name), {}))
            fractions = {k: _fraction(v, rows) for k, v in counts.items()}
            column_anomalies = anomalies.get(split, {}).get(name, [])
            max_missing, max_non_finite = _role_limits(policy, role)
            missing = sum(counts[k] for k in MISSING_KINDS)
            non_finite = sum(counts[k] for k in NON_FINITE_KINDS)
            reasons = []

            samples = sample_lines.get((split, name), {})

            def check(kind, count, limit, what, limit_name, sample_kinds):
                fraction = _fraction(count, rows)
                if count and fraction > limit:
                    lines = sorted(
                        {line for k in sample_kinds for line in samples.get(k, [])},
                        key=line_sort_key,
                    )[:3]
                    where = f", first at {', '.join(lines)}" if lines else ""
                    if count == 1:
                        counted = what.replace("values", "value", 1)
                        verb = "exceeds"
                    else:
                        counted = what
                        verb = "exceed"
                    # A count that adds up several kinds names them, so that an
                    # unreadable cell counted as missing reads as unreadable.
                    parts = [k for k in sample_kinds if counts[k]]
                    if len(parts) > 1 or ("unreadable" in parts and kind != "unreadable"):
                        breakdown = ", ".join(
                            f"{report.kind_label(k)} {counts[k]:,}" for k in parts
                        )
                        share = f"{_percent(fraction)}: {breakdown}"
                    else:
                        share = _percent(fraction)
                    text = (
                        f"{count:,} {counted} ({share}) {verb} the limit "
                        f"{limit_name} = {_percent(limit)}{where}"
                    )
                    reasons.append(text)
                    block(name, split, kind, count, fraction, text)

            # Block only the splits that received rows from the files
            # without the column.
            column_blocks = bool(name in missing_columns and counts["absent"])
            if column_blocks:
                # NOTE: the files are those of every split. ExampleGen's file
                # findings do not record which splits a file's rows went to.
                files = sorted(missing_columns[name])
                noun = "file" if len(files) == 1 else "files"
                text = f"column missing from {len(files)} {noun}: {_named_files(files)}"
                hints = _header_hints(
                    name,
                    files,
                    unexpected_columns,
                    set(description["columns"]),
                    delimiters_explained,
                )
                if hints:
                    text += ". " + ". ".join(hints)
                reasons.append(text)
                block(name, split, "missing_column", counts["absent"], fractions["absent"], text)
            is_id = role in ("user_id", "item_id")
            max_unreadable = 0.0 if is_id else float(policy["max_unreadable"])
            unreadable_blocks = (
                _fraction(counts["unreadable"], rows) > max_unreadable
                and counts["unreadable"] > 0
            )
            # Unreadable cells, and the absent cells of a column missing from
            # whole files, are missing values too. When they block on their
            # own, the missing count leaves them out, so that one bad cell is
            # not reported as two blocking findings.
            counted_elsewhere = set()
            if unreadable_blocks:
                counted_elsewhere.add("unreadable")
            if column_blocks:
                counted_elsewhere.add("absent")
            missing_kinds = tuple(k for k in MISSING_KINDS if k not in counted_elsewhere)
            check(
                "missing",
                sum(counts[k] for k in missing_kinds),
                max_missing,
                "missing values",
                f"policy.roles.{role}.max_missing",
                missing_kinds,
            )
            check(
                "non_finite",
                non_finite,
                max_non_finite,
                "non-finite values",
                f"policy.roles.{role}.max_non_finite",
                NON_FINITE_KINDS,
            )
            check(
                "unreadable",
                counts["unreadable"],
                max_unreadable,
                f"values unreadable as {column['type']}",
                "for ids (no policy setting changes it)"
                if is_id
                else "policy.max_unreadable",
                ("unreadable",),
            )
            check(
                "out_of_range",
                counts["out_of_range"],
                float(policy["max_out_of_range"]),
                "out-of-range values",
                "policy.max_out_of_range",
                ("out_of_range",),
            )
            for anomaly in column_anomalies:
                if anomaly["type"] not in COVERED_ANOMALY_TYPES:
                    text = f"TFDV anomaly {anomaly['type']}: {anomaly['description']}"
                    reasons.append(text)
                    block(name, split, "tfdv_anomaly", 0, 0.0, text)

            has_findings = any(counts.values()) or column_anomalies
            if reasons:
                decision = "block"
                reason = "; ".join(reasons) + "."
            elif not has_findings:
                decision = "pass"
                reason = ""
            elif role in REPAIRED_ROLES:
                decision = "repair"
                reason = _repair_text(column, counts, rows) or (
                    "TFDV anomalies within the policy's limits."
                )
            else:
                decision = "tolerate"
                reason = (
                    f"{role} column: no stage reads it as model input; "
                    f"{missing:,} missing values ({_percent(_fraction(missing, rows))}) "
                    "are within the limit."
                )
            features.append(
                {
                    "feature": name,
                    "role": role,
                    "type": column["type"],
                    "split": split,
                    "rows": rows,
                    "counts": counts,
                    "fractions": fractions,
                    "sample_lines": sample_lines.get((split, name), {}),
                    "anomalies": column_anomalies,
                    "decision": decision,
                    "reason": reason,
                }
            )

    for anomaly in dataset_anomalies:
        if anomaly["type"] not in ("DATASET_LOW_NUM_EXAMPLES",):
            continue
        block("", anomaly.get("split", "all"), "tfdv_anomaly", 0, 0.0, anomaly["description"])

    return {
        "dataset": description.get("name", ""),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "decision": "block" if blocking else "pass",
        "policy": policy,
        "splits": {
            split: {"rows": rows} for split, rows in sorted(split_rows.items())
        },
        "malformed_rows": malformed_count,
        "malformed_samples": list(malformed.get("sample_lines", [])),
        "file_findings": file_findings,
        "features": features,
        "blocking": blocking,
        "dataset_anomalies": dataset_anomalies,
    }
