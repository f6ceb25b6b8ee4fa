"""Days and hours kept at ingest: a participant's summary rows (store/tables.py), recomputed for the days a
new scoring touches, in the transaction that stores it; read back for days, hours and collate.

Beside the timeline's seconds (the counted minutes) the rows keep the minutes estimate's sums over the same
resolved seconds (har/minutes.py): each scoring's worn windows, with the shares its minutes basis keeps,
enter the resolution in place of its worn episodes (store/days.py `estimate_frame`).

A scoring changes the timeline only inside the span its episodes cover, and a run's start only inside
that span or at its end. So storing one recomputes the participant's local dates from the first that
span (or the recording) touches to the date of its end (the "dirty days"), with store/days.py's
arithmetic, over the episodes of every recording that reaches those days: overlaps between recordings
are resolved once per second exactly as over the whole history, and no other day is read or written.
"""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from store import days as day_math
from store import queries
from store.tables import SummaryDay, SummaryDayLabel, SummaryHour, SummaryHourLabel

DAY = timedelta(days=1)


def dirty_dates(timezone: str, recording: tuple[float, float], covered: list) -> tuple:
    """The first and last local date whose summaries a scoring changes: the recording's own days (its count of
    recordings) and, for each covered span (the new scoring's, the one it supersedes), its dates up to the date
    of its end itself (a run that began there may now begin earlier)."""
    start, end = recording
    first = [day_math.local_date(start, timezone)]
    last = [day_math.local_date(max(start, end - 1e-6), timezone)]
    for span in covered:
        if span is not None and span[0] is not None:
            first.append(day_math.local_date(span[0], timezone))
            last.append(day_math.local_date(span[1], timezone))
    return min(first), max(last)


def recordings_per_day(recordings, first, last, timezone: str) -> dict:
    """date -> recordings touching it (a recording touches its local dates from start to end), first..last."""
    counts: dict = {}
    for r in recordings:
        day = day_math.local_date(r.start_epoch, timezone)
        end = day_math.local_date(max(r.start_epoch, r.end_epoch - 1e-6), timezone)
        while day <= end:
            if first <= day <= last:
                counts[day] = counts.get(day, 0) + 1
            day += DAY
    return counts


def refresh(conn, participant_id: int, timezone: str, first, last) -> None:
    """Recompute the participant's summary rows of local dates first..last from the newest scorings' episodes."""
    start, end = day_math.local_midnights(pd.DatetimeIndex([first, last + DAY]), timezone)
    reaching = queries.recordings_reaching(conn, participant_id, float(start), float(end))
    scorings = [r for r in reaching
                if r.covered_start is not None and r.covered_start <= end and r.covered_end >= start]
    # `reaching` is in the order that decides overlaps: the recording that started first (then the lower id) wins
    rank = {r.scoring_id: k for k, r in enumerate(scorings)}
    start_epoch = {r.scoring_id: r.start_epoch for r in scorings}
    rows = queries.columns(queries.episodes_of(conn, list(rank)), ["scoring_id", "label", "start_s", "end_s"])
    frame, activities = timeline_frame(rows, start_epoch, rank, queries.bases_of(conn, list(rank)),
                                       [r.labels for r in queries.scoring_labels(conn, list(rank))])
    hours, runs = day_math.hours_table(frame, timezone, activities, dates=(first, last), hour_text=False)
    days = day_math.day_table(hours, runs, recordings_per_day(reaching, first, last, timezone))
    queries.replace_summaries(conn, participant_id, first.isoformat(), last.isoformat(),
                              summary_rows(participant_id, hours, days))


def timeline_frame(rows: dict, start_epoch: dict, rank: dict, bases: dict, label_lists: list) -> tuple:
    """(the intervals `hours_table` resolves with the estimate's values, the activities they name) from the
    scorings' episode columns (scoring_id, label, start_s, end_s), each scoring's recording start and rank
    (lower wins an overlap), their minutes bases (queries.bases_of) and activity lists."""
    scoring = np.asarray(rows["scoring_id"], np.int64) if len(rows["scoring_id"]) else np.zeros(0, np.int64)
    episodes = day_math.episode_frame([start_epoch[s] for s in scoring.tolist()], rows["label"], rows["start_s"],
                                      rows["end_s"], [rank[s] for s in scoring.tolist()])
    given = np.asarray(rows["label"], dtype=object)
    activities = list(dict.fromkeys([a for labels in label_lists for a in labels]
                                    + [l for l in pd.unique(given) if l not in day_math.STATES]))
    on_the_clock = {s: None if basis is None else {**basis, "start": start_epoch[s] + basis["start_s"],
                                                   "end": start_epoch[s] + basis["end_s"]}
                    for s, basis in bases.items()}
    return day_math.estimate_frame(episodes, scoring[episodes.index.to_numpy()], on_the_clock, activities), activities


