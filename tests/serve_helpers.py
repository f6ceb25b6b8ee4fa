"""Helpers for the service tests: a tiny hand-built ONNX model (no TensorFlow) and a real server process."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper

from har.fusion import CHANNELS
from har.modelfile import stamp

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
LABELS = ["sitting", "typing", "clapping"]
LENGTH = 200
PREPROCESSING = {"target_hz": 50.0, "max_gap_s": 0.5, "lowpass_hz": 10.0, "window_length": LENGTH, "overlap": 0.5}


def tiny_graph(labels: list[str] = LABELS, length: int = LENGTH) -> onnx.ModelProto:
    """softmax(mean over time of the window @ W + b): answers depend on the input, in microseconds."""
    rng = np.random.default_rng(0)
    weights = helper.make_tensor("W", TensorProto.FLOAT, [len(CHANNELS), len(labels)],
                                 rng.normal(size=(len(CHANNELS), len(labels))).astype(np.float32).ravel())
    bias = helper.make_tensor("b", TensorProto.FLOAT, [len(labels)], np.zeros(len(labels), np.float32))
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["windows"], ["mean"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["mean", "W"], ["logits"]),
         helper.make_node("Add", ["logits", "b"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["probabilities"], axis=-1)],
        "tiny",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["batch", length, len(CHANNELS)])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)])],
        initializer=[weights, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def tiny_metadata(labels: list[str] = LABELS, **overrides) -> dict:
    metadata = {
        "model_name": "har", "model_version": "tiny0001", "labels": labels,
        "input_contract": {"input": "windows", "output": "probabilities", "dtype": "float32",
                           "shape": [None, LENGTH, len(CHANNELS)], "window_length": LENGTH, "target_hz": 50.0,
                           "channels": CHANNELS, "units": {"acc": "m/s^2", "gyr": "rad/s"}},
        "preprocessing": PREPROCESSING,
        "metrics": {"macro_f1": 0.5},
        "git_commit": "0" * 40, "data_hash": "d" * 32,
    }
    return {**metadata, **overrides}


def write_tiny_model(path: Path, **metadata_overrides) -> Path:
    path.write_bytes(stamp(tiny_graph(), tiny_metadata(**metadata_overrides)))
    return path


def random_windows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, LENGTH, len(CHANNELS))).astype(np.float32)


BOUND = re.compile(rb"Uvicorn running on http://[^:\s]+:(\d+)")


def start_server(model: Path, log_path: Path, *args: str, token: str | None = TOKEN, port: int | None = None):
    """`python -m serve` on 127.0.0.1; returns (process, base URL) once /health answers.

    Without `port` the server binds port 0 and the kernel picks a free one, read back from
    uvicorn's start-up line: no window between choosing a port and binding it.
    """
    env = {k: v for k, v in os.environ.items() if k != "HAR_SERVE_TOKEN"}
    if token is not None:
        env["HAR_SERVE_TOKEN"] = token
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "serve", "--model", str(model), "--host", "127.0.0.1",
                                "--port", str(port or 0), *args], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}" if port else None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        if url is None:
            bound = BOUND.search(log_path.read_bytes())
            if bound is None:
                time.sleep(0.1)
                continue
            url = f"http://127.0.0.1:{int(bound.group(1))}"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"server did not answer /health within 60 s: {log_path.read_text()[-2000:]}")


def refusing_address() -> tuple[socket.socket, str]:
    """(socket, "127.0.0.1:port") of a port that is bound but not listening: connections to it are refused.

    Keep the socket open while it is used; nothing else can take the port meanwhile.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


def status_mib(pid: int, field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident since the process started) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_tiny_reference(model: Path, monitor: dict, seed: int = 1, windows: int = 100) -> Path:
    """A drift reference beside a tiny model (random normal training windows, the model's own outputs)."""
    from har.config import write_json
    from har.drift import build_reference, output_summary, reference_path_for
    from har.runtime import ModelRuntime

    reference_windows = np.random.default_rng(seed).normal(size=(windows, LENGTH, len(CHANNELS))).astype(np.float32)
    path = reference_path_for(model)
    write_json(path, build_reference(
        reference_windows, bins=monitor["bins"], max_samples=monitor["max_samples"], seed=0,
        thresholds=monitor["thresholds"], votes=monitor["votes"], min_windows=monitor["min_windows"],
        outputs=output_summary(ModelRuntime(model).predict(reference_windows), LABELS)))
    return path
