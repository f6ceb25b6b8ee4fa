"""The service's parts on their own: model file checks, request parsing, batching, timelines, tokens, settings."""
import asyncio
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from serve.batching import DynamicBatcher
from serve.config import Settings
from har.modelfile import CHECKSUM_KEY, ModelFileError, read_card, stamp
from har.runtime import ModelRuntime
from serve.security import ConfigurationError, load_token, require_token
from har.timeline import episodes, minutes_per_label, summarize, window_labels, window_spans
from serve.validation import RequestError, parse_predict, parse_v2_infer
from serve_helpers import LABELS, ROOT, tiny_graph, tiny_metadata, write_tiny_model

CHANNELS = ["ax", "ay", "az", "gx", "gy", "gz"]


# --- model file: metadata and checksum -------------------------------------------------------------

def test_stamped_model_round_trips_its_metadata(tmp_path):
    card = ModelRuntime(write_tiny_model(tmp_path / "m.onnx")).card
    assert card.labels == LABELS and card.window_length == 200 and card.channels == CHANNELS
    assert card.preprocessing["overlap"] == 0.5 and card.metrics == {"macro_f1": 0.5}
    assert len(card.sha256) == 64


def _edit(data: bytes, change) -> bytes:
    model = onnx.load_from_string(data)
    change(model)
    return model.SerializeToString()


def test_model_changed_after_export_is_refused(tmp_path):
    data = stamp(tiny_graph(), tiny_metadata())

    def relabel(model):
        for prop in model.metadata_props:
            if prop.key == "labels":
                prop.value = json.dumps(["typing", "sitting", "clapping"])

    def reweight(model):
        weights = model.graph.initializer[0]
        values = onnx.numpy_helper.to_array(weights).copy()
        values[0, 0] += 1.0
        weights.CopyFrom(onnx.numpy_helper.from_array(values, weights.name))

    for change in (relabel, reweight):
        with pytest.raises(ModelFileError, match="checksum mismatch"):
            read_card(_edit(data, change), "m.onnx")
    unstamped = _edit(data, lambda m: m.metadata_props.pop())  # the checksum entry is the last one
    with pytest.raises(ModelFileError, match=CHECKSUM_KEY):
        read_card(unstamped, "m.onnx")
    with pytest.raises(ModelFileError, match="not an ONNX model"):
        read_card(b"not a model", "m.onnx")


def test_graph_that_contradicts_its_metadata_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(stamp(tiny_graph(labels=["a", "b"]), tiny_metadata()))  # 2 outputs, 3 labels
    with pytest.raises(ModelFileError, match="2 classes but the metadata lists 3"):
        ModelRuntime(path)


# --- request parsing: every problem named by its position -----------------------------------------

def _windows(n=2):
    return np.arange(n * 200 * 6, dtype=np.float32).reshape(n, 200, 6) / 1000


def _predict_body(windows) -> bytes:
    return json.dumps({"windows": windows}).encode()


def parse(body, max_windows=8):
    return parse_predict(body, length=200, channels=CHANNELS, max_windows=max_windows)[0]


def test_valid_windows_parse_to_float32():
    windows = _windows()
    parsed = parse(_predict_body(windows.tolist()))
    assert parsed.dtype == np.float32 and parsed.shape == (2, 200, 6)
    np.testing.assert_array_equal(parsed, windows)


@pytest.mark.parametrize("edit, status, message", [
    (lambda w: w[1][17].__setitem__(2, "7.5"), 422, r"windows\[1\]\[17\]\[2\]: expected a number, got str"),
    (lambda w: w[1][17].__setitem__(2, True), 422, r"windows\[1\]\[17\]\[2\]: expected a number, got bool"),
    (lambda w: w[1][17].__setitem__(2, None), 422, r"windows\[1\]\[17\]\[2\]: expected a number, got null"),
    (lambda w: w[0][3].__setitem__(5, float("nan")), 422, r"windows\[0\]\[3\]\[5\]: NaN or infinity"),
    (lambda w: w[0][3].__setitem__(5, float("inf")), 422, r"windows\[0\]\[3\]\[5\]: NaN or infinity"),
    (lambda w: w[1][4].__setitem__(0, 1e39), 422, r"windows\[1\]\[4\]\[0\]: outside the float32 range"),
    (lambda w: w[1][4].__setitem__(0, 12345.678), 422, r"windows\[1\]\[4\]\[0\]: number out of range"),
    (lambda w: w[1][17].pop(), 422, r"windows\[1\]\[17\] has 5 values, expected 6 \(ax, ay, az, gx, gy, gz\)"),
    (lambda w: w[1].pop(), 422, r"windows\[1\] has 199 samples, expected 200"),
    (lambda w: w.__setitem__(0, 3), 422, r"windows\[0\]: expected array, got int"),
])
def test_bad_window_is_located(edit, status, message):
    windows = _windows().tolist()
    edit(windows)
    with pytest.raises(RequestError, match="^" + message) as raised:  # the location starts the message
        # 12345.678 stands for a literal 1e999 (valid JSON, beyond float64), which json.dumps cannot write
        parse(json.dumps({"windows": windows}).replace("12345.678", "1e999").encode())
    assert raised.value.status_code == status and raised.value.message == str(raised.value)


