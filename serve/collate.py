"""`python -m serve.collate --store URL --out DIR`: the study-wide tables, in CSV and Parquet.

Writes DIR/participants, DIR/days, DIR/hours and DIR/episodes, each as .csv and .parquet, with the
columns docs/data-dictionary.md describes (store/collate.py makes them; a test keeps the two equal).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from har.config import load_params


def write_tables(tables: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        table.to_parquet(out / f"{name}.parquet", index=False)
    return {name: len(table) for name, table in tables.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve.collate", description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="database URL (default: store.url in params.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the tables")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--min-worn-hours", type=float, help="valid-day rule (default: store.min_worn_hours)")
    args = parser.parse_args(argv)
    from store import Store
    from store.collate import study_tables

    overrides = {"min_worn_hours": args.min_worn_hours} if args.min_worn_hours is not None else {}
    store = Store.from_params(load_params(args.params), url=args.store, **overrides)
    try:
        rows = write_tables(study_tables(store), args.out)
    finally:
        store.close()
    print(json.dumps({"out": str(args.out), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
