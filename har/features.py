"""Hand-made window features for the baseline: statistics, magnitudes, spectral band energies.

Windows are [n, length, 6] fused SI-unit arrays (channel order har.fusion.CHANNELS); the
features are computed per signal: the six channels plus the accelerometer and gyroscope
magnitudes, which do not depend on how the watch sits on the wrist.
"""
from __future__ import annotations

import numpy as np
from har.fusion import CHANNELS
from har.windows import with_magnitudes

SIGNALS = [*CHANNELS, "acc_mag", "gyr_mag"]
STATISTICS = ["mean", "std", "min", "max", "p10", "p25", "median", "p75", "p90", "skew", "kurtosis", "mean_abs_diff"]
# Band edges in Hz; the labelled data is band-limited to 10 Hz by fusion.
BANDS_HZ = [(0.25, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (5.0, 8.0), (8.0, 12.0)]
AXIS_PAIRS = [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]


def feature_names() -> list[str]:
    names = [f"{s}_{stat}" for s in SIGNALS for stat in STATISTICS]
    names += [f"{s}_band_{lo:g}_{hi:g}hz" for s in SIGNALS for lo, hi in BANDS_HZ]
    names += [f"{s}_dominant_hz" for s in SIGNALS]
    names += [f"corr_{CHANNELS[a]}_{CHANNELS[b]}" for a, b in AXIS_PAIRS]
    return names


def window_features(X: np.ndarray, target_hz: float) -> np.ndarray:
    """Features [n, len(feature_names())] float32 for windows X [n, length, 6]."""
    if X.ndim != 3 or X.shape[2] != len(CHANNELS):
        raise ValueError(f"windows must be [n, length, {len(CHANNELS)}], got shape {X.shape}")
    X = X.astype(np.float64)
    signals = with_magnitudes(X)  # [n, L, 8]
    centred = signals - signals.mean(axis=1, keepdims=True)
    std = centred.std(axis=1)
    # Standardised signal for skew and kurtosis; a constant signal has neither: call both 0
    # (symmetric, normal-tailed) rather than dividing by zero.
    z = np.divide(centred, std[:, None, :], out=np.zeros_like(centred), where=std[:, None, :] > 1e-6)
    flat = std <= 1e-6
    q = np.percentile(signals, [10, 25, 50, 75, 90], axis=1)  # [5, n, 8]
    statistics = np.stack([
        signals.mean(axis=1), std, signals.min(axis=1), signals.max(axis=1), *q,
        (z ** 3).mean(axis=1), np.where(flat, 0.0, (z ** 4).mean(axis=1) - 3.0),
        np.abs(np.diff(signals, axis=1)).mean(axis=1),
    ], axis=2)  # [n, 8, n_stats]

    power = np.abs(np.fft.rfft(centred, axis=1)) ** 2 / signals.shape[1]  # [n, F, 8]
    freqs = np.fft.rfftfreq(signals.shape[1], d=1.0 / target_hz)
    bands = np.stack([np.log1p(power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)) for lo, hi in BANDS_HZ],
                     axis=2)  # [n, 8, n_bands]
    dominant = freqs[1:][power[:, 1:].argmax(axis=1)]  # [n, 8], skipping the zero frequency

    correlations = np.stack([
        np.divide((centred[..., a] * centred[..., b]).mean(axis=1), std[:, a] * std[:, b],
                  out=np.zeros(len(X)), where=std[:, a] * std[:, b] > 0)
        for a, b in AXIS_PAIRS], axis=1)

    n = len(X)
    return np.concatenate([statistics.reshape(n, -1), bands.reshape(n, -1), dominant, correlations],
                          axis=1).astype(np.float32)
