"""The store's days and hours as they were computed before summaries were kept (main 0c795e0): at read time, from
every episode of a participant's whole history, resolved in one pass. Kept as the reference the summaries
must equal (tests/test_store_summaries.py) and as the baseline bench/store.py times.

It reads the stored episodes and recordings (store.queries) and uses store/days.py's arithmetic over the
whole history at once (`hours_table` without `dates`), where the store runs it over a recording's days
at ingest and reads the kept sums.
"""
from __future__ import annotations

import pandas as pd

from store import _labels, _local_days, queries
from store import days as day_math
from store.summaries import timeline_frame


def timeline(store, subject: str):
    """(person, hours, runs, labels, recordings per day) of `subject` from all their episodes."""
    with store.transaction() as conn:
        person = queries.participant(conn, subject)
        columns = queries.episode_columns(conn, [person.id])
        labels = _labels([r.labels for r in queries.newest_labels(conn, [person.id])])
        recordings = queries.recordings(conn, [person.id])
        scorings = queries.newest_scorings(conn, [person.id])
        bases = queries.bases_of(conn, [s[0] for s in scorings])
        label_lists = [r.labels for r in queries.scoring_labels(conn, [s[0] for s in scorings])]
    # scorings come ordered by recording start, then id: priority is the recording's rank in that order
    rank = {s[0]: k for k, s in enumerate(scorings)}
    start_epoch = {s[0]: s[3] for s in scorings}
    frame, activities = timeline_frame(columns, start_epoch, rank, bases, label_lists)
    hours, runs = day_math.hours_table(frame, person.timezone, list(dict.fromkeys([*labels, *activities])))
    per_day: dict = {}
    for r in recordings:
        for day in _local_days(r.start_epoch, r.end_epoch, person.timezone):
            key = pd.Timestamp(day).date()
            per_day[key] = per_day.get(key, 0) + 1
    return person, hours, runs, labels, per_day


def days(store, subject: str, date_from=None, date_to=None, *, min_worn_hours: float | None = None) -> list[dict]:
    rule = store.min_worn_hours if min_worn_hours is None else min_worn_hours
    _, hours, runs, labels, per_day = timeline(store, subject)
    every = day_math.day_dicts(day_math.day_table(hours, runs, per_day), labels, min_worn_hours=rule)
    return [d for d in every if (date_from is None or d["date"] >= str(date_from))
            and (date_to is None or d["date"] <= str(date_to))]


def hours(store, subject: str) -> dict:
    person, hours_, _, labels, _ = timeline(store, subject)
    return {"subject": subject, "timezone": person.timezone, **day_math.hour_profile(hours_, labels)}


def hour_rows(store, subject: str) -> pd.DataFrame:
    return timeline(store, subject)[1]


def subjects(store) -> list[dict]:
    with store.transaction() as conn:
        people = queries.participants(conn)
        counts = queries.recording_counts(conn)
    result = []
    for person in people:
        rows = days(store, person.subject)
        result.append({"subject": person.subject, "timezone": person.timezone, "recordings": counts.get(person.id, 0),
                       "first_day": rows[0]["date"] if rows else None, "last_day": rows[-1]["date"] if rows else None,
                       "days": len(rows), "valid_days": sum(d["valid"] for d in rows)})
    return result
