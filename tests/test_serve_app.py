"""The Litestar app in-process (Litestar's test client): routes, auth, limits, metrics, observers, /recordings."""
import numpy as np
import pytest
from litestar.testing import TestClient

from conftest import GARMIN_ACC, GARMIN_GYR
from har.config import load_params
from serve.app import create_app
from serve.config import Settings
from har.modelfile import ModelFileError
from har.runtime import ModelRuntime
from serve.security import ConfigurationError
from serve_helpers import random_windows, LABELS, ROOT, TOKEN, write_tiny_model

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Recorder:
    """An observer that keeps what it is shown (the extension point a drift monitor will use)."""

    def __init__(self):
        self.windows, self.probabilities = [], []

    def observe(self, windows, probabilities):
        self.windows.append(windows)
        self.probabilities.append(probabilities)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def settings(model_path):
    return Settings.load(ROOT / "params.yaml", model_path=model_path, max_windows_per_request=16,
                         max_body_bytes=1024 * 1024)


@pytest.fixture(scope="module")
def recorder():
    return Recorder()


@pytest.fixture(scope="module")
def client(settings, recorder):
    with TestClient(create_app(settings, token=TOKEN, observers=[recorder]), timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def garmin_upload(client, recorder):
    """The real one-hour Garmin pair, uploaded once for the module: (response, windows the model was shown)."""
    before = len(recorder.windows)
    response = client.post("/recordings", headers=AUTH, files={
        "accelerometer": (GARMIN_ACC.name, GARMIN_ACC.read_bytes()),
        "gyroscope": (GARMIN_GYR.name, GARMIN_GYR.read_bytes())})
    return response, recorder.windows[before:]


def test_health_ready_and_model_describe_the_served_model(client):
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["version"] == "tiny0001" and len(ready["sha256"]) == 64
    model = client.get("/model").json()
    assert model["labels"] == LABELS and model["input_contract"]["window_length"] == 200
    assert model["metrics"] == {"macro_f1": 0.5} and model["git_commit"] == "0" * 40
    assert model["serving"]["max_windows_per_request"] == 16


def test_predict_answers_each_window_with_the_runtimes_probabilities(client, model_path):
    batch = random_windows(5)
    response = client.post("/predict", json={"windows": batch.tolist()}, headers=AUTH)
    assert response.status_code == 200
    expected = ModelRuntime(model_path).predict(batch)
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [LABELS[i] for i in expected.argmax(1)]
    got = np.array([[p["probabilities"][label] for label in LABELS] for p in predictions])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert [p["confidence"] for p in predictions] == pytest.approx(expected.max(1).tolist())


def test_v2_infer_speaks_the_open_inference_protocol(client, model_path):
    batch = random_windows(3, seed=1)
    body = {"id": "req-7", "inputs": [{"name": "windows", "shape": [3, 200, 6], "datatype": "FP32",
                                       "data": batch.ravel().tolist()}]}
    response = client.post("/v2/models/har/infer", json=body, headers=AUTH)
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == "req-7" and answer["model_name"] == "har"
    outputs = {o["name"]: o for o in answer["outputs"]}
    expected = ModelRuntime(model_path).predict(batch)
    assert outputs["probabilities"]["shape"] == [3, 3] and outputs["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 3)), expected, rtol=1e-6)
    assert outputs["label"]["data"] == [LABELS[i] for i in expected.argmax(1)]
    only_labels = client.post("/v2/models/har/infer", json={**body, "outputs": [{"name": "label"}]}, headers=AUTH)
    assert [o["name"] for o in only_labels.json()["outputs"]] == ["label"]


def test_v2_metadata_and_readiness(client):
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/health/live").status_code == 200
    meta = client.get("/v2/models/har").json()
    assert meta["inputs"] == [{"name": "windows", "datatype": "FP32", "shape": [-1, 200, 6]}]
    assert client.get("/v2/models/har/ready").json()["ready"] is True
    missing = client.get("/v2/models/other")
    assert missing.status_code == 404 and "serves 'har'" in missing.json()["error"]
    wrong_name = client.post("/v2/models/other/infer", json={"inputs": []}, headers=AUTH)
    assert wrong_name.status_code == 404


@pytest.mark.parametrize("route", ["/predict", "/v2/models/har/infer", "/recordings"])
def test_prediction_routes_need_the_token(client, route):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.post(route, json={"windows": random_windows(1).tolist()}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_bad_input_gets_a_located_4xx_without_internals(client):
    batch = random_windows(2).tolist()
    batch[1][17][2] = "abc"
    response = client.post("/predict", json={"windows": batch}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"] == "windows[1][17][2]: expected a number, got str"
    v2 = client.post("/v2/models/har/infer", headers=AUTH, json={
        "inputs": [{"name": "windows", "shape": [1, 200, 5], "datatype": "FP32", "data": [0.0] * 1000}]})
    assert v2.status_code == 422 and v2.json() == {"error": "inputs[0].shape is [1, 200, 5], expected [n, 200, 6]"}


def test_limits_on_windows_and_body_size(client):
    too_many = client.post("/predict", json={"windows": random_windows(17).tolist()}, headers=AUTH)
    assert too_many.status_code == 413 and too_many.json()["detail"] == "windows holds 17 windows; at most 16 per request"
    v2_too_many = client.post("/v2/models/har/infer", headers=AUTH, json={"inputs": [
        {"name": "windows", "shape": [17, 200, 6], "datatype": "FP32", "data": random_windows(17).ravel().tolist()}]})
    assert v2_too_many.status_code == 413
    assert v2_too_many.json() == {"error": "inputs[0].shape[0] holds 17 windows; at most 16 per request"}
    oversized = client.post("/predict", content=b"[" + b"0," * 600_000 + b"0]", headers=AUTH)
    assert oversized.status_code == 413 and "exceeds 1048576 bytes" in oversized.json()["detail"]


def test_uploads_over_the_upload_limit_are_refused_with_the_limit(settings):
    from dataclasses import replace

    # The JSON limit (1 MiB here) does not apply to /recordings: it has its own, serve.max_upload_mb.
    app = create_app(replace(settings, max_upload_bytes=2 * 1024 * 1024), token=TOKEN)
    with TestClient(app, timeout=60) as client:
        response = client.post("/recordings", headers=AUTH, files={
            "accelerometer": ("a.xlsx", b"x" * (1024 * 1024)), "gyroscope": ("g.xlsx", b"x" * (1024 * 1024 + 1))})
        assert response.status_code == 413
        assert response.json()["detail"] == "request body exceeds 2097152 bytes (serve.max_body_mb / serve.max_upload_mb)"
        # Under the upload limit but over the JSON limit: read, and refused for what it holds, not its size.
        small = client.post("/recordings", headers=AUTH, files={
            "accelerometer": ("a.xlsx", b"x" * (1024 * 1024 + 1)), "gyroscope": ("g.xlsx", b"x")})
        assert small.status_code == 422 and "cannot be read as an Excel workbook" in small.json()["detail"]


def test_not_ready_before_start_up_and_after_shutdown(settings):
    """Kubernetes sends traffic only while the readiness probes answer 200."""
    client = TestClient(create_app(settings, token=TOKEN))  # no lifespan yet: start-up has not run
    probes = ["/ready", "/v2/health/ready", "/v2/models/har/ready"]
    assert [client.get(path).status_code for path in probes] == [503, 503, 503]
    assert client.get("/v2/health/ready").json() == {"ready": False}
    assert client.get("/health").status_code == 200  # alive all along: no restart wanted
    with client:
        assert [client.get(path).status_code for path in probes] == [200, 200, 200]
    assert [client.get(path).status_code for path in probes] == [503, 503, 503]  # shutdown ran
    assert client.get("/ready").json() == {"status": "not ready"}


def test_unexpected_errors_answer_500_without_details(settings, model_path):
    class BrokenRuntime(ModelRuntime):
        def predict(self, windows):
            raise RuntimeError("internal detail that must not leak")

    app = create_app(settings, token=TOKEN, runtime=BrokenRuntime(model_path))
    with TestClient(app) as client:
        response = client.post("/predict", json={"windows": random_windows(1).tolist()}, headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"status_code": 500, "detail": "internal server error"}


def test_a_failing_observer_does_not_cost_the_answer(settings, model_path, caplog):
    class Broken:
        calls = 0

        def observe(self, windows, probabilities):
            Broken.calls += 1
            raise RuntimeError("monitoring bug")

    after = Recorder()  # an observer after the broken one still sees the batch
    batch = random_windows(2, seed=4)
    with TestClient(create_app(settings, token=TOKEN, observers=[Broken(), after])) as client:
        response = client.post("/predict", json={"windows": batch.tolist()}, headers=AUTH)
    assert response.status_code == 200
    assert Broken.calls == 1 and len(after.windows) == 1
    got = np.array([[p["probabilities"][label] for label in LABELS] for p in response.json()["predictions"]])
    np.testing.assert_allclose(got, ModelRuntime(model_path).predict(batch), rtol=1e-6)
    (failure,) = [r for r in caplog.records if r.getMessage() == "observer Broken failed"]
    assert failure.levelname == "ERROR" and "monitoring bug" in str(failure.exc_info[1])


def test_metrics_count_requests_windows_and_model(client):
    before = client.get("/metrics").text
    client.post("/predict", json={"windows": random_windows(4, seed=3).tolist()}, headers=AUTH)
    client.post("/predict", json={"windows": random_windows(1).tolist()})  # 401
    text = client.get("/metrics").text

    def value(metrics_text, sample):
        lines = [line for line in metrics_text.splitlines() if line.startswith(sample + " ")]
        return float(lines[0].split()[-1]) if lines else 0.0

    per_label = sum(value(text, f'har_windows_predicted_total{{label="{label}"}}') -
                    value(before, f'har_windows_predicted_total{{label="{label}"}}') for label in LABELS)
    assert per_label == 4
    ok = 'har_http_requests_total{method="POST",route="/predict",status="200"}'
    denied = 'har_http_requests_total{method="POST",route="/predict",status="401"}'
    assert value(text, ok) - value(before, ok) == 1 and value(text, denied) - value(before, denied) == 1
    assert 'har_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/predict",status="200"}' in text
    assert 'har_model_info{' in text and 'version="tiny0001"' in text
    assert value(text, "har_prediction_confidence_count") - value(before, "har_prediction_confidence_count") == 4
    assert 0 < value(text, "har_prediction_confidence_mean") <= 1


def test_openapi_documents_every_route_and_the_bearer_scheme(client):
    schema = client.get("/schema/openapi.json").json()
    assert {"/predict", "/recordings", "/v2/models/{name}/infer", "/metrics", "/ready"} <= set(schema["paths"])
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
    assert "windows" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert client.get("/schema").status_code == 200


def test_recordings_windows_are_the_pipelines_windows(garmin_upload, garmin_pipeline_windows):
    response, shown = garmin_upload
    assert response.status_code == 200
    expected, start_t = garmin_pipeline_windows
    timeline = response.json()["timeline"]
    np.testing.assert_allclose([t["start_s"] for t in timeline], start_t, atol=1e-3)
    # Only the worn windows reach the model, and they are the pipeline's windows bit for bit: no skew.
    worn = np.array([t["label"] != "not_worn" for t in timeline])
    assert len(shown) == 1 and 0 < worn.sum() < 60
    np.testing.assert_array_equal(shown[0], expected[worn])


def test_recordings_timeline_covers_the_hour_and_says_it_was_not_worn(garmin_upload):
    summary = garmin_upload[0].json()
    assert summary["recording"]["id"] == "2025-03-23-15-23-10"
    assert summary["recording"]["start_time"].startswith("2025-03-24T07:52")
    assert summary["recording"]["quality"]["acc"]["duplicates"] == 238
    timeline, episodes = summary["timeline"], summary["episodes"]
    assert timeline[0]["start_s"] < 5 and episodes[-1]["end_s"] > 3600
    assert timeline[-1]["time"].startswith("2025-03-24T08:52")
    assert {t["label"] for t in timeline} <= set(LABELS) | {"uncertain", "not_worn"}
    assert sum(e["windows"] for e in episodes) == len(timeline) == summary["windows"]
    states = summary["uncertain_minutes"] + summary["not_worn_minutes"]
    assert sum(summary["minutes_per_activity"].values()) + states == pytest.approx(summary["covered_minutes"], abs=0.01)
    assert summary["covered_minutes"] == pytest.approx(60.5, abs=0.5)
    # The watch lay on a desk: at least 55 of the 60 minutes are not worn, and no activity is counted in them.
    assert summary["not_worn_minutes"] >= 55 and summary["wear"]["not_worn_minutes"] >= 55
    assert sum(summary["minutes_per_activity"].values()) < 2
    assert all(t["activity"] is None for t in timeline if t["label"] == "not_worn")
    assert summary["findings"][0].startswith("not worn for")
    assert summary["wear"]["episodes"][0]["start_time"].startswith("2025-03-24T07:5")


def test_recordings_bad_uploads_are_named(client):
    junk = client.post("/recordings", headers=AUTH, files={
        "accelerometer": ("my-acc.xlsx", b"not a workbook"), "gyroscope": (GARMIN_GYR.name, b"also not")})
    assert junk.status_code == 422
    assert junk.json()["detail"].startswith("accelerometer (my-acc.xlsx): cannot be read as an Excel workbook")
    one_file = client.post("/recordings", headers=AUTH, files={"accelerometer": ("a.xlsx", b"x")})
    assert one_file.status_code == 400 and "gyroscope" in str(one_file.json())


def test_the_app_refuses_to_start_without_a_token_or_with_a_tampered_model(settings, tmp_path):
    with pytest.raises(ConfigurationError, match="no bearer token"):
        create_app(settings, token=None)
    tampered = write_tiny_model(tmp_path / "m.onnx")
    data = bytearray(tampered.read_bytes())
    data[data.index(b"sitting")] = ord("S")  # one letter of a label
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        create_app(Settings(model_path=tampered), token=TOKEN)


def test_the_app_checks_the_read_only_tokens_rules_itself(settings):
    """Every caller of create_app gets the rules, not only `python -m serve`."""
    with pytest.raises(ConfigurationError, match="must differ"):
        create_app(settings, token=TOKEN, read_token=TOKEN)
    with pytest.raises(ConfigurationError, match="needs the service's token"):
        create_app(settings, token=None, insecure=True, read_token="read-only-token-0123456789")


def test_live_drift_is_reported_at_drift_and_in_metrics(tmp_path, settings):
    """With a drift reference beside the model, /drift and /metrics show what requests carried."""
    from dataclasses import replace

    from har.drift import build_reference, reference_path_for
    from har.config import write_json

    model = write_tiny_model(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    reference_windows = rng.normal(0, 1, (300, 200, 6)).astype(np.float32)
    monitor = load_params(ROOT / "params.yaml")["monitor"]
    write_json(reference_path_for(model), build_reference(
        reference_windows, bins=monitor["bins"], max_samples=monitor["max_samples"], seed=0,
        thresholds=monitor["thresholds"], votes=monitor["votes"], min_windows=50))
    with TestClient(create_app(replace(settings, model_path=model), token=TOKEN), timeout=60) as client:
        assert client.get("/drift").status_code == 401  # health data: behind the token too
        shifted = (reference_windows[:60] * 1000 / 9.80665).tolist()  # "milli-g" fed as m/s^2
        for start in range(0, 60, 16):
            assert client.post("/predict", headers=AUTH, json={"windows": shifted[start:start + 16]}).status_code == 200
        summary = client.get("/drift", headers=AUTH).json()
        assert summary["windows"] == 60 and summary["severity"] == "critical"
        exposition = client.get("/metrics").text
        assert "har_drift_severity 2.0" in exposition and 'har_drift_psi{channel="ax"}' in exposition


def test_drift_without_a_reference_is_404(client):
    response = client.get("/drift", headers=AUTH)
    assert response.status_code == 404 and "drift_reference.json" in response.json()["detail"]


def test_model_calls_are_counted_without_batching_too(settings):
    """har_model_batch_* describe every onnxruntime call, whether the batcher made it or not."""
    from dataclasses import replace

    with TestClient(create_app(replace(settings, batching=False), token=TOKEN), timeout=60) as client:
        for n in (3, 5):
            assert client.post("/predict", headers=AUTH, json={"windows": random_windows(n).tolist()}).status_code == 200
        exposition = client.get("/metrics").text
    assert "har_model_batch_windows_count 2.0" in exposition and "har_model_batch_windows_sum 8.0" in exposition
    assert "har_model_batch_requests_sum 2.0" in exposition