@pytest.mark.parametrize("body, status, message", [
    (b'{"windows": [[[1, 2', 400, r"body is not valid JSON \("),
    (b'{"window": []}', 422, "body: object contains unknown field window"),
    (b'{}', 422, "body: object missing required field windows"),
    (b'{"windows": []}', 422, "windows is empty: send at least one window$"),
    (b'[1, 2]', 422, "body: expected object, got array"),
])
def test_malformed_bodies_are_refused(body, status, message):
    with pytest.raises(RequestError, match="^" + message) as raised:
        parse(body)
    assert raised.value.status_code == status


def test_parsing_restores_the_garbage_collector_even_on_errors():
    import gc

    assert gc.isenabled()
    parse(_predict_body(_windows().tolist()))
    with pytest.raises(RequestError):
        parse(b'{"windows": "no"}')
    assert gc.isenabled()


def test_too_many_windows_is_refused_before_conversion():
    assert parse(_predict_body(_windows(2).tolist()), max_windows=2).shape == (2, 200, 6)  # the limit itself is fine
    with pytest.raises(RequestError, match="holds 3 windows; at most 2") as raised:
        parse(_predict_body(_windows(3).tolist()), max_windows=2)
    assert raised.value.status_code == 413


def _v2(data, shape=(2, 200, 6), **tensor):
    return json.dumps({"id": "r1", "inputs": [{"name": "windows", "shape": list(shape), "datatype": "FP32",
                                              "data": data, **tensor}]}).encode()


def parse_v2(body):
    return parse_v2_infer(body, input_name="windows", length=200, channels=CHANNELS, max_windows=8)


def test_v2_flat_and_nested_data_agree():
    windows = _windows()
    flat, request = parse_v2(_v2(windows.ravel().tolist()))
    nested, _ = parse_v2(_v2(windows.tolist()))
    np.testing.assert_array_equal(flat, windows)
    np.testing.assert_array_equal(nested, windows)
    assert request.id == "r1"


@pytest.mark.parametrize("body, message", [
    (_v2([1.0] * 2399), r"inputs\[0\].data holds 2399 values; shape \[2, 200, 6\] needs 2400"),
    (_v2(["x"] * 2400), r"inputs\[0\].data\[0\] \(window 0, sample 0, channel ax\): expected a number"),
    (_v2([1.0] * 2400, shape=(2, 100, 6)), r"inputs\[0\].shape is \[2, 100, 6\], expected \[n, 200, 6\]"),
    (_v2([1.0] * 2400, datatype="INT8"), r"inputs\[0\].datatype is 'INT8'"),
    (_v2([1.0] * 2400, name="x"), r"inputs\[0\].name is 'x', expected 'windows'"),
    (_v2([[[1.0] * 6] * 200] * 3), r"inputs\[0\].data holds 3 windows but inputs\[0\].shape\[0\] is 2"),
    (_v2([[[1.0] * 6] * 200, [[1.0] * 6] * 199]), r"inputs\[0\].data\[1\] has 199 samples"),
    (_v2([1.0] * 1000 + [1e39] + [1.0] * 1399), r"inputs\[0\].data\[1000\] \(window 0, sample 166, channel gy\): outside"),
])
def test_v2_bad_tensor_is_located(body, message):
    with pytest.raises(RequestError, match=message):
        parse_v2(body)


# --- dynamic batching -------------------------------------------------------------------------------

class CountingModel:
    """Stands in for onnxruntime: records each call's batch; answers each window with its first value."""

    def __init__(self):
        self.calls = []

    def __call__(self, windows):
        self.calls.append(len(windows))
        return windows[:, 0, :1].copy()


