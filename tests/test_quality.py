import numpy as np
import pandas as pd

from conftest import WISDM_DIR
from har.labelled import find_wisdm_pairs, read_wisdm_pair
from har.quality import implausible_subjects, sensor_motion, subject_motion_ratio


def test_sensor_motion_is_the_mean_axis_standard_deviation_per_sensor():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20_000, 6)) * [1, 2, 3, 0.1, 0.2, 0.3] + [0, 0, 9.81, 0, 0, 0]
    acc, gyr = sensor_motion(values)
    assert abs(acc - 2.0) < 0.05 and abs(gyr - 0.2) < 0.005  # gravity (a constant) is not motion


def motion_table(factors: dict[str, float]) -> pd.DataFrame:
    """Recordings of two activities with very different typical motion, scaled per subject."""
    typical = {"sitting": (0.3, 0.05), "clapping": (4.0, 1.0)}
    return pd.DataFrame([(s, a, f * acc, f * gyr) for s, f in factors.items() for a, (acc, gyr) in typical.items()],
                        columns=["subject", "activity", "acc", "gyr"])


def test_a_subject_that_barely_moves_is_flagged_and_typical_ones_are_not():
    factors = {"a": 1.0, "b": 1.2, "c": 0.8, "d": 1.1, "pocket": 0.15}
    ratio = subject_motion_ratio(motion_table(factors))
    assert ratio["a"] == 1.0  # the median subject
    assert abs(ratio["pocket"] - 0.15) < 1e-9  # compared per activity: sitting with sitting
    assert implausible_subjects(ratio, 0.5) == ["pocket"]
    assert implausible_subjects(ratio, None) == []


def test_on_real_wisdm_exactly_the_subjects_without_wrist_motion_are_flagged():
    subjects = {"1600", "1618", "1620", "1636", "1637", "1638", "1639", "1640"}
    pairs = [p for p in find_wisdm_pairs(WISDM_DIR, ["typing", "brushing_teeth", "clapping", "folding_clothes"])[0]
             if p["subject"] in subjects]
    rows = []
    for pair in pairs:
        recording = read_wisdm_pair(pair)
        n = min(len(recording.acc.xyz), len(recording.gyr.xyz))
        rows.append((pair["subject"], pair["activity"],
                     *sensor_motion(np.hstack([recording.acc.xyz[:n], recording.gyr.xyz[:n]]))))
    ratio = subject_motion_ratio(pd.DataFrame(rows, columns=["subject", "activity", "acc", "gyr"]))
    assert implausible_subjects(ratio, 0.5) == ["1637", "1638", "1639", "1640"]
    # 1618, the least active real wearer, is still well above the threshold.
    assert ratio["1618"] > 0.5
