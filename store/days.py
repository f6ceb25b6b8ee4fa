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


def resolve(episodes: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """The covered time as pieces with one label each, cut at episode bounds and at `edges`.

    `episodes`: start, end (epoch s), label, priority (lower wins where recordings overlap; episodes of
    one priority do not overlap). Returns start, end, label, coverage (how many recordings cover it),
    covered pieces only, in time order.
    """
    cuts = np.unique(np.concatenate([episodes["start"].to_numpy(), episodes["end"].to_numpy(), edges]))
    first = np.searchsorted(cuts, episodes["start"].to_numpy())
    last = np.searchsorted(cuts, episodes["end"].to_numpy())
    n = len(cuts) - 1
    coverage = np.zeros(n + 1, np.int64)
    np.add.at(coverage, first, 1)
    np.add.at(coverage, last, -1)
    coverage = np.cumsum(coverage)[:n]
    labels = pd.Categorical(episodes["label"])
    owner = np.full(n, -1, np.int64)
    # Highest priority last, so that it overwrites: within one priority the pieces are disjoint.
    for priority in sorted(episodes["priority"].unique(), reverse=True):
        mine = (episodes["priority"] == priority).to_numpy()
        counts = last[mine] - first[mine]
        pieces = np.repeat(first[mine], counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        owner[pieces] = np.repeat(labels.codes[mine], counts)
    covered = owner >= 0
    return pd.DataFrame({"start": cuts[:-1][covered], "end": cuts[1:][covered],
                         "label": np.asarray(labels.categories, dtype=object)[owner[covered]] if covered.any() else
                         np.array([], dtype=object), "coverage": coverage[covered]})


def hours_table(episodes: pd.DataFrame, timezone: str, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hours, runs): seconds per label in every local hour from the first to the last recorded day, and the
    resolved timeline's runs (label, start, end, date of the start)."""
    columns = [*labels, *STATES]
    if episodes.empty:
        return pd.DataFrame(columns=["start", "end", "date", "hour", "hour_start", "day_hours", "recorded_s",
                                     "overlap_s", *columns]), pd.DataFrame(columns=["label", "start", "end", "date"])
    first = local_date(episodes["start"].min(), timezone)
    last = local_date(np.nextafter(episodes["end"].max(), -np.inf), timezone)
    bins = hour_bins(first, last, timezone)
    pieces = resolve(episodes, np.append(bins["start"].to_numpy(), bins["end"].iloc[-1]))
    length = (pieces["end"] - pieces["start"]).to_numpy()
    where = np.searchsorted(bins["start"].to_numpy(), pieces["start"].to_numpy(), side="right") - 1
    seconds = pd.DataFrame({"bin": where, "label": pieces["label"], "s": length}).pivot_table(
        index="bin", columns="label", values="s", aggfunc="sum", fill_value=0.0)
    hours = bins.copy()
    for label in columns:
        hours[label] = seconds[label].reindex(hours.index, fill_value=0.0) if label in seconds else 0.0
    for label in seconds.columns.difference(columns):  # a label of an older model's set: still counted
        hours[label] = seconds[label].reindex(hours.index, fill_value=0.0)
    hours["recorded_s"] = np.bincount(where, weights=length, minlength=len(bins))
    hours["overlap_s"] = np.bincount(where, weights=length * (pieces["coverage"].to_numpy() > 1), minlength=len(bins))
    # A run starts where the label changes or a gap precedes the piece.
    starts = pieces["start"].to_numpy()
    new_run = np.ones(len(pieces), bool)
    new_run[1:] = (pieces["label"].to_numpy()[1:] != pieces["label"].to_numpy()[:-1]) | (starts[1:] != pieces["end"].to_numpy()[:-1])
    run_id = np.cumsum(new_run) - 1
    runs = pd.DataFrame({"label": pieces["label"].to_numpy()[new_run], "start": starts[new_run],
                         "end": pd.Series(pieces["end"].to_numpy()).groupby(run_id).max().to_numpy()})
    runs["date"] = bins["date"].to_numpy()[where[new_run]]
    return hours, runs


def minutes(seconds: float) -> float:
    return round(float(seconds) / 60.0, 3)


def day_rows(hours: pd.DataFrame, runs: pd.DataFrame, labels: list[str], *, min_worn_hours: float,
             recordings_per_day: dict | None = None) -> list[dict]:
    """One dict per local date (the keys of GET /subjects/{subject}/days)."""
    if hours.empty:
        return []
    extra = [c for c in hours.columns if c not in {"start", "end", "date", "hour", "hour_start", "day_hours",
                                                   "recorded_s", "overlap_s", *labels, *STATES}]
    activities = [*labels, *extra]
    sums = hours.groupby("date", sort=True)[["recorded_s", "overlap_s", *activities, *STATES]].sum()
    day_hours = hours.groupby("date", sort=True)["day_hours"].first()
    run_counts = runs.groupby(["date", "label"]).size() if len(runs) else pd.Series(dtype=int)
    result = []
    for date, row in sums.iterrows():
        worn_s = row["recorded_s"] - row[NOT_WORN]
        result.append({
            "date": date.isoformat(), "weekday": WEEKDAYS[date.weekday()], "day_hours": round(float(day_hours[date]), 3),
            "recorded_minutes": minutes(row["recorded_s"]), "worn_minutes": minutes(worn_s),
            "not_worn_minutes": minutes(row[NOT_WORN]), "uncertain_minutes": minutes(row[UNCERTAIN]),
            "overlap_minutes": minutes(row["overlap_s"]),
            "minutes_per_activity": {a: minutes(row[a]) for a in activities},
            "episodes_per_activity": {a: int(run_counts.get((date, a), 0)) for a in activities},
            "recordings": int((recordings_per_day or {}).get(date, 0)),
            "valid": bool(worn_s >= min_worn_hours * 3600.0)})
    return result


def hour_profile(hours: pd.DataFrame, labels: list[str]) -> dict:
    """Mean minutes per local hour (0-23) for all days, weekdays and weekend days, over the days that recorded
    anything in that hour (`days` per hour says how many); wear as worn, not-worn and uncertain minutes."""
    activities = [c for c in hours.columns if c not in {"start", "end", "date", "hour", "hour_start", "day_hours",
                                                         "recorded_s", "overlap_s", *STATES}]
    activities = [*[a for a in labels if a in activities], *[a for a in activities if a not in labels]]
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
