"""Fusion: two irregular sensor streams -> one uniform, 6-channel, SI-unit table.

Each sensor is resampled onto the common grid on its own (accelerometer and gyroscope
batches start at different times, so joining rows would misalign them). Gaps longer than
`max_gap_s` are never bridged: the grid simply has no points there, and windowing later
sees the jump in `t` as a segment boundary.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import signal

from har.recording import Recording, SensorStream

CHANNELS = ["ax", "ay", "az", "gx", "gy", "gz"]
FILTER_ORDER = 4
MIN_FILTERED = 3 * (2 * FILTER_ORDER + 1)  # a segment of this many samples or fewer is not filtered


def clean_stream(stream: SensorStream) -> tuple[np.ndarray, np.ndarray, dict]:
    """Sort by time and drop repeated timestamps, counting both."""
    t = np.asarray(stream.t, dtype=np.float64)
    out_of_order = int(np.sum(np.diff(t) < 0))
    order = np.argsort(t, kind="stable")
    t, xyz = t[order], stream.xyz[order]
    # Samples that repeat a timestamp carry no new time information; keep the first.
    keep = np.concatenate([[True], np.diff(t) > 0])
    return t[keep], xyz[keep], {"samples_read": len(order), "out_of_order": out_of_order,
                                "duplicates": int(np.sum(~keep))}


def segments(t: np.ndarray, max_gap_s: float) -> list[tuple[int, int]]:
    """[start, stop) index ranges of `t` with no step longer than max_gap_s."""
    breaks = np.flatnonzero(np.diff(t) > max_gap_s) + 1
    bounds = np.concatenate([[0], breaks, [len(t)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def native_rate(t: np.ndarray) -> float:
    steps = np.diff(t)
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if len(steps) else float("nan")


def lowpass_cutoff(native_hz: float, target_hz: float, lowpass_hz: float | None) -> float | None:
    """The cutoff to apply, or None when the signal has nothing above it.

    Anti-aliasing needs a cutoff below the target Nyquist; `lowpass_hz` can lower it further
    so that every source is band-limited alike (training data at 20 Hz has nothing above 10 Hz).
    """
    cutoff = 0.4 * target_hz if lowpass_hz is None else min(lowpass_hz, 0.4 * target_hz)
    return cutoff if native_hz / 2 > cutoff else None


def lowpass_filter(native_hz: float, target_hz: float, lowpass_hz: float | None):
    """The Butterworth low-pass (second-order sections) a stream at `native_hz` gets, or None (nothing above it)."""
    cutoff = lowpass_cutoff(native_hz, target_hz, lowpass_hz)
    return signal.butter(FILTER_ORDER, cutoff, fs=native_hz, output="sos") if cutoff else None


def interpolated(at: np.ndarray, t: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Linear interpolation of the three axes at the times `at`."""
    return np.column_stack([np.interp(at, t, xyz[:, k]) for k in range(3)])


def resample_stream(t: np.ndarray, xyz: np.ndarray, grid: np.ndarray, *, max_gap_s: float,
                    target_hz: float, lowpass_hz: float | None) -> np.ndarray:
    """Values of one cleaned stream on `grid`; NaN where the stream has no segment covering it.
    (har/live.py does the same for a stream whose samples arrive as they are recorded.)"""
    out = np.full((len(grid), 3), np.nan)
    native_hz = native_rate(t)
    sos = lowpass_filter(native_hz, target_hz, lowpass_hz)
    for a, b in segments(t, max_gap_s):
        lo, hi = np.searchsorted(grid, t[a], side="left"), np.searchsorted(grid, t[b - 1], side="right")
        if hi <= lo:
            continue
        seg_t, seg_x = t[a:b], xyz[a:b]
        if sos is not None and b - a > MIN_FILTERED:
            # Filter on a uniform grid at the native rate: filters assume uniform spacing,
            # and the native samples jitter and skip.
            fine = np.arange(seg_t[0], seg_t[-1] + 0.5 / native_hz, 1.0 / native_hz)
            seg_t, seg_x = fine, signal.sosfiltfilt(sos, interpolated(fine, seg_t, seg_x), axis=0)
        out[lo:hi] = interpolated(grid[lo:hi], seg_t, seg_x)
    return out


