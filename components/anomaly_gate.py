"""AnomalyGate: stops the run on blocking data findings, before Transform.

ExampleValidator (tfx 1.16) only records anomalies; nothing downstream stops.
This component reads ExampleGen's finding counts, the TFDV statistics and
ExampleValidator's anomalies, decides per feature and split with the
dataset's policy (`components.gate_policy.decide`), writes the report as
JSON, Markdown and HTML, and then either

- passes: its ``schema`` output, a copy of the curated contract, is what
  Transform reads, so Transform cannot start before the gate passed; or
- blocks: raises `GateBlockedError`, which fails the component, so
  Transform, Trainer and Pusher never execute.
"""


import json
import logging
import os
from collections import defaultdict
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.component.experimental.annotations import (
    InputArtifact,
    OutputArtifact,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components import gate_policy, ingest, report

SCHEMA_FILE = "schema.pbtxt"


class GateReport(types.Artifact):
    """Folder with the gate's report.json, report.md and report.html."""

    TYPE_NAME = "recguard.GateReport"


class GateBlockedError(RuntimeError):
    """Raised when the data breaks the contract. Names every blocking finding."""


def _anomaly_type_name(reason) -> str:
    return anomalies_pb2.AnomalyInfo.Type.Name(reason.type)


def _read_anomalies(uri: str, split: str):
    path = os.path.join(uri, f"Split-{split}", "SchemaDiff.pb")
    result = anomalies_pb2.Anomalies()
    if tf.io.gfile.exists(path):
        result.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
    by_feature: dict[str, list[dict[str, str]]] = {}
    for name, info in result.anomaly_info.items():
        by_feature[name] = [
            {
                "type": _anomaly_type_name(r),
                "short": r.short_description,
                "description": r.description,
            }
            for r in info.reason
        ]
    dataset = [
        {
            "type": _anomaly_type_name(r),
            "short": r.short_description,
            "description": r.description,
            "split": split,
        }
        for r in result.dataset_anomaly_info.reason
    ]
    return by_feature, dataset


def _read_num_examples(uri: str, split: str) -> int | None:
    path = os.path.join(uri, f"Split-{split}", "FeatureStats.pb")
    if not tf.io.gfile.exists(path):
        return None
    stats = tfdv.load_stats_binary(path)
    return int(stats.datasets[0].num_examples) if stats.datasets else 0


def build_report(
    description: dict[str, Any],
    examples_uri: str,
    statistics_uri: str,
    anomalies_uri: str,
    splits: list[str],
) -> dict[str, Any]:
    """Gathers counts, statistics and anomalies and returns the gate report."""
    records = ingest.read_findings(examples_uri)
    split_rows = {split: 0 for split in splits}
    cell_counts: dict = defaultdict(dict)
    sample_lines: dict = defaultdict(dict)
    file_findings = []
    malformed = {"count": 0, "sample_lines": []}
    for record in records:
        kind = record["record"]
        if kind == "rows":
            split_rows[record["split"]] = record["rows"]
        elif kind == "cells":
            key = (record["split"], record["column"])
            cell_counts[key][record["kind"]] = record["count"]
            sample_lines[key][record["kind"]] = record["sample_lines"]
        elif kind == "file":
            file_findings.append(record)
        elif kind == "malformed":
            malformed = record

    anomalies = {}
    dataset_anomalies = []
    for split in splits:
        anomalies[split], split_dataset = _read_anomalies(anomalies_uri, split)
        dataset_anomalies.extend(split_dataset)
        num_examples = _read_num_examples(statistics_uri, split)
        if num_examples is not None and num_examples != split_rows[split]:
            # The statistics and ExampleGen's own count must agree, or a row
            # went missing between them.
            dataset_anomalies.append(
                {
                    "type": "ROW_COUNT_MISMATCH",
                    "description": f"statistics count {num_examples} rows in split "
                    f"{split}, ExampleGen wrote {split_rows[split]}",
                    "split": split,
                }
            )
    result = gate_policy.decide(
        description,
        split_rows,
        dict(cell_counts),
        dict(sample_lines),
        anomalies,
        dataset_anomalies,
        file_findings,
        malformed,
    )
    for anomaly in dataset_anomalies:
        if anomaly["type"] == "ROW_COUNT_MISMATCH":
            result["blocking"].append(
                {
                    "feature": "",
                    "split": anomaly["split"],
                    "kind": "row_count_mismatch",
                    "count": 0,
                    "fraction": 0.0,
                    "reason": anomaly["description"],
                }
            )
            result["decision"] = "block"
    return result


def blocking_message(result: dict[str, Any], report_path: str) -> str:
    """Returns the error text that names every blocking finding."""
    count = len(result["blocking"])
    noun = "finding" if count == 1 else "findings"
    lines = [f"The anomaly gate blocked the run ({count} blocking {noun}):"]
    for item in result["blocking"]:
        where = f"column {item['feature']}" if item["feature"] else "dataset"
        lines.append(
            f"  - {where}, split {item['split']}: {item['kind']}, "
            f"count {item['count']:,}, fraction {report.format_fraction(item['fraction'])}: "
            f"{item['reason']}"
        )
    lines.append(f"Report: {report_path}")
    lines.append(
        "Fix the data, or, where a finding names a policy limit and the finding is "
        "acceptable, relax that limit in the dataset description. Then rerun."
    )
    return "\n".join(lines)


@component
def AnomalyGate(
    examples: InputArtifact[standard_artifacts.Examples],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    contract: InputArtifact[standard_artifacts.Schema],
    schema: OutputArtifact[standard_artifacts.Schema],
    gate_report: OutputArtifact[GateReport],
    description_json: Parameter[str],
    report_dir: Parameter[str] = "",
    code_version: Parameter[str] = "",
) -> None:
    """Decides pass or block for the data, writes the report, passes the contract.

    Args:
        examples: ExampleGen output, whose ``ingest/`` folder contains the counts.
        statistics: StatisticsGen output for the same examples.
        anomalies: ExampleValidator output against the curated contract.
        contract: the curated schema (ImportSchemaGen output).
        schema: the contract again, written only when the gate passes;
            Transform reads it, which orders Transform after the gate.
        gate_report: the report files.
        description_json: `Description.to_dict()` as JSON.
        report_dir: a second folder for the report (the run directory's
            ``report/``), so a blocked run's report is easy to find.
        code_version: a digest of recguard's component code. It is not read
            here: as a parameter it is part of TFX's cache key, so a code
            change reruns the gate instead of reusing its cached result.
    """
    del code_version  # Only part of the cache key.
    description = json.loads(description_json)
    splits = artifact_utils.decode_split_names(examples.split_names)
    result = build_report(
        description, examples.uri, statistics.uri, anomalies.uri, splits
    )
    paths = report.write_report(result, gate_report.uri)
    if report_dir:
        paths = report.write_report(result, report_dir)
    logging.info("Anomaly gate decision: %s; report %s", result["decision"], paths["html"])
    if result["decision"] == "block":
        raise GateBlockedError(blocking_message(result, paths["html"]))
    source = os.path.join(contract.uri, SCHEMA_FILE)
    tf.io.gfile.copy(source, os.path.join(schema.uri, SCHEMA_FILE), overwrite=True)
