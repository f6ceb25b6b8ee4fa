"""Labelled sessions: a Garmin pair + annotations CSV read through the pipeline's reader, with located errors."""
import numpy as np
import pandas as pd
import pytest
from conftest import WISDM_DIR
from test_garmin import batch_row, write_workbook

from har.annotations import find_labelled_sessions, read_labelled_session, subject_recordings
from har.recording import InputError

LABELS = ["sitting", "typing", "clapping"]


def rows(seconds: int, value: float):
    """Batches of 25 samples at 100 Hz, 250 ms apart, for `seconds` seconds from 07:52:10."""
    offsets = list(range(0, 250, 10))
    out = []
    for i in range(seconds * 4):
        second, ms = divmod(250 * i, 1000)
        out.append(batch_row(10 + second, ms, offsets, [[value] * 25, [0] * 25, [0] * 25]))
    return out


@pytest.fixture
def session(tmp_path):
    """A 20-second labelled session: workbooks s-*.xlsx and the path its annotations go to."""
    write_workbook(tmp_path / "s-accelerometer_data.xlsx", "acc", rows(20, 1000.0))
    write_workbook(tmp_path / "s-gyroscope_data.xlsx", "gyr", rows(20, 90.0))
    return tmp_path


def read(folder, text: str):
    (folder / "s-annotations.csv").write_text(text)
    return read_labelled_session(folder / "s-accelerometer_data.xlsx", folder / "s-gyroscope_data.xlsx",
                                 folder / "s-annotations.csv", labels=LABELS, subject="p1")


def test_each_interval_is_a_labelled_recording_and_unannotated_time_is_counted(session):
    recordings, report = read(session, "start,end,activity\n2,6,typing\n2025-03-24 07:52:18,2025-03-24 07:52:26,clapping\n")
    assert [(r.recording_id, r.activity, r.subject) for r in recordings] == [("s_r2_typing", "typing", "p1"),
                                                                             ("s_r3_clapping", "clapping", "p1")]
    typing, clapping = recordings
    assert typing.acc.t.min() >= 2 and typing.acc.t.max() < 6 and len(typing.acc.t) == 400  # 4 s at 100 Hz
    assert clapping.gyr.t.min() >= 8 and clapping.gyr.t.max() < 16  # wall-clock 07:52:18 is 8 s after the start
    assert np.allclose(typing.acc.xyz[:, 0], 9.80665)  # milli-g -> m/s^2 by the Garmin reader
    assert report["annotated_s"] == 12.0 and report["unannotated_s"] == pytest.approx(report["recorded_s"] - 12.0)
    assert report["annotated_s_per_activity"] == {"typing": 4.0, "clapping": 8.0}


@pytest.mark.parametrize("text, located, problem", [
    ("start,end,activity\n1,3,typing\n2,5,clapping\n", "row 3, column 'start'", "overlaps row 2 (1-3 s)"),
    ("start,end,activity\n1,3,typing\n4,5,nail_biting\n", "row 3, column 'activity'", "unknown activity 'nail_biting'"),
    ("start,end,activity\n1,3,typing\n15,25,clapping\n", "row 3, column 'end'", "outside the recording (0-19.99 s)"),
    ("start,end,activity\n-1,3,typing\n", "row 2, column 'start'", "outside the recording"),
    ("start,end,activity\n5,3,typing\n", "row 2, column 'end'", "end 3 s is not after start 5 s"),
    ("start,end,activity\n1,soon,typing\n", "row 2, column 'end'", "unreadable time 'soon'"),
    ("start,end,activity\n1,2025-03-24T07:52:15+01:00,typing\n", "row 2, column 'end'", "names a zone"),
    ("begin,end,activity\n1,3,typing\n", "column 'start'", "missing column(s) ['start']"),
    ("start,end,activity\n", "s-annotations.csv", "no annotation rows"),
])
def test_bad_annotations_are_refused_with_file_row_and_column(session, text, located, problem):
    with pytest.raises(InputError) as error:
        read(session, text)
    message = str(error.value)
    assert message.startswith(str(session / "s-annotations.csv")), message
    assert located in message and problem in message, message


