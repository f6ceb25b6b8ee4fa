"""Shared test fixtures: the real data beside the project, and small slices of it."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


def pipeline_windows(recording):
    """(windows, start times) of a recording cut exactly as the pipeline cuts it, with the committed params."""
    from har.config import load_params
    from har.fusion import fuse_recording
    from har.windows import make_windows

    params = load_params(ROOT / "params.yaml")
    data, window = params["data"], params["window"]
    fused, _ = fuse_recording(recording, target_hz=data["target_hz"], max_gap_s=data["max_gap_s"],
                              lowpass_hz=data["lowpass_hz"])
    return make_windows(fused, length=window["length"], overlap=window["overlap"], target_hz=data["target_hz"])


@pytest.fixture(scope="session")
def garmin_pipeline_windows(garmin_recording):
    """The real Garmin hour as the pipeline's windows, computed once per test session."""
    return pipeline_windows(garmin_recording)
