"""The study generator (har/study.py) over the real WISDM and Garmin data, and the sessions figures by hand."""
import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from conftest import GARMIN_ACC, GARMIN_GYR, WISDM_DIR
from python_calamine import CalamineWorkbook

from har.fusion import fuse_recording
from har.garmin import read_garmin_pair
from har.labelled import find_wisdm_pairs, read_wisdm_pair
from har.study import NOT_WORN, StudyPlan, compare_session, generate_study, read_truth, study_figures
from har.wear import WearRule

LABELS = ["sitting", "standing", "typing", "writing", "brushing_teeth", "eating_soup", "eating_chips", "eating_pasta",
          "eating_sandwich", "drinking", "clapping", "folding_clothes"]
SUBJECT = "1604"
TINY = dict(recordings_per_session=3, max_recording_s=30.0, nonwear_minutes=(1.0,))
PREPROCESSING = {"target_hz": 50.0, "max_gap_s": 0.5, "lowpass_hz": 10.0, "window_length": 200, "overlap": 0.5}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    manifest = generate_study(out, WISDM_DIR, [SUBJECT], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR),
                              plan=StudyPlan(seed=3, midnight=False, **TINY))
    return out, manifest


def source_recording(recording_id: str):
    subject, activity = recording_id.split("_", 1)
    pairs, _ = find_wisdm_pairs(WISDM_DIR)
    return read_wisdm_pair(next(p for p in pairs if p["subject"] == subject and p["activity"] == activity))


def test_the_workbooks_are_the_garmin_export_format_and_read_back_as_written(tiny_study):
    out, manifest = tiny_study
    (session,) = manifest["sessions"]
    acc_path = out / "recordings" / f"{session['session']}-accelerometer_data.xlsx"
    gyr_path = out / "recordings" / f"{session['session']}-gyroscope_data.xlsx"
    acc_rows = CalamineWorkbook.from_path(str(acc_path)).get_sheet_by_index(0).to_python()
    gyr_rows = CalamineWorkbook.from_path(str(gyr_path)).get_sheet_by_index(0).to_python()
    assert acc_rows[0] == ["timestamp", "timestamp_ms", "sample_time_offset", "calibrated_accel_x",
                           "calibrated_accel_y", "calibrated_accel_z"]
    assert gyr_rows[0][3:] == ["calibrated_gyro_x", "calibrated_gyro_y", "calibrated_gyro_z"]
    stamp = datetime.strptime(acc_rows[1][0], "%m/%d/%Y, %I:%M:%S %p") + timedelta(milliseconds=acc_rows[1][1])
    assert stamp.isoformat(timespec="milliseconds") == session["start_time"][:23]  # local wall clock, no zone
    assert all(isinstance(json.loads(row[2])[0], str) for row in acc_rows[1:])  # JSON lists of strings
    starts = [datetime.strptime(r[0], "%m/%d/%Y, %I:%M:%S %p") + timedelta(milliseconds=r[1]) for r in acc_rows[1:]]
    gyr_starts = [datetime.strptime(r[0], "%m/%d/%Y, %I:%M:%S %p") + timedelta(milliseconds=r[1]) for r in gyr_rows[1:]]
    assert np.median(np.diff(starts)) == timedelta(milliseconds=250)
    apart_ms = [min(abs((g - a).total_seconds()) for a in starts[:12]) * 1000 for g in gyr_starts[1:8]]
    assert all(0 < ms < 100 for ms in apart_ms)  # the gyroscope's batches start tens of ms off the accelerometer's

    recording = read_garmin_pair(acc_path, gyr_path, timezone="Europe/Berlin")
    assert recording.report["acc"]["unit_in_file"] == "milli-g" and recording.report["gyr"]["unit_in_file"] == "deg/s"
    assert recording.start_time == pd.Timestamp(session["start_time"]).isoformat()
    pieces = json.loads((out / "truth" / f"{session['session']}.json").read_text())["pieces"]
    assert [p["label"] for p in pieces].count(NOT_WORN) == 1 and len(pieces) == 4
    first_cell = float(json.loads(acc_rows[1][3])[0])
    for piece in pieces:
        inside = (recording.acc.t >= piece["start_s"] - 1e-9) & (recording.acc.t < piece["end_s"] - 1e-9)
        read_back = recording.acc.xyz[inside]
        if piece["label"] == NOT_WORN:  # the desk: gravity alone, at the Garmin hour's noise floor
            assert np.allclose(np.linalg.norm(read_back, axis=1), 9.81, atol=0.3)
            assert read_back.std(axis=0).max() < 13 * 9.80665 / 1000  # under the still criterion of 13 mg
            continue
        source = source_recording(piece["source"])
        expected = source.acc.xyz[:len(read_back)]
        np.testing.assert_allclose(read_back, expected, rtol=1e-6, atol=1e-6)  # m/s^2 -> milli-g -> m/s^2
        np.testing.assert_allclose(recording.acc.t[inside] - piece["start_s"], np.arange(len(read_back)) / 20.0,
                                   atol=1e-9)
        gyr = recording.gyr.xyz[(recording.gyr.t >= piece["start_s"] - 1e-9) & (recording.gyr.t < piece["end_s"] - 1e-9)]
        np.testing.assert_allclose(gyr, source.gyr.xyz[:len(gyr)], rtol=1e-6, atol=1e-6)  # rad/s -> deg/s -> rad/s
        if piece is pieces[0]:
            assert first_cell == pytest.approx(source.acc.xyz[0, 0] / 9.80665 * 1000, rel=1e-6)  # milli-g in the file


