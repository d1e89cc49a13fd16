#!/usr/bin/env python3
"""Checks a CSV written by `attnflow bench data` with pandas + pandera.

The schema is the same as attnflow's bench schema (crates/attnflow-bench/src/
data.rs, BENCH_SCHEMA): six columns, with unique ids, a category from a set,
bounded numbers, a bool and an anchored pattern. Validation is lazy so every
failing row is found, as attnflow does. Prints one JSON object:
{"rows": N, "invalid_rows": K, "seconds": T} where T covers reading and
validating (not Python start-up or imports).

Usage: python3 data_pandera.py FILE.csv
"""

import json
import sys
import time

import pandas as pd
import pandera.pandas as pa


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    schema = pa.DataFrameSchema(
        {
            "id": pa.Column(int, pa.Check.ge(1), nullable=False, unique=True),
            "category": pa.Column(str, pa.Check.isin(["alpha", "beta", "gamma", "delta"]), nullable=True),
            "score": pa.Column(float, [pa.Check.ge(0.0), pa.Check.le(100.0)], nullable=True),
            "count": pa.Column(int, [pa.Check.ge(0), pa.Check.le(1000)], nullable=True),
            "active": pa.Column(bool, nullable=True),
            "code": pa.Column(str, pa.Check.str_matches(r"^[A-Z]{3}-[0-9]{4}$"), nullable=True),
        },
        strict=False,
    )
    started = time.perf_counter()
    frame = pd.read_csv(path)
    invalid = 0
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        invalid = int(cases["index"].dropna().nunique())
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": int(len(frame)), "invalid_rows": invalid, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
