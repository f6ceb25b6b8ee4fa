"""Windowing and subject-wise splitting, shared by the pipeline and the service."""
from __future__ import annotations

import numpy as np
import pandas as pd

from har.fusion import CHANNELS, segments


def with_magnitudes(values: np.ndarray) -> np.ndarray:
    """[..., 6] -> [..., 8]: the six axes, then |acc| and |gyr| (orientation-free), in the input's dtype."""
    acc = np.linalg.norm(values[..., :3], axis=-1, keepdims=True)
    gyr = np.linalg.norm(values[..., 3:6], axis=-1, keepdims=True)
    return np.concatenate([values, acc, gyr], axis=-1)


def window_step(length: int, overlap: float) -> int:
    if not 0 <= overlap < 1:
        raise ValueError(f"window.overlap must be in [0, 1), got {overlap}")
    return max(1, int(round(length * (1 - overlap))))


def make_windows(fused: pd.DataFrame, *, length: int, overlap: float, target_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Windows [n, length, 6] float32 and their start times, never spanning a gap in `t`."""
    return cut_windows(fused["t"].to_numpy(), fused[CHANNELS].to_numpy(np.float32), length=length, overlap=overlap,
                       target_hz=target_hz)


def cut_windows(t: np.ndarray, values: np.ndarray, *, length: int, overlap: float,
                target_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """make_windows over arrays: t [n] and values float32 [n, 6]."""
    step = window_step(length, overlap)
    starts = [np.arange(a, b - length + 1, step) for a, b in segments(t, 1.5 / target_hz)]
    starts = np.concatenate(starts) if starts else np.empty(0, dtype=int)
    if len(starts) == 0:
        return np.empty((0, length, len(CHANNELS)), np.float32), np.empty(0)
    index = starts[:, None] + np.arange(length)[None, :]
    return values[index], t[starts]


def window_spans(start_s: np.ndarray, window_s: float) -> np.ndarray:
    """[start, end) per window that tile the covered time without overlap.

    Overlapping windows would count the same seconds twice, so each window owns the time
    until the next window starts, or its own full length where a gap follows.
    """
    start_s = np.asarray(start_s, dtype=np.float64)
    next_start = np.append(start_s[1:], np.inf)
    return np.column_stack([start_s, np.minimum(start_s + window_s, next_start)])


def split_subjects(subjects, split: dict) -> dict[str, list[str]]:
    """train / val / test subject lists: explicit lists from config, or a seeded split by fractions.

    Either way a subject lands in exactly one split.
    """
    subjects = sorted({str(s) for s in subjects})
    if split.get("test_subjects"):
        test = [str(s) for s in split["test_subjects"]]
        val = [str(s) for s in split.get("val_subjects") or []]
        train = [s for s in subjects if s not in set(test) | set(val)]
    else:
        order = np.random.default_rng(split["seed"]).permutation(subjects)
        n_test = max(1, int(round(split["test_fraction"] * len(subjects))))
        n_val = max(1, int(round(split["val_fraction"] * len(subjects))))
        test, val, train = list(order[:n_test]), list(order[n_test:n_test + n_val]), list(order[n_test + n_val:])
    overlap = (set(train) & set(val)) | (set(train) & set(test)) | (set(val) & set(test))
    if overlap:
        raise ValueError(f"subjects {sorted(overlap)} are in more than one split")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def subject_folds(subjects, n_folds: int, seed: int) -> list[list[str]]:
    """Subjects shuffled (seeded) and dealt into `n_folds` groups of nearly equal size."""
    subjects = sorted({str(s) for s in subjects})
    if not 3 <= n_folds <= len(subjects):
        raise ValueError(f"folds must be between 3 (train, validation, test) and the {len(subjects)} subjects, got {n_folds}")
    order = np.random.default_rng(seed).permutation(subjects)
    return [sorted(order[i::n_folds].tolist()) for i in range(n_folds)]