def test_the_truth_lines_up_with_the_windows_cut_from_the_session(tiny_study):
    from har.preprocessing import Preprocessing
    from har.scoring import GarminPair, prepare

    out, manifest = tiny_study
    name = manifest["sessions"][0]["session"]
    truth, summary = read_truth(out, name)
    cut = prepare(GarminPair(out / "recordings" / f"{name}-accelerometer_data.xlsx",
                             out / "recordings" / f"{name}-gyroscope_data.xlsx"), Preprocessing(**PREPROCESSING),
                  WearRule())
    assert len(truth) == summary["seconds"] == int(np.floor(summary["pieces"][-1]["end_s"] - 0.1))
    checked = 0
    for piece in summary["pieces"]:
        inside = (cut.start_s >= piece["start_s"]) & (cut.start_s + 4.0 <= piece["end_s"] - 0.2)
        assert inside.any()
        for start in cut.start_s[inside]:
            assert set(truth[int(np.ceil(start)):int(start + 4.0)]) == {piece["label"]}
        if piece["label"] == NOT_WORN:
            continue
        fused, _ = fuse_recording(source_recording(piece["source"]), target_hz=50.0, max_gap_s=0.5, lowpass_hz=10.0)
        for window, start in zip(cut.windows[inside], cut.start_s[inside]):
            offset = np.flatnonzero(np.isclose(fused["t"].to_numpy(), start - piece["start_s"]))
            assert len(offset) == 1  # the session's grid falls on the recording's own grid points
            np.testing.assert_allclose(window, fused.iloc[offset[0]:offset[0] + 200, 1:].to_numpy(), atol=1e-5)
            checked += 1
    assert checked >= 20


def test_the_same_seed_gives_the_same_files_and_another_seed_another_order(tmp_path):
    plans = {"a": StudyPlan(seed=5, midnight=False, **TINY), "b": StudyPlan(seed=5, midnight=False, **TINY),
             "c": StudyPlan(seed=6, midnight=False, **TINY)}
    for name, plan in plans.items():
        generate_study(tmp_path / name, WISDM_DIR, [SUBJECT], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR), plan=plan)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 8  # a workbook pair, its truth table and summary, participants, sessions, days, study
    for path in files:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path
    order = lambda name: [p["source"] for p in json.loads(next((tmp_path / name / "truth").glob("*.json")).read_text())["pieces"]]
    assert order("a") != order("c")


