"""Days and hours in a participant's local time zone: functions over arrays, no database.

Each episode is an interval [start, end) in seconds since 1970 UTC with one label. The covered time is
cut at every episode bound and at every local hour boundary, so each piece lies in one local hour and
has one label: minutes per day and hour are sums of exact lengths, never of rounded window counts.

- A day is a local calendar date, from one local midnight to the next: 23 or 25 hours on the days the
  clocks change. An hour bin is one hour of absolute time after local midnight (`bin` counts them from
  0 within the day); it is labelled with the local hour its start shows (on a 25-hour day one local hour
  label occurs twice, on a 23-hour day one is missing).
- Where recordings overlap, each second counts once: the recording that started first (then the lower
  id) gives the label, and the seconds covered more than once are reported as `overlap`.
- Episodes per activity count runs of one label in the resolved timeline, on the day the run starts.
- The minutes estimate (har/minutes.py) is summed over the same resolved pieces: a scoring's worn time
  enters as its windows (each with its share of each activity), so a piece of a window adds share x its
  length to its hour (`estimate_frame`); a scoring stored without those shares enters as its episodes,
  its counted minutes standing in for the estimate.

The store runs this at ingest over the few days a recording touches (`hours_table(..., dates=...)`)
and keeps the sums (store/summaries.py); reads format the kept sums with `day_dicts` and
`hour_profile`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from har.minutes import as_minutes as minutes, figures_of, interval_seconds, spread

NOT_WORN, UNCERTAIN = "not_worn", "uncertain"  # har.timeline's two states
STATES = (NOT_WORN, UNCERTAIN)
# The minutes estimate's sums beside the timeline's seconds: per activity its estimate and its interval's
# half-width ("estimate:<activity>", "interval:<activity>"), and the worn seconds of scorings without a basis
# (their counted minutes stand in for the estimate) or without an interval scale.
ESTIMATE, INTERVAL = "estimate:", "interval:"
UNESTIMATED, NO_INTERVAL = "unestimated_s", "no_interval_s"
FRAME_COLUMNS = ("start", "end", "label", "priority")


def value_columns(columns) -> list[str]:
    """The estimate's columns of an hours table or episode frame (summed like the seconds, not labels)."""
    return [c for c in columns if c.startswith((ESTIMATE, INTERVAL)) or c in (UNESTIMATED, NO_INTERVAL)]


def label_columns(columns) -> list[str]:
    """The label columns (seconds per label) of an hours table."""
    values = set(value_columns(columns))
    return [c for c in columns if c not in HOUR_COLUMNS and c not in values]
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def local_midnights(dates: pd.DatetimeIndex, timezone: str) -> np.ndarray:
    """Seconds since 1970 UTC of the first instant of each date in `timezone` (a midnight the clocks skip moves on)."""
    stamps = dates.tz_localize(timezone, ambiguous=np.ones(len(dates), bool), nonexistent="shift_forward")
    return stamps.as_unit("us").asi8 / 1e6


