"""Study-wide tables from the store: participants, days, hours, episodes (docs/data-dictionary.md).

Column names are plain and stable, in the field's style (stepcount's and GGIR's day summaries):
`date`, `worn_min`, `<activity>_min`, `valid_day`. `<activity>_min` is the minutes estimate (har/minutes.py),
with its 90 % interval in `<activity>_min_low` and `<activity>_min_high` and the count of the timeline's
confident labels in `<activity>_counted_min`. The activity columns are the union of the activities of every
participant's newest scorings, in the order first seen, so all participants share one set.

The tables come a few participants at a time (`study_tables`), each part from the store's summary rows
(and, for `episodes`, the stored episodes) of those participants only: memory stays flat in the number
of participants, and serve/collate.py appends each part to the files. Each part becomes one Arrow table
with the column types of `column_types`, written as CSV (Arrow's writer: a header, text in quotes, empty
where a value is missing) and as a Parquet row group; GET /subjects/{subject}/days.csv is written the same
way (`days_csv`).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from store.days import NOT_WORN, UNCERTAIN, day_dicts, estimated

STATE_COLUMNS = {"recorded_min": "recorded_minutes", "worn_min": "worn_minutes", "not_worn_min": "not_worn_minutes",
                 "uncertain_min": "uncertain_minutes", "overlap_min": "overlap_minutes",
                 "unestimated_min": "unestimated_minutes"}


def minutes_columns(activities: list[str]) -> list[str]:
    """The estimate of each activity, then its interval's bounds, then the counted minutes."""
    return [f"{a}{suffix}" for suffix in ("_min", "_min_low", "_min_high", "_counted_min") for a in activities]


def activity_minutes(minutes: dict, interval: dict, counted: dict, activities: list[str]) -> dict:
    """A day's or an hour's minutes fields (store.days.minutes_fields) as its table's activity columns."""
    row = {}
    for a in activities:
        bounds = interval.get(a)
        row.update({f"{a}_min": minutes.get(a, 0.0), f"{a}_min_low": np.nan if bounds is None else bounds[0],
                    f"{a}_min_high": np.nan if bounds is None else bounds[1], f"{a}_counted_min": counted.get(a, 0.0)})
    return row


def days_frame(subject: str, days: list[dict], activities: list[str]) -> pd.DataFrame:
    """GET /subjects/{subject}/days as a table: one row per participant-day."""
    rows = [{"subject": subject, "date": d["date"], "weekday": d["weekday"], "day_hours": d["day_hours"],
             "recordings": d["recordings"], **{c: d[k] for c, k in STATE_COLUMNS.items()},
             **activity_minutes(d["minutes_per_activity"], d["minutes_interval_90"], d["counted_minutes_per_activity"],
                                activities),
             **{f"{a}_episodes": d["episodes_per_activity"].get(a, 0) for a in activities},
             "valid_day": d["valid"]} for d in days]
    return pd.DataFrame(rows, columns=list(column_types(activities)["days"]))


def hours_frame(subject: str, hours: pd.DataFrame, activities: list[str]) -> pd.DataFrame:
    """One row per participant and local hour (a 25-hour day has one `hour` twice; `hour_start` tells them apart)."""
    minutes = lambda seconds: np.round(np.asarray(seconds, float) / 60.0, 3)
    worn = (hours["recorded_s"] - hours[NOT_WORN]).to_numpy(float)
    estimate, bounds, unestimated = estimated(hours, activities, worn, len(hours))
    frame = pd.DataFrame({"subject": subject, "date": [d.isoformat() for d in hours["date"]],
                          "hour": hours["hour"].astype(int), "hour_start": hours["hour_start"],
                          "recorded_min": minutes(hours["recorded_s"]), "worn_min": minutes(worn),
                          "not_worn_min": minutes(hours[NOT_WORN]), "uncertain_min": minutes(hours[UNCERTAIN]),
                          "overlap_min": minutes(hours["overlap_s"]), "unestimated_min": minutes(unestimated)})
    lacking = np.array([b is None for b in bounds], bool)
    low = np.array([np.full(len(activities), np.nan) if b is None else b[:, 0] for b in bounds]).reshape(-1, len(activities))
    high = np.array([np.full(len(activities), np.nan) if b is None else b[:, 1] for b in bounds]).reshape(-1, len(activities))
    for k, activity in enumerate(activities):
        frame[f"{activity}_min"] = minutes(estimate[:, k])
        frame[f"{activity}_min_low"] = np.where(lacking, np.nan, minutes(low[:, k]))
        frame[f"{activity}_min_high"] = np.where(lacking, np.nan, minutes(high[:, k]))
        frame[f"{activity}_counted_min"] = minutes(hours[activity]) if activity in hours else 0.0
    return frame[list(column_types(activities)["hours"])].reset_index(drop=True)