def test_a_session_across_midnight_and_a_daylight_saving_day_give_the_right_days(tmp_path):
    plan = StudyPlan(days=2, seed=1, first_day="2025-03-29", timezone="Europe/Berlin", **TINY)
    manifest = generate_study(tmp_path, WISDM_DIR, [SUBJECT], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR), plan=plan)
    first, second = manifest["sessions"]
    assert first["days"] == ["2025-03-29", "2025-03-30"] and second["days"] == ["2025-03-30"]
    assert first["start_time"].endswith("+01:00") and second["start_time"].endswith("+02:00")  # after the change

    berlin = ZoneInfo("Europe/Berlin")
    expected: dict = {}
    for entry in manifest["sessions"]:
        truth, summary = read_truth(tmp_path, entry["session"])
        start = datetime.fromisoformat(entry["start_time"]).astimezone(ZoneInfo("UTC"))
        for i, label in enumerate(truth):  # each second's local date, from zoneinfo directly
            day = (start + timedelta(seconds=i + 0.5)).astimezone(berlin).date().isoformat()
            expected.setdefault(day, {}).setdefault(label, 0)
            expected[day][label] += 1
        assert sum(d["recorded_minutes"] for d in summary["days"].values()) == pytest.approx(len(truth) / 60, abs=1e-3)
    days = pd.read_csv(tmp_path / "days.csv").set_index("date")
    assert days.loc["2025-03-29", "day_hours"] == 24 and days.loc["2025-03-30", "day_hours"] == 23
    assert days.loc["2025-03-30", "sessions"] == 2  # the midnight session's second part and the day's own
    for day, counts in expected.items():
        assert days.loc[day, "not_worn_minutes"] == pytest.approx(counts.get(NOT_WORN, 0) / 60, abs=1e-3)
        for activity in LABELS:
            assert days.loc[day, activity] == pytest.approx(counts.get(activity, 0) / 60, abs=1e-3)
    assert 0 < expected["2025-03-29"][NOT_WORN] + sum(v for k, v in expected["2025-03-29"].items() if k != NOT_WORN)


def test_a_session_across_a_daylight_saving_change_is_refused_by_name(tmp_path):
    # Santiago de Chile leaves summer time at midnight: a session across midnight there spans the change.
    plan = StudyPlan(first_day="2025-04-05", timezone="America/Santiago", **TINY)
    with pytest.raises(ValueError, match="daylight-saving change in America/Santiago"):
        generate_study(tmp_path, WISDM_DIR, [SUBJECT], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR), plan=plan)


def test_fused_output_is_what_the_batch_scorer_reads(tmp_path):
    from serve.batch.jobs import find_jobs

    plan = StudyPlan(participants=2, seed=2, midnight=False, output="fused", **TINY)
    manifest = generate_study(tmp_path, WISDM_DIR, [SUBJECT, "1605"], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR),
                              plan=plan)
    jobs, skipped = find_jobs(tmp_path / "recordings")
    assert skipped == [] and sorted(j.name for j in jobs) == sorted(s["session"] for s in manifest["sessions"])
    assert all(j.kind == "fused" and j.start_time.endswith("+01:00") for j in jobs)
    fused = pd.read_parquet(jobs[0].sources[0])
    truth, _ = read_truth(tmp_path, jobs[0].name)
    assert abs(fused["t"].iloc[-1] - len(truth)) < 1.0


# ---------------------------------------------------------------- the sessions figures, by hand

