"""From a raw recording to an activity timeline: the service's `/recordings` and batch scoring share this.

Reading, fusion and windowing are the pipeline's own functions (`har.garmin`, `har.fusion`,
`har.windows`) called with the parameters the model was exported with, so a recording is cut
into exactly the windows the pipeline would cut: no training/serving skew.

Each window then gets one label: an activity, `uncertain` (below the model's abstention
threshold) or `not_worn` (inside a non-wear episode, har/wear.py; never scored). Minutes per
activity count only the first kind. See docs/timelines.md.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from har.fusion import fuse_recording
from har.garmin import read_garmin_pair
from har.smoothing import smooth
from har.wear import WearRule, recording_wear, wear_report, window_spans, worn_windows
from har.windows import make_windows
from har.modelfile import ModelCard


@dataclass
class RecordingWindows:
    recording_id: str
    start_time: str | None  # ISO wall-clock time of t == 0, where the source says
    windows: np.ndarray  # float32 [n, length, 6]
    start_s: np.ndarray  # window start times, seconds since the recording's origin
    worn: np.ndarray  # bool [n]: False for windows inside a non-wear episode (never scored)
    nonwear: list[tuple[float, float]]  # non-wear episodes, seconds since the origin
    quality: dict  # fusion's report (samples, gaps, segments)
    fused: pd.DataFrame | None = None  # the fused table the windows were cut from (the study store keeps it)


def cut_recording(fused: pd.DataFrame, quality: dict, preprocessing: dict, wear_rule: WearRule, *,
                  recording_id: str, start_time: str | None) -> RecordingWindows:
    """A fused table cut into the model's windows, each marked worn or not (har.wear)."""
    target_hz = float(preprocessing["target_hz"])
    windows, start_s = make_windows(fused, length=preprocessing["window_length"], overlap=preprocessing["overlap"],
                                    target_hz=target_hz)
    nonwear = recording_wear(fused, target_hz, wear_rule)
    worn = worn_windows(start_s, preprocessing["window_length"] / target_hz, nonwear)
    return RecordingWindows(recording_id, start_time, windows, start_s, worn, nonwear, quality, fused)


def content_hash(accelerometer: bytes | str | Path, gyroscope: bytes | str | Path) -> str:
    """sha256 over a raw pair (bytes or paths): each part's length, then its bytes, so the boundary is unambiguous.
    The study store recognises an upload it already holds by this."""
    digest = hashlib.sha256()
    for part in (accelerometer, gyroscope):
        data = part if isinstance(part, bytes) else Path(part).read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def garmin_windows(acc_path, gyr_path, preprocessing: dict, wear_rule: WearRule, *, timezone: str | None = None,
                   recording_id: str | None = None) -> RecordingWindows:
    """A Garmin workbook pair, fused and windowed exactly as the pipeline does it.

    `preprocessing` holds target_hz, max_gap_s, lowpass_hz, window_length and overlap
    (the model's metadata carries them from export time).
    """
    recording = read_garmin_pair(acc_path, gyr_path, timezone=timezone, recording_id=recording_id)
    fused, quality = fuse_recording(recording, target_hz=preprocessing["target_hz"],
                                    max_gap_s=preprocessing["max_gap_s"], lowpass_hz=preprocessing["lowpass_hz"])
    return cut_recording(fused, quality, preprocessing, wear_rule, recording_id=recording.recording_id,
                         start_time=recording.start_time)


NOT_WORN, UNCERTAIN = "not_worn", "uncertain"
STATES = {NOT_WORN: "the window lies in a non-wear episode (har/wear.py): no activity is given",
          UNCERTAIN: "worn, but the model's calibrated top-1 probability is below its abstention threshold"}