def label_values(table, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds, estimate, interval half-width) [rows, labels] of a day table's or an hours table's labels."""
    values = table.values if isinstance(table, day_math.DayTable) else table
    seconds = (table.seconds if isinstance(table, day_math.DayTable) else table)[names].to_numpy(float)

    def matrix(prefix: str) -> np.ndarray:
        return np.column_stack([values[prefix + n].to_numpy(float) if prefix + n in values else np.zeros(len(values))
                                for n in names]) if names else np.zeros((len(values), 0))

    return seconds, matrix(day_math.ESTIMATE), matrix(day_math.INTERVAL)


def scalar(values: pd.DataFrame, name: str) -> np.ndarray:
    return values[name].to_numpy(float) if name in values else np.zeros(len(values))


def summary_rows(participant_id: int, hours: pd.DataFrame, days: day_math.DayTable) -> dict:
    """The rows of the four summary tables for `hours_table`'s bins and their `day_table`: only what holds
    time (or, for a date, a recording; for a label, counted or estimated time), as plain Python numbers."""
    names = list(days.seconds.columns)
    day_iso = [d.isoformat() for d in days.dates]
    kept = np.flatnonzero((days.recorded_s > 0) | (days.recordings > 0))
    unestimated, no_interval = scalar(days.values, day_math.UNESTIMATED), scalar(days.values, day_math.NO_INTERVAL)
    day_rows = [{"participant_id": participant_id, "date": day_iso[k], "recordings": n, "recorded_seconds": r,
                 "overlap_seconds": o, "unestimated_seconds": u, "no_interval_seconds": x}
                for k, n, r, o, u, x in zip(kept.tolist(), days.recordings[kept].tolist(),
                                            days.recorded_s[kept].tolist(), days.overlap_s[kept].tolist(),
                                            unestimated[kept].tolist(), no_interval[kept].tolist())]
    seconds, estimate, interval = label_values(days, names)
    episodes = days.episodes.to_numpy(np.int64)
    day, label = np.nonzero((seconds > 0) | (estimate > 0) | (interval > 0))
    day_label_rows = [{"participant_id": participant_id, "date": day_iso[k], "label": names[j], "seconds": v,
                       "episodes": e, "estimate_seconds": m, "interval_seconds": h}
                      for k, j, v, e, m, h in zip(day.tolist(), label.tolist(), seconds[day, label].tolist(),
                                                  episodes[day, label].tolist(), estimate[day, label].tolist(),
                                                  interval[day, label].tolist())]
    recorded = hours[hours["recorded_s"] > 0]
    bin_iso = [d.isoformat() for d in recorded["date"]]
    places = recorded["bin"].to_numpy(np.int64).tolist()
    hour_rows = [{"participant_id": participant_id, "date": d, "bin": b, "hour": h, "recorded_seconds": r,
                  "overlap_seconds": o, "unestimated_seconds": u, "no_interval_seconds": x}
                 for d, b, h, r, o, u, x in zip(bin_iso, places, recorded["hour"].to_numpy(np.int64).tolist(),
                                                recorded["recorded_s"].tolist(), recorded["overlap_s"].tolist(),
                                                scalar(recorded, day_math.UNESTIMATED).tolist(),
                                                scalar(recorded, day_math.NO_INTERVAL).tolist())]
    seconds, estimate, interval = label_values(recorded, names)
    at, label = np.nonzero((seconds > 0) | (estimate > 0) | (interval > 0))
    hour_label_rows = [{"participant_id": participant_id, "date": bin_iso[k], "bin": places[k], "label": names[j],
                        "seconds": v, "estimate_seconds": m, "interval_seconds": h}
                       for k, j, v, m, h in zip(at.tolist(), label.tolist(), seconds[at, label].tolist(),
                                                estimate[at, label].tolist(), interval[at, label].tolist())]
    return {SummaryDay: day_rows, SummaryDayLabel: day_label_rows, SummaryHour: hour_rows,
            SummaryHourLabel: hour_label_rows}


def rebuild(conn) -> None:
    """Every participant's summaries from their whole history (the migration that adds the tables)."""
    for participant_id, timezone, start, end, covered_start, covered_end in queries.participant_spans(conn):
        first, last = dirty_dates(timezone, (start, end), [(covered_start, covered_end)])
        refresh(conn, participant_id, timezone, first, last)