def answer(episodes, minutes, not_worn, counted=None, basis=None):
    """The part of a har.answer.Answer that compare_session reads."""
    labels = ["typing", "sitting"]
    return SimpleNamespace(episodes=[{"label": l, "start_s": s, "end_s": e} for l, s, e in episodes],
                           minutes_per_activity={a: minutes.get(a, 0.0) for a in labels}, not_worn_minutes=not_worn,
                           counted_minutes_per_activity={a: (counted or minutes).get(a, 0.0) for a in labels},
                           minutes_interval_90=dict.fromkeys(labels), minutes_basis=basis,
                           labels={"activities": labels})


def test_the_sessions_figures_worked_out_by_hand():
    # 12 s: typing 0-4, not worn 4-8, sitting 8-12. The answer: typing 0-3, uncertain 3-4, not worn 4-7,
    # typing 7-9 (one second invented inside non-wear, one second of sitting called typing), not worn 9-10
    # (a worn second reported not worn), sitting 10-12.
    truth = np.array(["typing"] * 4 + [NOT_WORN] * 4 + ["sitting"] * 4, dtype=object)
    result = answer([("typing", 0, 3), ("uncertain", 3, 4), (NOT_WORN, 4, 7), ("typing", 7, 9), (NOT_WORN, 9, 10),
                     ("sitting", 10, 12)], {"typing": 5 / 60, "sitting": 2 / 60}, 4 / 60)
    comparison = compare_session(truth, result, ["typing", "sitting"])
    assert comparison["worn_reported_not_worn_s"] == 1 and comparison["invented_in_not_worn_s"] == 1
    figures = study_figures([comparison], ["typing", "sitting"])
    # |5 - 4| + |2 - 4| = 3 s of 8 true activity seconds
    assert figures["minutes_error"] == pytest.approx(3 / 8, abs=1e-4)
    assert figures["minutes_error_per_activity"] == {"typing": 0.25, "sitting": 0.5}
    assert figures["true_not_worn_minutes"] == pytest.approx(4 / 60, abs=1e-3)
    assert figures["worn_reported_not_worn_share"] == pytest.approx(1 / 8)
    assert figures["invented_in_not_worn_minutes"] == pytest.approx(1 / 60, abs=1e-3)
    # true activity seconds: typing 0,1,2 right, 3 uncertain; sitting 8 called typing, 9 not worn, 10, 11 right
    assert figures["accuracy"] == pytest.approx(5 / 8)
    assert figures["coverage"] == pytest.approx(6 / 8)
    assert figures["given_accuracy"] == pytest.approx(5 / 6, abs=1e-4)
    # typing: precision 3/4, recall 3/4 -> F1 0.75; sitting: precision 2/2, recall 2/4 -> F1 2/3
    assert figures["macro_f1"] == pytest.approx((0.75 + 2 / 3) / 2, abs=1e-4)


