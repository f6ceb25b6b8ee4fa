"""The real service: `python -m serve` under uvicorn on 127.0.0.1 at a free port, driven over HTTP."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import yaml

from conftest import GARMIN_ACC, GARMIN_GYR
from har.config import load_params
from serve.client import HarClient
from har.runtime import ModelRuntime
from serve_helpers import random_windows, LABELS, ROOT, TOKEN, start_server, stop_server, write_tiny_model

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKER = 3.14159265  # a sensor value that must never reach the server's log
MAX_BODY_MB = 0.25


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def params_path(tmp_path_factory):
    """params.yaml with small limits, so limits are cheap to hit."""
    params = load_params(ROOT / "params.yaml")
    params["serve"].update(max_body_mb=MAX_BODY_MB, max_windows_per_request=8)
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def server(model_path, params_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "server.log"
    process, url = start_server(model_path, log, "--params", str(params_path))
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client, log
    stop_server(process)


@pytest.fixture(scope="module")
def client(server):
    return server[0]


@pytest.fixture(scope="module")
def garmin_summary(client):
    """The real one-hour pair, uploaded once for the module through serve/client.py."""
    with HarClient(str(client.base_url), token=TOKEN) as har:
        return har.recording(GARMIN_ACC, GARMIN_GYR)


@pytest.mark.parametrize("path", ["/health", "/ready", "/model", "/v2", "/v2/health/live", "/v2/health/ready",
                                  "/v2/models/har", "/v2/models/har/ready", "/metrics", "/schema", "/schema/openapi.json"])
def test_read_only_endpoints_answer(client, path):
    assert client.get(path).status_code == 200


def test_predict_and_v2_infer_answer_with_the_models_probabilities(client, model_path):
    batch = random_windows(3)
    expected = ModelRuntime(model_path).predict(batch)
    predicted = client.post("/predict", json={"windows": batch.tolist()}, headers=AUTH)
    assert predicted.status_code == 200
    assert [p["label"] for p in predicted.json()["predictions"]] == [LABELS[i] for i in expected.argmax(1)]
    v2 = client.post("/v2/models/har/infer", headers=AUTH, json={"inputs": [
        {"name": "windows", "shape": [3, 200, 6], "datatype": "FP32", "data": batch.ravel().tolist()}]})
    assert v2.status_code == 200
    probabilities = next(o for o in v2.json()["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(np.reshape(probabilities["data"], (3, 3)), expected, rtol=1e-6)


def test_concurrent_single_window_requests_each_get_their_own_answer(client, model_path):
    batch = random_windows(32, seed=5)
    expected = ModelRuntime(model_path).predict(batch)

    def one(i):
        response = client.post("/predict", json={"windows": batch[i:i + 1].tolist()}, headers=AUTH)
        return response.status_code, response.json()["predictions"][0]["probabilities"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(len(batch))))
    assert all(status == 200 for status, _ in answers)
    got = np.array([[p[label] for label in LABELS] for _, p in answers])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("route", ["/predict", "/v2/models/har/infer", "/recordings"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-token-0123456789"}])
def test_missing_or_wrong_token_is_refused(client, route, headers):
    response = client.post(route, json={"windows": random_windows(1).tolist()}, headers=headers)
    assert response.status_code == 401 and "bearer token" in response.text


def _with(edit):
    batch = random_windows(2).tolist()
    edit(batch)
    return json.dumps({"windows": batch}).encode()


@pytest.mark.parametrize("body, status, detail", [
    (_with(lambda w: w[1][17].__setitem__(2, "x")), 422, "windows[1][17][2]: expected a number, got str"),
    (_with(lambda w: w[0][5].__setitem__(1, float("nan"))), 422, "windows[0][5][1]: NaN or infinity (expected a finite number)"),
    (_with(lambda w: w[1].pop()), 422, "windows[1] has 199 samples, expected 200"),
    (_with(lambda w: w[0][9].append(1.0)), 422, "windows[0][9] has 7 values, expected 6 (ax, ay, az, gx, gy, gz)"),
    (b'{"windows": [', 400, None),
    (json.dumps({"windows": random_windows(9).round(2).tolist()}).encode(), 413, "windows holds 9 windows; at most 8 per request"),
])
def test_bad_predict_bodies_get_located_4xx(client, body, status, detail):
    response = client.post("/predict", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == status
    if detail:
        assert response.json()["detail"] == detail
    assert "Traceback" not in response.text


def test_oversized_body_is_refused(client):
    body = b" " * int(MAX_BODY_MB * 1024 * 1024 + 1)
    response = client.post("/predict", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 413


def test_v2_bad_request_uses_the_protocols_error_shape(client):
    response = client.post("/v2/models/har/infer", headers=AUTH, json={"inputs": [
        {"name": "windows", "shape": [1, 200, 6], "datatype": "BYTES", "data": ["a"] * 1200}]})
    assert response.status_code == 422
    assert response.json() == {"error": "inputs[0].datatype is 'BYTES', expected one of ['FP32', 'FP64']"}


def test_recordings_timeline_covers_the_hour_with_the_pipelines_windows(garmin_summary, garmin_pipeline_windows,
                                                                         model_path):
    summary = garmin_summary
    expected, start_t = garmin_pipeline_windows
    confidence = ModelRuntime(model_path).predict(expected).max(axis=1)
    timeline = summary["timeline"]
    np.testing.assert_allclose([t["start_s"] for t in timeline], start_t, atol=1e-3)
    worn = np.array([t["label"] != "not_worn" for t in timeline])  # the watch lay on a desk: only these are scored
    assert 0 < worn.sum() < 60 and all(t["confidence"] is None for t in timeline if t["label"] == "not_worn")
    np.testing.assert_allclose([t["confidence"] for t in timeline if t["label"] != "not_worn"], confidence[worn],
                               atol=1e-4)
    assert timeline[0]["start_s"] < 5 and summary["episodes"][-1]["end_s"] > 3600
    assert summary["covered_minutes"] == pytest.approx(60.5, abs=0.5)
    assert set(summary["minutes_per_activity"]) == set(LABELS)


def test_metrics_reflect_the_traffic(client):
    # The traffic this test counts on, sent here so that it also passes when run alone.
    good = np.zeros((1, 200, 6), np.float32).tolist()
    assert client.post("/predict", json={"windows": good}, headers=AUTH).status_code == 200
    assert client.post("/predict", json={"windows": [[[0.0] * 6] * 199]}, headers=AUTH).status_code == 422
    assert client.post("/v2/models/har/infer", json={}).status_code == 401
    text = client.get("/metrics").text
    assert 'har_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'har_http_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'har_http_requests_total{method="POST",route="/v2/models/{name}/infer",status="401"}' in text
    assert "har_windows_predicted_total" in text and "har_model_info{" in text


def test_no_sensor_values_in_the_log(client, server):
    batch = np.full((1, 200, 6), MARKER, np.float32).tolist()
    assert client.post("/predict", json={"windows": batch}, headers=AUTH).status_code == 200
    batch[0][3][4] = "x"
    assert client.post("/predict", json={"windows": batch}, headers=AUTH).status_code == 422
    log = server[1].read_text()
    accesses = [json.loads(line) for line in log.splitlines() if '"serve.access"' in line]
    assert {(a["method"], a["route"], a["status"]) for a in accesses} >= {("POST", "/predict", 200),
                                                                          ("POST", "/predict", 422)}  # logged...
    assert "3.14159" not in log and "Traceback" not in log  # ...but no values and no stack traces


def test_server_refuses_to_start_without_a_token(model_path):
    env = {"PATH": "", "HOME": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "serve", "--model", str(model_path), "--port", "1"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "refusing to start: no bearer token" in result.stderr


def test_insecure_local_serves_without_a_token(model_path, tmp_path):
    process, url = start_server(model_path, tmp_path / "insecure.log", "--insecure-local", token=None)
    try:
        response = httpx.post(url + "/predict", json={"windows": random_windows(1).tolist()}, timeout=30)
        assert response.status_code == 200
    finally:
        stop_server(process)
    assert "WITHOUT authentication" in (tmp_path / "insecure.log").read_text()