def run_concurrently(batcher, requests):
    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(w) for w in requests))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_one_model_call_and_get_their_own_answers():
    model = CountingModel()
    requests = [np.full((1, 200, 6), i, np.float32) for i in range(8)]
    answers = run_concurrently(DynamicBatcher(model, max_batch_size=32, max_wait_s=0.0), requests)
    assert model.calls == [8]
    assert [a.ravel().tolist() for a in answers] == [[float(i)] for i in range(8)]


def test_batches_never_exceed_the_maximum():
    model = CountingModel()
    requests = [np.full((3, 200, 6), i, np.float32) for i in range(8)]
    answers = run_concurrently(DynamicBatcher(model, max_batch_size=10, max_wait_s=0.0), requests)
    assert model.calls == [9, 9, 6]
    assert [a.ravel().tolist() for a in answers] == [[float(i)] * 3 for i in range(8)]


def test_a_lone_request_does_not_wait_for_partners():
    model = CountingModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_wait_s=3600.0)

    async def main():
        await batcher.start()
        try:
            return await asyncio.wait_for(batcher.predict(np.zeros((1, 200, 6), np.float32)), timeout=30)
        finally:
            await batcher.stop()

    assert asyncio.run(main()).shape == (1, 1)


def test_a_failed_model_call_reaches_every_caller():
    def broken(windows):
        raise RuntimeError("onnxruntime failed")

    batcher = DynamicBatcher(broken, max_batch_size=32, max_wait_s=0.0)

    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.predict(np.zeros((1, 200, 6), np.float32)) for _ in range(3)),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    assert [str(e) for e in asyncio.run(main())] == ["onnxruntime failed"] * 3


# --- timeline, episodes, minutes -------------------------------------------------------------------

def test_window_spans_tile_time_and_stop_at_gaps():
    spans = window_spans(np.array([0.0, 2.0, 4.0, 20.0, 22.0]), window_s=4.0)
    assert spans.tolist() == [[0, 2], [2, 4], [4, 8], [20, 22], [22, 26]]


def test_episodes_merge_same_label_runs_without_crossing_gaps():
    start = np.array([0.0, 2.0, 4.0, 6.0, 30.0, 32.0])
    labels = np.array(["sitting", "sitting", "typing", "typing", "typing", "sitting"])
    confidence = np.array([0.9, 0.7, 0.6, 0.8, 1.0, 0.5])
    result = episodes(start, labels, confidence, window_s=4.0)
    assert [(e["label"], e["start_s"], e["end_s"], e["windows"]) for e in result] == [
        ("sitting", 0, 4, 2), ("typing", 4, 10, 2), ("typing", 30, 32, 1), ("sitting", 32, 36, 1)]
    assert result[0]["mean_confidence"] == 0.8
    assert minutes_per_label(result, ["sitting", "typing", "clapping"]) == {
        "sitting": round(8 / 60, 3), "typing": round(8 / 60, 3), "clapping": 0.0}


def test_summary_carries_wall_clock_times():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    summary = summarize(np.array([0.0, 2.0]), np.array([True, True]), probabilities, ["sitting", "typing"],
                        window_s=4.0, start_time="2025-03-24T07:52:19.766000")
    assert [(t["label"], t["time"]) for t in summary["timeline"]] == [
        ("sitting", "2025-03-24T07:52:19.766"), ("typing", "2025-03-24T07:52:21.766")]
    assert summary["episodes"][-1]["end_time"] == "2025-03-24T07:52:25.766"
    assert summary["covered_minutes"] == round(6 / 60, 3)


def test_a_window_below_the_threshold_is_uncertain_and_a_not_worn_one_gets_no_activity():
    worn = np.array([True, True, False, False, True])
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])  # the three worn windows only
    labels, activity, confidence = window_labels(worn, probabilities, ["sitting", "typing"], threshold=0.6)
    assert labels.tolist() == ["sitting", "uncertain", "not_worn", "not_worn", "typing"]
    assert activity.tolist() == ["sitting", "sitting", None, None, "typing"]
    assert np.isnan(confidence[2:4]).all() and confidence[1] == 0.55
    with pytest.raises(ValueError, match="2 rows of probabilities for 3 worn windows"):
        window_labels(worn, probabilities[:2], ["sitting", "typing"], threshold=0.6)