def test_the_estimate_and_its_interval_per_local_day_worked_out_by_hand():
    # 8 s over two local days (seconds 0-5 on the first): typing 0-4, sitting 4-8. Four windows own 2 s each with
    # shares (typing, sitting) 0.9/0.1, 0.5/0.5, 0.5/0.5, 0.1/0.9; interval scale 1.
    truth = np.array(["typing"] * 4 + ["sitting"] * 4, dtype=object)
    dates = np.array(["2025-03-29"] * 5 + ["2025-03-30"] * 3, dtype=object)
    basis = SimpleNamespace(start_s=[0.0, 2.0, 4.0, 6.0], end_s=[2.0, 4.0, 6.0, 8.0], interval_scale=1.0,
                            shares=[[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.1, 0.9]])
    result = answer([("typing", 0, 2), ("uncertain", 2, 6), ("sitting", 6, 8)], {"typing": 4 / 60, "sitting": 4 / 60},
                    0.0, counted={"typing": 2 / 60, "sitting": 2 / 60}, basis=basis)
    comparison = compare_session(truth, result, ["typing", "sitting"], dates)
    first, second = comparison["days"]
    # day one, seconds 0-5: typing 1.8 + 1.0 + 0.5 = 3.3 s, sitting 0.2 + 1.0 + 0.5 = 1.7 s, spread 0.18 + 0.5 + 0.25 s
    assert first["date"] == "2025-03-29" and np.allclose(first["estimate"] * 60, [3.3, 1.7])
    assert np.allclose(first["bounds"] * 60, [[3.3 - 0.93, 3.3 + 0.93], [1.7 - 0.93, 1.7 + 0.93]])
    assert first["true"].tolist() == [4 / 60, 1 / 60] and second["true"].tolist() == [0.0, 3 / 60]
    figures = study_figures([comparison], ["typing", "sitting"])
    # Day one holds its true 4 s of typing in [2.37, 4.23] and 1 s of sitting in [0.77, 2.63]. Day two (seconds 5-8):
    # typing 0.5 + 0.2 = 0.7 s, sitting 0.5 + 1.8 = 2.3 s, spread 0.25 + 0.18 = 0.43 s: [0.27, 1.13] misses the true
    # 0 s of typing and [1.87, 2.73] the true 3 s of sitting.
    assert np.allclose(second["bounds"] * 60, [[0.27, 1.13], [1.87, 2.73]])
    assert figures["activity_days"] == 4 and figures["interval_coverage"] == 0.5
    assert figures["counted_minutes_error"] == pytest.approx(4 / 8, abs=1e-4) and figures["minutes_error"] == 0.0


def test_piece_seconds_cut_each_sessions_recordings_to_seeded_lengths(tmp_path):
    plan = StudyPlan(seed=4, midnight=False, recordings_per_session=4, piece_seconds=(20.0, 40.0),
                     nonwear_minutes=(1.0,))
    manifest = generate_study(tmp_path, WISDM_DIR, [SUBJECT], labels=LABELS, garmin=(GARMIN_ACC, GARMIN_GYR), plan=plan)
    _, summary = read_truth(tmp_path, manifest["sessions"][0]["session"])
    lengths = [p["end_s"] - p["start_s"] for p in summary["pieces"] if p["label"] != NOT_WORN]
    assert len(lengths) == 4 and all(19.0 <= length <= 41.0 for length in lengths), lengths
    assert len(set(round(length) for length in lengths)) > 1
    with pytest.raises(ValueError, match="piece_seconds must be"):
        StudyPlan(piece_seconds=(30.0, 10.0))


def test_minutes_errors_of_two_sessions_do_not_cancel():
    truth = np.array(["typing"] * 60 + ["sitting"] * 60, dtype=object)
    over = compare_session(truth, answer([("typing", 0, 120)], {"typing": 2.0}, 0.0), ["typing", "sitting"])
    under = compare_session(truth, answer([("sitting", 0, 120)], {"sitting": 2.0}, 0.0), ["typing", "sitting"])
    assert study_figures([over, under], ["typing", "sitting"])["minutes_error"] == pytest.approx(1.0)


def test_the_generate_command_writes_a_study_the_batch_scorer_reads(tmp_path, monkeypatch, capsys):
    from conftest import ROOT
    from serve.batch.jobs import find_jobs
    from stages.sessions import main

    monkeypatch.chdir(ROOT)  # params.yaml: the labels, data.raw and the Garmin hour
    assert main(["generate", str(tmp_path), "--subjects", SUBJECT, "--days", "2", "--recordings-per-session", "2",
                 "--max-recording-s", "20", "--nonwear-minutes", "1", "--seed", "4", "--fused"]) == 0
    assert "wrote 2 session(s) of 1 participant(s)" in capsys.readouterr().out
    jobs, skipped = find_jobs(tmp_path / "recordings")
    assert len(jobs) == 2 and skipped == []
    days = pd.read_csv(tmp_path / "days.csv")
    assert days["date"].tolist() == ["2025-03-29", "2025-03-30"] and days["day_hours"].tolist() == [24.0, 23.0]
