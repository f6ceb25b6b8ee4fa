"""Helpers for the tests that run the operations stack for real: Prometheus, Alertmanager and an MLflow
tracking server as processes on loopback ports, with their data in a temporary folder."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest



def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need_binary(name: str, debian_package: str) -> str:
    """The binary's path. Missing: the test fails in CI (setup.sh installs it there) and skips elsewhere,
    naming the command that installs it."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: `apt-get install -y {debian_package}` (./setup.sh does it when run as root)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    """Until `url` answers 200; the log's tail in the error when the process dies or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s: {log.read_text()[-3000:]}")


def unused_port() -> int:
    """A loopback port the kernel reports free now. Prometheus, Alertmanager and mlflow cannot report a port
    they chose themselves, so one is named for them; `on_a_free_port` covers the moment before they bind it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def on_a_free_port(start):
    """`start(port)` on an unused port, again on another if it fails (another process took the port first)."""
    for attempt in range(3):
        try:
            return start(unused_port())
        except RuntimeError:
            if attempt == 2:
                raise


def start_process(args: list[str], log: Path, ready_url: str, timeout_s: float = 60, env: dict | None = None):
    """Start `args` with output to `log`; returns the process once `ready_url` answers 200."""
    process = subprocess.Popen([str(a) for a in args], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    wait_for(ready_url, process, log, timeout_s)
    return process


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (mlflow server runs workers as children), SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def start_prometheus(folder: Path, config: dict, rules: dict | None = None):
    """Prometheus on 127.0.0.1 with `config` (and `rules` as rules.yml beside it), data in `folder`.
    Returns (process, base URL)."""
    binary = need_binary("prometheus", "prometheus")
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    if rules is not None:
        (folder / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {**config, "rule_files": ["rules.yml"]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def start(port: int):
        url = f"http://127.0.0.1:{port}"
        return start_process([binary, f"--config.file={folder / 'prometheus.yml'}",
                              f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                             folder / "prometheus.log", url + "/-/ready"), url

    return on_a_free_port(start)


def start_alertmanager(folder: Path, config: dict):
    """Alertmanager on 127.0.0.1 with `config`, clustering off, data in `folder`. Returns (process, base URL)."""
    binary = need_binary("prometheus-alertmanager", "prometheus-alertmanager")
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def start(port: int):
        url = f"http://127.0.0.1:{port}"
        return start_process([binary, f"--config.file={folder / 'alertmanager.yml'}",
                              f"--storage.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                              "--cluster.listen-address="], folder / "alertmanager.log", url + "/-/ready"), url

    return on_a_free_port(start)


def start_mlflow_server(folder: Path, port: int | None = None):
    """`mlflow server` on 127.0.0.1 with an SQLite store and a local artifact root in `folder`, one worker.
    Returns (process, tracking URI)."""
    folder.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")  # the venv's, beside its python

    def start(port: int):
        uri = f"http://127.0.0.1:{port}"
        return start_process([mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                              "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                              "--artifacts-destination", str(folder / "artifacts")],
                             folder / "mlflow.log", uri + "/health", timeout_s=120), uri

    return start(port) if port else on_a_free_port(start)


class Receiver:
    """A webhook receiver on 127.0.0.1: keeps the JSON body of every POST, and when it came (time.monotonic())."""

    def __init__(self):
        received, arrived = self.received, self.arrived = [], []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                arrived.append(time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def poll(condition, timeout_s: float, interval_s: float = 0.5, what: str = "condition"):
    """condition()'s first truthy answer within timeout_s, else AssertionError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not seen within {timeout_s:.0f} s")
