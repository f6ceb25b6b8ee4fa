"""`python -m serve.collate`: the study-wide tables, and docs/data-dictionary.md equal to what is written."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq

from store_db import postgres_server, store, store_url  # noqa: F401  (fixtures)
from store_helpers import ACTIVITIES, answer, fused
from test_store import ROOT_DIR

DICTIONARY = ROOT_DIR / "docs" / "data-dictionary.md"


def documented_columns(activities: list[str]) -> dict[str, dict[str, str]]:
    """Each table's columns as the dictionary lists them, `<activity>` expanded, with their types."""
    tables, current = {}, None
    for line in DICTIONARY.read_text().splitlines():
        heading = re.match(r"^## (\w+)$", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
        cell = re.match(r"^\| `([^`]+)` \| (\w+) \|", line)
        if cell and current is not None:
            name, kind = cell.groups()
            current.update({name.replace("<activity>", a): kind for a in activities} if "<activity>" in name
                           else {name: kind})
    return tables


def test_collate_writes_the_tables_the_data_dictionary_describes(store, store_url, tmp_path):
    store.ingest("p1", content_hash="a", fused=fused(60, 1), timezone="Europe/Berlin", answer=answer(
        "2025-06-07T00:00:00", [("sitting", 0, 17 * 3600), ("not_worn", 17 * 3600, 24 * 3600)]))
    store.ingest("p1", content_hash="b", fused=fused(60, 2), timezone="Europe/Berlin", answer=answer(
        "2025-06-09T22:30:00", [("typing", 0, 3600), ("clapping", 3600, 7200)]))
    store.ingest("p2", content_hash="c", fused=fused(60, 3), timezone="UTC",
                 answer=answer("2025-06-09T08:00:00", [("typing", 0, 3600)]))
    out = tmp_path / "tables"
    done = subprocess.run([sys.executable, "-m", "serve.collate", "--store", store_url, "--out", str(out)],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == {"participants": 2, "days": 5, "hours": 24 * 5, "episodes": 5}
    documented = documented_columns(ACTIVITIES)
    assert sorted(documented) == ["days", "episodes", "hours", "participants"]
    as_arrow = {"text": "string", "date": "string", "integer": "int64", "number": "double", "boolean": "bool"}
    for table, columns in documented.items():
        assert list(pd.read_csv(out / f"{table}.csv").columns) == list(columns), table
        schema = pq.read_schema(out / f"{table}.parquet")
        assert {f.name: str(f.type) for f in schema} == {c: as_arrow[kind] for c, kind in columns.items()}, table
    days = pd.read_parquet(out / "days.parquet")
    p1 = days[days["subject"] == "p1"].set_index("date")
    assert list(p1.index) == ["2025-06-07", "2025-06-08", "2025-06-09", "2025-06-10"]  # the 8th: nothing recorded
    # 17 h of windows sharing 0.7 with sitting (store_helpers.basis_of): estimated 714 of the 1020 counted minutes
    assert p1.loc["2025-06-07", "sitting_counted_min"] == 1020.0 and bool(p1.loc["2025-06-07", "valid_day"])
    assert p1.loc["2025-06-07", "sitting_min"] == 714.0
    assert p1.loc["2025-06-07", "sitting_min_low"] < 714.0 < p1.loc["2025-06-07", "sitting_min_high"] <= 1020.0
    assert p1.loc["2025-06-07", "unestimated_min"] == 0.0
    assert p1.loc["2025-06-08", "recorded_min"] == 0.0 and not p1.loc["2025-06-08", "valid_day"]
    assert p1.loc["2025-06-09", "typing_counted_min"] == 60.0  # clapping 23:30-00:30 is split at midnight:
    assert (p1.loc["2025-06-09", "clapping_counted_min"], p1.loc["2025-06-10", "clapping_counted_min"]) == (30.0, 30.0)
    assert p1.loc["2025-06-09", "typing_min"] == 46.5  # 0.7 of its own hour, 0.15 of clapping's half hour
    people = pd.read_csv(out / "participants.csv").set_index("subject")
    assert people.loc["p1", "valid_days"] == 1 and people.loc["p1", "sitting_min_weekend_mean"] == 714.0
    assert pd.isna(people.loc["p1", "sitting_min_weekday_mean"])  # no valid weekday
    hours = pd.read_csv(out / "hours.csv")
    assert hours.groupby("subject")["typing_counted_min"].sum().to_dict() == {"p1": 60.0, "p2": 60.0}
    # p1: 0.15 of the 17 sitting hours and of the clapping hour, 0.7 of the typing hour
    assert hours.groupby("subject")["typing_min"].sum().round(3).to_dict() == {"p1": 204.0, "p2": 42.0}
    episodes = pd.read_parquet(out / "episodes.parquet")
    assert list(episodes["start_time"][episodes["subject"] == "p2"]) == ["2025-06-09T08:00:00.000+00:00"]


def test_collate_of_an_empty_store_writes_the_tables_with_their_columns(store, store_url, tmp_path):
    out = tmp_path / "tables"
    done = subprocess.run([sys.executable, "-m", "serve.collate", "--store", store_url, "--out", str(out)],
                          cwd=ROOT_DIR, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == {"participants": 0, "days": 0, "hours": 0, "episodes": 0}
    for table, columns in documented_columns([]).items():
        assert list(pd.read_csv(out / f"{table}.csv").columns) == list(columns), table
        assert pq.read_table(out / f"{table}.parquet").num_rows == 0
