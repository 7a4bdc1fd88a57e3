"""`recguard schema`: a curated schema draft from data and its description.

The draft is TFDV's inferred schema (the same inference SchemaGen runs) for
the data as the pipeline's ExampleGen reads it, rewritten by
`pipeline.contract.curate_schema`. Review it before it replaces the
contract in ``schema/``.
"""

from __future__ import annotations

import glob
import os
import tempfile

import tensorflow as tf
import tensorflow_data_validation as tfdv

from components import csv_parsing
from components.ingest import _column_specs, _to_example
from pipeline import contract
from pipeline.dataset import Description


class SchemaDraftError(ValueError):
    """Raised when no data can be read for the draft."""


def infer_schema(description: Description, data_dir: str):
    """Returns TFDV's inferred schema for the data, as SchemaGen would see it."""
    as_dict = description.to_dict()
    files = sorted(glob.glob(os.path.join(data_dir, description.file_pattern)))
    if not files:
        raise SchemaDraftError(
            f"no files match {description.file_pattern!r} in {data_dir}; pass --data "
            "with the folder of CSV files"
        )
    columns = _column_specs(as_dict)
    types = {c.name: c.type for c in columns}
    with tempfile.TemporaryDirectory() as temp:
        path = os.path.join(temp, "examples.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            for name in files:
                with open(name, "rb") as f:
                    text = csv_parsing.decode_file_bytes(f.read())
                for item in csv_parsing.parse_csv_text(
                    text,
                    os.path.basename(name),
                    columns,
                    frozenset(description.na_tokens),
                    description.time_column,
                    description.time_format,
                    string_na_tokens=frozenset(description.string_na_tokens),
                ):
                    if isinstance(item, csv_parsing.ParsedRow):
                        writer.write(_to_example(item, types))
        statistics = tfdv.generate_statistics_from_tfrecord(path)
    return tfdv.infer_schema(statistics, infer_feature_shape=False)


def write_draft(description: Description, data_dir: str, out_path: str) -> None:
    """Writes the curated draft for `description` and the data to `out_path`."""
    curated = contract.curate_schema(description, infer_schema(description, data_dir))
    header = (
        f"Curated data contract for the dataset {description.name!r}.\n"
        "Written by `recguard schema` from TFDV's inferred schema and the curation\n"
        "rules in pipeline/contract.py; schema/README.md gives the reason for each rule."
    )
    contract.write_schema(curated, out_path, header)
