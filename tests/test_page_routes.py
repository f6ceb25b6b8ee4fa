"""The page's routes in-process (no browser): what `/` serves, and the two guarded routes it adds."""
import json
from dataclasses import replace

import pytest
from litestar.testing import TestClient

from browser_helpers import foreign_requests
from conftest import GARMIN_ACC, GARMIN_GYR
from har.config import load_params
from serve.app import create_app
from serve import batch
from serve.batch.outputs import write_outputs
from serve.config import Settings
from serve.controllers.page import registry_alias
from serve_helpers import ROOT, TOKEN, write_tiny_model, write_tiny_reference

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    model = write_tiny_model(tmp_path_factory.mktemp("page-model") / "model.onnx")
    write_tiny_reference(model, load_params(ROOT / "params.yaml")["monitor"])
    return model


@pytest.fixture(scope="module")
def client(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("page-routes")
    settings = replace(Settings.load(ROOT / "params.yaml"), model_path=model, drift_report=folder / "drift.html")
    with TestClient(create_app(settings, token=TOKEN), timeout=120) as client:
        client.report = settings.drift_report
        yield client


@pytest.fixture(scope="module")
def answer(client):
    with open(GARMIN_ACC, "rb") as acc, open(GARMIN_GYR, "rb") as gyr:
        response = client.post("/recordings", headers=AUTH, files={"accelerometer": (GARMIN_ACC.name, acc),
                                                                   "gyroscope": (GARMIN_GYR.name, gyr)})
    assert response.status_code == 200
    return response


def test_the_page_is_served_at_the_root_without_data_or_secrets(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert TOKEN not in page.text and "Bearer token of this service" in page.text
    assert 'src="/static/page.js"' in page.text and "http" not in page.text.replace("http://www.w3.org", "")
    assert "drift-report-link" not in page.text  # no report file yet: no link
    assert client.get("/static/page.js").status_code == 200 and client.get("/static/page.css").status_code == 200
    assert "/" not in client.get("/schema/openapi.json").json()["paths"]  # the page is not an API route


@pytest.mark.parametrize("method, path", [("post", "/recordings/files"), ("get", "/drift/report")])
def test_the_pages_data_routes_need_the_token(client, method, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        assert getattr(client, method)(path, headers=headers).status_code == 401


def test_recording_answer_carries_this_recordings_drift(answer):
    drift, timeline = answer.json()["drift"], answer.json()["timeline"]
    not_worn = sum(t["label"] == "not_worn" for t in timeline)
    # Only the worn windows are compared; the watch on the desk is counted and said, not judged.
    assert drift["windows"] == len(timeline) - not_worn and drift["not_worn_windows"] == not_worn > 1700
    assert drift["severity"] == "none" and drift["drifted"][0].startswith(f"not worn: {not_worn} of {len(timeline)}")
    psis = [c["psi"] for c in drift["most_drifted"]]
    assert len(psis) == 3 and psis == sorted(psis, reverse=True)
    assert psis[0] == max(c["psi"] for c in drift["channels"].values())


def test_batch_scoring_writes_the_same_answer_with_its_drift(answer, model, tmp_path):
    """python -m serve.batch with the same model and reference: recording.json is the service's answer, drift included."""
    (tmp_path / "in").mkdir()
    for source in (GARMIN_ACC, GARMIN_GYR):
        (tmp_path / "in" / source.name).symlink_to(source)
    assert batch.main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model)]) == 0
    scored = json.loads((tmp_path / "out" / GARMIN_ACC.name.removesuffix("-accelerometer_data.xlsx") / "recording.json").read_text())
    assert "drift" in scored and scored == answer.json()


def test_files_are_what_serve_batch_writes_for_the_answer(client, answer, tmp_path):
    files = client.post("/recordings/files", headers={**AUTH, "Content-Type": "application/json"}, content=answer.content)
    assert files.status_code == 200
    write_outputs(tmp_path, answer.json())
    assert files.json() == {name: (tmp_path / name).read_text() for name in
                            ("recording.json", "timeline.csv", "episodes.csv", "minutes_per_activity.csv")}
    refused = client.post("/recordings/files", headers=AUTH, json={"episodes": []})
    assert refused.status_code == 422 and "not a /recordings answer" in refused.json()["detail"]
    assert "'timeline'" in refused.json()["detail"]
    assert client.post("/recordings/files", headers=AUTH, content=b"{not json").status_code == 400


def test_drift_report_is_served_where_one_exists(client):
    missing = client.get("/drift/report", headers=AUTH)
    assert missing.status_code == 404 and "python -m stages.drift report" in missing.json()["detail"]
    client.report.write_text("<!doctype html><title>drift</title>")
    try:
        report = client.get("/drift/report", headers=AUTH)
        assert report.status_code == 200 and report.text.startswith("<!doctype html>")
        assert 'id="drift-report-link"' in client.get("/").text
    finally:
        client.report.unlink()


def test_registry_alias_is_read_from_a_models_uri():
    assert registry_alias("models:/har@champion") == "champion"
    assert registry_alias("models/model.onnx") is None and registry_alias("models:/har/3") is None


def test_the_foreign_request_check_catches_another_host():
    """The network check itself: a CDN script or a second port is caught, the page's own and blob: URLs are not."""
    service = "http://127.0.0.1:8123"
    urls = [f"{service}/", f"{service}/static/page.js", "blob:http://127.0.0.1:8123/0a1b", "data:image/png;base64,AA",
            "https://cdn.jsdelivr.net/npm/chart.js", "http://127.0.0.1:9999/x"]
    assert foreign_requests(urls, service) == ["https://cdn.jsdelivr.net/npm/chart.js", "http://127.0.0.1:9999/x"]
