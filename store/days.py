"""Days and hours from stored episodes, in a participant's local time zone: functions over arrays, no database.

Each episode is an interval [start, end) in seconds since 1970 UTC with one label. The covered time is
cut at every episode bound and at every local hour boundary, so each piece lies in one local hour and
has one label: minutes per day and hour are sums of exact lengths, never of rounded window counts.

- A day is a local calendar date, from one local midnight to the next: 23 or 25 hours on the days the
  clocks change. An hour bin is one hour of absolute time after local midnight; it is labelled with the
  local hour its start shows (on a 25-hour day one local hour label occurs twice, on a 23-hour day one
  is missing).
- Where recordings overlap, each second counts once: the recording that started first (then the lower
  id) gives the label, and the seconds covered more than once are reported as `overlap`.
- Episodes per activity count runs of one label in the resolved timeline, on the day the run starts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

NOT_WORN, UNCERTAIN = "not_worn", "uncertain"  # har.timeline's two states
STATES = (NOT_WORN, UNCERTAIN)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def local_midnights(dates: pd.DatetimeIndex, timezone: str) -> np.ndarray:
    """Seconds since 1970 UTC of the first instant of each date in `timezone` (a midnight the clocks skip moves on)."""
    stamps = dates.tz_localize(timezone, ambiguous=np.ones(len(dates), bool), nonexistent="shift_forward")
    return stamps.as_unit("us").asi8 / 1e6


def hour_bins(first_date, last_date, timezone: str) -> pd.DataFrame:
    """One row per hour of absolute time from local midnight of `first_date` to the end of `last_date`:
    start, end (epoch seconds), date, local hour, hour_start (local ISO time), day_hours (the date's length)."""
    dates = pd.date_range(pd.Timestamp(first_date), pd.Timestamp(last_date) + pd.Timedelta(days=1), freq="D")
    midnights = local_midnights(dates, timezone)
    day_s = np.diff(midnights)
    per_day = np.ceil(day_s / 3600.0).astype(np.int64)
    day = np.repeat(np.arange(len(day_s)), per_day)
    start = midnights[day] + 3600.0 * (np.arange(per_day.sum()) - np.repeat(np.cumsum(per_day) - per_day, per_day))
    end = np.minimum(start + 3600.0, midnights[day + 1])
    local = pd.to_datetime(np.round(start * 1e6).astype(np.int64), unit="us", utc=True).tz_convert(timezone)
    return pd.DataFrame({"start": start, "end": end, "date": np.asarray(dates[:-1].date)[day], "hour": local.hour,
                         "hour_start": [t.isoformat() for t in local], "day_hours": (day_s / 3600.0)[day]})


def local_date(epoch: float, timezone: str):
    return pd.Timestamp(epoch, unit="s", tz="UTC").tz_convert(timezone).date()


def resolve(start: np.ndarray, end: np.ndarray, codes: np.ndarray, priority: np.ndarray, edges: np.ndarray):
    """The covered time as pieces with one label each, cut at episode bounds and at `edges`.

    Episodes are [start, end) in epoch seconds with a label code and a priority (lower wins where
    recordings overlap; episodes of one priority do not overlap). Returns the covered pieces in time
    order as (start, end, code, coverage), coverage being how many recordings cover the piece.
    """
    cuts = np.unique(np.concatenate([start, end, edges]))
    first, last = np.searchsorted(cuts, start), np.searchsorted(cuts, end)
    n = len(cuts) - 1
    coverage = np.zeros(n + 1, np.int64)
    np.add.at(coverage, first, 1)
    np.add.at(coverage, last, -1)
    coverage = np.cumsum(coverage)[:n]
    owner = np.full(n, -1, np.int64)
    # Highest priority last, so that it overwrites: within one priority the pieces are disjoint.
    for level in np.unique(priority)[::-1]:
        mine = priority == level
        counts = last[mine] - first[mine]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        owner[np.repeat(first[mine], counts) + offsets] = np.repeat(codes[mine], counts)
    covered = owner >= 0
    return cuts[:-1][covered], cuts[1:][covered], owner[covered], coverage[covered]


HOUR_COLUMNS = ["start", "end", "date", "hour", "hour_start", "day_hours", "recorded_s", "overlap_s"]


def hours_table(episodes: pd.DataFrame, timezone: str, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hours, runs): seconds per label in every local hour from the first to the last recorded day, and the
    resolved timeline's runs (label, start, end, date of the start).

    `episodes`: start, end (epoch s), label, priority. Columns of `hours`: HOUR_COLUMNS, then one per label
    (`labels`, the two states, then any label of an older model's set: still counted).
    """
    names = list(dict.fromkeys([*labels, *STATES, *pd.unique(np.asarray(episodes["label"], dtype=object))]))
    if episodes.empty:
        return (pd.DataFrame(columns=[*HOUR_COLUMNS, *names]), pd.DataFrame(columns=["label", "start", "end", "date"]))
    start, end = episodes["start"].to_numpy(float), episodes["end"].to_numpy(float)
    codes = pd.Categorical(np.asarray(episodes["label"], dtype=object), categories=names).codes.astype(np.int64)
    first = local_date(start.min(), timezone)
    last = local_date(np.nextafter(end.max(), -np.inf), timezone)
    bins = hour_bins(first, last, timezone)
    bin_start = bins["start"].to_numpy()
    p_start, p_end, p_code, p_coverage = resolve(start, end, codes, episodes["priority"].to_numpy(),
                                                 np.append(bin_start, bins["end"].iloc[-1]))
    length = p_end - p_start
    where = np.searchsorted(bin_start, p_start, side="right") - 1
    seconds = np.bincount(where * len(names) + p_code, weights=length,
                          minlength=len(bins) * len(names)).reshape(len(bins), len(names))
    hours = pd.DataFrame({**{c: bins[c].to_numpy() for c in bins.columns},
                          "recorded_s": np.bincount(where, weights=length, minlength=len(bins)),
                          "overlap_s": np.bincount(where, weights=length * (p_coverage > 1), minlength=len(bins)),
                          **{name: seconds[:, k] for k, name in enumerate(names)}})
    # A run starts where the label changes or a gap precedes the piece.
    new_run = np.ones(len(p_start), bool)
    new_run[1:] = (p_code[1:] != p_code[:-1]) | (p_start[1:] != p_end[:-1])
    run_end = np.maximum.reduceat(p_end, np.flatnonzero(new_run)) if len(p_start) else p_end
    runs = pd.DataFrame({"label": pd.Categorical.from_codes(p_code[new_run], categories=names),
                         "start": p_start[new_run], "end": run_end, "date": bins["date"].to_numpy()[where[new_run]]})
    return hours, runs


def minutes(seconds: float) -> float:
    return round(float(seconds) / 60.0, 3)


def label_columns(hours: pd.DataFrame, labels: list[str]) -> list[str]:
    """The activity columns of `hours`: `labels`, then any other label (not a state) an older model gave."""
    extra = [c for c in hours.columns if c not in {*HOUR_COLUMNS, *labels, *STATES}]
    return [*labels, *extra]


def day_rows(hours: pd.DataFrame, runs: pd.DataFrame, labels: list[str], *, min_worn_hours: float,
             recordings_per_day: dict | None = None) -> list[dict]:
    """One dict per local date (the keys of GET /subjects/{subject}/days)."""
    if hours.empty:
        return []
    activities = label_columns(hours, labels)
    dates = hours["date"].to_numpy()
    day_start = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])  # the bins are in time order
    columns = ["recorded_s", "overlap_s", NOT_WORN, UNCERTAIN, *activities]
    sums = np.add.reduceat(hours[columns].to_numpy(float), day_start, axis=0)
    as_minutes = np.round(sums / 60.0, 3)
    counts = np.zeros((len(day_start), len(activities)), np.int64)
    if len(runs):
        column_of = {a: k for k, a in enumerate(activities)}
        labels_run = pd.Categorical(runs["label"])
        column = np.array([column_of.get(c, -1) for c in labels_run.categories], np.int64)[labels_run.codes]
        day = np.searchsorted(dates[day_start], runs["date"].to_numpy())  # run dates are bin dates: found exactly
        mine = column >= 0  # the two states have no episode count
        np.add.at(counts, (day[mine], column[mine]), 1)
    day_hours = hours["day_hours"].to_numpy()[day_start]
    worn_s = sums[:, 0] - sums[:, 2]
    result = []
    for k, date in enumerate(dates[day_start]):
        row = as_minutes[k].tolist()
        result.append({
            "date": date.isoformat(), "weekday": WEEKDAYS[date.weekday()], "day_hours": round(float(day_hours[k]), 3),
            "recorded_minutes": row[0], "worn_minutes": minutes(worn_s[k]), "not_worn_minutes": row[2],
            "uncertain_minutes": row[3], "overlap_minutes": row[1],
            "minutes_per_activity": dict(zip(activities, row[4:])),
            "episodes_per_activity": dict(zip(activities, counts[k].tolist())),
            "recordings": int((recordings_per_day or {}).get(date, 0)),
            "valid": bool(worn_s[k] >= min_worn_hours * 3600.0)})
    return result


def hour_profile(hours: pd.DataFrame, labels: list[str]) -> dict:
    """Mean minutes per local hour (0-23) for all days, weekdays and weekend days, over the days that recorded
    anything in that hour (`days` per hour says how many); wear as worn, not-worn and uncertain minutes."""
    activities = label_columns(hours, labels)
    recorded = hours[hours["recorded_s"] > 0].copy()
    recorded["worn"] = recorded["recorded_s"] - recorded[NOT_WORN]
    recorded["weekend"] = [d.weekday() >= 5 for d in recorded["date"]]
    profiles = {}
    for group, rows in (("all", recorded), ("weekday", recorded[~recorded["weekend"]]),
                        ("weekend", recorded[recorded["weekend"]])):
        per_day = rows.groupby(["date", "hour"])[["recorded_s", "worn", NOT_WORN, UNCERTAIN, *activities]].sum()
        by_hour = per_day.groupby(level="hour")
        mean, days = by_hour.mean(), by_hour.size()
        profiles[group] = [{
            "hour": hour, "days": int(days.get(hour, 0)),
            "recorded_minutes": minutes(mean["recorded_s"].get(hour, 0.0)),
            "worn_minutes": minutes(mean["worn"].get(hour, 0.0)),
            "not_worn_minutes": minutes(mean[NOT_WORN].get(hour, 0.0)),
            "uncertain_minutes": minutes(mean[UNCERTAIN].get(hour, 0.0)),
            "minutes_per_activity": {a: minutes(mean[a].get(hour, 0.0)) for a in activities}} for hour in range(24)]
    return profiles


def check_timezone(name: str) -> str:
    """An IANA time zone name, or a StoreError-like ValueError naming what was expected."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {name!r} is not an IANA time zone name (e.g. Europe/Berlin, UTC)") from None
    return name


def epoch(start_time: str, timezone: str) -> float:
    """An ISO time as seconds since 1970 UTC; a time without an offset is wall-clock time in `timezone`."""
    stamp = pd.Timestamp(start_time)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(timezone, ambiguous=True, nonexistent="shift_forward")
    return stamp.timestamp()
