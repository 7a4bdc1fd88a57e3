"""CsvIngestGen: an ExampleGen that counts every gap instead of hiding it.

It is TFX's FileBasedExampleGen (same driver, span and caching rules, same
output artifact) with an executor that

- parses cells with `components.csv_parsing`, so empty cells and NA tokens
  become absent features and `nan`/`inf` stay non-finite floats;
- splits by time: rows in the latest ``eval_fraction`` of the time range go
  to ``eval``, so no training interaction is newer than an evaluated one;
- writes ``ingest/findings-*.jsonl`` into the Examples artifact: per split
  and column, the count of each finding kind with sample line numbers, rows
  per split, malformed rows and file-level findings. The anomaly gate reads
  it together with the TFDV statistics.
"""

from __future__ import annotations

import glob
import heapq
import json
import logging
import os
import re
from typing import Any, Dict, Iterable, List

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import component as example_gen_component
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import proto_utils

from components import csv_parsing

DESCRIPTION_KEY = "description"
FINDINGS_DIR = "ingest"
FINDINGS_PATTERN = "findings-*.jsonl"
# Split name for findings that happen before a row has a split.
UNSPLIT = "_unsplit"


def _column_specs(description: dict[str, Any]) -> list[csv_parsing.ColumnSpec]:
    return [
        csv_parsing.ColumnSpec(
            name=name, type=spec["type"], min=spec.get("min"), max=spec.get("max")
        )
        for name, spec in description["columns"].items()
    ]


class _ParseFile(beam.DoFn):
    """Reads one CSV file and emits parsed rows and findings."""

    def __init__(self, description: dict[str, Any]):
        self._description = description

    def setup(self):
        self._columns = _column_specs(self._description)
        self._na_tokens = frozenset(self._description["na_tokens"])
        split = self._description["split"]
        self._time_column = split.get("time_column")
        self._time_format = split.get("time_format", "%Y-%m-%d %H:%M:%S")

    def process(self, path: str):
        with tf.io.gfile.GFile(path, "rb") as f:
            text = csv_parsing.decode_file_bytes(f.read())
        name = os.path.basename(path)
        for item in csv_parsing.parse_csv_text(
            text,
            name,
            self._columns,
            self._na_tokens,
            self._time_column,
            self._time_format,
        ):
            if isinstance(item, csv_parsing.ParsedRow):
                yield item
            elif isinstance(item, csv_parsing.MalformedRow):
                yield beam.pvalue.TaggedOutput("malformed", item)
            else:
                yield beam.pvalue.TaggedOutput("file_findings", item)


def _to_example(row: csv_parsing.ParsedRow, types_by_column: dict[str, str]) -> bytes:
    feature = {}
    for name, value in row.values.items():
        if value is None:
            continue
        kind = types_by_column[name]
        if kind == "string":
            encoded = value.encode("utf-8")
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
        elif kind == "int":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


class _CountAndSample(beam.CombineFn):
    """Counts elements and keeps the smallest line references as a sample.

    Keeping the smallest references (not the first seen) makes the sample the
    same on every runner and every rerun.
    """

    def create_accumulator(self):
        return (0, [])

    def add_input(self, accumulator, line_ref):
        count, sample = accumulator
        sample = heapq.nsmallest(
            csv_parsing.MAX_SAMPLE_LINES, sample + [line_ref], key=_line_sort_key
        )
        return count + 1, sample

    def merge_accumulators(self, accumulators):
        total = 0
        merged: list[str] = []
        for count, sample in accumulators:
            total += count
            merged.extend(sample)
        merged = heapq.nsmallest(
            csv_parsing.MAX_SAMPLE_LINES, merged, key=_line_sort_key
        )
        return total, merged

    def extract_output(self, accumulator):
        return accumulator


# "file.csv:12", or "file.csv:12: reason" for a malformed row.
_LINE_REF = re.compile(r"^(.*?):(\d+)(?::|$)")


def _line_sort_key(line_ref: str):
    # Orders by file, then line number as a number, so "a.csv:3" comes
    # before "a.csv:12" also when a reason with colons follows.
    match = _LINE_REF.match(line_ref)
    if match is None:
        return (line_ref, 0, line_ref)
    return (match.group(1), int(match.group(2)), line_ref)


def _assign_split(row: csv_parsing.ParsedRow, cutoff: float | None) -> str:
    # A row without a readable time cannot be placed by time, so it goes to
    # train. Its time column is counted as unreadable or missing, and the
    # gate's policy for the time role decides whether that blocks.
    if cutoff is None or row.timestamp is None:
        return "train"
    return "eval" if row.timestamp >= cutoff else "train"


def _time_cutoff(bounds: list, eval_fraction: float) -> float | None:
    if not bounds:
        return None
    low, high = bounds[0]
    if low is None or high is None:
        return None
    return high - eval_fraction * (high - low)