class ZeroPhase:
    """`scipy.signal.sosfiltfilt` (odd padding of its default length) of a signal that grows at its end.

    The forward pass runs as samples come (in pieces it gives the same numbers as in one call). The backward
    pass starts at the end, so `values` runs it as if the signal ended with the samples so far: exact for a
    signal that does end there, and for earlier samples off by the filter's impulse response that far back
    (`settled`: how many samples back it has decayed to rounding).
    """

    def __init__(self, sos: np.ndarray):
        self.sos = sos
        taps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        self.edge = 3 * taps  # sosfiltfilt's default pad length
        self.zi = signal.sosfilt_zi(sos).reshape(len(sos), 2, 1)
        self.x = np.empty((0, 3))  # the inputs a right pad reads (all of them until the left pad is made)
        self.y, self.first = np.empty((0, 3)), 0  # forward outputs from input index `first` on
        self.state = None
        self.count = 0

    def push(self, x: np.ndarray) -> None:
        self.x = np.concatenate([self.x, x])
        self.count += len(x)
        if self.state is None:
            if self.count <= self.edge:
                return
            left = 2 * self.x[0:1] - self.x[self.edge:0:-1]
            _, state = signal.sosfilt(self.sos, left, axis=0, zi=self.zi * left[0:1])
            self.y, self.state = signal.sosfilt(self.sos, self.x, axis=0, zi=state)
        else:
            y, self.state = signal.sosfilt(self.sos, x, axis=0, zi=self.state)
            self.y = np.concatenate([self.y, y])
        self.x = self.x[-(self.edge + 1):]

    @property
    def started(self) -> bool:
        return self.state is not None

    def values(self) -> np.ndarray:
        """The filtered values of inputs [first, count) were the signal to end now."""
        right = 2 * self.x[-1:] - self.x[-2:-(self.edge + 2):-1]
        tail, _ = signal.sosfilt(self.sos, right, axis=0, zi=self.state)
        ext = np.concatenate([self.y, tail])
        backward, _ = signal.sosfilt(self.sos, ext[::-1], axis=0, zi=self.zi * ext[-1:])
        return backward[::-1][:len(self.y)]

    def forget(self, before: int) -> None:
        """Inputs before index `before` are final: their forward outputs are no longer needed."""
        drop = max(0, before - self.first)
        self.y, self.first = self.y[drop:], self.first + drop


def gap_summary(t: np.ndarray, max_gap_s: float) -> dict:
    steps = np.diff(t)
    gaps = steps[steps > max_gap_s]
    return {"gaps": int(len(gaps)), "gap_seconds": round(float(gaps.sum()), 3)}


def fuse_recording(recording: Recording, *, target_hz: float = 50.0, max_gap_s: float = 0.5,
                   lowpass_hz: float | None = 10.0) -> tuple[pd.DataFrame, dict]:
    """The canonical fused table (t, ax..gz) and a quality report that accounts for every sample."""
    acc_t, acc_x, acc_q = clean_stream(recording.acc)
    gyr_t, gyr_x, gyr_q = clean_stream(recording.gyr)
    start, stop = max(acc_t[0], gyr_t[0]), min(acc_t[-1], gyr_t[-1])
    # Grid points are whole multiples of the sample period from the recording's origin, so
    # every recording (and every re-run) lands on the same instants.
    ticks = np.arange(np.ceil(start * target_hz - 1e-9), np.floor(stop * target_hz + 1e-9) + 1)
    grid = ticks / target_hz
    options = dict(max_gap_s=max_gap_s, target_hz=target_hz, lowpass_hz=lowpass_hz)
    values = np.hstack([resample_stream(acc_t, acc_x, grid, **options), resample_stream(gyr_t, gyr_x, grid, **options)])
    covered = ~np.isnan(values).any(axis=1)
    fused = pd.DataFrame(values[covered].astype(np.float32), columns=CHANNELS)
    fused.insert(0, "t", grid[covered])

    fused_t = fused["t"].to_numpy()
    fused_segments = segments(fused_t, 1.5 / target_hz)
    spans = np.array([(fused_t[a], fused_t[b - 1]) for a, b in fused_segments]).reshape(-1, 2)

    def account(t, quality):
        # A sample is used when it lies inside a fused segment (within half a grid step).
        half = 0.5 / target_hz
        idx = np.searchsorted(spans[:, 0] - half, t, side="right") - 1
        inside = (idx >= 0) & (t <= spans[np.clip(idx, 0, None), 1] + half) if len(spans) else np.zeros(len(t), bool)
        return {**quality, "native_hz": round(native_rate(t), 2), **gap_summary(t, max_gap_s),
                "samples_used": int(inside.sum()), "samples_outside_fused": int((~inside).sum()),
                "span_s": round(float(t[-1] - t[0]), 3)}

    quality = {
        "recording": recording.recording_id,
        "reader": recording.report,
        "acc": account(acc_t, acc_q),
        "gyr": account(gyr_t, gyr_q),
        "overlap_s": round(max(0.0, float(stop - start)), 3),
        "target_hz": target_hz,
        "lowpass_hz": lowpass_hz,
        "samples_written": len(fused),
        "grid_points_without_both_sensors": int((~covered).sum()),
        "segments": len(fused_segments),
        "fused_seconds": round(len(fused) / target_hz, 2),
    }
    for sensor in ("acc", "gyr"):
        q = quality[sensor]
        assert q["samples_read"] == q["duplicates"] + q["samples_used"] + q["samples_outside_fused"], q
    return fused, quality
