"""window stage: fused labelled recordings -> subject-wise train / val / test window arrays.

Writes data/windows/{train,val,test}.npz (X float32 [n, length, 6], y int, subject, recording,
start_t), data/windows/meta.json (labels in output order, subjects per split) and
metrics/windows.json (windows per split and class).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from har.config import load_params, write_json
from har.windows import make_windows, split_subjects

FUSED = Path("data/fused/labelled")
OUT = Path("data/windows")


def load_meta(folder: Path = OUT) -> dict:
    """meta.json as this stage wrote it: labels in output order, subjects per split, window settings."""
    return json.loads((Path(folder) / "meta.json").read_text())


def load_split(name: str, folder: Path = OUT):
    """One split's arrays (X, y, subject, recording, start_t)."""
    return np.load(Path(folder) / f"{name}.npz")


def windows_by_recording(index: pd.DataFrame, labels: list[str], window: dict, target_hz: float) -> dict:
    """Every labelled recording's windows, with label index, subject and recording per window."""
    label_index = {name: i for i, name in enumerate(labels)}
    parts = {k: [] for k in ("X", "y", "subject", "recording", "start_t")}
    for row in index.itertuples():
        X, start_t = make_windows(pd.read_parquet(FUSED / row.file), length=window["length"],
                                  overlap=window["overlap"], target_hz=target_hz)
        parts["X"].append(X)
        parts["y"].append(np.full(len(X), label_index[row.activity]))
        parts["subject"].append(np.full(len(X), str(row.subject)))
        parts["recording"].append(np.full(len(X), row.recording))
        parts["start_t"].append(start_t)
    return {k: np.concatenate(v) for k, v in parts.items()}


def main() -> None:
    params = load_params()
    labels = list(params["data"]["labels"])
    index = pd.read_csv(FUSED / "index.csv", dtype={"subject": str})
    unknown = sorted(set(index["activity"]) - set(labels))
    index = index[index["activity"].isin(labels)]
    windows = windows_by_recording(index, labels, params["window"], params["data"]["target_hz"])
    splits = split_subjects(index["subject"], params["split"])

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
    write_json("metrics/windows.json", {"labels": len(labels), "activities_not_in_class_set": unknown,
                                        **counts})
    print({s: c["windows"] for s, c in counts.items()}, "windows;", {s: len(v) for s, v in splits.items()}, "subjects")


if __name__ == "__main__":
    main()
