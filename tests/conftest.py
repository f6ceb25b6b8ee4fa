"""Shared test fixtures: the real data beside the project, and small slices of it."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from har.numerics import pin  # noqa: E402

pin()  # the stages' kernel choice (har/numerics.py), before anything imports NumPy or TensorFlow

SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
GARMIN_DIR = SHARED_DATA / "garmin"
WISDM_DIR = SHARED_DATA / "wisdm-watch"
GARMIN_ACC = GARMIN_DIR / "2025-03-23-15-23-10-accelerometer_data.xlsx"
GARMIN_GYR = GARMIN_DIR / "2025-03-23-15-23-10-gyroscope_data.xlsx"


@pytest.fixture(scope="session")
def garmin_recording():
    """The real one-hour Garmin pair, read once per test session."""
    from har.garmin import read_garmin_pair

    return read_garmin_pair(GARMIN_ACC, GARMIN_GYR)


def params_preprocessing(params: dict) -> dict:
    """The committed params as the preprocessing a model card carries (target_hz, ..., overlap)."""
    data, window = params["data"], params["window"]
    return {"target_hz": data["target_hz"], "max_gap_s": data["max_gap_s"], "lowpass_hz": data["lowpass_hz"],
            "window_length": window["length"], "overlap": window["overlap"]}


def pipeline_windows(recording, preprocessing: dict):
    """(windows, start times) of a recording cut with the pipeline's fusion and windowing under `preprocessing`
    (a model card's: target_hz, max_gap_s, lowpass_hz, window_length, overlap)."""
    from har.fusion import fuse_recording
    from har.windows import make_windows

    fused, _ = fuse_recording(recording, target_hz=preprocessing["target_hz"], max_gap_s=preprocessing["max_gap_s"],
                              lowpass_hz=preprocessing["lowpass_hz"])
    return make_windows(fused, length=preprocessing["window_length"], overlap=preprocessing["overlap"],
                        target_hz=preprocessing["target_hz"])


@pytest.fixture(scope="session")
def garmin_pipeline_windows(garmin_recording):
    """The real Garmin hour cut as the tiny test model's card says (not as the working tree's params.yaml
    says: `dvc exp apply` of a window change must not break the service tests), once per session."""
    from serve_helpers import PREPROCESSING

    return pipeline_windows(garmin_recording, PREPROCESSING)
