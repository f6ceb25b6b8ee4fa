"""`python -m serve.collate --store URL --out DIR`: the study-wide tables, in CSV and Parquet.

Writes DIR/participants, DIR/days, DIR/hours and DIR/episodes, each as .csv and .parquet, with the
columns docs/data-dictionary.md describes (store/collate.py makes them; a test keeps the two equal).
The tables are written a few participants at a time: each part is appended to the CSV file and
written as a row group of the Parquet file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from har.config import load_params

ARROW_TYPES = {"text": "string", "date": "string", "integer": "int64", "number": "float64", "boolean": "bool"}


def arrow_schema(types: dict[str, str]):
    import pyarrow as pa

    return pa.schema([(column, pa.type_for_alias(ARROW_TYPES[kind])) for column, kind in types.items()])


def write_tables(parts, out: Path) -> dict:
    """Write each table's parts (store.collate.study_tables) to OUT/<table>.csv and .parquet; rows per table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from store.collate import column_types

    out.mkdir(parents=True, exist_ok=True)
    writers, rows = {}, {}
    try:
        for types, tables in parts:
            for name, table in tables.items():
                if name not in writers:
                    writers[name] = pq.ParquetWriter(out / f"{name}.parquet", arrow_schema(types[name]))
                    table.iloc[:0].to_csv(out / f"{name}.csv", index=False)
                writers[name].write_table(pa.Table.from_pandas(table, schema=writers[name].schema, preserve_index=False))
                table.to_csv(out / f"{name}.csv", mode="a", header=False, index=False)
                rows[name] = rows.get(name, 0) + len(table)
        for name, types in column_types([]).items():  # a store without participants: the tables, empty
            if name not in writers:
                writers[name] = pq.ParquetWriter(out / f"{name}.parquet", arrow_schema(types))
                (out / f"{name}.csv").write_text(",".join(types) + "\n")
                rows[name] = 0
    finally:
        for writer in writers.values():
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