def test_sessions_without_annotations_or_workbooks_are_reported(session):
    (session / "s-annotations.csv").write_text("start,end,activity\n1,3,typing\n")
    (session / "lonely-annotations.csv").write_text("start,end,activity\n1,3,typing\n")
    write_workbook(session / "t-accelerometer_data.xlsx", "acc", rows(2, 1000.0))
    write_workbook(session / "t-gyroscope_data.xlsx", "gyr", rows(2, 90.0))
    sessions, skipped = find_labelled_sessions(session)
    assert [s["session"] for s in sessions] == ["s"]
    assert {(s["file"], s["reason"]) for s in skipped} == {
        ("t-accelerometer_data.xlsx", "no annotations (t-annotations.csv)"),
        ("lonely-annotations.csv", "no workbook pair for these annotations")}


def test_wisdm_layout_and_long_table_give_one_subjects_recordings(tmp_path):
    recordings, report = subject_recordings(WISDM_DIR, "1600", labels=LABELS, data={})
    assert {r.subject for r in recordings} == {"1600"} and {r.activity for r in recordings} == set(LABELS)
    assert "walking" in report["activities_not_in_labels"]

    spec = {"timestamp": "t", "timestamp_unit": "s", "acc": ["ax", "ay", "az"], "gyr": ["gx", "gy", "gz"],
            "activity": "activity", "subject": "who"}
    table = pd.DataFrame({"t": np.arange(8) * 0.02, **{c: 0.0 for c in ["ax", "ay", "az", "gx", "gy", "gz"]},
                          "activity": ["typing"] * 4 + ["sitting"] * 4, "who": ["a"] * 6 + ["b"] * 2})
    table.to_csv(tmp_path / "long.csv", index=False)
    recordings, _ = subject_recordings(tmp_path / "long.csv", "a", labels=LABELS, data={"long_table": spec})
    assert [(r.activity, len(r.acc.t)) for r in recordings] == [("typing", 4), ("sitting", 2)]
    with pytest.raises(InputError, match=r"no rows of subject 'c'.*expected one of \['a', 'b'\]"):
        subject_recordings(tmp_path / "long.csv", "c", labels=LABELS, data={"long_table": spec})


def test_the_retraining_trigger_counts_annotated_intervals(tmp_path):
    from stages.retrain import labelled_recording_ids

    person = tmp_path / "p1"
    person.mkdir()
    for name in ("s-accelerometer_data.xlsx", "s-gyroscope_data.xlsx"):
        (person / name).write_bytes(b"")  # counting reads only the annotations
    (person / "s-annotations.csv").write_text("start,end,activity\n0,60,typing\n70,130,walking\n140,200,sitting\n")
    ids = labelled_recording_ids({"source": "sessions", "labels": LABELS}, tmp_path)
    assert ids == {"s_r2_typing", "s_r4_sitting"}


def test_the_fuse_stage_reads_labelled_sessions_one_folder_per_subject(session, tmp_path_factory):
    from stages.fuse import labelled_loaders

    root = tmp_path_factory.mktemp("raw")
    session.rename(root / "p1")
    (root / "p1" / "s-annotations.csv").write_text("start,end,activity\n1,5,typing\n6,10,sitting\n")
    loaders, skipped = labelled_loaders({"source": "sessions", "raw": str(root), "labels": LABELS,
                                         "timezone": None, "on_error": "raise"})
    recordings = [r for load in loaders for r in load()]
    assert [(r.recording_id, r.subject, r.activity) for r in recordings] == [("s_r2_typing", "p1", "typing"),
                                                                             ("s_r3_sitting", "p1", "sitting")]
    assert skipped == []
