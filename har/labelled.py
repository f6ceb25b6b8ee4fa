"""Readers for labelled training data: WISDM watch parquet pairs and long tables.

WISDM: `acc_w/NNN_acc_w_<subject>_<letter>.parquet` + `gyr_w/NNN_gyr_w_<subject>_<letter>.parquet`,
columns x, y, z, 20 Hz nominal, no timestamps, accelerometer m/s^2, gyroscope rad/s.
Files pair by (subject, activity letter), never by the leading NNN.

Long table (the ADAM-sense style export): one row per sample with a timestamp, six sensor
columns, an activity and a subject; names and units come from config.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from har.recording import ACC_TO_SI, GYR_TO_SI, InputError, Recording, SensorStream, to_si

WISDM_HZ = 20.0
WISDM_NAME = re.compile(r"^\d+_(acc|gyr)_w_(\d+)_([A-Z])\.parquet$")


def wisdm_activities(root) -> dict[str, str]:
    return json.loads((Path(root) / "activities.json").read_text())


def find_wisdm_pairs(root, activities: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Pairs of (acc, gyr) files by subject and activity; unpaired or unknown files are reported."""
    root = Path(root)
    letters = wisdm_activities(root)
    files: dict[str, dict[tuple[str, str], Path]] = {"acc": {}, "gyr": {}}
    skipped = []
    for sensor in files:
        folder = root / f"{sensor}_w"
        if not folder.is_dir():
            raise InputError(folder, "folder not found", expected=f"{sensor}_w/ beside activities.json")
        for path in sorted(folder.iterdir()):
            match = WISDM_NAME.match(path.name)
            if not match or match.group(1) != sensor:
                skipped.append({"file": f"{folder.name}/{path.name}", "reason": "name does not match NNN_<sensor>_w_<subject>_<letter>.parquet"})
                continue
            files[sensor][(match.group(2), match.group(3))] = path
    pairs = []
    for key in sorted(files["acc"].keys() | files["gyr"].keys()):
        subject, letter = key
        if key not in files["gyr"] or key not in files["acc"]:
            missing = "gyroscope" if key not in files["gyr"] else "accelerometer"
            present = files["acc"].get(key) or files["gyr"].get(key)
            skipped.append({"file": f"{present.parent.name}/{present.name}", "reason": f"no {missing} partner"})
            continue
        if letter not in letters:
            skipped.append({"file": files["acc"][key].name, "reason": f"activity letter {letter!r} not in activities.json"})
            continue
        activity = letters[letter]
        if activities is not None and activity not in activities:
            continue  # not in the configured class set: excluded by choice, not an error
        pairs.append({"subject": subject, "activity": activity, "acc": files["acc"][key], "gyr": files["gyr"][key]})
    return pairs, skipped


def _read_xyz(path) -> np.ndarray:
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        raise InputError(path, f"cannot be read as parquet ({type(exc).__name__})", expected="a parquet file with x, y, z") from None
    missing = [c for c in "xyz" if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}", column=missing[0], expected="columns x, y, z")
    values = table[list("xyz")].to_numpy(np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        raise InputError(path, "NaN or infinite value", row=int(bad[0, 0]), column="xyz"[bad[0, 1]], expected="finite numbers")
    return values


def wisdm_recording_id(pair: dict) -> str:
    return f"{pair['subject']}_{pair['activity']}"


def read_wisdm_pair(pair: dict) -> Recording:
    """WISDM gives no timestamps: samples are placed at the nominal 20 Hz from t = 0."""
    acc, gyr = _read_xyz(pair["acc"]), _read_xyz(pair["gyr"])
    return Recording(
        recording_id=wisdm_recording_id(pair),
        acc=SensorStream(np.arange(len(acc)) / WISDM_HZ, acc),
        gyr=SensorStream(np.arange(len(gyr)) / WISDM_HZ, gyr),
        subject=pair["subject"],
        activity=pair["activity"],
        report={"acc": {"file": pair["acc"].name, "samples_read": len(acc)},
                "gyr": {"file": pair["gyr"].name, "samples_read": len(gyr)}},
    )


def read_long_table(path, spec: dict) -> list[Recording]:
    """A long labelled table -> one Recording per (subject, activity) run of consecutive rows.

    `spec` (conf/data/*.yaml, key `long_table`) names the columns and units:
    timestamp, timestamp_unit ("s", "ms" or "datetime"), acc [3 names], gyr [3 names],
    acc_unit, gyr_unit, activity, subject.
    """
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False, na_values=[""])
    except Exception as exc:
        raise InputError(path, f"cannot be read ({type(exc).__name__}: {exc})", expected="CSV or parquet") from None
    columns = [spec["timestamp"], *spec["acc"], *spec["gyr"], spec["activity"], spec["subject"]]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}", column=missing[0], expected=f"columns {columns}")
    if table.empty:
        raise InputError(path, "no data rows", expected="at least one sample")

    if spec.get("timestamp_unit", "s") == "datetime":
        stamps = pd.to_datetime(table[spec["timestamp"]], errors="coerce")
        seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    else:
        scale = {"s": 1.0, "ms": 1e-3}[spec.get("timestamp_unit", "s")]
        seconds = pd.to_numeric(table[spec["timestamp"]], errors="coerce").to_numpy(np.float64) * scale
    sensors = table[[*spec["acc"], *spec["gyr"]]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    for name, column_values in [(spec["timestamp"], seconds[:, None]), ("sensor", sensors)]:
        bad = np.argwhere(~np.isfinite(column_values))
        if len(bad):
            row, col = int(bad[0, 0]), int(bad[0, 1])
            column = spec["timestamp"] if name != "sensor" else [*spec["acc"], *spec["gyr"]][col]
            raise InputError(path, f"non-numeric or missing value {str(table[column].iloc[row])!r}", row=row + 2,
                             column=column, expected="a number" if name == "sensor" else "a timestamp")

    acc = to_si(sensors[:, :3], spec.get("acc_unit", "m/s^2"), ACC_TO_SI)
    gyr = to_si(sensors[:, 3:], spec.get("gyr_unit", "rad/s"), GYR_TO_SI)
    keys = table[spec["subject"]].astype(str) + "\x00" + table[spec["activity"]].astype(str)
    run_id = (keys != keys.shift()).cumsum().to_numpy()
    recordings = []
    for run in np.unique(run_id):
        rows = np.flatnonzero(run_id == run)
        subject, activity = str(table[spec["subject"]].iloc[rows[0]]), str(table[spec["activity"]].iloc[rows[0]])
        t = seconds[rows] - seconds[rows].min()
        recordings.append(Recording(
            recording_id=f"{subject}_{activity}_{int(run)}",
            acc=SensorStream(t, acc[rows]), gyr=SensorStream(t.copy(), gyr[rows]),
            subject=subject, activity=activity,
            report={"acc": {"file": path.name, "samples_read": len(rows)}, "gyr": {"file": path.name, "samples_read": len(rows)}},
        ))
    return recordings
