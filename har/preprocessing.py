"""How raw recordings become a model's windows: the fusion and window settings it was exported with.

`Preprocessing.from_card` reads them from the model card only, never from params, so the model
decides how its input is made (training/serving skew is the failure this prevents). Every way a
recording is cut for a model goes through it: har/scoring.py's `prepare`, and the personal models'
calibration windows (har/personalize.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from har.fusion import fuse_recording
from har.modelfile import ModelCard
from har.recording import Recording
from har.windows import cut_windows, make_windows

PREPROCESSING_KEYS = ("target_hz", "max_gap_s", "lowpass_hz", "window_length", "overlap")


@dataclass(frozen=True)
class Preprocessing:
    """How raw recordings become the model's windows: the fusion and window settings it was exported with."""

    target_hz: float
    max_gap_s: float
    lowpass_hz: float | None
    window_length: int
    overlap: float

    @classmethod
    def from_card(cls, card: ModelCard) -> "Preprocessing":
        """The model's own settings (its metadata's preprocessing, the input contract's window and rate beside)."""
        settings = {"window_length": card.window_length, "target_hz": card.input_contract["target_hz"],
                    **card.preprocessing}
        missing = [k for k in PREPROCESSING_KEYS if k not in settings]
        if missing:
            raise ValueError(f"model {card.name} {card.version}: its preprocessing lacks {missing} "
                             f"(expected {list(PREPROCESSING_KEYS)}, as stages/export.py writes them)")
        lowpass = settings["lowpass_hz"]
        return cls(target_hz=float(settings["target_hz"]), max_gap_s=float(settings["max_gap_s"]),
                   lowpass_hz=None if lowpass is None else float(lowpass),
                   window_length=int(settings["window_length"]), overlap=float(settings["overlap"]))

    @property
    def window_s(self) -> float:
        return self.window_length / self.target_hz

    @property
    def step_s(self) -> float:
        """Seconds between consecutive window starts within a segment."""
        return self.window_s * (1 - self.overlap)

    def fuse(self, recording: Recording) -> tuple[pd.DataFrame, dict]:
        """The recording on the model's grid (har.fusion), and fusion's report."""
        return fuse_recording(recording, target_hz=self.target_hz, max_gap_s=self.max_gap_s,
                              lowpass_hz=self.lowpass_hz)

    def cut(self, fused: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The model's windows [n, length, 6] of a fused table and their start times (har.windows)."""
        return make_windows(fused, length=self.window_length, overlap=self.overlap, target_hz=self.target_hz)

    def cut_arrays(self, t: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`cut` over arrays: t [n] and float32 values [n, 6] (a live recording's fused rows, har/live.py)."""
        return cut_windows(t, values, length=self.window_length, overlap=self.overlap, target_hz=self.target_hz)