class _MinMax(beam.CombineFn):
    def create_accumulator(self):
        return (None, None)

    def add_input(self, acc, value):
        low, high = acc
        return (
            value if low is None else min(low, value),
            value if high is None else max(high, value),
        )

    def merge_accumulators(self, accumulators):
        result = (None, None)
        for low, high in accumulators:
            if low is not None:
                result = self.add_input(result, low)
                result = self.add_input(result, high)
        return result

    def extract_output(self, acc):
        return acc


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """ExampleGen executor for CSV files described by a dataset description."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        # Never called: GenerateExamplesByBeam below builds the whole graph,
        # because the split needs the time range of all rows.
        raise NotImplementedError("CsvIngestGen splits by time in GenerateExamplesByBeam")

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        self._findings_dir = os.path.join(examples.uri, FINDINGS_DIR)
        super().Do(input_dict, output_dict, exec_properties)

    def GenerateExamplesByBeam(
        self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]
    ) -> Dict[str, beam.pvalue.PCollection]:
        description = json.loads(exec_properties[DESCRIPTION_KEY])
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config
        )
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        pattern = os.path.join(input_base, input_config.splits[0].pattern)
        files = sorted(tf.io.gfile.glob(pattern)) or sorted(glob.glob(pattern))
        if not files:
            raise ValueError(
                f"no input files match {pattern!r}; check --data and the "
                "description's file_pattern"
            )
        logging.info("CsvIngestGen reads %d files matching %s", len(files), pattern)
        types_by_column = {
            name: spec["type"] for name, spec in description["columns"].items()
        }
        eval_fraction = float(description["split"]["eval_fraction"])

        parsed = (
            pipeline
            | "ListFiles" >> beam.Create(files)
            | "ParseCsv"
            >> beam.ParDo(_ParseFile(description)).with_outputs(
                "malformed", "file_findings", main="rows"
            )
        )
        rows = parsed.rows
        bounds = (
            rows
            | "Timestamps" >> beam.FlatMap(lambda r: [r.timestamp] if r.timestamp is not None else [])
            | "TimeRange" >> beam.CombineGlobally(_MinMax())
        )
        cutoff = beam.pvalue.AsSingleton(
            bounds | "Cutoff" >> beam.Map(lambda b: _time_cutoff([b], eval_fraction))
        )
        keyed = rows | "AssignSplit" >> beam.Map(
            lambda r, c: (_assign_split(r, c), r), c=cutoff
        )
        train, eval_ = keyed | "PartitionByTime" >> beam.Partition(
            lambda kv, _: 0 if kv[0] == "train" else 1, 2
        )
        splits = {"train": train, "eval": eval_}

        findings = []
        result = {}
        for split_name, split_rows in splits.items():
            result[split_name] = (
                split_rows
                | f"ToExample[{split_name}]"
                >> beam.Map(lambda kv: _to_example(kv[1], types_by_column))
            )
            findings.append(
                split_rows
                | f"RowCount[{split_name}]" >> beam.combiners.Count.Globally()
                | f"RowRecord[{split_name}]"
                >> beam.Map(lambda n, s=split_name: {"record": "rows", "split": s, "rows": n})
            )
            findings.append(
                split_rows
                | f"Findings[{split_name}]"
                >> beam.FlatMap(
                    lambda kv: [((c, k), kv[1].line_ref) for c, k in kv[1].findings]
                )
                | f"CountFindings[{split_name}]" >> beam.CombinePerKey(_CountAndSample())
                | f"FindingRecord[{split_name}]"
                >> beam.Map(
                    lambda kv, s=split_name: {
                        "record": "cells",
                        "split": s,
                        "column": kv[0][0],
                        "kind": kv[0][1],
                        "count": kv[1][0],
                        "sample_lines": kv[1][1],
                    }
                )
            )
        findings.append(
            parsed.malformed
            | "MalformedKey" >> beam.Map(lambda m: ("malformed", f"{m.line_ref}: {m.reason}"))
            | "CountMalformed" >> beam.CombinePerKey(_CountAndSample())
            | "MalformedRecord"
            >> beam.Map(
                lambda kv: {
                    "record": "malformed",
                    "split": UNSPLIT,
                    "count": kv[1][0],
                    "sample_lines": kv[1][1],
                }
            )
        )
        findings.append(
            parsed.file_findings
            | "FileRecord"
            >> beam.Map(
                lambda f: {
                    "record": "file",
                    "split": UNSPLIT,
                    "file": f.file,
                    "kind": f.kind,
                    "column": f.column,
                    "detail": f.detail,
                }
            )
        )
        _ = (
            findings
            | "FlattenFindings" >> beam.Flatten()
            | "FindingsToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
            | "WriteFindings"
            >> beam.io.WriteToText(
                os.path.join(self._findings_dir, "findings"),
                file_name_suffix=".jsonl",
            )
        )
        return result


class CsvIngestGenSpec(types.ComponentSpec):
    """FileBasedExampleGen's spec plus the dataset description as JSON."""

    PARAMETERS = dict(
        standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        **{DESCRIPTION_KEY: ExecutionParameter(type=str)},
    )
    INPUTS = standard_component_specs.FileBasedExampleGenSpec.INPUTS
    OUTPUTS = standard_component_specs.FileBasedExampleGenSpec.OUTPUTS


class CsvIngestGen(example_gen_component.FileBasedExampleGen):
    """ExampleGen for described CSV data; see the module docstring."""

    SPEC_CLASS = CsvIngestGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, description: dict[str, Any]):
        """Creates the component.

        Args:
            input_base: folder with the CSV files.
            description: `Description.to_dict()` of the dataset.
        """
        input_config = example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(
                    name="all", pattern=description["file_pattern"]
                )
            ]
        )
        # The hash buckets only name the splits: the executor splits by time.
        output_config = example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
                    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
                ]
            )
        )
        # Bypass FileBasedExampleGen.__init__ so the spec gets the extra
        # parameter; the driver reads the same keys as for the stock spec.
        spec = CsvIngestGenSpec(
            input_base=input_base,
            input_config=input_config,
            output_config=output_config,
            custom_config=None,
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            examples=types.Channel(type=example_gen_component.standard_artifacts.Examples),
            **{DESCRIPTION_KEY: json.dumps(description, sort_keys=True)},
        )
        super(example_gen_component.FileBasedExampleGen, self).__init__(spec=spec)


def read_findings(examples_uri: str) -> List[Dict[str, Any]]:
    """Reads the findings records the executor wrote into an Examples artifact."""
    records: list[dict[str, Any]] = []
    pattern = os.path.join(examples_uri, FINDINGS_DIR, FINDINGS_PATTERN)
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


