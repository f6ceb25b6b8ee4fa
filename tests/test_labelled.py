"""Labelled readers: the real WISDM watch pairs and a generated long table."""
import numpy as np
import pandas as pd
import pytest
from conftest import WISDM_DIR

from har.labelled import find_wisdm_pairs, read_long_table, read_wisdm_pair
from har.recording import G, InputError

LONG_SPEC = {"timestamp": "timestamp", "timestamp_unit": "ms", "acc": ["Ax", "Ay", "Az"], "gyr": ["Gx", "Gy", "Gz"],
             "acc_unit": "g", "gyr_unit": "deg/s", "activity": "activity", "subject": "subject"}


def long_table(n=300, hz=50):
    """Two subjects, two activities, `n` samples each, accelerometer in g and gyroscope in deg/s."""
    parts = []
    for subject, activity in [("s1", "nail_biting"), ("s1", "sitting"), ("s2", "nail_biting")]:
        t_ms = np.arange(n) * 1000 / hz
        parts.append(pd.DataFrame({"timestamp": t_ms, "Ax": 0.0, "Ay": 0.0, "Az": 1.0, "Gx": 90.0, "Gy": 0.0, "Gz": 0.0,
                                   "activity": activity, "subject": subject}))
    return pd.concat(parts, ignore_index=True)


def test_wisdm_pairs_by_subject_and_letter_not_by_number():
    pairs, skipped = find_wisdm_pairs(WISDM_DIR)
    assert len(pairs) == 729
    # The leading NNN does not line up between acc_w and gyr_w; subject and letter do.
    for pair in pairs[::50]:
        assert pair["acc"].name.split("_", 1)[1].replace("acc", "") == pair["gyr"].name.split("_", 1)[1].replace("gyr", "")
    assert {s["reason"] for s in skipped} == {"no gyroscope partner"} and len(skipped) == 5
    hand_only, _ = find_wisdm_pairs(WISDM_DIR, activities=["typing", "sitting"])
    assert {p["activity"] for p in hand_only} == {"typing", "sitting"} and len(hand_only) == 82


def test_wisdm_recording_units_and_nominal_rate():
    pairs, _ = find_wisdm_pairs(WISDM_DIR, activities=["sitting"])
    recording = read_wisdm_pair(pairs[0])
    assert recording.subject == "1600" and recording.activity == "sitting"
    assert np.diff(recording.acc.t) == pytest.approx(0.05)  # 20 Hz
    assert np.median(np.linalg.norm(recording.acc.xyz, axis=1)) == pytest.approx(9.8, abs=0.5)  # m/s^2 already


def test_long_table_is_split_into_runs_and_converted_to_si(tmp_path):
    path = tmp_path / "adam.csv"
    long_table().to_csv(path, index=False)
    recordings = read_long_table(path, LONG_SPEC)
    assert [(r.subject, r.activity) for r in recordings] == [("s1", "nail_biting"), ("s1", "sitting"), ("s2", "nail_biting")]
    first = recordings[0]
    assert first.acc.xyz[0] == pytest.approx([0, 0, G])
    assert first.gyr.xyz[0, 0] == pytest.approx(np.pi / 2)
    assert first.acc.t[1] == pytest.approx(0.02) and first.acc.t[0] == 0.0


def test_long_table_parquet_and_errors(tmp_path):
    table = long_table()
    table.to_parquet(tmp_path / "adam.parquet")
    assert len(read_long_table(tmp_path / "adam.parquet", LONG_SPEC)) == 3

    table.drop(columns=["Gz"]).to_csv(tmp_path / "no_gz.csv", index=False)
    with pytest.raises(InputError, match=r"no_gz.csv, column 'Gz': missing column\(s\) \['Gz'\]"):
        read_long_table(tmp_path / "no_gz.csv", LONG_SPEC)

    bad = table.astype({"Ay": object})
    bad.loc[5, "Ay"] = "n/a"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError) as raised:
        read_long_table(tmp_path / "bad.csv", LONG_SPEC)
    assert (raised.value.row, raised.value.column) == (7, "Ay")  # Excel-style: header is line 1
    assert "'n/a'" in str(raised.value)