def iso_times(epochs, timezone: str, unit: str = "ms") -> list[str]:
    """Epoch seconds -> local ISO times with the UTC offset (`unit`: "ms" or "s" precision), for many at once
    (numpy formats the wall-clock times; the few distinct offsets are formatted once each)."""
    if len(epochs) == 0:
        return []
    utc = pd.to_datetime(np.round(np.asarray(epochs, float) * 1e6).astype(np.int64), unit="us", utc=True)
    wall = utc.tz_convert(timezone).tz_localize(None).to_numpy()
    offset_min = ((wall - utc.tz_localize(None).to_numpy()) // np.timedelta64(1, "m")).astype(np.int64)
    text = {m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}" for m in np.unique(offset_min)}
    return [t + text[m] for t, m in zip(np.datetime_as_string(wall, unit=unit), offset_min)]


def day_lengths(first_date, last_date, timezone: str) -> np.ndarray:
    """Each date's length in seconds, first to last: 86,400, or an hour less or more when the clocks change."""
    dates = pd.date_range(pd.Timestamp(first_date), pd.Timestamp(last_date) + pd.Timedelta(days=1), freq="D")
    return np.diff(local_midnights(dates, timezone))


def hour_bins(first_date, last_date, timezone: str, *, text: bool = True) -> pd.DataFrame:
    """One row per hour of absolute time from local midnight of `first_date` to the end of `last_date`:
    start, end (epoch seconds), date, bin (the hour's place in its day, from 0), local hour, hour_start
    (local ISO time; left out without `text`), day_hours (the date's length)."""
    dates = pd.date_range(pd.Timestamp(first_date), pd.Timestamp(last_date) + pd.Timedelta(days=1), freq="D")
    midnights = local_midnights(dates, timezone)
    day_s = np.diff(midnights)
    per_day = np.ceil(day_s / 3600.0).astype(np.int64)
    day = np.repeat(np.arange(len(day_s)), per_day)
    place = np.arange(per_day.sum()) - np.repeat(np.cumsum(per_day) - per_day, per_day)
    start = midnights[day] + 3600.0 * place
    end = np.minimum(start + 3600.0, midnights[day + 1])
    local = pd.to_datetime(np.round(start * 1e6).astype(np.int64), unit="us", utc=True).tz_convert(timezone)
    return pd.DataFrame({"start": start, "end": end, "date": np.asarray(dates[:-1].date)[day], "bin": place,
                         "hour": np.asarray(local.hour, np.int64),
                         **({"hour_start": pd.Series(iso_times(start, timezone, unit="s"), dtype=object)}
                            if text else {}),
                         "day_hours": (day_s / 3600.0)[day]})


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


def episode_frame(start_epoch, label, start_s, end_s, priority) -> pd.DataFrame:
    """Stored episodes as the intervals `hours_table` takes: start, end (epoch s), label, priority (lower wins).
    Empty episodes are left out."""
    start_epoch = np.asarray(start_epoch, float)
    frame = pd.DataFrame({"start": start_epoch + np.asarray(start_s, float),
                          "end": start_epoch + np.asarray(end_s, float),
                          "label": pd.Series(np.asarray(label, dtype=object), dtype=object),
                          "priority": np.asarray(priority, np.int64)})
    return frame[frame["end"] > frame["start"]]


def estimate_frame(episodes: pd.DataFrame, scoring: np.ndarray, bases: dict, activities: list[str]) -> pd.DataFrame:
    """The intervals `hours_table` resolves, with the estimate's per-row values (estimate and interval per
    activity of `activities`, unestimated and no-interval flags) as further columns.

    `episodes`: episode_frame's rows, `scoring` the scoring of each; `bases`: scoring -> its basis (start and
    end epochs of its worn windows, their shares [n, k], its activities, interval scale) or None. A scoring
    with a basis enters as its not-worn episodes and its worn windows, each window labelled as the episode
    that holds it; one without, as its episodes, an activity episode's estimate being its own seconds.
    """
    scoring = np.asarray(scoring)
    column = {a: k for k, a in enumerate(activities)}
    width = len(activities)
    parts = []
    for sid in pd.unique(scoring):
        mine = episodes[scoring == sid]
        basis = bases.get(sid)
        if basis is None:
            label = mine["label"].to_numpy(object)
            estimate = np.zeros((len(mine), width))
            known = np.array([l in column for l in label], bool)
            estimate[np.flatnonzero(known), [column[l] for l in label[known]]] = 1.0
            worn = (label != NOT_WORN).astype(float)
            parts.append((mine, estimate, np.zeros((len(mine), width)), worn, worn))
            continue
        not_worn = mine[mine["label"].to_numpy(object) == NOT_WORN]
        start, end = basis["start"], basis["end"]
        keep = end > start
        start, end, shares = start[keep], end[keep], basis["shares"][keep]
        # a worn window lies in one episode: the last one starting at or before it
        ordered = mine.sort_values("start", kind="stable")
        holder = np.searchsorted(ordered["start"].to_numpy(float), start, side="right") - 1
        windows = pd.DataFrame({"start": start, "end": end,
                                "label": ordered["label"].to_numpy(object)[np.maximum(holder, 0)],
                                "priority": np.full(len(start), mine["priority"].iloc[0], np.int64)})
        at = [column[a] for a in basis["activities"]]
        estimate = np.zeros((len(windows), width))
        interval = np.zeros((len(windows), width))
        estimate[:, at] = shares
        scale = basis["interval_scale"]
        if scale is not None:
            interval[:, at] = scale * spread(shares)
        no_interval = np.full(len(windows), 0.0 if scale is not None else 1.0)
        parts.append((not_worn, np.zeros((len(not_worn), width)), np.zeros((len(not_worn), width)),
                      np.zeros(len(not_worn)), np.zeros(len(not_worn))))
        parts.append((windows, estimate, interval, np.zeros(len(windows)), no_interval))
    frames = []
    for frame, estimate, interval, unestimated, no_interval in parts:
        frames.append(pd.concat([frame[list(FRAME_COLUMNS)].reset_index(drop=True),
                                 pd.DataFrame(estimate, columns=[ESTIMATE + a for a in activities]),
                                 pd.DataFrame(interval, columns=[INTERVAL + a for a in activities]),
                                 pd.DataFrame({UNESTIMATED: unestimated, NO_INTERVAL: no_interval})], axis=1))
    empty = pd.DataFrame(columns=[*FRAME_COLUMNS, *(ESTIMATE + a for a in activities),
                                  *(INTERVAL + a for a in activities), UNESTIMATED, NO_INTERVAL])
    result = pd.concat(frames, ignore_index=True) if frames else empty
    return result.sort_values(["priority", "start"], kind="stable").reset_index(drop=True)


HOUR_COLUMNS = ["start", "end", "date", "bin", "hour", "hour_start", "day_hours", "recorded_s", "overlap_s"]


def hours_table(episodes: pd.DataFrame, timezone: str, labels: list[str], dates: tuple | None = None, *,
                hour_text: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hours, runs): seconds per label in every local hour, and the resolved timeline's runs (label, start,
    date of the start).

    `episodes`: start, end (epoch s), label, priority. Columns of `hours`: HOUR_COLUMNS (hour_start only with
    `hour_text`), then one per label (`labels`, the two states, then any other label the episodes give: still
    counted).

    Without `dates`, every local day from the first recorded to the last. With `dates` (first, last), only
    those days: `episodes` must then hold every episode that covers an instant of them or ends at their
    start (the run a day begins with may have begun the day before), and the sums are those the whole
    history gives for these days, to the bit (tests/test_store_summaries.py). The store computes a
    recording's days so at ingest.

    Each piece of time keeps the row of the episode that owns it (`owner`): a further per-row value
    summed like the seconds (issue 37's probabilities over windows) is gathered by that row.
    """
    given = np.asarray(episodes["label"], dtype=object)
    names = list(dict.fromkeys([*labels, *STATES, *pd.unique(given)]))
    if episodes.empty and dates is None:
        return (pd.DataFrame(columns=[*HOUR_COLUMNS, *names, *value_columns(episodes.columns)]),
                pd.DataFrame(columns=["label", "start", "date"]))
    start, end = episodes["start"].to_numpy(float), episodes["end"].to_numpy(float)
    codes = pd.Categorical(given, categories=names).codes.astype(np.int64)
    if dates is None:
        dates = local_date(start.min(), timezone), local_date(np.nextafter(end.max(), -np.inf), timezone)
    bins = hour_bins(*dates, timezone, text=hour_text)
    bin_start, window_end = bins["start"].to_numpy(), float(bins["end"].iloc[-1])
    p_start, p_end, owner, p_coverage = resolve(start, end, np.arange(len(start)), episodes["priority"].to_numpy(),
                                                np.append(bin_start, window_end))
    p_code = codes[owner]
    extra = value_columns(episodes.columns)
    # A run starts where the label changes or a gap precedes the piece (pieces before the days count here).
    new_run = np.ones(len(p_start), bool)
    new_run[1:] = (p_code[1:] != p_code[:-1]) | (p_start[1:] != p_end[:-1])
    inside = (p_start >= bin_start[0]) & (p_start < window_end)
    p_start, p_end, p_code, p_coverage, new_run, owner = (a[inside] for a in (p_start, p_end, p_code, p_coverage,
                                                                               new_run, owner))
    length = p_end - p_start
    where = np.searchsorted(bin_start, p_start, side="right") - 1
    seconds = np.bincount(where * len(names) + p_code, weights=length,
                          minlength=len(bins) * len(names)).reshape(len(bins), len(names))
    hours = pd.DataFrame({**{c: bins[c].to_numpy() for c in bins.columns},
                          "recorded_s": np.bincount(where, weights=length, minlength=len(bins)),
                          "overlap_s": np.bincount(where, weights=length * (p_coverage > 1), minlength=len(bins)),
                          **{name: seconds[:, k] for k, name in enumerate(names)},
                          **{name: np.bincount(where, weights=length * episodes[name].to_numpy(float)[owner],
                                               minlength=len(bins)) for name in extra}})
    runs = pd.DataFrame({"label": pd.Categorical.from_codes(p_code[new_run], categories=names),
                         "start": p_start[new_run], "date": bins["date"].to_numpy()[where[new_run]]})
    return hours, runs


@dataclass
class DayTable:
    """A participant's days as arrays, one entry per local date in order: what GET /days formats. The seconds
    and episode counts have one column per label (activities and the two states)."""
    dates: np.ndarray  # datetime.date
    day_hours: np.ndarray
    recordings: np.ndarray  # recordings touching the day
    recorded_s: np.ndarray
    overlap_s: np.ndarray
    seconds: pd.DataFrame
    episodes: pd.DataFrame  # runs of the label that start on the day
    values: pd.DataFrame  # the minutes estimate's sums (value_columns)

    @property
    def worn_s(self) -> np.ndarray:
        """Recorded time not in a non-wear episode: activity and uncertain time."""
        return self.recorded_s - self.label_seconds(NOT_WORN)

    def label_seconds(self, label: str) -> np.ndarray:
        return self.seconds[label].to_numpy(float) if label in self.seconds else np.zeros(len(self.dates))


def day_table(hours: pd.DataFrame, runs: pd.DataFrame, recordings_per_day: dict | None = None) -> DayTable:
    """The days of `hours_table`'s bins: each column summed over each day's bins in time order (one column
    at a time, so a day's sums do not depend on what else the table holds), runs counted on their day."""
    names = label_columns(hours.columns)
    extra = value_columns(hours.columns)
    dates = hours["date"].to_numpy()
    day_start = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]]) if len(hours) else np.zeros(0, np.int64)
    values = hours[["recorded_s", "overlap_s", *names, *extra]].to_numpy(float)
    sums = np.column_stack([np.add.reduceat(np.ascontiguousarray(values[:, k]), day_start) if len(hours)
                            else np.zeros(0) for k in range(values.shape[1])]) if values.shape[1] else values
    episodes = np.zeros((len(day_start), len(names)), np.int64)
    if len(runs):
        column_of = {name: k for k, name in enumerate(names)}
        labels_run = pd.Categorical(runs["label"])
        column = np.array([column_of[c] for c in labels_run.categories], np.int64)[labels_run.codes]
        day = np.searchsorted(dates[day_start], runs["date"].to_numpy())  # run dates are bin dates: found exactly
        np.add.at(episodes, (day, column), 1)
    day_dates = dates[day_start]
    return DayTable(dates=day_dates, day_hours=hours["day_hours"].to_numpy(float)[day_start],
                    recordings=np.array([(recordings_per_day or {}).get(d, 0) for d in day_dates], np.int64),
                    recorded_s=sums[:, 0], overlap_s=sums[:, 1],
                    seconds=pd.DataFrame(sums[:, 2:2 + len(names)], columns=names),
                    episodes=pd.DataFrame(episodes, columns=names),
                    values=pd.DataFrame(sums[:, 2 + len(names):], columns=extra))


def activities_of(columns, labels: list[str]) -> list[str]:
    """The activity columns: `labels`, then any other label (not a state) an older model gave."""
    return [*labels, *[c for c in label_columns(columns) if c not in {*labels, *STATES}]]


def estimated(values: pd.DataFrame, activities: list[str], worn_s: np.ndarray, n: int) -> tuple:
    """(estimate seconds [n, A], interval bounds seconds [n, A, 2] or None per row, unestimated seconds [n]) from a
    table's value columns (zeros where a column is missing): each row's interval is None where part of its worn
    time came from a scoring without an interval (a tenth of a millisecond is rounding)."""
    def column(name):
        return values[name].to_numpy(float) if name in values else np.zeros(n)

    estimate = np.column_stack([column(ESTIMATE + a) for a in activities]) if activities else np.zeros((n, 0))
    half = np.column_stack([column(INTERVAL + a) for a in activities]) if activities else np.zeros((n, 0))
    lacking = column(NO_INTERVAL) > 1e-4
    bounds = [None if lacking[k] else interval_seconds(estimate[k], half[k], worn_s[k]) for k in range(n)]
    return estimate, bounds, column(UNESTIMATED)


def minutes_fields(activities: list[str], estimate: np.ndarray, bounds, counted: np.ndarray) -> dict:
    """The one shape of minutes for a day or an hour, in seconds: estimate, 90 % interval, counted minutes."""
    figures = figures_of(activities, estimate, bounds)
    return {"minutes_per_activity": figures[0], "minutes_interval_90": figures[1],
            "counted_minutes_per_activity": {a: minutes(v) for a, v in zip(activities, counted)}}


def day_dicts(days: DayTable, labels: list[str], *, min_worn_hours: float) -> list[dict]:
    """One dict per local date (the keys of GET /subjects/{subject}/days)."""
    activities = activities_of(days.seconds.columns, labels)
    sums = np.column_stack([days.recorded_s, days.overlap_s, days.label_seconds(NOT_WORN),
                            days.label_seconds(UNCERTAIN), *[days.label_seconds(a) for a in activities]])
    as_minutes = np.round(sums / 60.0, 3)
    counts = np.column_stack([days.episodes[a].to_numpy() if a in days.episodes else np.zeros(len(days.dates), int)
                              for a in activities]) if activities else np.zeros((len(days.dates), 0), int)
    worn_s = days.worn_s
    estimate, bounds, unestimated = estimated(days.values, activities, worn_s, len(days.dates))
    result = []
    for k, date in enumerate(days.dates):
        row = as_minutes[k].tolist()
        result.append({
            "date": date.isoformat(), "weekday": WEEKDAYS[date.weekday()],
            "day_hours": round(float(days.day_hours[k]), 3),
            "recorded_minutes": row[0], "worn_minutes": minutes(worn_s[k]), "not_worn_minutes": row[2],
            "uncertain_minutes": row[3], "overlap_minutes": row[1],
            **minutes_fields(activities, estimate[k], bounds[k], sums[k, 4:]),
            "unestimated_minutes": minutes(unestimated[k]),
            "episodes_per_activity": dict(zip(activities, counts[k].tolist())),
            "recordings": int(days.recordings[k]),
            "valid": bool(worn_s[k] >= min_worn_hours * 3600.0)})
    return result


def hour_profile(hours: pd.DataFrame, labels: list[str]) -> dict:
    """Mean minutes per local hour (0-23) for all days, weekdays and weekend days, over the days that recorded
    anything in that hour (`days` per hour says how many); wear as worn, not-worn and uncertain minutes; per
    activity the estimate, the mean of the days' 90 % interval bounds (None where a day has no interval) and the
    counted minutes. `hours`: bins (in time order) with date, hour, recorded_s, one column per label and the
    estimate's value columns; empty bins may be left out."""
    activities = activities_of(hours.columns, labels)
    recorded = hours[hours["recorded_s"] > 0].copy()
    estimate_columns = [ESTIMATE + a for a in activities]
    interval_columns = [INTERVAL + a for a in activities]
    for column in (NOT_WORN, UNCERTAIN, *activities, *estimate_columns, *interval_columns, NO_INTERVAL):
        if column not in recorded:
            recorded[column] = 0.0
    recorded["worn"] = recorded["recorded_s"] - recorded[NOT_WORN]
    # 1970-01-01 was a Thursday: days since then + 3, modulo 7, counts from Monday
    recorded["weekend"] = (np.asarray(recorded["date"].to_numpy(), "datetime64[D]").astype(np.int64) + 3) % 7 >= 5
    columns = ["recorded_s", "worn", NOT_WORN, UNCERTAIN, *activities, *estimate_columns, *interval_columns,
               NO_INTERVAL]
    profiles = {}
    for group, rows in (("all", recorded), ("weekday", recorded[~recorded["weekend"]]),
                        ("weekend", recorded[recorded["weekend"]])):
        per_day = rows.groupby(["date", "hour"])[columns].sum()
        # each day's interval in that hour, then their mean: bounds [n, A]; an hour lacking one on any day: None
        estimate = per_day[estimate_columns].to_numpy(float)
        half = per_day[interval_columns].to_numpy(float)
        worn = per_day["worn"].to_numpy(float)[:, None]
        per_day = per_day.assign(**{f"low:{a}": np.maximum(estimate[:, k] - half[:, k], 0.0)
                                    for k, a in enumerate(activities)},
                                 **{f"high:{a}": np.minimum(estimate[:, k] + half[:, k], worn[:, 0])
                                    for k, a in enumerate(activities)},
                                 lacking=(per_day[NO_INTERVAL] > 1e-4).astype(float))
        by_hour = per_day.groupby(level="hour")
        mean = by_hour.mean().reindex(range(24), fill_value=0.0)  # an hour no day recorded: 0
        lacking = by_hour["lacking"].max().reindex(range(24), fill_value=0.0).to_numpy() > 0
        days = by_hour.size().reindex(range(24), fill_value=0).to_numpy()
        value = {column: mean[column].to_numpy() for column in mean.columns}
        profiles[group] = [{
            "hour": hour, "days": int(days[hour]),
            "recorded_minutes": minutes(value["recorded_s"][hour]), "worn_minutes": minutes(value["worn"][hour]),
            "not_worn_minutes": minutes(value[NOT_WORN][hour]), "uncertain_minutes": minutes(value[UNCERTAIN][hour]),
            **minutes_fields(activities, [value[ESTIMATE + a][hour] for a in activities],
                             None if lacking[hour] else np.array([[value[f"low:{a}"][hour], value[f"high:{a}"][hour]]
                                                                   for a in activities]).reshape(-1, 2),
                             [value[a][hour] for a in activities])} for hour in range(24)]
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
