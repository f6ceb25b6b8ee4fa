"""A recording prepared while it is recorded: sensor batches in, the timeline's windows out as each becomes final.

A watch streaming its samples (serve/streaming.py) sends batches of about 250 ms per sensor, the two sensors out
of step. `LiveRecording` turns them into what `har.scoring.prepare` and `har.scoring.score` make of the whole
recording, window by window, with the pipeline's own pieces:

- each sensor is cleaned (sorted, repeated timestamps dropped, as `har.fusion.clean_stream`), cut at gaps
  longer than `max_gap_s`, low-pass filtered and put on the 50 Hz grid as `har.fusion.resample_stream` does,
  the zero-phase filter run incrementally (`har.fusion.ZeroPhase`); a grid value is final once the filter's
  response has decayed to rounding (`SETTLE_PERIODS` cutoff periods of later samples), or the segment ended;
- the fused rows are cut into the model's windows by `Preprocessing.cut` and judged for wear by
  `har.wear.NonwearTracker` (the same code `har.wear.nonwear_episodes` runs over a whole recording);
- windows are scored by the caller's model as they are cut (but inside a non-wear episode already known), and
  their labels are given once their wear is decided and the smoother can no longer change them
  (`har.smoothing.RunSmoother`); not worn windows' labels as soon as their wear is decided;
- each window also gets a provisional label as soon as both sensors' samples reach its end: the model's label on
  the window cut from the newest samples (filtered by `har.fusion.resample_stream` as if the recording ended
  there), or not_worn inside a known non-wear episode; its final label follows;
- `prepared` gives the decided part (what the caller kept of `take_fused` and `take_decided`: the live recording
  hands them out, so that what it holds does not grow with the recording's length) as a `PreparedRecording` for
  `har.answer.answer_for`: the answer, the store's recording and days are made by the same code as an upload's.

Where it differs from the whole recording (docs/streaming.md): a sensor's native rate is the median step of
its first `RATE_SAMPLES` samples (the whole recording's, in `har.fusion`), and a filtered value is taken as
final `SETTLE_PERIODS` cutoff periods before the newest sample rather than after the whole segment, so fused
values may differ in their last bits; labels are the same. A window's label waits for what decides it: the
filter's right-hand context, one epoch and its refinement for the wear rule (much longer while the watch lies
still: up to `min_duration_min`), and the smoother's settling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from har.fusion import (CHANNELS, MIN_FILTERED, ZeroPhase, interpolated, lowpass_cutoff, lowpass_filter, native_rate,
                        resample_stream)
from har.preprocessing import Preprocessing
from har.smoothing import RunSmoother
from har.timeline import NOT_WORN, UNCERTAIN, window_labels
from har.wear import NonwearTracker, WearRule
from har.windows import window_step

RATE_SAMPLES = 101  # a sensor's native rate: the median step of its first this many samples
ADVANCE_S = 0.5  # fusion, windows and wear move on at most every this many seconds of recording
SETTLE_PERIODS = 15  # a filtered value is final this many cutoff periods before the newest sample (error ~1e-16)
PROVISIONAL_CONTEXT_S = 2.0  # a provisional window is filtered from this long before it (its left edge settled)
SENSORS = ("acc", "gyr")


class LiveError(ValueError):
    """A batch that cannot be taken: what is wrong with it, said for the person who sends it."""


@dataclass(frozen=True)
class SensorBatch:
    """One sensor's batch, as the Garmin export writes a row: its start, each sample's offset, values in SI units."""

    sensor: str  # "acc" | "gyr"
    start_ns: int  # the batch's start, ns since the Unix epoch
    offsets_ms: np.ndarray  # float64 [n], each sample's offset from the start, >= 0
    values: np.ndarray  # float64 [n, 3], m/s^2 or rad/s


class Segment:
    """One stretch of one sensor with no step longer than max_gap_s, put on the grid as resample_stream puts it."""

    def __init__(self, t0: float, native_hz: float, sos, target_hz: float, context: int):
        self.t0, self.native_hz, self.sos, self.hz, self.context = t0, native_hz, sos, target_hz, context
        self.raw_t, self.raw_x = np.empty(0), np.empty((0, 3))  # the samples still needed for interpolation
        self.count = 0
        self.step = 1.0 / native_hz
        self.delta = (t0 + self.step) - t0  # np.arange's own spacing of the fine grid
        self.fine_next = 0  # fine-grid points interpolated so far
        self.filter = ZeroPhase(sos) if sos is not None else None
        self.final_t, self.final_y = np.empty(0), np.empty((0, 3))  # final filtered values still needed
        self.tick = first_tick_at_or_after(t0, target_hz)  # the next grid tick to give

    def add(self, t: np.ndarray, x: np.ndarray) -> None:
        self.raw_t, self.raw_x = np.concatenate([self.raw_t, t]), np.concatenate([self.raw_x, x])
        self.count += len(t)

    @property
    def last(self) -> float:
        return float(self.raw_t[-1])

    def fine_times(self, a: int, b: int) -> np.ndarray:
        """Points a..b-1 of np.arange(t0, stop, 1 / native_hz), whatever its stop."""
        index = np.arange(a, b)
        times = self.t0 + index * self.delta
        times[index == 0], times[index == 1] = self.t0, self.t0 + self.step
        return times

    def advance(self, ended: bool) -> tuple[np.ndarray, np.ndarray]:
        """Grid ticks whose values are final now, and the values [n, 3]."""
        if self.filter is None or (ended and self.count <= MIN_FILTERED):
            return self._unfiltered()
        if self.count <= MIN_FILTERED:
            return np.empty(0, np.int64), np.empty((0, 3))  # filtered or not is decided by the segment's length
        if ended:  # the fine grid reaches half a native step past the last sample, as np.arange(...) does
            stop = self.last + 0.5 / self.native_hz
            fine_end = math.ceil((stop - self.t0) / self.step)
        else:
            fine_end = int(np.searchsorted(self.fine_times(self.fine_next, self.fine_next + 2 * len(self.raw_t) + 2),
                                           self.last, side="right")) + self.fine_next
        if fine_end > self.fine_next:
            fine = self.fine_times(self.fine_next, fine_end)
            self.filter.push(interpolated(fine, self.raw_t, self.raw_x))
            self.fine_next = fine_end
            keep = max(int(np.searchsorted(self.raw_t, fine[-1], side="right")) - 1, 0)
            self.raw_t, self.raw_x = self.raw_t[keep:], self.raw_x[keep:]
        if not self.filter.started:
            return np.empty(0, np.int64), np.empty((0, 3))
        values = self.filter.values()
        final = self.filter.count if ended else max(self.filter.count - self.context, self.filter.first)
        new = final - self.filter.first
        self.final_t = np.concatenate([self.final_t, self.fine_times(self.filter.first, final)])
        self.final_y = np.concatenate([self.final_y, values[:new]])
        self.filter.forget(final)
        if len(self.final_t) == 0:
            return np.empty(0, np.int64), np.empty((0, 3))
        limit = self.last if ended else min(self.last, float(self.final_t[-1]))
        ticks = self._ticks_until(limit)
        out = interpolated(ticks / self.hz, self.final_t, self.final_y)
        if len(ticks):  # keep the final values the next tick is interpolated between
            keep = max(int(np.searchsorted(self.final_t, (ticks[-1] + 1) / self.hz, side="right")) - 1, 0)
            self.final_t, self.final_y = self.final_t[keep:], self.final_y[keep:]
        return ticks, out

    def _unfiltered(self) -> tuple[np.ndarray, np.ndarray]:
        ticks = self._ticks_until(self.last)
        out = interpolated(ticks / self.hz, self.raw_t, self.raw_x)
        if len(ticks):
            keep = max(int(np.searchsorted(self.raw_t, (ticks[-1] + 1) / self.hz, side="right")) - 1, 0)
            self.raw_t, self.raw_x = self.raw_t[keep:], self.raw_x[keep:]
        return ticks, out

    def _ticks_until(self, limit: float) -> np.ndarray:
        """The ticks from the next one whose time (tick / hz, as the grid computes it) is at most `limit`."""
        last = last_tick_at_or_before(limit, self.hz)
        ticks = np.arange(self.tick, max(self.tick, last + 1), dtype=np.int64)
        if len(ticks):
            self.tick = int(ticks[-1]) + 1
        return ticks


def first_tick_at_or_after(t: float, hz: float) -> int:
    tick = math.ceil(t * hz)
    while (tick - 1) / hz >= t:
        tick -= 1
    while tick / hz < t:
        tick += 1
    return tick


def last_tick_at_or_before(t: float, hz: float) -> int:
    tick = math.floor(t * hz)
    while (tick + 1) / hz <= t:
        tick += 1
    while tick / hz > t:
        tick -= 1
    return tick


class SensorLine:
    """One sensor of a live recording: samples settled, cleaned, cut into segments and put on the grid."""

    def __init__(self, name: str, preprocessing: Preprocessing):
        self.name, self.p = name, preprocessing
        self.pending_t, self.pending_x = np.empty(0), np.empty((0, 3))  # not settled: a later batch may precede them
        self.latest_start = -np.inf  # no later sample can come before this (batch starts never decrease)
        self.last_arrival: float | None = None
        self.report = {"samples_read": 0, "out_of_order": 0, "duplicates": 0, "gaps": 0, "gap_seconds": 0.0}
        self.rate_t, self.rate_x = np.empty(0), np.empty((0, 3))  # settled samples held until the rate is known
        self.native_hz: float | None = None
        self.sos, self.context = None, 0
        self.segment: Segment | None = None
        self.last_settled: float | None = None
        self.out_ticks, self.out_values = [], []
        self.horizon = -1 << 62  # every tick up to this one is decided (its value given, or none)
        self.ended = False
        self.recent_t, self.recent_x = np.empty(0), np.empty((0, 3))  # the newest samples, for provisional windows
        self.recent_s = preprocessing.window_s + PROVISIONAL_CONTEXT_S + 2 * ADVANCE_S  # how far back they reach
        self.first_t: float | None = None  # the earliest sample so far
        self.latest_t = -np.inf  # the latest sample so far

    @property
    def buffered(self) -> int:
        return len(self.pending_t) + len(self.rate_t) + (len(self.segment.raw_t) if self.segment else 0)

    def recent(self, since: float) -> tuple[np.ndarray, np.ndarray]:
        """The samples from `since` on, as clean_stream leaves them (sorted, a repeated timestamp's first kept)."""
        t, x = self.recent_t, self.recent_x
        order = np.argsort(t, kind="stable")
        t, x = t[order], x[order]
        keep = np.concatenate([[True], np.diff(t) > 0]) & (t >= since) if len(t) else np.empty(0, bool)
        return t[keep], x[keep]

    def add(self, start_s: float, t: np.ndarray, x: np.ndarray) -> None:
        report = self.report
        report["samples_read"] += len(t)
        steps = np.diff(np.concatenate([[self.last_arrival], t]) if self.last_arrival is not None else t)
        report["out_of_order"] += int(np.sum(steps < 0))  # as clean_stream counts them: in arrival order
        if len(t):
            self.last_arrival = float(t[-1])
            self.first_t = min(float(t.min()), self.first_t if self.first_t is not None else np.inf)
            self.latest_t = max(self.latest_t, float(t.max()))
            keep = self.recent_t >= self.latest_t - self.recent_s
            self.recent_t, self.recent_x = np.concatenate([self.recent_t[keep], t]), np.concatenate([self.recent_x[keep], x])
        self.pending_t, self.pending_x = np.concatenate([self.pending_t, t]), np.concatenate([self.pending_x, x])
        self.latest_start = start_s
        self._settle(self.pending_t < start_s)

    def end(self) -> None:
        self._settle(np.ones(len(self.pending_t), bool))
        self.ended = True
        if self.native_hz is None and len(self.rate_t):
            self._fix_rate()
        self._finish_segment()
        self.horizon = 1 << 62

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """The final grid values given since the last call: ticks and values [n, 3]."""
        if self.segment is not None and not self.ended:
            if self.latest_start - self.segment.last > self.p.max_gap_s:  # no later sample can join it
                self._finish_segment()
            else:
                self._emit(*self.segment.advance(ended=False))
                self.horizon = max(self.horizon, self.segment.tick - 1)
        if self.segment is None and not self.ended and self.native_hz is not None:
            self.horizon = max(self.horizon, first_tick_at_or_after(self.latest_start, self.p.target_hz) - 1)
        if not self.out_ticks:
            return np.empty(0, np.int64), np.empty((0, 3))
        ticks, values = np.concatenate(self.out_ticks), np.concatenate(self.out_values)
        self.out_ticks, self.out_values = [], []
        return ticks, values

    def _settle(self, settled: np.ndarray) -> None:
        if not settled.any():
            return
        t, x = self.pending_t[settled], self.pending_x[settled]
        self.pending_t, self.pending_x = self.pending_t[~settled], self.pending_x[~settled]
        order = np.argsort(t, kind="stable")
        t, x = t[order], x[order]
        previous = self.last_settled if self.last_settled is not None else -np.inf
        keep = np.concatenate([[t[0] > previous], np.diff(t) > 0])  # a repeated timestamp: the first one stays
        self.report["duplicates"] += int(np.sum(~keep))
        t, x = t[keep], x[keep]
        if not len(t):
            return
        self.last_settled = float(t[-1])
        if self.native_hz is None:
            self.rate_t, self.rate_x = np.concatenate([self.rate_t, t]), np.concatenate([self.rate_x, x])
            if len(self.rate_t) >= RATE_SAMPLES:
                self._fix_rate()
            return
        self._into_segments(t, x)

    def _fix_rate(self) -> None:
        self.native_hz = native_rate(self.rate_t)
        p = self.p
        self.sos = lowpass_filter(self.native_hz, p.target_hz, p.lowpass_hz)
        if self.sos is not None:
            cutoff = lowpass_cutoff(self.native_hz, p.target_hz, p.lowpass_hz)
            self.context = math.ceil(SETTLE_PERIODS * self.native_hz / cutoff)
        t, x = self.rate_t, self.rate_x
        self.rate_t, self.rate_x = np.empty(0), np.empty((0, 3))
        self._into_segments(t, x)

    def _into_segments(self, t: np.ndarray, x: np.ndarray) -> None:
        before = self.segment.last if self.segment is not None else None
        steps = np.diff(np.concatenate([[before], t])) if before is not None else np.diff(t)
        gaps = steps > self.p.max_gap_s
        self.report["gaps"] += int(gaps.sum())
        self.report["gap_seconds"] += float(steps[gaps].sum())
        breaks = np.flatnonzero(gaps) + (1 if before is None else 0)
        bounds = [0, *breaks.tolist(), len(t)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                continue
            if self.segment is None or (a > 0 or before is not None and t[a] - self.segment.last > self.p.max_gap_s):
                self._finish_segment()
                self.segment = Segment(float(t[a]), self.native_hz, self.sos, self.p.target_hz, self.context)
                self.horizon = max(self.horizon, self.segment.tick - 1)
            self.segment.add(t[a:b], x[a:b])

    def _finish_segment(self) -> None:
        if self.segment is not None:
            self._emit(*self.segment.advance(ended=True))
            self.horizon = max(self.horizon, self.segment.tick - 1)
            self.segment = None

    def _emit(self, ticks: np.ndarray, values: np.ndarray) -> None:
        if len(ticks):
            self.out_ticks.append(ticks)
            self.out_values.append(values)

    def quality(self) -> dict:
        return {**self.report, "gap_seconds": round(self.report["gap_seconds"], 3),
                "native_hz": round(self.native_hz, 2) if self.native_hz else None}


class LiveTimeline:
    """The timeline's labels of windows whose wear and probabilities arrive in order, each given once final."""

    def __init__(self, labels: list[str], switch_probability: float, threshold: float, step_s: float):
        self.labels, self.threshold, self.step_s = list(labels), float(threshold), step_s
        self.smoother = RunSmoother(switch_probability, len(labels), threshold) if switch_probability else None
        self.run_last: float | None = None  # the start of the run's newest window
        self.waiting: list[float] = []  # starts of the windows added whose labels are not given yet
        self.given = 0

    def add(self, start_s: float, probabilities: np.ndarray | None) -> list[dict]:
        """The next window (probabilities None: not worn); the timeline entries now final, in order."""
        if probabilities is None:
            labels = self._run_end() + [NOT_WORN]
        elif self.smoother is None:
            labels = [str(window_labels(np.ones(1, bool), probabilities[None], self.labels, self.threshold)[0][0])]
        else:
            labels = []
            if self.run_last is not None and not np.isclose(start_s - self.run_last, self.step_s):
                labels += self._run_end()  # runs are smoothed separately (har.smoothing.runs)
            self.run_last = start_s
            self.smoother.add(probabilities)
            labels += [self.labels[i] if i is not None else UNCERTAIN for i in self.smoother.decided()]
        self.waiting.append(start_s)
        return self._entries(labels)

    def end(self) -> list[dict]:
        """The recording ended: the last run's labels."""
        return self._entries(self._run_end())

    def _entries(self, labels: list[str]) -> list[dict]:
        starts, self.waiting = self.waiting[:len(labels)], self.waiting[len(labels):]
        self.given += len(labels)
        return [{"start_s": start, "label": label} for start, label in zip(starts, labels)]

    def _run_end(self) -> list[str]:
        """The run is over (a not-worn window, a gap, the end): its pending windows' labels, exactly."""
        self.run_last = None
        if self.smoother is None:
            return []
        posteriors = self.smoother.end()
        if not len(posteriors):
            return []
        return [str(label) for label in window_labels(np.ones(len(posteriors), bool), posteriors, self.labels,
                                                      self.threshold)[0]]


class BatchOrder:
    """The order a recording's batches must keep: each sensor's batches by their start, none before the recording's
    first batch (the clock's origin, once both sensors have sent one). `LiveRecording` keeps one; a stream's gateway
    (serve/stream_broker.py) keeps one per watch, to refuse a batch before it goes to Redis."""

    def __init__(self, first_start: dict[str, int] | None = None, last_start: dict[str, int] | None = None):
        self.first_start, self.last_start = dict(first_start or {}), dict(last_start or {})

    @property
    def origin_ns(self) -> int | None:
        """The earlier sensor's first batch start, as read_garmin_pair sets the clock's origin."""
        return min(self.first_start.values()) if len(self.first_start) == len(SENSORS) else None

    def check(self, batch: SensorBatch) -> None:
        """Raise LiveError for a batch that cannot be taken, without taking it."""
        if batch.sensor not in SENSORS:
            raise LiveError(f"unknown sensor {batch.sensor!r} (expected one of {list(SENSORS)})")
        previous = self.last_start.get(batch.sensor)
        if previous is not None and batch.start_ns < previous:
            raise LiveError(f"time goes backwards: a {batch.sensor} batch starts {(previous - batch.start_ns) / 1e6:g} ms "
                            "before the one sent before it (expected batch start times that never decrease)")
        origin = self.origin_ns
        if origin is not None and batch.start_ns < origin:
            raise LiveError(f"a {batch.sensor} batch starts before the recording's first batch "
                            "(expected each sensor's batches in time order)")
        offsets = np.asarray(batch.offsets_ms)
        if len(offsets) and (not np.all(np.isfinite(offsets)) or offsets.min() < 0):
            raise LiveError("sample offsets must be finite and >= 0 ms (each sample's time after the batch start)")
        if not np.all(np.isfinite(batch.values)):
            raise LiveError("NaN or infinite sample value")

    def take(self, batch: SensorBatch) -> None:
        self.last_start[batch.sensor] = batch.start_ns
        self.first_start.setdefault(batch.sensor, batch.start_ns)


class LiveRecording:
    """A recording whose sensor batches arrive as they are recorded (see the module's docstring).

    add(batch) ... then: to_score() -> windows to score; scored(probabilities); labels() -> final timeline entries;
    provisional_labels() -> provisional ones; take_fused() and take_decided() -> what the caller keeps (the fused
    rows, the decided windows); close() at the end. `prepared(fused, start_s, worn)` is the decided part, for
    har.answer.answer_for. What it holds is bounded whatever the recording's length (docs/streaming.md, "Memory").
    """

    def __init__(self, preprocessing: Preprocessing, wear_rule: WearRule, *, recording_id: str, labels: list[str],
                 switch_probability: float, threshold: float, timezone: str | None = None,
                 provisional_threshold: float | None = None):
        self.p, self.wear_rule, self.recording_id, self.timezone = preprocessing, wear_rule, recording_id, timezone
        self.sensors = {name: SensorLine(name, preprocessing) for name in SENSORS}
        self.order = BatchOrder()
        self.early: list[SensorBatch] = []  # batches before both sensors have sent one (the clock's origin)
        self.origin_ns: int | None = None
        self.queued = {name: ([], []) for name in SENSORS}  # final grid values not fused yet
        self.fused_rows = 0
        self.fused_segments = 0
        self.last_fused_t: float | None = None
        self.fused_out: list[tuple[np.ndarray, np.ndarray]] = []  # fused rows (t, values) not taken by the caller yet
        self.tail_t, self.tail_x = np.empty(0), np.empty((0, len(CHANNELS)), np.float32)  # from the next window's start
        self.step = window_step(preprocessing.window_length, preprocessing.overlap)  # between window starts, in ticks
        self.next_window_tick: int | None = None  # where the next window of the newest fused segment starts
        self.advanced_at = -np.inf  # the newest batch start at the last advance
        self.tracker = NonwearTracker(preprocessing.target_hz, wear_rule)
        # Windows cut and not yet given to the timeline, in order: start_s, the window until it is scored, then its
        # probabilities; span_end (None: not known yet) and worn once decided. Windows are scored as they are cut,
        # so a still stretch that waits for the wear rule holds K probabilities per window, not the window.
        self.windows: list[dict] = []
        self.awaiting: list[dict] = []  # decided windows, in order, not given to the timeline yet
        self.to_be_scored: list[dict] = []
        self.scoring: list[dict] = []  # handed out by to_score, awaiting `scored`
        self.decided_out: list[dict] = []  # given to the timeline, not taken by the caller yet (take_decided)
        self.decided = 0
        self.timeline = LiveTimeline(labels, switch_probability, threshold, preprocessing.step_s)
        self.new_labels: list[dict] = []
        # Provisional labels: each window's model label as soon as its samples are in (None: none are given).
        self.provisional_threshold = provisional_threshold
        self.provisional = provisional_threshold is not None  # False: the windows pass without a label (a replay)
        self.provisional_tick: int | None = None  # the start of the newest window passed
        self.provisional_out: list[dict] = []
        self.closed = False

    # ---------------------------------------------------------------- in
    def check(self, batch: SensorBatch) -> None:
        """Raise LiveError for a batch that cannot be taken, without taking it."""
        if self.closed:
            raise LiveError("the recording is closed")
        self.order.check(batch)

    def add(self, batch: SensorBatch) -> None:
        self.check(batch)
        self.order.take(batch)
        if self.origin_ns is None:
            self.early.append(batch)
            self.origin_ns = self.order.origin_ns
            if self.origin_ns is None:
                return
            early, self.early = self.early, []
            for held in early:
                self._route(held)
        else:
            self._route(batch)
        newest = float(batch.start_ns - self.origin_ns) / 1e9
        if newest >= self.advanced_at + ADVANCE_S:
            self.advanced_at = newest
            self._advance()
        self._provisional()

    def _route(self, batch: SensorBatch) -> None:
        start_s = float(batch.start_ns - self.origin_ns) / 1e9
        t = start_s + np.asarray(batch.offsets_ms, dtype=np.float64) / 1000.0
        self.sensors[batch.sensor].add(start_s, t, np.asarray(batch.values, dtype=np.float64))

    def close(self) -> None:
        """The recording ended: everything left is final."""
        if self.closed:
            return
        self.closed = True
        if self.origin_ns is None and self.early:  # one sensor only: nothing can be fused
            self.early = []
        for sensor in self.sensors.values():
            sensor.end()
        self._advance()

    @property
    def buffered_samples(self) -> int:
        """Samples held that are not fused yet (one sensor ahead of the other, the filter's context, the window)."""
        early = sum(len(b.offsets_ms) for b in self.early)
        return early + sum(s.buffered for s in self.sensors.values()) + \
            sum(sum(len(t) for t in q[0]) for q in self.queued.values())

    @property
    def start_time(self) -> str | None:
        if self.origin_ns is None:
            return None
        start = pd.Timestamp(self.origin_ns, unit="ns")  # naive without a zone, as read_garmin_pair gives it
        return (start.tz_localize("UTC").tz_convert(self.timezone) if self.timezone else start).isoformat()

    # ---------------------------------------------------------------- fusion, windows, wear
    def _advance(self) -> None:
        if self.origin_ns is None:
            return
        for name, sensor in self.sensors.items():
            ticks, values = sensor.take()
            if len(ticks):
                self.queued[name][0].append(ticks)
                self.queued[name][1].append(values)
        horizon = min(sensor.horizon for sensor in self.sensors.values())
        taken = {}
        for name in SENSORS:
            ticks_list, values_list = self.queued[name]
            ticks = np.concatenate(ticks_list) if ticks_list else np.empty(0, np.int64)
            values = np.concatenate(values_list) if values_list else np.empty((0, 3))
            now = ticks <= horizon
            taken[name] = (ticks[now], values[now])
            self.queued[name] = ([ticks[~now]], [values[~now]]) if (~now).any() else ([], [])
        ticks, a, g = np.intersect1d(taken["acc"][0], taken["gyr"][0], assume_unique=True, return_indices=True)
        if len(ticks):
            self._fused(ticks / self.p.target_hz, np.hstack([taken["acc"][1][a], taken["gyr"][1][g]]).astype(np.float32))
        if self.closed:
            self.tracker.close()
            self._cut(final=True)
        self._decide()

    def _fused(self, t: np.ndarray, values: np.ndarray) -> None:
        jumps = np.diff(np.concatenate([[self.last_fused_t], t]) if self.last_fused_t is not None else t)
        self.fused_segments += int(np.sum(jumps > 1.5 / self.p.target_hz)) + (self.last_fused_t is None)
        self.last_fused_t = float(t[-1])
        self.fused_rows += len(t)
        self.fused_out.append((t, values))
        self.tracker.add(t, values[:, :3])
        self.tail_t, self.tail_x = np.concatenate([self.tail_t, t]), np.concatenate([self.tail_x, values])
        self._cut(final=False)

    def _cut(self, final: bool) -> None:
        """The windows complete in the tail, each scored at once; the tail then starts where the next window of its
        last segment would."""
        t = self.tail_t
        if not len(t):
            return
        windows, starts = self.p.cut_arrays(t, self.tail_x)
        jumps = np.flatnonzero(np.diff(t) > 1.5 / self.p.target_hz) + 1
        last_segment = int(jumps[-1]) if len(jumps) else 0
        known = self.tracker.known_nonwear()
        for window, start in zip(windows, starts):
            if self.windows and self.windows[-1]["span_end"] is None:
                previous = self.windows[-1]
                previous["span_end"] = min(previous["start_s"] + self.p.window_s, float(start))
            entry = {"start_s": float(start), "window": window, "span_end": None}
            self.windows.append(entry)
            if inside(float(start), known):  # a window inside a known non-wear episode is never worn: not scored
                entry["unscored"] = True
            else:
                self.to_be_scored.append(entry)
        newest = self.windows[-1] if self.windows else None
        if newest is not None and newest["span_end"] is None and (final or len(jumps) and t[jumps[-1]] > newest["start_s"]):
            # its segment ended: a window after it starts beyond a gap, later than its own end
            newest["span_end"] = newest["start_s"] + self.p.window_s
        in_last = int(np.sum(starts >= t[last_segment] - 1e-9))
        keep = last_segment + in_last * self.step
        segment_start = int(round(t[last_segment] * self.p.target_hz))
        self.next_window_tick = segment_start + in_last * self.step
        self.tail_t, self.tail_x = self.tail_t[keep:], self.tail_x[keep:]

    def _decide(self) -> None:
        """Wear for the windows in order, as far as the tracker has decided."""
        decided_until = self.tracker.decided_until
        known = self.tracker.known_nonwear()
        while self.windows:
            window = self.windows[0]
            start, longest = window["start_s"], window["start_s"] + self.p.window_s
            inside_known = inside(start, known)
            if not inside_known and longest > decided_until + 1e-9:
                break
            end = window["span_end"]
            touches = [(a, b) for a, b in known if start < b - 1e-9 and longest > a + 1e-9]
            if touches and not inside_known:
                if end is None:
                    break  # the time it owns decides, and that needs the next window's start
                worn = not any(start < b - 1e-9 and end > a + 1e-9 for a, b in touches)
            else:
                worn = not inside_known
            self.windows.pop(0)
            window["worn"] = worn
            if not worn:  # its probabilities are not needed (if it is being scored, they are dropped)
                window.pop("window", None)
                window.pop("probabilities", None)
            elif window.pop("unscored", False):  # known non-wear only grows, so this cannot happen; never lose one
                self.to_be_scored.append(window)
            self.awaiting.append(window)
        self._label()

    # ---------------------------------------------------------------- provisional labels
    def _provisional(self) -> None:
        """The windows whose samples are all in since the last call, each with a provisional label: not_worn inside
        a known non-wear episode, else the model's label on the window cut from the newest samples as they are now
        (filtered as if the recording ended with them: the window's last second differs from its final values).
        They lie on the grid of the final windows (after a gap, from the first final window beyond it)."""
        if self.provisional_threshold is None or self.origin_ns is None or self.closed:
            return
        hz, length = self.p.target_hz, self.p.window_length
        latest = min(sensor.latest_t for sensor in self.sensors.values())
        known = None
        while True:
            tick = self._next_provisional_tick()
            if tick is None or (tick + length - 1) / hz > latest:
                return
            self.provisional_tick = tick
            if not self.provisional:
                continue
            start_s = tick / hz
            known = self.tracker.known_nonwear() if known is None else known
            if any(start_s < b - 1e-9 and start_s + self.p.step_s > a + 1e-9 for a, b in known):
                self.provisional_out.append({"start_s": start_s, "label": NOT_WORN})
                continue
            grid = (tick + np.arange(length)) / hz
            values = []
            for sensor in self.sensors.values():
                t, x = sensor.recent(grid[0] - PROVISIONAL_CONTEXT_S)
                if len(t) < 2:
                    break
                values.append(resample_stream(t, x, grid, max_gap_s=self.p.max_gap_s, target_hz=hz,
                                              lowpass_hz=self.p.lowpass_hz))
            window = np.hstack(values).astype(np.float32) if len(values) == len(SENSORS) else None
            if window is None or np.isnan(window).any():
                continue  # a gap inside it: no provisional label
            self.to_be_scored.append({"start_s": start_s, "window": window, "provisional": True})

    def _next_provisional_tick(self) -> int | None:
        """The start of the next provisional window: on the final windows' grid, after the last one passed."""
        anchor = self.next_window_tick
        if anchor is None:  # nothing fused yet: the first segment starts where both sensors have a sample
            firsts = [sensor.first_t for sensor in self.sensors.values()]
            if None in firsts:
                return None
            anchor = max(first_tick_at_or_after(first, self.p.target_hz) for first in firsts)
        if self.provisional_tick is None or self.provisional_tick < anchor:
            return anchor
        return anchor + ((self.provisional_tick - anchor) // self.step + 1) * self.step

    # ---------------------------------------------------------------- out
    def to_score(self) -> np.ndarray:
        """The windows cut since the last call (final and provisional ones, in the order they were cut) to be scored
        (float32 [n, length, 6]); answer with `scored`."""
        self.scoring = [entry for entry in self.to_be_scored if "window" in entry]  # not decided not worn meanwhile
        self.to_be_scored = []
        if not self.scoring:
            return np.empty((0, self.p.window_length, len(CHANNELS)), np.float32)
        return np.stack([entry["window"] for entry in self.scoring])

    def scored(self, probabilities: np.ndarray) -> None:
        if len(probabilities) != len(self.scoring):
            raise ValueError(f"{len(probabilities)} rows of probabilities for {len(self.scoring)} windows")
        for entry, row in zip(self.scoring, probabilities):
            entry.pop("window", None)
            if entry.get("provisional"):
                label = window_labels(np.ones(1, bool), row[None], self.timeline.labels, self.provisional_threshold)[0][0]
                self.provisional_out.append({"start_s": entry["start_s"], "label": str(label)})
            elif entry.get("worn", True):
                entry["probabilities"] = row
        self.scoring = []
        self._label()

    def _label(self) -> None:
        while self.awaiting:
            entry = self.awaiting[0]
            if entry["worn"] and "probabilities" not in entry:
                break
            self.awaiting.pop(0)
            probabilities = entry.get("probabilities") if entry["worn"] else None
            self.decided_out.append({"start_s": entry["start_s"], "worn": entry["worn"], "probabilities": probabilities})
            self.decided += 1
            self.new_labels += self.timeline.add(entry["start_s"], probabilities)
        if self.closed and not self.awaiting and not self.windows:
            self.new_labels += self.timeline.end()

    def labels(self) -> list[dict]:
        """Timeline entries final since the last call, in order: start_s and label."""
        labels, self.new_labels = self.new_labels, []
        return labels

    def provisional_labels(self) -> list[dict]:
        """Provisional labels since the last call, in order: start_s and label (each window's final label follows)."""
        out, self.provisional_out = self.provisional_out, []
        return out

    def take_fused(self) -> tuple[np.ndarray, np.ndarray]:
        """The fused rows made since the last call, t [n] and float32 values [n, 6] (the caller keeps them: the
        store's copy of the recording; `fused_table` makes the table of them)."""
        out, self.fused_out = self.fused_out, []
        if not out:
            return np.empty(0), np.empty((0, len(CHANNELS)), np.float32)
        return np.concatenate([t for t, _ in out]), np.concatenate([values for _, values in out])

    def take_decided(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The windows decided since the last call (the caller keeps them for `prepared`): start_s [n], worn [n] and
        the worn ones' probabilities [worn, K]."""
        out, self.decided_out = self.decided_out, []
        start_s = np.array([entry["start_s"] for entry in out], dtype=np.float64)
        worn = np.array([entry["worn"] for entry in out], dtype=bool)
        rows = [entry["probabilities"] for entry in out if entry["worn"]]
        k = len(self.timeline.labels)
        return start_s, worn, np.array(rows).reshape(len(rows), k) if rows else np.empty((0, k), np.float32)

    def quality(self) -> dict:
        """Fusion's report as far as a stream has it (the Answer reads samples, duplicates, order and gaps)."""
        return {"recording": self.recording_id, "target_hz": self.p.target_hz, "lowpass_hz": self.p.lowpass_hz,
                "samples_written": self.fused_rows, "segments": self.fused_segments,
                "fused_seconds": round(self.fused_rows / self.p.target_hz, 2),
                **{name: sensor.quality() for name, sensor in self.sensors.items()}}

    @property
    def decided_windows(self) -> int:
        return self.decided

    @property
    def labelled_windows(self) -> int:
        return self.timeline.given

    def prepared(self, fused: pd.DataFrame, start_s: np.ndarray, worn: np.ndarray):
        """The decided windows (what the caller kept of take_decided) as a PreparedRecording for
        har.answer.answer_for. `fused` is every fused row so far (what the caller kept of take_fused)."""
        from har.scoring import PreparedRecording

        return PreparedRecording(self.recording_id, self.start_time, None, np.asarray(start_s, dtype=np.float64),
                                 np.asarray(worn, dtype=bool), list(self.tracker.episodes), self.quality(), fused,
                                 self.p)


def for_model(card, wear_rule: WearRule, *, recording_id: str, timezone: str | None = None,
              provisional: bool = True) -> LiveRecording:
    """A live recording scored by the model of `card` (a har.modelfile.ModelCard): its preprocessing, labels,
    smoother and thresholds; provisional labels judged by its unsmoothed threshold (they are not smoothed)."""
    return LiveRecording(Preprocessing.from_card(card), wear_rule, recording_id=recording_id, labels=card.labels,
                         switch_probability=card.switch_probability, threshold=card.abstain_threshold,
                         timezone=timezone,
                         provisional_threshold=float(card.calibration.get("threshold") or 0.0) if provisional else None)


def inside(start_s: float, episodes: list[tuple[float, float]]) -> bool:
    """Whether a window starting at start_s lies in one of the non-wear episodes (as the wear rule reads its start)."""
    return any(a - 1e-9 <= start_s < b - 1e-9 for a, b in episodes)


def fused_table(t: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """The canonical fused table (t, ax..gz) of fused rows."""
    table = pd.DataFrame(np.asarray(values, np.float32), columns=CHANNELS)
    table.insert(0, "t", np.asarray(t, np.float64))
    return table
