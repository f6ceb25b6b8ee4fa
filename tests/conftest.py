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
