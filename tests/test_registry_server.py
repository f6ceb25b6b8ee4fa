"""The registry as a team uses it: through an `mlflow server` (SQLite store, local artifact root, in a
temporary folder, on a loopback port) with MLFLOW_TRACKING_URI pointing at it. The register stage and
its gate, `python -m stages.rollback`, the service loading models:/<name>@champion, and what happens
while the server is down. The tiny set-up of tests/test_registry.py: a hand-built ONNX model, no TensorFlow."""
import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml

from har import registry
from ops_helpers import start_mlflow_server, stop_process
from serve_helpers import ROOT, start_server, stop_server, write_tiny_model

NAME = "har-server-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    process, uri = start_mlflow_server(folder)
    state = {"process": process, "uri": uri, "folder": folder}
    yield state
    stop_process(state["process"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder laid out like the repository for the register stage (as in tests/test_registry.py)."""
    folder = tmp_path_factory.mktemp("register")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["registry"]["model_name"] = NAME
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    for sub in ("models", "metrics"):
        (folder / sub).mkdir()
    (folder / "metrics" / "export.json").write_text(json.dumps({"parity": {"passed": True}}))
    return folder


def register(workspace, monkeypatch, macro_f1: float, model_version: str) -> dict:
    """The register stage, as `dvc repro` runs it, for a model scoring `macro_f1`; its decision."""
    from stages import register as stage

    write_tiny_model(workspace / "models" / "model.onnx", model_version=model_version)
    (workspace / "metrics" / "eval.json").write_text(json.dumps({"macro_f1": macro_f1}))
    monkeypatch.chdir(workspace)
    stage.main()
    return json.loads((workspace / "logs" / "register.json").read_text())


def test_register_gate_rollback_and_serving_the_champion_through_the_server(server, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    first = register(workspace, monkeypatch, 0.80, "tiny-v1")
    challenger = register(workspace, monkeypatch, 0.85, "tiny-v2")  # the gate compares it with v1 (the refusal:
    assert [(d["version"], d["promoted"], d["champion_version"]) for d in (first, challenger)] == \
        [(1, True, 1), (2, True, 2)]                                 # tests/test_registry.py, on SQLite)
    assert any("vs champion v1's 0.8000" in r for r in challenger["reasons"])
    assert registry.connect(server["uri"]).get_model_version_by_alias(NAME, "challenger").version == "2"

    rolled = subprocess.run([sys.executable, "-m", "stages.rollback", "1", "--reason", "v2 misreads typing"],
                            cwd=workspace, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=120)
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert f"{NAME}: champion v2 -> v1" in rolled.stdout

    # The artifacts went to the server's artifact root, not to a local mlruns/.
    assert list((server["folder"] / "artifacts").rglob("model.onnx")) and not (workspace / "mlruns").exists()

    service, url = start_server(f"models:/{NAME}@champion", tmp_path / "serve.log")
    try:
        served = httpx.get(url + "/model", timeout=10).json()
    finally:
        stop_server(service)
    assert served["registry"] == {"uri": f"models:/{NAME}@champion", "name": NAME, "version": 1}
    assert served["version"] == "tiny-v1"  # the file of version 1, not only its number


def test_with_the_server_down_register_fails_naming_the_uri_and_changes_nothing(server, workspace, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    client = registry.connect(server["uri"])
    champion = client.get_model_version_by_alias(NAME, "champion").version
    versions = len(client.search_model_versions(f"name='{NAME}'"))
    decision_before = (workspace / "logs" / "register.json").read_bytes()
    submitted_before = (workspace / "metrics" / "register.json").read_bytes()

    stop_process(server["process"])
    with pytest.raises(SystemExit) as refused:
        register(workspace, monkeypatch, 0.99, "tiny-v4")
    message = str(refused.value)
    assert message.startswith(f"register: MLflow tracking server {server['uri']} is unreachable")
    assert "nothing was changed" in message
    assert (workspace / "logs" / "register.json").read_bytes() == decision_before
    assert (workspace / "metrics" / "register.json").read_bytes() == submitted_before

    port = int(server["uri"].rsplit(":", 1)[1])
    server["process"], uri = start_mlflow_server(server["folder"], port=port)
    client = registry.connect(uri)
    assert client.get_model_version_by_alias(NAME, "champion").version == champion
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions
