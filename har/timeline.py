"""A scored recording's timeline: one label per window, runs of equal labels, minutes per label.

Each window gets one label: an activity, `uncertain` (below the model's abstention threshold) or
`not_worn` (inside a non-wear episode, har/wear.py; never scored). The counted minutes per activity
count only the first kind (the answer's `counted_minutes_per_activity`; its `minutes_per_activity`
is har/minutes.py's estimate). Functions over arrays; har/scoring.py and har/answer.py put them together for a
recording. See docs/timelines.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from har.windows import window_spans


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
    """Timeline (one entry per window), merged episodes, counted minutes per activity, uncertain and not-worn minutes.

    `probabilities` are the worn windows' only. Counted minutes per activity count confident, worn windows;
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
            "timeline": timeline, "episodes": merged, "counted_minutes_per_activity": minutes_per_label(merged, all_labels),
            "uncertain_minutes": states[UNCERTAIN], "not_worn_minutes": states[NOT_WORN]}
