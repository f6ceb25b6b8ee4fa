"""Was the watch worn? Non-wear detection on a fused recording, after the field's conventions.

A watch lying on a desk records gravity and the sensor's noise floor (about 1 mg per axis), and a
model asked what the wearer did will still name an activity. So before anything is scored, long
still periods are marked as non-wear:

- an epoch (`epoch_s`, 10 s) is *still* when at least `min_axes` (2) of the three accelerometer
  axes have a standard deviation below `std_mg` (13 mg) and a range below `range_mg` (50 mg): the
  per-axis criteria of van Hees et al. (2011, 2013), as GGIR applies them;
- a run of consecutive still epochs lasting at least `min_duration_min` is a non-wear episode, as
  OxWearables' actipy `detect_nonwear` marks stationary episodes longer than its patience.

Where this departs from the field: GGIR judges 60-minute windows and actipy waits 90 minutes,
which suits week-long recordings; the sessions here last about an hour, so a watch put down for
59 minutes would never be found. The default minimum is 30 minutes (`wear:` in conf/config.yaml).
A person who keeps the wrist perfectly still for that long (asleep, say) would be marked not
worn; studies of sleep should raise it to the field's 60 or 90.

A run never crosses a gap in the data (an epoch without enough samples breaks it): missing data is
no evidence of stillness.

Two departures of our own (docs/timelines.md says why):

- **orientation**: a run also ends where the gravity direction changes between one still epoch and
  the next still epoch of the run by more than `max_tilt_deg`. A watch that is picked up and put on
  comes to rest at another angle; without this, a wearer who sits still right after would be
  absorbed into the non-wear episode (the short movement of picking it up is an interruption the
  run tolerates). A nudge that leaves the watch at the same angle does not end the run.
- **edges to the sample**: an episode's ends are moved from the epoch grid to the first sample that
  leaves the still band (the neighbouring still epoch's mean +- range_mg / 2 on at least `min_axes`
  axes), at most one epoch outward, so the seconds between the last still epoch and the pick-up
  are not scored as an activity.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from har.windows import window_spans

MG = 9.80665 / 1000.0  # m/s^2 per milli-g: fused tables are in SI units
ACC = ["ax", "ay", "az"]


@dataclass(frozen=True)
class WearRule:
    epoch_s: float = 10.0
    std_mg: float = 13.0
    range_mg: float = 50.0
    min_axes: int = 2
    min_duration_min: float = 30.0
    max_interruption_s: float = 60.0  # a still run absorbs movement this short (a watch on a desk nudged)
    max_tilt_deg: float = 20.0  # ...unless the watch rests at another angle after it (picked up: the run ends)
    min_epoch_coverage: float = 0.8  # share of an epoch's samples that must be present for it to count

    @classmethod
    def from_params(cls, wear: dict | None) -> "WearRule":
        known = cls.__dataclass_fields__
        unknown = sorted(set(wear or {}) - set(known))
        if unknown:
            raise ValueError(f"wear: unknown setting(s) {unknown}; expected some of {sorted(known)}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in (wear or {}).items()})

    def describe(self) -> str:
        return (f"still: >= {self.min_axes} of 3 accelerometer axes with SD < {self.std_mg:g} mg and range < "
                f"{self.range_mg:g} mg per {self.epoch_s:g}-s epoch; not worn: >= {self.min_duration_min:g} min "
                f"of consecutive still epochs, ended where the watch comes to rest turned by more than "
                f"{self.max_tilt_deg:g} degrees (picked up)")


def still_epochs(t: np.ndarray, acc: np.ndarray, target_hz: float, rule: WearRule) -> tuple[np.ndarray, np.ndarray]:
    """Epoch start times (seconds, on the recording's clock) and whether each epoch is still.

    `acc` [n, 3] in m/s^2 at `target_hz`; epochs are counted from the first sample. Epochs with no
    sample are absent from the result, epochs with too few samples are never still.
    """
    starts, still, _ = epoch_summary(t, acc, target_hz, rule)
    return starts, still


def epoch_summary(t: np.ndarray, acc: np.ndarray, target_hz: float, rule: WearRule,
                  origin: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """still_epochs plus each epoch's mean acceleration [epochs, 3] in milli-g (its gravity direction when still).
    Epochs are counted from `origin` (default: the first sample); each epoch's figures depend on its own samples only."""
    t = np.asarray(t, dtype=np.float64)
    if len(t) == 0:
        return np.empty(0), np.empty(0, bool), np.empty((0, 3))
    origin = t[0] if origin is None else origin
    index = epoch_index(t, origin, rule)
    epochs, first, counts = np.unique(index, return_index=True, return_counts=True)
    acc = np.asarray(acc, dtype=np.float64) / MG  # milli-g, as the thresholds are written
    sums = np.add.reduceat(acc, first, axis=0)
    squares = np.add.reduceat(acc ** 2, first, axis=0)
    mean = sums / counts[:, None]
    sd = np.sqrt(np.maximum(squares / counts[:, None] - mean ** 2, 0.0))
    spread = np.maximum.reduceat(acc, first, axis=0) - np.minimum.reduceat(acc, first, axis=0)
    quiet_axes = ((sd < rule.std_mg) & (spread < rule.range_mg)).sum(axis=1)
    covered = counts >= rule.min_epoch_coverage * rule.epoch_s * target_hz
    return origin + epochs * rule.epoch_s, (quiet_axes >= rule.min_axes) & covered, mean


def epoch_index(t: np.ndarray, origin: float, rule: WearRule) -> np.ndarray:
    return np.floor((np.asarray(t, dtype=np.float64) - origin) / rule.epoch_s + 1e-9).astype(np.int64)


def tilt_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two mean accelerations (gravity directions when still), in degrees."""
    cosine = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def nonwear_episodes(t: np.ndarray, acc: np.ndarray, target_hz: float, rule: WearRule) -> list[tuple[float, float]]:
    """[(start_s, end_s)] of every run of still epochs lasting at least the rule's minimum.

    Inside a run, movement lasting at most `max_interruption_s` does not end it (a watch lying on a
    desk that is nudged or moved is still not worn: the lasting stillness decides), but a missing
    epoch does (no data is no evidence of stillness), and so does a still epoch whose gravity
    direction differs from the run's last still epoch by more than `max_tilt_deg` (the watch was
    picked up). Each episode's ends are then refined to the sample (`refine_edges`). A whole recording
    is the tracker's input at once (`NonwearTracker`), a live one arrives piece by piece: the same episodes.
    """
    tracker = NonwearTracker(target_hz, rule)
    tracker.add(t, acc)
    tracker.close()
    return tracker.episodes


class NonwearTracker:
    """Non-wear episodes of a recording whose fused samples arrive in time order, in pieces of any size.

    Epochs are summarised once complete (a later sample has arrived, or the recording closed) and walked
    through the run rule of `nonwear_episodes`; a run is judged once no later epoch can extend it. Only the
    samples a run's edges may still be refined into are kept, so a recording of any length needs little memory.
    `decided_until` says up to when the episodes are final: no episode found later reaches before it.
    """

    def __init__(self, target_hz: float, rule: WearRule):
        self.target_hz, self.rule = target_hz, rule
        self.origin: float | None = None
        self.episodes: list[tuple[float, float]] = []
        self.t, self.acc = np.empty(0), None  # samples of incomplete epochs, and those an edge may be refined into
        self.next_epoch = 0  # the first epoch not walked yet
        self.previous_end: float | None = None  # the end of the last epoch walked (a gap when the next one starts later)
        self.run: dict | None = None  # the open run: start, end, first and last still epoch's mean, samples before it
        self.closed = False

    def add(self, t: np.ndarray, acc: np.ndarray) -> None:
        """Fused samples later than every sample before: t [n] seconds, acc [n, 3] m/s^2 (kept in their dtype)."""
        t = np.asarray(t, dtype=np.float64)
        if len(t) == 0:
            return
        if self.origin is None:
            self.origin, self.acc = float(t[0]), np.asarray(acc)[:0]
        self.t, self.acc = np.concatenate([self.t, t]), np.concatenate([self.acc, acc])
        self._walk(int(epoch_index(self.t[-1:], self.origin, self.rule)[0]))  # the last epoch may still grow

    def close(self) -> None:
        """The recording ended: its last epoch is complete and the open run is judged."""
        if not self.closed:
            self.closed = True
            if len(self.t):
                self._walk(int(epoch_index(self.t[-1:], self.origin, self.rule)[0]) + 1)
            self._judge()

    @property
    def end_of_data(self) -> float:
        return float(self.t[-1]) + 1.0 / self.target_hz if len(self.t) else 0.0

    @property
    def decided_until(self) -> float:
        """Seconds before which every non-wear episode is known (inf once closed). Samples not yet summarised may
        start a run, whose start is refined up to one epoch earlier; an open run may become an episode."""
        if self.closed:
            return np.inf
        if self.origin is None:
            return -np.inf
        horizon = self.origin + epoch_index(self.t[-1:], self.origin, self.rule)[0] * self.rule.epoch_s - self.rule.epoch_s
        if self.run is not None:
            horizon = min(horizon, self.run["end"] if self._long(self.run) else self.run["start"] - self.rule.epoch_s)
        return horizon

    def known_nonwear(self) -> list[tuple[float, float]]:
        """The final episodes, and the part of an open run that is certain to be one (it lasts the minimum already)."""
        if self.run is not None and self._long(self.run):
            start, _ = self._refined(self.run, self.run["end"])
            return [*self.episodes, (start, self.run["end"])]
        return list(self.episodes)

    def _long(self, run: dict) -> bool:
        return run["end"] - run["start"] >= self.rule.min_duration_min * 60.0 - 1e-6

    def _walk(self, until_epoch: int) -> None:
        """The run rule over the epochs not walked yet before `until_epoch` (complete ones); their samples are then
        let go but for what a refinement may need."""
        index = epoch_index(self.t, self.origin, self.rule)
        walked = (index >= self.next_epoch) & (index < until_epoch)
        if not walked.any():
            return
        self.next_epoch = until_epoch
        rule = self.rule
        starts, still, mean = epoch_summary(self.t[walked], self.acc[walked], self.target_hz, rule, origin=self.origin)
        for start, is_still, epoch_mean in zip(starts, still, mean):
            if self.run is not None and start - self.run["end"] > rule.max_interruption_s + 1e-6:
                self._judge()  # no later still epoch can extend it
            if self.previous_end is not None and not np.isclose(start, self.previous_end):
                self._judge()  # a gap in the data ends the run
            self.previous_end = start + rule.epoch_s
            if not is_still:
                continue
            run = self.run
            if (run is not None and start - run["end"] <= rule.max_interruption_s + 1e-6
                    and tilt_deg(run["last_mean"], epoch_mean) <= rule.max_tilt_deg):
                run["end"], run["last_mean"] = start + rule.epoch_s, epoch_mean
            else:
                self._judge()
                before = (self.t >= start - rule.epoch_s - 1e-9) & (self.t < start - 1e-9)
                self.run = {"start": float(start), "end": float(start + rule.epoch_s), "first_mean": epoch_mean,
                            "last_mean": epoch_mean, "before": (self.t[before], self.acc[before])}
        # Kept: the last complete epoch (the samples before a run that starts next) and, while a run is open, everything
        # after its end (what its end is refined into when it closes), plus the incomplete epoch.
        keep_from = starts[-1] if len(starts) else -np.inf
        if self.run is not None:
            keep_from = min(keep_from, self.run["end"])
        keep = (self.t >= keep_from - 1e-9) | (index >= until_epoch)
        self.t, self.acc = self.t[keep], self.acc[keep]

    def _judge(self) -> None:
        """The open run is over: an episode if it lasted the minimum, its ends refined to the sample. Before the
        recording closes, later samples exist, so neither end needs clamping to the end of the data."""
        run, self.run = self.run, None
        if run is not None and self._long(run):
            self.episodes.append(self._refined(run, run["end"]))

    def _refined(self, run: dict, end: float) -> tuple[float, float]:
        """refine_edges on the samples it reads: one epoch before the run (kept when it opened) and one after it."""
        end_of_data = self.end_of_data
        before_t, before_acc = run["before"]
        after = self.t >= min(end, end_of_data) - 1e-9
        t, acc = np.concatenate([before_t, self.t[after]]), np.concatenate([before_acc, self.acc[after]])
        start, refined_end = refine_edges(t, acc, self.target_hz, self.rule, (run["start"], min(end, end_of_data)),
                                          run["first_mean"], run["last_mean"])
        return float(start), float(min(refined_end, end_of_data))


def refine_edges(t: np.ndarray, acc: np.ndarray, target_hz: float, rule: WearRule, episode: tuple[float, float],
                 first_mean: np.ndarray, last_mean: np.ndarray) -> tuple[float, float]:
    """The episode's ends moved outward, at most one epoch, to the first sample outside the still band.

    A sample is inside the band when at least `min_axes` of its axes lie within range_mg / 2 of the
    neighbouring still epoch's mean (milli-g). Epochs are 10 s, so without this up to 10 s of a
    watch still on the desk would be scored as whatever the wearer did next. A gap ends the search.
    """
    start, end = episode
    band = rule.range_mg / 2.0

    def inside(index: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return (np.abs(acc[index] / MG - reference) < band).sum(axis=1) >= rule.min_axes

    def first_outside(index: np.ndarray, reference: np.ndarray) -> int:
        """How many of `index` (in walking order) stay inside the band before the first that leaves it or a gap."""
        if len(index) == 0:
            return 0
        ok = inside(index, reference)
        steps = np.abs(np.diff(t[index]))
        ok[1:] &= np.cumsum(steps > 1.5 / target_hz) == 0
        return int(np.argmin(ok)) if not ok.all() else len(index)

    after = np.flatnonzero((t >= end - 1e-9) & (t < end + rule.epoch_s))
    kept = first_outside(after, last_mean)
    if kept:
        end = float(t[after[kept - 1]]) + 1.0 / target_hz
    before = np.flatnonzero((t < start - 1e-9) & (t >= start - rule.epoch_s))[::-1]
    kept = first_outside(before, first_mean)
    if kept:
        start = float(t[before[kept - 1]])
    return start, end


def worn_windows(start_s: np.ndarray, window_s: float, episodes: list[tuple[float, float]]) -> np.ndarray:
    """True for each window whose time in the timeline lies wholly outside every non-wear episode.

    A window's time in the timeline is the span it owns (`window_spans`: until the next window
    starts). A window that owns any second of an episode is not worn, so no second of a non-wear
    episode is ever given an activity; the price is under one window step of worn time at each end.
    """
    start_s = np.asarray(start_s, dtype=np.float64)
    order = np.argsort(start_s, kind="stable")
    spans = np.empty((len(start_s), 2))
    spans[order] = window_spans(start_s[order], window_s)
    worn = np.ones(len(start_s), dtype=bool)
    for start, end in episodes:
        worn &= ~((spans[:, 0] < end - 1e-9) & (spans[:, 1] > start + 1e-9))
    return worn


def wear_report(episodes: list[tuple[float, float]], fused_seconds: float, rule: WearRule, clock=None) -> dict:
    """Wear time, the non-wear episodes and the rule that marked them. `clock(seconds)` gives wall-clock times."""
    not_worn_s = float(sum(end - start for start, end in episodes))
    clock = clock or (lambda seconds: None)
    return {"worn_minutes": round(max(fused_seconds - not_worn_s, 0.0) / 60.0, 3),
            "not_worn_minutes": round(not_worn_s / 60.0, 3),
            "episodes": [{"start_s": round(s, 3), "end_s": round(e, 3), "start_time": clock(s), "end_time": clock(e),
                          "minutes": round((e - s) / 60.0, 3)} for s, e in episodes],
            "rule": {"text": rule.describe(), **asdict(rule)}}


def recording_wear(fused, target_hz: float, rule: WearRule) -> list[tuple[float, float]]:
    """Non-wear episodes of a fused table (columns t, ax, ay, az in SI units)."""
    return nonwear_episodes(fused["t"].to_numpy(), fused[ACC].to_numpy(), target_hz, rule)
