"""One scoring path: a recording is prepared, scored and answered here, whichever way it came in.

    source (GarminPair | FusedTable)
      -> prepare(source, Preprocessing.from_card(card), wear_rule)       -> PreparedRecording
      -> score(prepared, predict, card, wear_rule, reference?, subject?)  -> Answer (har/answer.py)

The ways in are adapters around these two calls and differ only at their edges: the service's
uploads (serve/service.py), `python -m serve.batch`, the store's re-scoring (store/rescore.py), the
sessions stage and the drift stage (which prepares production recordings and judges their worn windows).

Reading, fusion and windowing are the pipeline's own functions (`har.garmin`, `har.fusion`,
`har.windows`) called with the settings the model was exported with (`Preprocessing`, read from the
model card only, never from params: har/preprocessing.py), so a recording is cut into exactly the
windows the pipeline would cut: no training/serving skew. A fused table made elsewhere is refused when it was sampled or
filtered otherwise. Each window is then marked worn or not (har/wear.py); windows in non-wear
episodes are never scored. See docs/timelines.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from har.answer import Answer, answer_for
from har.drift import recording_drift
from har.fusion import CHANNELS
from har.garmin import read_garmin_pair
from har.modelfile import ModelCard
from har.preprocessing import Preprocessing
from har.wear import WearRule, recording_wear, worn_windows


# ---------------------------------------------------------------- sources

@dataclass(frozen=True)
class GarminPair:
    """A Garmin sensor-logger export: the accelerometer and gyroscope workbooks of one session."""

    accelerometer: Path
    gyroscope: Path
    timezone: str | None = None  # the wall-clock zone of the workbooks' timestamps (data.timezone)
    recording_id: str | None = None  # default: named after the accelerometer file, as the pipeline names it


@dataclass(frozen=True)
class FusedTable:
    """A recording already fused (columns t, ax..gz on a uniform grid): a stages.fuse parquet, a stored blob,
    or a slice of a stream. `fusion` is the fusion report made with it (stages.fuse's quality.json entry,
    or har.answer.fusion_report of a stored answer), where there is one."""

    table: pd.DataFrame
    recording_id: str
    start_time: str | None = None  # ISO wall-clock time of t == 0
    fusion: dict | None = None
    source: str | None = None  # how errors name it (a file name); default the recording id

    @classmethod
    def read(cls, path: Path, *, start_time: str | None = None, fusion: dict | None = None) -> "FusedTable":
        """A parquet table as stages.fuse writes it, named after its file."""
        return cls(pd.read_parquet(path), Path(path).stem, start_time, fusion, Path(path).name)


def fused_index(folder: Path) -> tuple[dict, dict]:
    """Start times (index.csv) and fusion reports (quality.json) by recording, where stages.fuse wrote them."""
    start_times, fusion = {}, {}
    if (folder / "index.csv").is_file():
        index = pd.read_csv(folder / "index.csv", dtype={"recording": str, "file": str, "start_time": str})
        if "start_time" in index.columns:  # stages.fuse writes it; a hand-made index may leave it out
            start_times = {Path(file).stem: start for file, start in zip(index["file"], index["start_time"])
                           if isinstance(start, str)}
    if (folder / "quality.json").is_file():
        fusion = {entry["recording"]: entry for entry in json.loads((folder / "quality.json").read_text())}
    return start_times, fusion


# ---------------------------------------------------------------- prepare

@dataclass
class PreparedRecording:
    """A recording cut into the model's windows, each marked worn or not; nothing scored yet."""

    recording_id: str
    start_time: str | None  # ISO wall-clock time of t == 0, where the source says
    windows: np.ndarray | None  # float32 [n, length, 6]; None for a live recording (har/live.py), scored as it came
    start_s: np.ndarray  # window start times, seconds since the recording's origin
    worn: np.ndarray  # bool [n]: False for windows inside a non-wear episode (never scored)
    nonwear: list[tuple[float, float]]  # non-wear episodes, seconds since the origin
    quality: dict  # fusion's report (samples, gaps, segments)
    fused: pd.DataFrame  # the fused table the windows were cut from (the study store keeps it)
    preprocessing: Preprocessing  # how the windows were cut

    @cached_property
    def worn_windows(self) -> np.ndarray:
        """The windows the model sees: those outside every non-wear episode."""
        if self.windows is None:
            raise ValueError(f"{self.recording_id}: a live recording's windows were scored as they came (har/live.py)")
        return self.windows[self.worn]

    @property
    def not_worn_windows(self) -> int:
        return int(len(self.start_s) - int(self.worn.sum()))


