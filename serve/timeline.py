"""From a raw recording to an activity timeline: the service's `/recordings` and batch scoring share this.

Reading, fusion and windowing are the pipeline's own functions (`har.garmin`, `har.fusion`,
`har.windows`) called with the parameters the model was exported with, so a recording is cut
into exactly the windows the pipeline would cut: no training/serving skew.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from har.fusion import fuse_recording
from har.garmin import read_garmin_pair
from har.recording import Recording
from har.windows import make_windows
from serve.modelfile import ModelCard


@dataclass
class RecordingWindows:
    recording: Recording
    windows: np.ndarray  # float32 [n, length, 6]
    start_s: np.ndarray  # window start times, seconds since the recording's origin
    quality: dict  # fusion's report (samples, gaps, segments)


def garmin_windows(acc_path, gyr_path, preprocessing: dict, *, timezone: str | None = None,
                   recording_id: str | None = None) -> RecordingWindows:
    """A Garmin workbook pair, fused and windowed exactly as the pipeline does it.

    `preprocessing` holds target_hz, max_gap_s, lowpass_hz, window_length and overlap
    (the model's metadata carries them from export time).
    """
    recording = read_garmin_pair(acc_path, gyr_path, timezone=timezone, recording_id=recording_id)
    fused, quality = fuse_recording(recording, target_hz=preprocessing["target_hz"],
                                    max_gap_s=preprocessing["max_gap_s"], lowpass_hz=preprocessing["lowpass_hz"])
    windows, start_s = make_windows(fused, length=preprocessing["window_length"], overlap=preprocessing["overlap"],
                                    target_hz=preprocessing["target_hz"])
    return RecordingWindows(recording, windows, start_s, quality)


def window_spans(start_s: np.ndarray, window_s: float) -> np.ndarray:
    """[start, end) per window that tile the covered time without overlap.

    Overlapping windows would count the same seconds twice, so each window owns the time
    until the next window starts, or its own full length where a gap follows.
    """
    start_s = np.asarray(start_s, dtype=np.float64)
    next_start = np.append(start_s[1:], np.inf)
    return np.column_stack([start_s, np.minimum(start_s + window_s, next_start)])


def episodes(start_s: np.ndarray, labels: np.ndarray, confidence: np.ndarray, window_s: float) -> list[dict]:
    """Runs of consecutive windows with the same label and no gap between them."""
    spans = window_spans(start_s, window_s)
    result: list[dict] = []
    for (start, end), label, conf in zip(spans, labels, confidence):
        last = result[-1] if result else None
        if last is not None and last["label"] == label and np.isclose(last["end_s"], start):
            last["end_s"] = float(end)
            last["windows"] += 1
            last["confidence_sum"] += float(conf)
        else:
            result.append({"label": str(label), "start_s": float(start), "end_s": float(end), "windows": 1,
                           "confidence_sum": float(conf)})
    for episode in result:
        episode["mean_confidence"] = round(episode.pop("confidence_sum") / episode["windows"], 4)
        episode["duration_s"] = round(episode["end_s"] - episode["start_s"], 3)
    return result


def minutes_per_activity(episode_list: list[dict], all_labels: list[str]) -> dict[str, float]:
    """Minutes per label over the episodes, every label listed (0 where never predicted)."""
    seconds = dict.fromkeys(all_labels, 0.0)
    for episode in episode_list:
        seconds[episode["label"]] += episode["end_s"] - episode["start_s"]
    return {label: round(s / 60.0, 3) for label, s in seconds.items()}


def summarize(start_s: np.ndarray, probabilities: np.ndarray, all_labels: list[str], *, window_s: float,
              start_time: str | None = None) -> dict:
    """Timeline (one entry per window), merged episodes and minutes per activity.

    `start_time` is the ISO wall-clock time of t == 0; when given, entries carry wall-clock times too.
    """
    best = probabilities.argmax(axis=1) if len(probabilities) else np.empty(0, int)
    labels = np.asarray(all_labels, dtype=object)[best]
    confidence = probabilities.max(axis=1) if len(probabilities) else np.empty(0)
    origin = pd.Timestamp(start_time) if start_time else None

    def clock(seconds: float) -> str | None:
        return (origin + pd.Timedelta(seconds=seconds)).isoformat(timespec="milliseconds") if origin is not None else None

    timeline = [{"start_s": round(float(t), 3), "time": clock(t), "label": str(label), "confidence": round(float(c), 4)}
                for t, label, c in zip(start_s, labels, confidence)]
    merged = episodes(start_s, labels, confidence, window_s)
    for episode in merged:
        episode["start_time"], episode["end_time"] = clock(episode["start_s"]), clock(episode["end_s"])
    covered_s = float(sum(e["end_s"] - e["start_s"] for e in merged))
    return {"windows": len(timeline), "window_s": window_s, "covered_minutes": round(covered_s / 60.0, 3),
            "timeline": timeline, "episodes": merged, "minutes_per_activity": minutes_per_activity(merged, all_labels)}


def recording_preprocessing(card: ModelCard) -> dict:
    """How raw recordings become windows for this model: the fusion and window settings it was exported with."""
    return {"window_length": card.window_length, "target_hz": card.input_contract["target_hz"], **card.preprocessing}


def recording_answer(card: ModelCard, probabilities: np.ndarray, start_s: np.ndarray, quality: dict, *,
                     recording_id: str, start_time: str | None) -> dict:
    """The whole answer for one scored recording: what it was, which model, timeline, episodes, minutes."""
    window_s = card.window_length / float(recording_preprocessing(card)["target_hz"])
    return {"recording": {"id": recording_id, "start_time": start_time, "fused_samples": quality["samples_written"],
                          "fused_seconds": quality["fused_seconds"], "segments": quality["segments"]},
            "model": {"name": card.name, "version": card.version},
            **summarize(start_s, probabilities, card.labels, window_s=window_s, start_time=start_time)}