def participants_frame(people: list[dict], days: pd.DataFrame, activities: list[str]) -> pd.DataFrame:
    """One row per participant: days, valid days, and weekday and weekend means over the valid days."""
    rows = []
    for person in people:
        mine = days[days["subject"] == person["subject"]]
        valid = mine[mine["valid_day"].astype(bool)]
        weekend = valid["weekday"].isin(["Saturday", "Sunday"])
        row = {"subject": person["subject"], "timezone": person["timezone"], "recordings": person["recordings"],
               "first_date": person["first_day"], "last_date": person["last_day"], "days": len(mine),
               "valid_days": len(valid), "valid_weekdays": int((~weekend).sum()),
               "valid_weekend_days": int(weekend.sum())}
        for column in ["worn_min", *[f"{a}_min" for a in activities]]:
            for group, part in (("weekday", valid[~weekend]), ("weekend", valid[weekend])):
                row[f"{column}_{group}_mean"] = round(float(part[column].mean()), 3) if len(part) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=list(column_types(activities)["participants"]))


def column_types(activities: list[str]) -> dict[str, dict[str, str]]:
    """Each table's columns in order, with the type the data dictionary gives (text, date, integer, number,
    boolean): every part of a table is written with these, whatever one part happens to hold."""
    minutes = [*STATE_COLUMNS, *minutes_columns(activities)]
    return {
        "participants": {"subject": "text", "timezone": "text", "recordings": "integer", "first_date": "date",
                         "last_date": "date", "days": "integer", "valid_days": "integer", "valid_weekdays": "integer",
                         "valid_weekend_days": "integer", "worn_min_weekday_mean": "number",
                         "worn_min_weekend_mean": "number", **{f"{a}_min_weekday_mean": "number" for a in activities},
                         **{f"{a}_min_weekend_mean": "number" for a in activities}},
        "days": {"subject": "text", "date": "date", "weekday": "text", "day_hours": "number",
                 "recordings": "integer", **dict.fromkeys(minutes, "number"),
                 **{f"{a}_episodes": "integer" for a in activities}, "valid_day": "boolean"},
        "hours": {"subject": "text", "date": "date", "hour": "integer", "hour_start": "text",
                  **dict.fromkeys(minutes, "number")},
        "episodes": {"subject": "text", "recording_id": "integer", "scoring_id": "integer", "label": "text",
                     "start_time": "text", "end_time": "text", "duration_s": "number", "windows": "integer",
                     "mean_confidence": "number"}}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts one after another (the empty ones only give the columns)."""
    full = [f for f in frames if len(f)]
    return pd.concat(full, ignore_index=True) if full else frames[0]


ARROW_TYPES = {"text": "string", "date": "string", "integer": "int64", "number": "float64", "boolean": "bool"}


def arrow_schema(types: dict[str, str]):
    import pyarrow as pa

    return pa.schema([(column, pa.type_for_alias(ARROW_TYPES[kind])) for column, kind in types.items()])


def arrow_table(frame: pd.DataFrame, types: dict[str, str]):
    """`frame` as an Arrow table of exactly `types`' columns and types (NaN: missing)."""
    import pyarrow as pa

    return pa.Table.from_pandas(frame, schema=arrow_schema(types), preserve_index=False)


def csv_text(table) -> str:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink)
    return sink.getvalue().to_pybytes().decode()


def days_csv(store, subject: str, date_from=None, date_to=None) -> str:
    """GET /subjects/{subject}/days.csv: the collated `days` table's rows of `subject`."""
    activities = store.activities()
    frame = days_frame(subject, store.days(subject, date_from, date_to), activities)
    return csv_text(arrow_table(frame, column_types(activities)["days"]))


def study_tables(store, participants_per_chunk: int = 10) -> Iterator[tuple[dict, dict]]:
    """(column types, {table: part}) for every few participants of the store, from one snapshot of it."""
    for activities, people, episodes in store.study_chunks(participants_per_chunk):
        days = _concat([days_frame(p["subject"], day_dicts(p["days"], p["labels"],
                                                           min_worn_hours=store.min_worn_hours), activities)
                        for p in people])
        hours = _concat([hours_frame(p["subject"], p["hours"], activities) for p in people])
        people = [{**p, "first_day": p["days"].dates[0].isoformat() if len(p["days"].dates) else None,
                   "last_day": p["days"].dates[-1].isoformat() if len(p["days"].dates) else None} for p in people]
        yield column_types(activities), {"participants": participants_frame(people, days, activities), "days": days,
                                         "hours": hours, "episodes": episodes}
