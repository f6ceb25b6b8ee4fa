"""Small synthetic answers for the store's tests: episodes laid out by hand, in the shape
har.answer.Answer.to_builtins gives (only what the store reads is filled in faithfully)."""
from __future__ import annotations

import numpy as np
import pandas as pd

ACTIVITIES = ["sitting", "typing", "clapping"]
MODEL = {"name": "har", "version": "v1", "sha256": "a" * 64}


def basis_of(episodes: list[tuple[str, float, float]], activities: list[str], interval_scale: float | None) -> dict:
    """A minutes basis for `episodes`: windows every 2 s in each worn episode (the last one shorter), sharing
    0.7 with the episode's activity and the rest evenly (an uncertain one: evenly), in 4 decimals."""
    start, end, shares = [], [], []
    k = len(activities)
    for label, a, b in episodes:
        if label == "not_worn":
            continue
        cuts = np.r_[np.arange(a, b, 2.0), b]
        row = np.full(k, 1.0 / k) if label not in activities else np.where(np.arange(k) == activities.index(label),
                                                                            0.7, 0.3 / max(k - 1, 1))
        start += cuts[:-1].tolist()
        end += cuts[1:].tolist()
        shares += [np.round(row, 4).tolist() for _ in range(len(cuts) - 1)]
    return {"start_s": start, "end_s": end, "shares": shares, "interval_scale": interval_scale}


def answer(start_time: str, episodes: list[tuple[str, float, float]], *, model: dict = MODEL,
           activities: list[str] = ACTIVITIES, name: str = "rec", basis: bool = True,
           interval_scale: float | None = 2.0) -> dict:
    """An answer whose timeline is `episodes` [(label, start_s, end_s)] after `start_time`: with a minutes basis
    (store_helpers.basis_of) and the estimate and interval it gives, unless `basis` is False (an answer as they
    were before the estimate: its minutes_per_activity the counted minutes)."""
    end = max(e for _, _, e in episodes)
    merged = [{"label": label, "start_s": float(s), "end_s": float(e), "windows": max(1, int((e - s) // 2)),
               "mean_confidence": None if label == "not_worn" else 0.9, "duration_s": round(e - s, 3)}
              for label, s, e in episodes]
    minutes = {a: round(sum(e["end_s"] - e["start_s"] for e in merged if e["label"] == a) / 60, 3)
               for a in activities}
    estimate = {}
    if basis:  # the estimate and its interval from the basis, as har/answer.py makes them
        from har.minutes import minutes_figures, sums

        made = basis_of(episodes, list(activities), interval_scale)
        seconds = np.array(made["end_s"]) - np.array(made["start_s"])
        estimate_s, spread_s = sums(np.array(made["shares"]).reshape(len(seconds), len(activities)), seconds)
        half = None if interval_scale is None else interval_scale * spread_s
        figures = minutes_figures(list(activities), estimate_s, half, float(seconds.sum()))
        estimate = {"minutes_per_activity": figures[0], "minutes_interval_90": figures[1], "minutes_basis": made}
    state = {s: round(sum(e["end_s"] - e["start_s"] for e in merged if e["label"] == s) / 60, 3)
             for s in ("not_worn", "uncertain")}
    return {"recording": {"id": name, "start_time": start_time, "fused_samples": int(end * 50),
                          "fused_seconds": float(end), "segments": 1, "quality": {}},
            "model": {**model, "subject": None, "personal": False},
            "windows": sum(e["windows"] for e in merged), "window_s": 4.0,
            "covered_minutes": round(sum(e["end_s"] - e["start_s"] for e in merged) / 60, 3),
            "labels": {"activities": list(activities)}, "abstain_threshold": 0.5, "timeline": [],
            "episodes": merged, "minutes_per_activity": minutes, "counted_minutes_per_activity": minutes,
            "uncertain_minutes": state["uncertain"], "not_worn_minutes": state["not_worn"], "wear": {"episodes": []},
            "findings": [], **estimate}


def fused(seconds: float, seed: int = 0) -> pd.DataFrame:
    """A small fused table (the blob a recording keeps); `seed` makes distinct content."""
    n = max(2, int(seconds))  # 1 Hz is enough for a blob that is only stored and read back
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(rng.normal(size=(n, 6)).astype(np.float32), columns=["ax", "ay", "az", "gx", "gy", "gz"])
    table.insert(0, "t", np.arange(n, dtype=np.float64))
    return table


def garmin_slice(acc_path, gyr_path, folder, *, minutes: float, name: str = "2025-03-23-15-23-10") -> tuple:
    """The first `minutes` of a real Garmin pair, written again in the same workbook format (rows as read)."""
    from pathlib import Path

    from openpyxl import Workbook
    from python_calamine import CalamineWorkbook

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source, suffix in ((acc_path, "accelerometer_data"), (gyr_path, "gyroscope_data")):
        rows = CalamineWorkbook.from_path(str(source)).get_sheet_by_index(0).to_python()
        header, body = rows[0], rows[1:]
        stamp = header.index("timestamp")
        times = pd.to_datetime([r[stamp] for r in body], format="%m/%d/%Y, %I:%M:%S %p")
        kept = [r for r, t in zip(body, times) if t < times[0] + pd.Timedelta(minutes=minutes)]
        book = Workbook(write_only=True)
        sheet = book.create_sheet("Sheet1")
        sheet.append(header)
        for row in kept:
            sheet.append(row)
        path = folder / f"{name}-{suffix}.xlsx"
        book.save(path)
        written.append(path)
    return tuple(written)
