"""Helpers for the tests that build and run the service's image with podman, through scripts/podman.sh (the
project's podman settings, images and layers under .cache/containers), on the base that
scripts/build_base_image.sh makes from Debian's packages (no container registry is reachable here).

Each image is built once per test session; podman reuses the cached layers, so a rebuild after a code change
reinstalls nothing. Without podman, runc or debootstrap the tests skip naming the package, and fail in CI.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from ops_helpers import need_binary
from serve_helpers import ROOT, write_tiny_model

PODMAN = ROOT / "scripts" / "podman.sh"
BASE_IMAGE = "localhost/har-base:bookworm"
SERVE_IMAGE = "localhost/har-serve:latest"      # docker-compose.yml's har-serve:latest
POSTGRES_IMAGE = "localhost/har-postgres:15"    # ops/postgres/Dockerfile, for docker-compose.yml's postgres
TRAINED_MODEL = ROOT / "models" / "model.onnx"  # from `dvc repro` (CI runs it before the tests)
BUILD_TIMEOUT_S = 1200


def need_podman() -> None:
    for binary in ("podman", "runc", "debootstrap"):
        need_binary(binary, binary)


def podman(*args, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """`scripts/podman.sh ARGS`; with `check`, a failure raises with the command's output."""
    result = subprocess.run([str(PODMAN), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(map(str, args))} exited with {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@functools.cache
def base_image() -> str:
    need_podman()
    result = subprocess.run([str(ROOT / "scripts" / "build_base_image.sh")], capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"scripts/build_base_image.sh failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return BASE_IMAGE


def build_on_base(tag: str, context: Path) -> str:
    """The Dockerfile in `context` built on the Debian base as `tag`; then the images no tag needs any more
    (earlier builds of changed code) are removed, so the cache folder does not grow with every change."""
    podman("build", "--build-arg", f"BASE={base_image()}", "-t", tag, context, timeout=BUILD_TIMEOUT_S)
    podman("image", "prune", "--force")
    return tag


@functools.cache
def serve_image() -> str:
    """The repository's Dockerfile, as `docker build` builds it on python:3.11-slim elsewhere."""
    return build_on_base(SERVE_IMAGE, ROOT)


@functools.cache
def postgres_image() -> str:
    return build_on_base(POSTGRES_IMAGE, ROOT / "ops" / "postgres")


def served_model_dir(folder: Path) -> Path:
    """The folder to mount at /models: the trained model's (models/, with its drift reference) once `dvc repro`
    made it, else `folder` holding the tiny test model. Readable by the image's non-root user either way."""
    if TRAINED_MODEL.is_file():
        return TRAINED_MODEL.parent
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_model(folder / "model.onnx")
    folder.chmod(0o755)
    (folder / "model.onnx").chmod(0o644)
    return folder


def wait_until_ready(base_url: str, container: str, timeout_s: float = 180) -> dict:
    """/ready's answer once it is 200; fails with the container's log when it stops or never gets there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        if state not in ("running", "created", "configured"):
            raise AssertionError(f"container {container} is {state}: {logs(container)[-3000:]}")
        try:
            answer = httpx.get(f"{base_url}/ready", timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{base_url}/ready did not answer 200 within {timeout_s:.0f} s: {logs(container)[-3000:]}")


def logs(container: str) -> str:
    """What the container wrote to stdout and stderr, as `podman logs` gives it back."""
    result = podman("logs", container, check=False)
    return result.stdout + result.stderr


def published_port(container: str, port: int) -> int:
    """The host port podman picked for the container's `port` (published as 127.0.0.1::port)."""
    mapping = podman("port", container, f"{port}/tcp").stdout.strip()  # 127.0.0.1:40123
    return int(mapping.rsplit(":", 1)[1])


def need_podman_compose() -> str:
    need_podman()
    return need_binary("podman-compose", "podman-compose")


def compose(project: str, *args, env: dict, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """podman-compose on the repository's docker-compose.yml (with tests/compose/one_replica_published.yml on top:
    the balancer's image needs a registry), calling podman through scripts/podman.sh."""
    command = [shutil.which("podman-compose"), "--podman-path", str(PODMAN), "-p", project,
               "-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "tests/compose/one_replica_published.yml"),
               *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert result.returncode == 0 or not check, f"podman-compose {' '.join(args)} failed:\n{result.stdout[-4000:]}\n" \
                                   f"{result.stderr[-4000:]}"
    return result
