"""window stage: fused labelled recordings -> subject-wise train / val / test window arrays.

Subjects whose recordings barely move (har.quality) are set aside before the split and
reported. Writes data/windows/{train,val,test}.npz (X float32 [n, length, 6], y int, subject,
recording, start_t), data/windows/meta.json (labels in output order, subjects per split) and
metrics/windows.json (windows per split and class, the quality check's figures).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from har.config import load_params, write_json
from har.fusion import CHANNELS
from har.quality import implausible_subjects, sensor_motion, subject_motion_ratio
from har.windows import make_windows, split_subjects

FUSED = Path("data/fused/labelled")
OUT = Path("data/windows")


def load_meta(folder: Path = OUT) -> dict:
    """meta.json as this stage wrote it: labels in output order, subjects per split, window settings."""
    return json.loads((Path(folder) / "meta.json").read_text())


def load_split(name: str, folder: Path = OUT):
    """One split's arrays (X, y, subject, recording, start_t)."""
    return np.load(Path(folder) / f"{name}.npz")


def windows_by_recording(index: pd.DataFrame, labels: list[str], window: dict,
                         target_hz: float) -> tuple[dict, pd.DataFrame]:
    """Every labelled recording's windows (with label index, subject and recording per window),
    and each recording's motion per sensor (har.quality)."""
    label_index = {name: i for i, name in enumerate(labels)}
    parts = {k: [] for k in ("X", "y", "subject", "recording", "start_t")}
    motion = []
    for row in index.itertuples():
        fused = pd.read_parquet(FUSED / row.file)
        motion.append((str(row.subject), row.activity, *sensor_motion(fused[CHANNELS].to_numpy())))
        X, start_t = make_windows(fused, length=window["length"], overlap=window["overlap"], target_hz=target_hz)
        parts["X"].append(X)
        parts["y"].append(np.full(len(X), label_index[row.activity]))
        parts["subject"].append(np.full(len(X), str(row.subject)))
        parts["recording"].append(np.full(len(X), row.recording))
        parts["start_t"].append(start_t)
    windows = {k: np.concatenate(v) for k, v in parts.items()}
    return windows, pd.DataFrame(motion, columns=["subject", "activity", "acc", "gyr"])


def main() -> None:
    params = load_params()
    labels = list(params["data"]["labels"])
    index = pd.read_csv(FUSED / "index.csv", dtype={"subject": str})
    unknown = sorted(set(index["activity"]) - set(labels))
    index = index[index["activity"].isin(labels)]
    windows, motion = windows_by_recording(index, labels, params["window"], params["data"]["target_hz"])
    ratio = subject_motion_ratio(motion)
    min_motion_ratio = params["data"]["quality"]["min_motion_ratio"]
    excluded = implausible_subjects(ratio, min_motion_ratio)
    listed = sorted(set(excluded) & {str(s) for key in ("test_subjects", "val_subjects")
                                     for s in params["split"].get(key) or []})
    if listed:
        raise ValueError(f"split.test_subjects / split.val_subjects name {listed}, whom the wrist-motion check "
                         f"sets aside (motion ratio below data.quality.min_motion_ratio); remove them from the lists "
                         f"or lower the threshold")
    set_aside = np.isin(windows["subject"], excluded)
    windows = {k: v[~set_aside] for k, v in windows.items()}
    splits = split_subjects(sorted(set(index["subject"]) - set(excluded)), params["split"])

    OUT.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, subjects in splits.items():
        keep = np.isin(windows["subject"], subjects)
        np.savez(OUT / f"{split}.npz", **{k: v[keep] for k, v in windows.items()})
        per_class = np.bincount(windows["y"][keep], minlength=len(labels))
        counts[split] = {"windows": int(keep.sum()), "subjects": len(subjects),
                         "per_class": dict(zip(labels, per_class.tolist()))}
    write_json(OUT / "meta.json", {"labels": labels, "subjects": splits, "window": params["window"],
                                    "target_hz": params["data"]["target_hz"]})
    quality = {"min_motion_ratio": min_motion_ratio,
               "excluded_subjects": excluded, "excluded_windows": int(set_aside.sum()),
               "excluded_recordings": int(motion["subject"].isin(excluded).sum()),
               "motion_ratio": {s: round(float(r), 3) for s, r in ratio.sort_values().items()}}
    write_json("metrics/windows.json", {"labels": len(labels), "activities_not_in_class_set": unknown,
                                        **counts, "quality": quality})
    if excluded:
        print(f"set aside {len(excluded)} subjects whose recordings barely move (motion ratio < "
              f"{min_motion_ratio}): {excluded}, {quality['excluded_windows']} windows")
    print({s: c["windows"] for s, c in counts.items()}, "windows;", {s: len(v) for s, v in splits.items()}, "subjects")


if __name__ == "__main__":
    main()
