"""Batch scoring (`python -m serve.batch`) answers what `POST /recordings` answers, and skips nothing silently."""
import json

import numpy as np
import pandas as pd
import pytest
from litestar.testing import TestClient

from batch_helpers import fused_session
from conftest import GARMIN_ACC, GARMIN_GYR
from har.fusion import CHANNELS, fuse_recording
from serve import batch
from serve.app import create_app
from serve.config import Settings
from serve_helpers import LABELS, PREPROCESSING, ROOT, TOKEN, write_tiny_model

RECORDING = GARMIN_ACC.name.removesuffix("-accelerometer_data.xlsx")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def garmin_folder(tmp_path_factory):
    """The real pair, an accelerometer file without its partner, a broken pair and a stray file."""
    folder = tmp_path_factory.mktemp("garmin")
    (folder / GARMIN_ACC.name).symlink_to(GARMIN_ACC)
    (folder / GARMIN_GYR.name).symlink_to(GARMIN_GYR)
    (folder / "lonely-accelerometer_data.xlsx").symlink_to(GARMIN_ACC)
    (folder / "broken-accelerometer_data.xlsx").write_bytes(b"not a workbook")
    (folder / "broken-gyroscope_data.xlsx").write_bytes(b"not a workbook")
    (folder / "notes.txt").write_text("remember the charger")
    return folder


@pytest.fixture(scope="module")
def batch_run(garmin_folder, model_path, tmp_path_factory):
    output = tmp_path_factory.mktemp("scored")
    status = batch.main([str(garmin_folder), str(output), "--model", str(model_path),
                         "--params", str(ROOT / "params.yaml"), "--workers", "0"])
    return status, output


@pytest.fixture(scope="module")
def posted(model_path):
    """What the service answers for the same pair."""
    with TestClient(create_app(Settings(model_path=model_path), token=TOKEN), timeout=120) as client, \
            open(GARMIN_ACC, "rb") as acc, open(GARMIN_GYR, "rb") as gyr:
        response = client.post("/recordings", headers={"Authorization": f"Bearer {TOKEN}"},
                               files={"accelerometer": (GARMIN_ACC.name, acc), "gyroscope": (GARMIN_GYR.name, gyr)})
    assert response.status_code == 200, response.text
    return response.json()


def test_batch_gives_the_same_answer_as_post_recordings(batch_run, posted):
    _, output = batch_run
    scored = json.loads((output / RECORDING / "recording.json").read_text())
    assert scored["windows"] == posted["windows"] > 1800  # the whole hour, window by window
    assert scored == posted


def test_the_csv_tables_hold_the_json_answer(batch_run):
    folder = batch_run[1] / RECORDING
    answer = json.loads((folder / "recording.json").read_text())
    timeline = pd.read_csv(folder / "timeline.csv")
    assert list(timeline.columns) == ["start_s", "time", "label", "activity", "confidence"]
    assert timeline["label"].tolist() == [entry["label"] for entry in answer["timeline"]]
    np.testing.assert_allclose(timeline["start_s"], [entry["start_s"] for entry in answer["timeline"]])
    episodes = pd.read_csv(folder / "episodes.csv")
    assert episodes[["label", "start_s", "end_s", "windows"]].to_dict("records") == [
        {k: e[k] for k in ("label", "start_s", "end_s", "windows")} for e in answer["episodes"]]
    minutes = pd.read_csv(folder / "minutes_per_activity.csv")
    assert dict(zip(minutes["label"], minutes["minutes"])) == {
        **answer["minutes_per_activity"], "uncertain": 0.0, "not_worn": answer["not_worn_minutes"]}
    assert dict(zip(minutes["label"], minutes["counted_minutes"])) == {
        **answer["counted_minutes_per_activity"], "uncertain": answer["uncertain_minutes"],
        "not_worn": answer["not_worn_minutes"]}
    # both columns add up to the covered time (each value rounded to 0.001)
    for column in ("minutes", "counted_minutes"):
        assert minutes[column].sum() == pytest.approx(answer["covered_minutes"], abs=0.001 * len(minutes))
    assert set(answer["minutes_per_activity"]) == set(LABELS)
    assert answer["not_worn_minutes"] >= 55  # the real hour lay on a desk