def test_counted_minutes_per_activity_count_only_confident_worn_windows():
    start = np.arange(0.0, 40.0, 2.0)  # 20 back-to-back windows of 4 s, each owning 2 s
    worn = np.arange(20) < 15
    probabilities = np.tile([[0.9, 0.1]], (15, 1))
    probabilities[10:] = [0.5, 0.5]  # five worn windows below the threshold
    summary = summarize(start, worn, probabilities, ["sitting", "typing"], window_s=4.0, threshold=0.6)
    assert summary["counted_minutes_per_activity"] == {"sitting": round(20 / 60, 3), "typing": 0.0}
    assert summary["uncertain_minutes"] == round(10 / 60, 3)
    assert summary["not_worn_minutes"] == round(12 / 60, 3)  # the last window owns its full 4 s
    assert [e["label"] for e in summary["episodes"]] == ["sitting", "uncertain", "not_worn"]
    assert summary["episodes"][-1]["mean_confidence"] is None
    assert summary["timeline"][-1] == {"start_s": 38.0, "time": None, "label": "not_worn", "activity": None,
                                       "confidence": None}


def test_a_recording_entirely_not_worn_still_has_a_timeline():
    summary = summarize(np.arange(0.0, 20.0, 2.0), np.zeros(10, bool), np.empty((0, 2)), ["sitting", "typing"],
                        window_s=4.0, threshold=0.6)
    assert summary["windows"] == 10 and {t["label"] for t in summary["timeline"]} == {"not_worn"}
    assert summary["not_worn_minutes"] == round(22 / 60, 3) and sum(summary["counted_minutes_per_activity"].values()) == 0


# --- tokens and settings ---------------------------------------------------------------------------

def test_token_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HAR_TEST_TOKEN", raising=False)
    secret = tmp_path / "token"
    secret.write_text("file-token-0123456789\n")
    assert load_token("HAR_TEST_TOKEN", secret) == "file-token-0123456789"
    monkeypatch.setenv("HAR_TEST_TOKEN", "env-token-0123456789")
    assert load_token("HAR_TEST_TOKEN", secret) == "env-token-0123456789"
    monkeypatch.setenv("HAR_TEST_TOKEN", "short")
    with pytest.raises(ConfigurationError, match="at least 16"):
        load_token("HAR_TEST_TOKEN", None)
    monkeypatch.delenv("HAR_TEST_TOKEN")
    assert load_token("HAR_TEST_TOKEN", None) is None
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_token("HAR_TEST_TOKEN", tmp_path / "missing")


def test_no_token_is_refused_unless_insecure_on_loopback():
    with pytest.raises(ConfigurationError, match="no bearer token"):
        require_token(None, insecure=False, host="127.0.0.1", env_var="HAR_SERVE_TOKEN")
    with pytest.raises(ConfigurationError, match="loopback address only"):
        require_token(None, insecure=True, host="0.0.0.0", env_var="HAR_SERVE_TOKEN")
    require_token(None, insecure=True, host="127.0.0.1", env_var="HAR_SERVE_TOKEN")


def test_settings_follow_params_yaml(tmp_path):
    import yaml

    params = {"serve": {"host": "0.0.0.0", "port": 8123, "model_path": "elsewhere/m.onnx", "threads": 3,
                        "max_body_mb": 0.5, "max_upload_mb": 2, "max_windows_per_request": 77,
                        "batching": {"enabled": False, "max_batch_size": 9, "max_wait_ms": 4.5},
                        "token_env": "MY_TOKEN", "token_file": "/run/secrets/token"},
              "data": {"timezone": "Europe/Berlin"}, "registry": {"tracking_uri": "sqlite:///r.db"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert Settings.load(path, port=9000, threads=None) == Settings(
        model_path=Path("elsewhere/m.onnx"), host="0.0.0.0", port=9000, threads=3, max_body_bytes=512 * 1024,
        max_upload_bytes=2 * 1024 * 1024, max_windows_per_request=77, batching=False, max_batch_size=9,
        max_wait_ms=4.5, token_env="MY_TOKEN", token_file="/run/secrets/token", timezone="Europe/Berlin",
        tracking_uri="sqlite:///r.db")
    # An empty params file leaves every default in place.
    path.write_text("{}")
    assert Settings.load(path) == Settings()
    # The committed params.yaml's serve section, read independently.
    serve = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    settings = Settings.load(ROOT / "params.yaml")
    assert settings.max_body_bytes == int(serve["max_body_mb"] * 1024 * 1024)
    assert settings.max_upload_bytes == int(serve["max_upload_mb"] * 1024 * 1024)
    assert (settings.max_windows_per_request, settings.max_batch_size, settings.batching) == (
        serve["max_windows_per_request"], serve["batching"]["max_batch_size"], serve["batching"]["enabled"])
