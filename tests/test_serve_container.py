"""The service's image, built and run for real: the repository's Dockerfile built by podman on the base made from
Debian's packages (scripts/build_base_image.sh; no registry is reachable here), started with the model mounted
read-only and the token as a secret file, and asked over HTTP from the host, beside the host's own
`python -m serve` on the same model. The model is the trained one once `dvc repro` made models/model.onnx (as
in CI), else the tiny test model. Then, without podman: what the Dockerfile copies exists and what it installs
covers what the service imports."""
import ast
import json
import os
import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement

from conftest import GARMIN_ACC, GARMIN_GYR, pipeline_windows
from container_helpers import logs, podman, published_port, serve_image, served_model_dir, wait_until_ready
from log_helpers import json_lines
from serve_helpers import ROOT, TOKEN, start_server, stop_server

DOCKERFILE = (ROOT / "Dockerfile").read_text()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE_USER_ID = 10001  # the Dockerfile's `useradd --uid`
LOCAL = {"har", "serve", "store"}
# Reached only for a models:/ model URI (the registry's client and its reachability check); the image
# serves a mounted file, and Kubernetes fetches the registry's champion with an init container
# (ops/k8s/deployment.yaml), so mlflow (and the requests it brings) stay out.
OPTIONAL = {"mlflow", "requests"}


# ---------------------------------------------------------------- the image, running

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return served_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def container(model_dir, tmp_path_factory):
    """The image started as a deployment starts it: the model folder mounted read-only at /models, the token a
    podman secret at /run/secrets/har_serve_token (where the ENTRYPOINT's --token-file reads it), no token in
    the environment, the port published on loopback only. Yields (name, base URL)."""
    image = serve_image()
    name = f"har-serve-test-{os.getpid()}"
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN)
    podman("rm", "--force", name, check=False)
    podman("secret", "rm", name, check=False)
    podman("secret", "create", name, token_file)
    try:
        podman("run", "--detach", "--name", name, "--publish", "127.0.0.1::8000",
               "--volume", f"{model_dir}:/models:ro", "--secret", f"{name},target=har_serve_token", image)
        base = f"http://127.0.0.1:{published_port(name, 8000)}"
        wait_until_ready(base, name)
        yield name, base
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
        podman("secret", "rm", name, check=False)


@pytest.fixture(scope="module")
def host_service(model_dir, tmp_path_factory):
    """`python -m serve` on this machine, on the same model file: the answers the image must give."""
    process, base = start_server(model_dir / "model.onnx", tmp_path_factory.mktemp("host") / "server.log")
    try:
        yield base
    finally:
        stop_server(process)


def noise(n: int, card: dict) -> np.ndarray:
    """n windows of random values in the shape the served model takes (the trained model's may differ from 200 x 6)."""
    shape = (n, card["input_contract"]["window_length"], len(card["input_contract"]["channels"]))
    return np.random.default_rng(3).normal(size=shape).astype(np.float32)


