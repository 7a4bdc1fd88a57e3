"""A pandas in-memory data profile, the baseline for the validation stages.

Reads every CSV file of a folder into one DataFrame, counts absent (NA),
NaN and inf cells per column, and runs `describe()`. Prints a final
`BENCH_JSON {...}` line with the seconds spent reading and profiling.

    .venv/bin/python bench/pandas_profile.py --data DIR
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import pandas as pd


def profile(frame: pd.DataFrame) -> dict:
    counts = {}
    for name in frame.columns:
        column = frame[name]
        numeric = pd.api.types.is_numeric_dtype(column)
        counts[name] = {
            "absent": int(column.isna().sum()),
            "nan": int(np.isnan(column.to_numpy()).sum()) if numeric else 0,
            "inf": int(np.isinf(column.to_numpy()).sum()) if numeric else 0,
        }
    described = frame.describe(include="all")
    return {"counts": counts, "described_columns": len(described.columns)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with the CSV files")
    args = parser.parse_args()

    started = time.perf_counter()
    paths = sorted(glob.glob(os.path.join(args.data, "*.csv")))
    frame = pd.concat([pd.read_csv(p, encoding_errors="replace") for p in paths], ignore_index=True)
    read_s = time.perf_counter() - started
    result = profile(frame)
    work_s = time.perf_counter() - started
    print(json.dumps(result["counts"], indent=1))
    print("BENCH_JSON " + json.dumps({"work_s": work_s, "read_s": read_s, "rows": len(frame)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
