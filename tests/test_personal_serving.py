"""Per-person models in the real service (HTTP on 127.0.0.1), the batch scorer and the LRU of sessions."""
import json
import os

import httpx
import numpy as np
import pytest
import yaml
from test_annotations import rows
from test_garmin import write_workbook

from har.config import load_params
from log_helpers import access_event
from har.personalize import Head, generic_head, personal_metadata, write_head
from har.modelfile import stamp
from serve.personal import PersonalModels
from har.runtime import ModelRuntime
from serve.validation import RequestError
from serve_helpers import LABELS, ROOT, TOKEN, random_windows, start_server, stop_server, tiny_graph, tiny_metadata, write_tiny_model

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write_personal_model(folder, subject: str, favourite: str, named: str | None = None):
    """The tiny generic graph with a head that says `favourite` whatever it sees, stamped for `subject`."""
    generic = generic_head(tiny_graph())
    bias = np.full(len(LABELS), -20.0, np.float32)
    bias[LABELS.index(favourite)] = 20.0
    head = Head(np.zeros_like(generic.weights), bias, generic.scale)
    metadata = personal_metadata({k: v if isinstance(v, str) else json.dumps(v) for k, v in tiny_metadata().items()},
                                 subject=named or subject, head=head, calibration="0" * 16,
                                 seconds={favourite: 60.0}, method={"method": "head"})
    path = folder / f"{subject}.onnx"
    path.write_bytes(stamp(write_head(tiny_graph(), head), metadata))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("personal")
    write_tiny_model(root / "model.onnx")
    people = root / "people"
    people.mkdir()
    write_personal_model(people, "p1", "sitting")
    write_personal_model(people, "q1", "typing", named="p1")  # a file that names someone else
    params = load_params(ROOT / "params.yaml")
    params["serve"]["personal"] = {"models_dir": str(people), "cache_size": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    recordings = root / "recordings"
    recordings.mkdir()
    write_workbook(recordings / "s-accelerometer_data.xlsx", "acc", rows(20, 1000.0))
    write_workbook(recordings / "s-gyroscope_data.xlsx", "gyr", rows(20, 90.0))
    return root


@pytest.fixture(scope="module")
def client(setup):
    process, url = start_server(setup / "model.onnx", setup / "server.log", "--params", str(setup / "params.yaml"))
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client
    stop_server(process)


def upload(client, setup, query: str = ""):
    folder = setup / "recordings"
    with open(folder / "s-accelerometer_data.xlsx", "rb") as acc, open(folder / "s-gyroscope_data.xlsx", "rb") as gyr:
        return client.post("/recordings" + query, headers=AUTH,
                           files={"accelerometer": ("s-accelerometer_data.xlsx", acc),
                                  "gyroscope": ("s-gyroscope_data.xlsx", gyr)})


def test_recordings_of_a_known_subject_are_scored_by_their_model(client, setup):
    generic = ModelRuntime(setup / "model.onnx").card
    answer = upload(client, setup, "?subject=p1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"]["name"] == "har-p1" and body["model"]["personal"] and body["model"]["subject"] == "p1"
    access = access_event(setup / "server.log", answer.headers["x-request-id"])
    assert (access["route"], access["model"], access["personal"], access["subject"]) == (
        "/recordings", "har-p1", True, "p1")
    assert access["windows"] == sum(w["label"] != "not_worn" for w in body["timeline"])  # the worn ones scored
    assert body["model"]["version"] != generic.version
    assert body["windows"] > 0 and {w["label"] for w in body["timeline"]} == {"sitting"}

    for query in ("?subject=nobody", ""):  # no model for this person, or no person: the generic model
        body = upload(client, setup, query).json()
        assert body["model"]["name"] == "har" and body["model"]["version"] == generic.version
        assert body["model"]["personal"] is False and body["model"]["subject"] == (None if not query else "nobody")
        assert "sitting" not in {w["label"] for w in body["timeline"]}  # what the generic model says here


def test_predict_takes_a_subject_field(client, setup):
    windows = random_windows(4)
    personal = client.post("/predict", headers={**AUTH, "X-Request-ID": "personal-p1"},
                           json={"windows": windows.tolist(), "subject": "p1"}).json()
    assert personal["model"] == "har-p1" and personal["personal"] is True and personal["subject"] == "p1"
    access = access_event(setup / "server.log", "personal-p1")  # who answered, in the log too
    assert {k: access[k] for k in ("windows", "model", "personal", "subject")} == {
        "windows": 4, "model": "har-p1", "personal": True, "subject": "p1"}
    assert [p["label"] for p in personal["predictions"]] == ["sitting"] * 4
    generic = client.post("/predict", headers=AUTH, json={"windows": windows.tolist()}).json()
    expected = ModelRuntime(setup / "model.onnx").predict(windows)
    assert generic["model"] == "har" and generic["personal"] is False and generic["subject"] is None
    assert np.allclose([[p["probabilities"][label] for label in LABELS] for p in generic["predictions"]], expected, atol=1e-6)


@pytest.mark.parametrize("body, status, detail", [
    ({"subject": "../model"}, 422, "is not a subject id"),
    ({"subject": 7}, 422, "subject: expected str, got int"),
    ({"subject": "q1"}, 503, "metadata names subject 'p1', not 'q1'"),
])
def test_bad_subjects_are_refused(client, body, status, detail):
    answer = client.post("/predict", headers=AUTH, json={"windows": random_windows(1).tolist(), **body})
    assert answer.status_code == status and detail in answer.json()["detail"], answer.text


def test_the_batch_scorer_takes_a_subject(setup):
    from serve.batch import main

    for subject, name in (("p1", "har-p1"), ("nobody", "har")):
        out = setup / f"batch-{subject}"
        assert main([str(setup / "recordings"), str(out), "--model", str(setup / "model.onnx"),
                     "--params", str(setup / "params.yaml"), "--subject", subject]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model"]["name"] == name and summary["model"]["subject"] == subject
        assert json.loads((out / "s" / "recording.json").read_text())["model"]["name"] == name


def test_at_most_cache_size_sessions_stay_loaded_and_a_replaced_file_is_reloaded(tmp_path):
    generic = ModelRuntime(write_tiny_model(tmp_path / "model.onnx")).card
    for subject in ("a", "b", "c"):
        write_personal_model(tmp_path, subject, "sitting")
    models = PersonalModels(tmp_path, generic, cache_size=2)
    first = models.runtime_for("a")
    assert models.runtime_for("a") is first  # cached
    models.runtime_for("b")
    models.runtime_for("c")  # "a" was least recently used: dropped
    assert len(models) == 2 and list(models._cache) == ["b", "c"]
    assert models.runtime_for("a") is not first

    write_personal_model(tmp_path, "c", "typing")
    os.utime(tmp_path / "c.onnx", ns=(1, 1))  # a new modification time, as a copy from elsewhere would have
    assert models.runtime_for("c").predict(random_windows(1)).argmax() == LABELS.index("typing")
    assert models.runtime_for(None) is None and models.runtime_for("nobody") is None
    with pytest.raises(RequestError, match="is not a subject id"):
        models.runtime_for("a/b")