def test_everything_not_scored_is_listed_with_its_reason(batch_run):
    status, output = batch_run
    summary = json.loads((output / "summary.json").read_text())
    assert [s["recording"] for s in summary["scored"]] == [RECORDING]
    failed = {s["source"]: s["reason"] for s in summary["failed"]}  # recordings that could not be read
    assert list(failed) == ["broken-accelerometer_data.xlsx, broken-gyroscope_data.xlsx"]
    assert "cannot be read as an Excel workbook" in failed["broken-accelerometer_data.xlsx, broken-gyroscope_data.xlsx"]
    reasons = {s["source"]: s["reason"] for s in summary["skipped"]}  # files that are not recordings
    assert reasons["lonely-accelerometer_data.xlsx"] == "no gyroscope partner"
    assert reasons["notes.txt"].startswith("not a recording")
    assert len(reasons) == 2
    assert summary["recordings"] == 2 and summary["done_before"] == []
    assert status == 1  # something was skipped: a cron job or CI step notices
    assert sorted(p.name for p in output.iterdir()) == [RECORDING, "summary.json"]
    assert sorted(p.name for p in (output / RECORDING).iterdir()) == [
        "done.json", "episodes.csv", "minutes_per_activity.csv", "recording.json", "timeline.csv"]


def test_fused_tables_give_the_same_answer_and_mismatched_ones_are_refused(garmin_recording, batch_run, model_path,
                                                                             tmp_path):
    fused, quality = fuse_recording(garmin_recording, target_hz=PREPROCESSING["target_hz"],
                                    max_gap_s=PREPROCESSING["max_gap_s"], lowpass_hz=PREPROCESSING["lowpass_hz"])
    folder = tmp_path / "fused"
    session = folder / RECORDING  # stages.fuse's layout: <session>/<session>.parquet + index.csv + quality.json
    session.mkdir(parents=True)
    fused.to_parquet(session / f"{RECORDING}.parquet")
    pd.DataFrame([{"recording": RECORDING, "file": f"{RECORDING}.parquet",
                   "start_time": garmin_recording.start_time}]).to_csv(session / "index.csv", index=False)
    (session / "quality.json").write_text(json.dumps([{"recording": RECORDING, **quality}]))
    slow = pd.DataFrame({"t": np.arange(1000) / 25.0, **{c: np.zeros(1000, np.float32) for c in CHANNELS}})
    slow.to_parquet(folder / "at-25-hz.parquet")
    slow.assign(t=np.arange(1000) / 50.0).head(150).to_parquet(folder / "three-seconds.parquet")

    status = batch.main([str(folder), str(tmp_path / "out"), "--model", str(model_path), "--workers", "0"])
    from_fused = json.loads((tmp_path / "out" / RECORDING / "recording.json").read_text())
    from_raw = json.loads((batch_run[1] / RECORDING / "recording.json").read_text())
    assert from_fused == from_raw
    reasons = {s["source"]: s["reason"] for s in json.loads((tmp_path / "out" / "summary.json").read_text())["failed"]}
    assert "the model expects 50 Hz" in reasons["at-25-hz.parquet"]
    assert "no complete 200-sample window" in reasons["three-seconds.parquet"]
    assert status == 1


def test_an_unreadable_model_stops_before_any_work(garmin_folder, tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    assert batch.main([str(garmin_folder), str(tmp_path / "out"), "--model", str(tmp_path / "model.onnx"),
                       "--workers", "0"]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_only_good_input_exits_0_and_other_fusion_settings_are_skipped_with_the_reason(model_path, tmp_path):
    good = tmp_path / "good"
    fused_session(good, "first", 30, target_hz=50.0, lowpass_hz=PREPROCESSING["lowpass_hz"])
    fused_session(good, "second", 12, target_hz=50.0, lowpass_hz=PREPROCESSING["lowpass_hz"])
    assert batch.main([str(good), str(tmp_path / "out"), "--model", str(model_path), "--workers", "0"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["recording"] for s in summary["scored"]] == ["first", "second"]
    assert summary["skipped"] == summary["failed"] == []
    # 30 s at 50 Hz: windows of 200 samples every 100 start at 0, 2, ..., 26 s.
    assert [s["windows"] for s in summary["scored"]] == [14, 5]

    mixed = tmp_path / "mixed"
    fused_session(mixed, "first", 30, target_hz=50.0, lowpass_hz=PREPROCESSING["lowpass_hz"])
    fused_session(mixed, "smoothed", 30, target_hz=50.0, lowpass_hz=5.0)
    assert batch.main([str(mixed), str(tmp_path / "out2"), "--model", str(model_path), "--workers", "0"]) == 1
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert [s["recording"] for s in summary["scored"]] == ["first"]
    assert summary["failed"] == [{"source": "smoothed/smoothed.parquet", "reason": "smoothed.parquet: fused with "
                                   "lowpass_hz 5.0 (quality.json), the model expects 10.0"}]
    assert not (tmp_path / "out2" / "smoothed").exists()

    (tmp_path / "empty").mkdir()  # nothing found is not success either: a cron job pointed at the wrong folder
    assert batch.main([str(tmp_path / "empty"), str(tmp_path / "out3"), "--model", str(model_path),
                       "--workers", "0"]) == 1
    assert json.loads((tmp_path / "out3" / "summary.json").read_text())["scored"] == []