def test_the_image_runs_python_3_11_with_the_locked_onnxruntime_and_no_tensorflow():
    probe = ("import importlib.metadata as m, importlib.util as u, json, sys; print(json.dumps({"
             "'python': list(sys.version_info[:2]), 'onnxruntime': m.version('onnxruntime'), "
             "'tensorflow': [n for n in ('tensorflow', 'tensorflow_cpu', 'keras') if u.find_spec(n)]}))")
    found = json.loads(podman("run", "--rm", "--entrypoint", "python", serve_image(), "-c", probe).stdout)
    locked = re.search(r"^onnxruntime==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)[1]
    assert found == {"python": [3, 11], "onnxruntime": locked, "tensorflow": []}


def test_ready_from_the_host_with_the_mounted_models_checksum(container, host_service):
    _, base = container
    ready = httpx.get(f"{base}/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == httpx.get(f"{host_service}/ready", timeout=10).json()  # same model, same sha256
    v2 = httpx.get(f"{base}/v2/health/ready", timeout=10)
    assert (v2.status_code, v2.json()) == (200, {"ready": True})


def test_predict_answers_what_the_hosts_service_answers(container, host_service, garmin_recording):
    _, base = container
    card = httpx.get(f"{host_service}/model", timeout=10).json()
    windows, _ = pipeline_windows(garmin_recording, card["preprocessing"])
    batch = np.concatenate([windows[:48], noise(16, card)])
    body = {"windows": batch.tolist()}
    answers = [httpx.post(f"{url}/predict", json=body, headers=AUTH, timeout=60) for url in (base, host_service)]
    assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
    in_image, on_host = (a.json()["predictions"] for a in answers)
    assert len(in_image) == len(batch)
    assert [p["label"] for p in in_image] == [p["label"] for p in on_host]
    labels = card["labels"]
    np.testing.assert_allclose([[p["probabilities"][k] for k in labels] for p in in_image],
                               [[p["probabilities"][k] for k in labels] for p in on_host], rtol=0, atol=1e-6)


def test_recordings_scores_the_real_garmin_hour_as_the_host_does(container, host_service):
    _, base = container
    files = {"accelerometer": (GARMIN_ACC.name, GARMIN_ACC.read_bytes()),
             "gyroscope": (GARMIN_GYR.name, GARMIN_GYR.read_bytes())}
    answers = [httpx.post(f"{url}/recordings", files=files, headers=AUTH, timeout=300) for url in (base, host_service)]
    assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
    in_image, on_host = (a.json() for a in answers)
    assert in_image["recording"]["id"] == GARMIN_ACC.name.removesuffix("-accelerometer_data.xlsx")
    assert in_image["covered_minutes"] == pytest.approx(60.5, abs=0.5)  # the whole hour
    for key in ("recording", "model", "windows", "episodes", "minutes_per_activity", "not_worn_minutes"):
        assert in_image[key] == on_host[key], key
    np.testing.assert_allclose([t["confidence"] or 0 for t in in_image["timeline"]],
                               [t["confidence"] or 0 for t in on_host["timeline"]], atol=1e-6)


def test_the_service_runs_as_the_images_non_root_user_on_a_read_only_model(container):
    name, _ = container
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
    status = Path(f"/proc/{pid}/status").read_text()  # the service process itself, seen from the host
    assert "python" in Path(f"/proc/{pid}/cmdline").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)[1].split()
    assert uids == [str(IMAGE_USER_ID)] * 4, status  # real, effective, saved and filesystem ids
    touched = podman("exec", name, "touch", "/models/written-by-the-container", check=False)
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr


def test_its_json_log_lines_reach_podman_logs(container):
    name, base = container
    card = httpx.get(f"{base}/model", timeout=10).json()
    answer = httpx.post(f"{base}/predict", json={"windows": noise(2, card).tolist()},
                        headers={**AUTH, "X-Request-ID": "container-log-check"}, timeout=30)
    assert answer.status_code == 200
    for _ in range(40):  # the access event is written just after the answer has been sent
        events = json_lines(logs(name))
        access = [e for e in events if e.get("request_id") == "container-log-check"]
        if access:
            break
        httpx.get(f"{base}/health", timeout=5)
    assert len(access) == 1, events[-5:]
    assert {k: access[0][k] for k in ("logger", "message", "route", "status", "windows")} == \
        {"logger": "serve.access", "message": "access", "route": "/predict", "status": 200, "windows": 2}
    assert any(e["logger"] == "uvicorn.error" for e in events)  # uvicorn's start-up lines, as JSON too
    assert TOKEN not in logs(name)


def test_the_images_healthcheck_passes(container):
    name, _ = container
    checked = podman("healthcheck", "run", name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # 1 and "unhealthy" when the command fails
    assert podman("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() == "healthy"


# ---------------------------------------------------------------- the Dockerfile, read

def service_imports() -> set[str]:
    """Top-level third-party modules imported by serve/ and the har modules it reaches, transitively."""
    seen, todo, third_party = set(), [ROOT / "serve/__main__.py", ROOT / "serve/app.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in LOCAL:
                    module = ROOT / (name.replace(".", "/") + ".py")
                    todo.append(module if module.exists() else ROOT / name.replace(".", "/") / "__init__.py")
                elif top not in sys.stdlib_module_names and top not in OPTIONAL:
                    third_party.add(top)
    return third_party


def with_dependencies(distributions: set[str]) -> set[str]:
    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    closed, todo = set(), [norm(d) for d in distributions]
    while todo:
        name = todo.pop()
        if name in closed:
            continue
        closed.add(name)
        for line in requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(norm(requirement.name))
    return closed


def test_dockerfile_installs_what_the_service_imports():
    install = re.search(r"pip install -c requirements.lock (.*?)\n\n", DOCKERFILE, re.S)[1]
    installed = with_dependencies({p for p in install.replace("\\", " ").split()})
    providers = packages_distributions()
    missing = {m for m in service_imports() if not {p.lower().replace("_", "-") for p in providers[m]} & installed}
    assert not missing, f"the image lacks the distributions of {missing}"


def test_dockerfile_copies_existing_paths_the_build_context_sends_and_runs_as_non_root():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for source in re.findall(r"^COPY (\S+)", DOCKERFILE, re.M):
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignored, f"{source} is left out of the build context by .dockerignore"
    assert re.search(r"^ARG BASE=python:3\.11-slim$", DOCKERFILE, re.M) and "FROM ${BASE}" in DOCKERFILE
    assert re.search(rf"^RUN useradd .*--uid {IMAGE_USER_ID} serve ", DOCKERFILE, re.M)
    assert re.search(r"^USER serve$", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE and "/ready" in DOCKERFILE
    assert '"-m", "serve"' in DOCKERFILE and '"--model"' in DOCKERFILE