# --- reads -------------------------------------------------------------------------------------------------
# The summary rows come ordered by participant, date (and bin, label); they are taken apart as columns, so
# that a year of hour rows (some 80,000) costs array operations rather than a Python step per row.
def _day_numbers(dates: np.ndarray) -> np.ndarray:
    """YYYY-MM-DD strings in runs of equal dates -> days since 1970 (each distinct run parsed once)."""
    if not len(dates):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    days = np.asarray(dates[starts].astype(str), dtype="datetime64[D]").astype(np.int64)
    return np.repeat(days, np.diff(np.r_[starts, len(dates)]))


def _by_participant(columns: dict[str, np.ndarray], ids: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """The columns cut into each participant's rows (the rows are ordered by participant)."""
    pid = np.asarray(columns["participant_id"], np.int64)
    bounds = {p: (np.searchsorted(pid, p, "left"), np.searchsorted(pid, p, "right")) for p in ids}
    return {p: {name: column[a:b] for name, column in columns.items()} for p, (a, b) in bounds.items()}


def _label_matrix(labels: np.ndarray, names: list[str], at: np.ndarray, values, shape, dtype=float) -> np.ndarray:
    """values placed at (row `at`, column of the label) of a zero matrix with one column per name."""
    matrix = np.zeros(shape, dtype)
    column = pd.Categorical(labels, categories=names).codes
    matrix[at, column] = values
    return matrix


DAY_COLUMNS = ["participant_id", "date", "recordings", "recorded_seconds", "overlap_seconds", "unestimated_seconds",
               "no_interval_seconds"]
DAY_LABEL_COLUMNS = ["participant_id", "date", "label", "seconds", "episodes", "estimate_seconds", "interval_seconds"]
HOUR_ROW_COLUMNS = ["participant_id", "date", "bin", "hour", "recorded_seconds", "overlap_seconds",
                    "unestimated_seconds", "no_interval_seconds"]
HOUR_LABEL_COLUMNS = ["participant_id", "date", "bin", "label", "seconds", "estimate_seconds", "interval_seconds"]


def day_tables(conn, people: list, date_from=None, date_to=None) -> dict:
    """participant id -> DayTable of every local date from their first to their last recorded one (within
    date_from..date_to), from the summary rows; dates with nothing recorded are zeros. `people`: rows with id
    and timezone."""
    ids = sorted(p.id for p in people)
    low = None if date_from is None else str(date_from)
    high = None if date_to is None else str(date_to)
    totals = _by_participant(queries.columns(queries.summary_days(conn, ids), DAY_COLUMNS), ids)
    labels = _by_participant(queries.columns(queries.summary_day_labels(conn, ids, low, high), DAY_LABEL_COLUMNS), ids)
    return {p.id: _day_table(totals[p.id], labels[p.id], p.timezone, low, high) for p in people}


def _day_table(totals: dict, labels: dict, timezone: str, low: str | None, high: str | None) -> day_math.DayTable:
    recorded_dates = totals["date"][totals["recorded_seconds"] > 0]
    first = max([recorded_dates[0], *([low] if low else [])]) if len(recorded_dates) else None
    last = min([recorded_dates[-1], *([high] if high else [])]) if len(recorded_dates) else None
    names = list(dict.fromkeys([*day_math.STATES, *pd.unique(labels["label"])]))
    value_names = [*(day_math.ESTIMATE + n for n in names), *(day_math.INTERVAL + n for n in names),
                   day_math.UNESTIMATED, day_math.NO_INTERVAL]
    if first is None or first > last:
        return day_math.DayTable(dates=np.zeros(0, object), day_hours=np.zeros(0), recordings=np.zeros(0, np.int64),
                                 recorded_s=np.zeros(0), overlap_s=np.zeros(0), seconds=pd.DataFrame(columns=names),
                                 episodes=pd.DataFrame(columns=names), values=pd.DataFrame(columns=value_names))
    origin = np.datetime64(first, "D").astype(np.int64)
    n = int(np.datetime64(last, "D").astype(np.int64) - origin) + 1
    inside = (totals["date"] >= first) & (totals["date"] <= last)
    at = _day_numbers(totals["date"][inside]) - origin
    recordings, recorded, overlap = np.zeros(n, np.int64), np.zeros(n), np.zeros(n)
    unestimated, no_interval = np.zeros(n), np.zeros(n)
    recordings[at] = totals["recordings"][inside]
    recorded[at] = totals["recorded_seconds"][inside]
    overlap[at] = totals["overlap_seconds"][inside]
    unestimated[at] = totals["unestimated_seconds"][inside]
    no_interval[at] = totals["no_interval_seconds"][inside]
    at = _day_numbers(labels["date"]) - origin
    estimate = _label_matrix(labels["label"], names, at, labels["estimate_seconds"], (n, len(names)))
    interval = _label_matrix(labels["label"], names, at, labels["interval_seconds"], (n, len(names)))
    return day_math.DayTable(
        dates=(np.datetime64(first, "D") + np.arange(n)).astype(object),
        day_hours=day_math.day_lengths(first, last, timezone) / 3600.0, recordings=recordings,
        recorded_s=recorded, overlap_s=overlap,
        seconds=pd.DataFrame(_label_matrix(labels["label"], names, at, labels["seconds"], (n, len(names))),
                             columns=names),
        episodes=pd.DataFrame(_label_matrix(labels["label"], names, at, labels["episodes"], (n, len(names)), np.int64),
                              columns=names),
        values=pd.DataFrame(np.column_stack([estimate, interval, unestimated, no_interval]), columns=value_names))


def hour_tables(conn, people: list, labels: dict, *, every_hour: bool) -> dict:
    """participant id -> their hour bins as `hours_table` gives them (HOUR_COLUMNS, one column per label of
    `labels[id]`, the two states and any other label stored), from the summary rows. `every_hour`: every bin
    from the first to the last recorded date (the heatmap, collate), else only the bins with recorded time
    (with date, bin, hour and the sums: the hour profile)."""
    ids = sorted(p.id for p in people)
    bins = _by_participant(queries.columns(queries.summary_hours(conn, ids), HOUR_ROW_COLUMNS), ids)
    label_rows = _by_participant(queries.columns(queries.summary_hour_labels(conn, ids), HOUR_LABEL_COLUMNS), ids)
    return {p.id: _hour_table(bins[p.id], label_rows[p.id], labels.get(p.id, []), p.timezone, every_hour)
            for p in people}


def _bin_key(days: np.ndarray, places) -> np.ndarray:
    """One sortable integer per (date, bin), from days since 1970: a day has at most 25 bins."""
    return np.asarray(days, np.int64) * 32 + np.asarray(places, np.int64)


def _hour_table(bins: dict, label_rows: dict, labels: list[str], timezone: str, every_hour: bool) -> pd.DataFrame:
    names = list(dict.fromkeys([*labels, *day_math.STATES, *pd.unique(label_rows["label"])]))
    days = _day_numbers(bins["date"])
    stored = _bin_key(days, bins["bin"])
    if every_hour:
        frame = (day_math.hour_bins(bins["date"][0], bins["date"][-1], timezone) if len(days)
                 else pd.DataFrame(columns=day_math.HOUR_COLUMNS[:-2]))
        key = _bin_key(np.asarray(frame["date"].to_numpy(), "datetime64[D]").astype(np.int64), frame["bin"])
        at = np.searchsorted(key, stored)
        for column, values in (("recorded_s", bins["recorded_seconds"]), ("overlap_s", bins["overlap_seconds"])):
            frame[column] = np.zeros(len(frame))
            frame.loc[at, column] = np.asarray(values, float)
        scalars = {}
        for column, values in ((day_math.UNESTIMATED, bins["unestimated_seconds"]),
                               (day_math.NO_INTERVAL, bins["no_interval_seconds"])):
            scalars[column] = np.zeros(len(frame))
            scalars[column][at] = np.asarray(values, float)
    else:
        frame = pd.DataFrame({"date": days.astype("datetime64[D]").astype(object),
                              "bin": np.asarray(bins["bin"], np.int64), "hour": np.asarray(bins["hour"], np.int64),
                              "recorded_s": np.asarray(bins["recorded_seconds"], float),
                              "overlap_s": np.asarray(bins["overlap_seconds"], float)})
        scalars = {day_math.UNESTIMATED: np.asarray(bins["unestimated_seconds"], float),
                   day_math.NO_INTERVAL: np.asarray(bins["no_interval_seconds"], float)}
        key = stored
    at = np.searchsorted(key, _bin_key(_day_numbers(label_rows["date"]), label_rows["bin"]))
    shape = (len(frame), len(names))
    seconds = _label_matrix(label_rows["label"], names, at, label_rows["seconds"], shape)
    estimate = _label_matrix(label_rows["label"], names, at, label_rows["estimate_seconds"], shape)
    interval = _label_matrix(label_rows["label"], names, at, label_rows["interval_seconds"], shape)
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(seconds, columns=names),
                      pd.DataFrame(estimate, columns=[day_math.ESTIMATE + n for n in names]),
                      pd.DataFrame(interval, columns=[day_math.INTERVAL + n for n in names]),
                      pd.DataFrame(scalars)], axis=1)
