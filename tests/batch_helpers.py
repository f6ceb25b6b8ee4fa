"""Study folders for the batch scorer's tests: fused tables in stages.fuse's layout, made from noise."""
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from har.fusion import CHANNELS
from serve_helpers import PREPROCESSING


def fused_session(folder, name: str, seconds: float, start_time: str = "2025-03-24T07:00:00", **fusion):
    """A stages.fuse-style session folder (<name>/<name>.parquet + index.csv + quality.json) holding one
    synthetic 50 Hz fused table."""
    session = folder / name
    session.mkdir(parents=True)
    n = int(seconds * 50)
    rng = np.random.default_rng(zlib.crc32(f"{Path(folder).name}/{name}".encode()))  # another folder, other data
    table = pd.DataFrame({"t": np.arange(n) / 50.0, **{c: rng.normal(size=n).astype(np.float32) for c in CHANNELS}})
    table.to_parquet(session / f"{name}.parquet")
    pd.DataFrame([{"recording": name, "file": f"{name}.parquet", "start_time": start_time}]).to_csv(
        session / "index.csv", index=False)
    (session / "quality.json").write_text(json.dumps([{"recording": name, **fusion}]))
    return table


def study_folder(folder, recordings: int, seconds: float, *, broken: bool = False):
    """`recordings` fused sessions of `seconds` each (p000, p001, ...), and with `broken` a workbook pair that
    cannot be read; returns the recording names in the batch scorer's order (Garmin pairs first). The
    recordings start an hour apart from 2025-03-24 07:00."""
    names = [f"p{number:03d}" for number in range(recordings)]
    for number, name in enumerate(names):  # one after another, an hour apart
        start = (pd.Timestamp("2025-03-24T07:00:00") + pd.Timedelta(hours=number)).isoformat()
        fused_session(folder, name, seconds, start, target_hz=PREPROCESSING["target_hz"],
                      lowpass_hz=PREPROCESSING["lowpass_hz"])
    if broken:
        (folder / "broken-accelerometer_data.xlsx").write_bytes(b"not a workbook")
        (folder / "broken-gyroscope_data.xlsx").write_bytes(b"not a workbook")
    return (["broken"] if broken else []) + names