def window_labels(worn: np.ndarray, probabilities: np.ndarray, all_labels: list[str],
                  threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, activity, confidence) per window from the worn windows' probabilities [worn.sum(), k].

    `label` is what the timeline says: the activity, UNCERTAIN below `threshold`, or NOT_WORN;
    `activity` is the model's top-1 class (None where not worn); `confidence` its probability (NaN there).
    """
    worn = np.asarray(worn, dtype=bool)
    if len(probabilities) != worn.sum():
        raise ValueError(f"{len(probabilities)} rows of probabilities for {worn.sum()} worn windows")
    activity = np.full(len(worn), None, dtype=object)
    confidence = np.full(len(worn), np.nan)
    if len(probabilities):
        activity[worn] = np.asarray(all_labels, dtype=object)[probabilities.argmax(axis=1)]
        confidence[worn] = probabilities.max(axis=1)
    label = np.where(~worn, NOT_WORN, np.where(confidence >= threshold, activity, UNCERTAIN))
    return label.astype(object), activity, confidence


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
        mean = episode.pop("confidence_sum") / episode["windows"]
        episode["mean_confidence"] = round(mean, 4) if np.isfinite(mean) else None
        episode["duration_s"] = round(episode["end_s"] - episode["start_s"], 3)
    return result


def minutes_per_label(episode_list: list[dict], all_labels: list[str]) -> dict[str, float]:
    """Minutes per label over the episodes (0 where never given); labels outside `all_labels` are not counted."""
    seconds = dict.fromkeys(all_labels, 0.0)
    for episode in episode_list:
        if episode["label"] in seconds:
            seconds[episode["label"]] += episode["end_s"] - episode["start_s"]
    return {label: round(s / 60.0, 3) for label, s in seconds.items()}


def wall_clock(start_time: str | None):
    """seconds since the origin -> ISO wall-clock time (None when the start time is unknown)."""
    origin = pd.Timestamp(start_time) if start_time else None
    return lambda seconds: ((origin + pd.Timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
                            if origin is not None else None)


def summarize(start_s: np.ndarray, worn: np.ndarray, probabilities: np.ndarray, all_labels: list[str], *,
              window_s: float, threshold: float = 0.0, start_time: str | None = None) -> dict:
    """Timeline (one entry per window), merged episodes, minutes per activity, uncertain and not-worn minutes.

    `probabilities` are the worn windows' only. Minutes per activity count confident, worn windows;
    `start_time` is the ISO wall-clock time of t == 0; when given, entries carry wall-clock times too.
    """
    labels, activity, confidence = window_labels(worn, probabilities, all_labels, threshold)
    clock = wall_clock(start_time)
    timeline = [{"start_s": round(float(t), 3), "time": clock(t), "label": str(label), "activity": a,
                 "confidence": round(float(c), 4) if np.isfinite(c) else None}
                for t, label, a, c in zip(start_s, labels, activity, confidence)]
    merged = episodes(start_s, labels, confidence, window_s)
    for episode in merged:
        episode["start_time"], episode["end_time"] = clock(episode["start_s"]), clock(episode["end_s"])
    covered_s = float(sum(e["end_s"] - e["start_s"] for e in merged))
    states = minutes_per_label(merged, [NOT_WORN, UNCERTAIN])
    return {"windows": len(timeline), "window_s": window_s, "covered_minutes": round(covered_s / 60.0, 3),
            "labels": {"activities": list(all_labels), **STATES}, "abstain_threshold": threshold,
            "timeline": timeline, "episodes": merged, "minutes_per_activity": minutes_per_label(merged, all_labels),
            "uncertain_minutes": states[UNCERTAIN], "not_worn_minutes": states[NOT_WORN]}


def recording_preprocessing(card: ModelCard) -> dict:
    """How raw recordings become windows for this model: the fusion and window settings it was exported with."""
    return {"window_length": card.window_length, "target_hz": card.input_contract["target_hz"], **card.preprocessing}


def quality_summary(quality: dict) -> dict:
    """What a reader of the answer needs from fusion's report: samples read, duplicates, order, gaps, per sensor."""
    keys = ("samples_read", "duplicates", "out_of_order", "gaps", "gap_seconds", "native_hz")
    return {"fused_samples": quality.get("samples_written"), "fused_seconds": quality.get("fused_seconds"),
            "segments": quality.get("segments"),
            **{sensor: {k: quality[sensor][k] for k in keys if k in quality[sensor]}
               for sensor in ("acc", "gyr") if isinstance(quality.get(sensor), dict)}}


def findings(answer: dict) -> list[str]:
    """The answer in plain words, for what a reader would otherwise misread (a watch on a desk, say)."""
    total = answer["covered_minutes"]
    lines = []
    if answer["not_worn_minutes"] > 0:
        lines.append(f"not worn for {answer['not_worn_minutes']:.1f} of {total:.1f} min "
                     f"({len(answer['wear']['episodes'])} non-wear episode(s)); no activity is given for that time")
    if answer["uncertain_minutes"] > 0:
        lines.append(f"uncertain for {answer['uncertain_minutes']:.1f} min: the model's calibrated confidence was "
                     f"below {answer['abstain_threshold']:.2f}")
    if total > 0 and sum(answer["minutes_per_activity"].values()) == 0:
        lines.append("no activity could be reported for this recording")
    return lines


def worn_probabilities(predict, scored: RecordingWindows, n_labels: int) -> np.ndarray:
    """The model's answers for the worn windows only: windows in non-wear episodes are never scored."""
    worn = scored.windows[scored.worn]
    return predict(worn) if len(worn) else np.empty((0, n_labels), np.float32)


def recording_answer(card: ModelCard, scored: RecordingWindows, probabilities: np.ndarray,
                     wear_rule: WearRule, *, subject: str | None = None, personal: bool = False) -> dict:
    """The whole answer for one scored recording: what it was, which model, timeline, episodes, minutes, wear.

    `probabilities` are the model's answers for the worn windows (`scored.windows[scored.worn]`); when the model
    carries a timeline smoother, the labels and confidences are its posteriors. `subject` and `personal` say
    whose model `card` is.
    """
    preprocessing = recording_preprocessing(card)
    window_s = card.window_length / float(preprocessing["target_hz"])
    if card.switch_probability:  # activities last minutes: each run of consecutive worn windows is smoothed
        probabilities = smooth(probabilities, scored.start_s[scored.worn], window_s * (1 - preprocessing["overlap"]),
                               card.switch_probability)
    quality = scored.quality
    answer = {"recording": {"id": scored.recording_id, "start_time": scored.start_time,
                            "fused_samples": quality["samples_written"], "fused_seconds": quality["fused_seconds"],
                            "segments": quality["segments"], "quality": quality_summary(quality)},
              "model": {**card.identity(), "subject": subject, "personal": personal},
              **summarize(scored.start_s, scored.worn, probabilities, card.labels, window_s=window_s,
                          threshold=card.abstain_threshold, start_time=scored.start_time)}
    answer["wear"] = wear_report(scored.nonwear, float(quality["fused_seconds"]), wear_rule,
                                 clock=wall_clock(scored.start_time))
    answer["smoothing"] = {"switch_probability": card.switch_probability,
                           "text": "HMM posteriors over consecutive worn windows (har/smoothing.py)"
                           if card.switch_probability else "off: each window on its own"}
    answer["findings"] = findings(answer)
    return answer
