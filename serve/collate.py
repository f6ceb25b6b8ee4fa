"""`python -m serve.collate --store URL --out DIR`: the study-wide tables, in CSV and Parquet.

Writes DIR/participants, DIR/days, DIR/hours and DIR/episodes, each as .csv and .parquet, with the
columns docs/data-dictionary.md describes (store/collate.py makes them; a test keeps the two equal).
The tables are written a few participants at a time: each part is appended to the CSV file and
written as a row group of the Parquet file, so memory stays flat however many participants there are.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from har.config import load_params


def write_tables(parts, out: Path) -> dict:
    """Write each table's parts (store.collate.study_tables) to OUT/<table>.csv and .parquet; rows per table."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from store.collate import arrow_schema, arrow_table, column_types

    def open_files(name: str, types: dict) -> tuple:
        schema = arrow_schema(types)
        return pq.ParquetWriter(out / f"{name}.parquet", schema), pa_csv.CSVWriter(out / f"{name}.csv", schema)

    out.mkdir(parents=True, exist_ok=True)
    files, rows = {}, {}
    try:
        for types, tables in parts:
            for name, frame in tables.items():
                if name not in files:
                    files[name], rows[name] = open_files(name, types[name]), 0
                table = arrow_table(frame, types[name])
                for writer in files[name]:
                    writer.write_table(table)
                rows[name] += len(frame)
        for name, types in column_types([]).items():  # a store without participants: the tables, empty
            if name not in files:
                files[name], rows[name] = open_files(name, types), 0
    finally:
        for writers in files.values():
            for writer in writers:
                writer.close()
    return rows


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
