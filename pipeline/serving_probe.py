"""Send data to a pushed model in a child process and record what comes back.

The robustness matrix and the serving fuzz tests run this module as
``python -m pipeline.serving_probe`` in a subprocess. A crash of TensorFlow
while the model serves a request then shows up as that process's exit code
and does not take the test process down.

- ``score-csv`` scores every row of a CSV folder and prints
  ``{"rows": n, "non_finite": n}`` as the last line of stdout.
- ``score-batches`` sends prepared requests to a model's signatures and
  writes one JSON line per request.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any

from components import csv_parsing

DESCRIPTION_PATH = Path(__file__).resolve().parents[1] / "data" / "online_retail.yaml"


def _example_from_row(row: csv_parsing.ParsedRow, types: dict[str, str]):
    import tensorflow as tf

    feature = {}
    for name, value in row.values.items():
        if value is None:
            continue
        if types[name] == "string":
            encoded = value.encode("utf-8")
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
        elif types[name] == "int":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def score_csv(model_dir: str, data_dir: str, batch_size: int = 1024) -> dict[str, int]:
    """Score every parsed row of a CSV folder with a model's serving signature.

    Rows are parsed the way ExampleGen parses them: missing and unreadable
    cells become absent features, and NaN and inf stay in float features.
    Malformed rows are skipped.
    """
    import numpy as np
    import tensorflow as tf

    from pipeline.dataset import load_description

    description = load_description(str(DESCRIPTION_PATH)).to_dict()
    columns = [
        csv_parsing.ColumnSpec(name, spec["type"], spec.get("min"), spec.get("max"))
        for name, spec in description["columns"].items()
    ]
    types = {name: spec["type"] for name, spec in description["columns"].items()}
    split = description["split"]
    serialized = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.csv"))):
        text = csv_parsing.decode_file_bytes(Path(path).read_bytes())
        for item in csv_parsing.parse_csv_text(
            text,
            os.path.basename(path),
            columns,
            frozenset(description["na_tokens"]),
            split.get("time_column"),
            split.get("time_format", csv_parsing.DEFAULT_TIME_FORMAT),
            string_na_tokens=frozenset(description["string_na_tokens"]),
        ):
            if isinstance(item, csv_parsing.ParsedRow):
                serialized.append(_example_from_row(item, types))

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    non_finite = 0
    for start in range(0, len(serialized), batch_size):
        batch = tf.constant(serialized[start : start + batch_size])
        scores = serve(examples=batch)["score"].numpy()
        non_finite += int((~np.isfinite(scores)).sum())
    return {"rows": len(serialized), "non_finite": non_finite}


def score_batches(model_dir: str, cases: list[dict[str, Any]], result_path: str) -> None:
    """Send each case's inputs to a model signature and record what came back.

    A case is ``{"name", "signature", "input", "values_b64"}``, a string
    tensor of shape ``[len(values)]`` unless the case sets ``shape``, or
    ``{"name", "signature", "input", "tensor": {"dtype", "value"}}`` for a
    tensor of another dtype. Each case appends two JSON lines to
    `result_path`: ``{"name", "status": "started"}`` before the call, so a
    crash points to its case, and then ``{"name", "status", "shape",
    "error_type", "error"}`` with status ``finite``, ``non_finite`` or
    ``error``.
    """
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    with open(result_path, "w", encoding="utf-8") as output:

        def write(record: dict[str, Any]) -> None:
            output.write(json.dumps(record) + "\n")
            output.flush()

        for case in cases:
            write({"name": case["name"], "status": "started"})
            signature = model.signatures[case["signature"]]
            if "tensor" in case:
                spec = case["tensor"]
                tensor = tf.constant(spec["value"], dtype=getattr(tf, spec["dtype"]))
            else:
                values = [base64.b64decode(v) for v in case["values_b64"]]
                shape = case.get("shape", [len(values)])
                tensor = tf.constant(values, dtype=tf.string, shape=shape)
            record: dict[str, Any] = {"name": case["name"]}
            try:
                outputs = signature(**{case["input"]: tensor})
            except (tf.errors.OpError, ValueError, TypeError) as error:
                record.update(
                    status="error", error_type=type(error).__name__, error=str(error)[:300]
                )
                write(record)
                continue
            scores = outputs["score" if "score" in outputs else "scores"].numpy()
            finite = bool(np.isfinite(scores).all())
            record.update(status="finite" if finite else "non_finite", shape=list(scores.shape))
            write(record)


def read_batch_results(result_path: str) -> dict[str, dict[str, Any]]:
    """Return the last record per case from a `score_batches` result file.

    A case whose last record has status ``started`` was running when the
    process ended.
    """
    records: dict[str, dict[str, Any]] = {}
    if not os.path.exists(result_path):
        return records
    with open(result_path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                records[record["name"]] = record
    return records


def _score_csv_command(args: argparse.Namespace) -> int:
    print(json.dumps(score_csv(args.model, args.data)))
    return 0


def _score_batches_command(args: argparse.Namespace) -> int:
    cases = json.loads(Path(args.cases).read_text(encoding="utf-8"))
    score_batches(args.model, cases, args.result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.serving_probe",
        description="Send data to a pushed model and record the scores or errors.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score-csv", help="score every row of a CSV folder")
    score.add_argument("--model", required=True, help="pushed SavedModel folder")
    score.add_argument("--data", required=True, help="folder with the CSV files")
    score.set_defaults(handler=_score_csv_command)

    batches = commands.add_parser("score-batches", help="send prepared requests to a model")
    batches.add_argument("--model", required=True, help="pushed SavedModel folder")
    batches.add_argument("--cases", required=True, help="JSON file with a list of cases")
    batches.add_argument(
        "--result", required=True, help="JSON-lines file for the results, one record per case"
    )
    batches.set_defaults(handler=_score_batches_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
