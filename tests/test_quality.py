import numpy as np
import pandas as pd
import pytest

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


def test_an_activity_in_which_nobody_moves_is_left_out_of_the_ratio():
    table = motion_table({"a": 1.0, "b": 1.2, "c": 0.8})
    still = pd.DataFrame([(s, "lying", 0.0, 0.0) for s in "abc"], columns=table.columns)
    ratio = subject_motion_ratio(pd.concat([table, still], ignore_index=True))
    assert np.isfinite(ratio).all() and ratio["a"] == 1.0


def fused_labelled_folder(root, factors: dict[str, float]):
    """data/fused/labelled as the fuse stage writes it: index.csv + one 50 Hz table per recording."""
    folder = root / "data" / "fused" / "labelled"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for subject, factor in factors.items():
        for activity, amplitude in (("sitting", 0.3), ("clapping", 4.0)):
            n = 1500
            values = rng.normal(size=(n, 6)) * amplitude * factor + [0, 0, 9.81, 0, 0, 0]
            table = pd.DataFrame(values, columns=["ax", "ay", "az", "gx", "gy", "gz"])
            table.insert(0, "t", np.arange(n) / 50.0)
            name = f"{subject}_{activity}"
            table.to_parquet(folder / f"{name}.parquet")
            rows.append({"recording": name, "subject": subject, "activity": activity, "start_time": "",
                         "file": f"{name}.parquet", "samples": n})
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)


def window_stage_params(split: dict) -> dict:
    return {"data": {"labels": ["sitting", "clapping"], "target_hz": 50.0, "quality": {"min_motion_ratio": 0.5}},
            "window": {"length": 200, "overlap": 0.5},
            "split": {"seed": 1, "test_fraction": 0.2, "val_fraction": 0.2, **split}}


def test_window_stage_sets_aside_the_subject_without_motion_and_reports_it(tmp_path, monkeypatch):
    import json

    import yaml

    from stages import window

    fused_labelled_folder(tmp_path, {"1": 1.0, "2": 1.1, "3": 0.9, "4": 1.2, "5": 0.95, "pocket": 0.1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(window_stage_params({})))
    monkeypatch.chdir(tmp_path)
    window.main()

    quality = json.loads((tmp_path / "metrics/windows.json").read_text())["quality"]
    assert quality["excluded_subjects"] == ["pocket"] and quality["excluded_recordings"] == 2
    meta = window.load_meta()
    assert "pocket" not in sum(meta["subjects"].values(), [])
    windows = sum(len(window.load_split(s)["y"]) for s in ("train", "val", "test"))
    assert windows + quality["excluded_windows"] == 6 * 2 * 14  # nothing lost without a count

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(window_stage_params({"test_subjects": ["pocket"]})))
    with pytest.raises(ValueError, match=r"name \['pocket'\], whom the wrist-motion check sets aside"):
        window.main()
