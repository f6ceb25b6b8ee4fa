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
59 minutes would never be found. The default minimum is 30 minutes (conf/wear/default.yaml). A
person who keeps the wrist perfectly still for that long (asleep, say) would be marked not worn;
studies of sleep should raise it to the field's 60 or 90.

A run never crosses a gap in the data (an epoch without enough samples breaks it): missing data is
no evidence of stillness.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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
                f"of consecutive still epochs")


def still_epochs(t: np.ndarray, acc: np.ndarray, target_hz: float, rule: WearRule) -> tuple[np.ndarray, np.ndarray]:
    """Epoch start times (seconds, on the recording's clock) and whether each epoch is still.

    `acc` [n, 3] in m/s^2 at `target_hz`; epochs are counted from the first sample. Epochs with no
    sample are absent from the result, epochs with too few samples are never still.
    """
    t = np.asarray(t, dtype=np.float64)
    if len(t) == 0:
        return np.empty(0), np.empty(0, bool)
    index = np.floor((t - t[0]) / rule.epoch_s + 1e-9).astype(np.int64)
    epochs, first, counts = np.unique(index, return_index=True, return_counts=True)
    acc = np.asarray(acc, dtype=np.float64) / MG  # milli-g, as the thresholds are written
    sums = np.add.reduceat(acc, first, axis=0)
    squares = np.add.reduceat(acc ** 2, first, axis=0)
    mean = sums / counts[:, None]
    sd = np.sqrt(np.maximum(squares / counts[:, None] - mean ** 2, 0.0))
    spread = np.maximum.reduceat(acc, first, axis=0) - np.minimum.reduceat(acc, first, axis=0)
    quiet_axes = ((sd < rule.std_mg) & (spread < rule.range_mg)).sum(axis=1)
    covered = counts >= rule.min_epoch_coverage * rule.epoch_s * target_hz
    return t[0] + epochs * rule.epoch_s, (quiet_axes >= rule.min_axes) & covered


def nonwear_episodes(t: np.ndarray, acc: np.ndarray, target_hz: float, rule: WearRule) -> list[tuple[float, float]]:
    """[(start_s, end_s)] of every run of still epochs lasting at least the rule's minimum.

    Inside a run, movement lasting at most `max_interruption_s` does not end it (a watch lying on a
    desk that is nudged or moved is still not worn: the lasting stillness decides), but a missing
    epoch does: no data is no evidence of stillness.
    """
    starts, still = still_epochs(t, acc, target_hz, rule)
    runs: list[list[float]] = []  # [start, end] of still stretches, merged across short interruptions
    open_run, previous_end = None, None
    for start, is_still in zip(starts, still):
        if previous_end is not None and not np.isclose(start, previous_end):
            open_run = None  # a gap in the data: the run may not be extended across it
        previous_end = start + rule.epoch_s
        if not is_still:
            continue
        if open_run is not None and start - open_run[1] <= rule.max_interruption_s + 1e-6:
            open_run[1] = start + rule.epoch_s
        else:
            open_run = [start, start + rule.epoch_s]
            runs.append(open_run)
    end_of_data = float(t[-1]) + 1.0 / target_hz if len(t) else 0.0
    return [(float(run[0]), float(min(run[1], end_of_data))) for run in runs
            if run[1] - run[0] >= rule.min_duration_min * 60.0 - 1e-6]


def worn_windows(start_s: np.ndarray, window_s: float, episodes: list[tuple[float, float]]) -> np.ndarray:
    """True for each window whose middle lies outside every non-wear episode (most of it was worn)."""
    middle = np.asarray(start_s, dtype=np.float64) + window_s / 2.0
    worn = np.ones(len(middle), dtype=bool)
    for start, end in episodes:
        worn &= ~((middle >= start) & (middle < end))
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
