"""The in-memory form every reader returns, and the error every reader raises.

A reader's job ends at SI units and per-sample times in seconds; resampling and
fusion happen later, in one place (`har.fusion`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

G = 9.80665  # standard gravity, m/s^2 per g

# Conversion factors into the canonical units (m/s^2, rad/s). A reader declares the
# unit its format uses; nothing is ever inferred from value ranges.
ACC_TO_SI = {"m/s^2": 1.0, "g": G, "milli-g": G / 1000.0}
GYR_TO_SI = {"rad/s": 1.0, "deg/s": np.pi / 180.0}


class InputError(ValueError):
    """Bad input, located: which file, which row and column, and what was expected."""

    def __init__(self, file, problem: str, *, row=None, column=None, expected=None):
        self.file, self.row, self.column, self.problem, self.expected = str(file), row, column, problem, expected
        where = self.file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        message = f"{where}: {problem}"
        if expected:
            message += f" (expected {expected})"
        super().__init__(message)


@dataclass
class SensorStream:
    """One tri-axial sensor: sample times in seconds and values in SI units."""

    t: np.ndarray  # float64 [n], seconds, as read (may be unsorted or duplicated)
    xyz: np.ndarray  # float64 [n, 3], SI units

    def __post_init__(self):
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3 or len(self.t) != len(self.xyz):
            raise ValueError(f"SensorStream needs t [n] and xyz [n, 3], got {self.t.shape} and {self.xyz.shape}")


@dataclass
class Recording:
    """An accelerometer and a gyroscope stream from one session of one wearer."""

    recording_id: str
    acc: SensorStream
    gyr: SensorStream
    subject: str | None = None
    activity: str | None = None
    start_time: str | None = None  # ISO wall-clock time of t == 0, where the format gives one
    report: dict = field(default_factory=dict)  # what the reader read, skipped and why


def to_si(values: np.ndarray, unit: str, table: dict) -> np.ndarray:
    if unit not in table:
        raise ValueError(f"unknown unit {unit!r}; known: {sorted(table)}")
    return values * table[unit]