def prepare(source: GarminPair | FusedTable, preprocessing: Preprocessing, wear_rule: WearRule) -> PreparedRecording:
    """A recording fused (a Garmin pair) or checked (a fused table) and cut into the model's windows, each marked
    worn or not (har.wear). Raises har.recording.InputError for a bad workbook, ValueError for a fused table
    that is not the model's kind of input."""
    if isinstance(source, GarminPair):
        recording = read_garmin_pair(source.accelerometer, source.gyroscope, timezone=source.timezone,
                                     recording_id=source.recording_id)
        fused, quality = preprocessing.fuse(recording)
        recording_id, start_time = recording.recording_id, recording.start_time
    else:
        fused, quality = source.table, table_quality(source, preprocessing)
        recording_id, start_time = source.recording_id, source.start_time
    windows, start_s = preprocessing.cut(fused)
    nonwear = recording_wear(fused, preprocessing.target_hz, wear_rule)
    worn = worn_windows(start_s, preprocessing.window_s, nonwear)
    return PreparedRecording(recording_id, start_time, windows, start_s, worn, nonwear, quality, fused, preprocessing)


def table_quality(source: FusedTable, preprocessing: Preprocessing) -> dict:
    """The fusion report of a fused table, after checking that it is what the model takes: the columns, the
    sampling rate, and (where its report says) the rate and low-pass it was fused with; a mismatch would be
    training/serving skew."""
    table, name = source.table, source.source or source.recording_id
    missing = [c for c in ["t", *CHANNELS] if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing} (expected t, {', '.join(CHANNELS)})")
    step = float(np.median(np.diff(table["t"].to_numpy()))) if len(table) > 1 else float("nan")
    target_hz = preprocessing.target_hz
    if not np.isclose(step * target_hz, 1.0, rtol=1e-3):
        raise ValueError(f"{name}: sampled every {step:.6g} s, the model expects {target_hz:g} Hz "
                         f"(a step of {1 / target_hz:.6g} s)")
    fusion = source.fusion or {}
    for key in ("target_hz", "lowpass_hz"):  # stages.fuse's report records both
        expected = getattr(preprocessing, key)
        if key in fusion and not np.isclose(float(fusion[key]), float(expected)):
            raise ValueError(f"{name}: fused with {key} {fusion[key]} (quality.json), the model expects {expected}")
    return {**fusion, "samples_written": fusion.get("samples_written", int(len(table))),
            "fused_seconds": fusion.get("fused_seconds", round(len(table) / target_hz, 3)),
            "segments": fusion.get("segments")}


# ---------------------------------------------------------------- score

class EmptyRecording(ValueError):
    """A recording without one complete window: nothing can be scored."""


def score(prepared: PreparedRecording, predict: Callable[[np.ndarray], np.ndarray], card: ModelCard,
          wear_rule: WearRule, *, reference: dict | None = None, subject: str | None = None,
          personal: bool = False) -> Answer:
    """The answer for a prepared recording: `predict` (windows -> probabilities, the model of `card`) is asked
    about the worn windows only; `reference` (the model's drift_reference.json) adds this recording's drift.
    `subject` and `personal` say whose model it is. Raises EmptyRecording when there is no window at all."""
    if len(prepared.start_s) == 0:
        raise EmptyRecording(f"the recording holds no complete {card.window_length}-sample window of fused data "
                             f"({prepared.quality['fused_seconds']} s fused)")
    worn = prepared.worn_windows
    probabilities = predict(worn) if len(worn) else np.empty((0, len(card.labels)), np.float32)
    drift = (recording_drift(reference, worn, probabilities, card.labels, not_worn=prepared.not_worn_windows)
             if reference is not None else None)
    return answer_for(prepared, probabilities, card, wear_rule, subject=subject, personal=personal, drift=drift)


def remembered(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """`predict` asked once: later calls with the same windows answer from memory. For scoring one recording
    under several timeline settings (the sessions stage), where only the card changes between answers."""
    memory: dict = {}

    def once(windows: np.ndarray) -> np.ndarray:
        if "windows" in memory and memory["windows"] is not windows:
            raise ValueError("a remembered predict answers one recording's windows only")
        if "probabilities" not in memory:
            memory.update(windows=windows, probabilities=predict(windows))
        return memory["probabilities"]

    return once
