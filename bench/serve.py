"""Benchmark: the inference service under load, against raw onnxruntime and Keras, in one run.

    python bench/serve.py [--seconds 4] [--clients 16]

Starts the real server (`python -m serve`, uvicorn) on 127.0.0.1 twice, with dynamic batching
on and off, and drives both from bounded client loops over loopback (a minimal keep-alive
HTTP/1.1 client on asyncio, so that the client spends as little of the shared CPU as it can),
alternating between them in short rounds so that other load on the machine hits both alike.
Measures: single-window latency p50/p99 and requests/s at 1 and N concurrent clients, windows/s
through /predict with batches of 64, and raw onnxruntime against Keras `predict` on the same
windows: one call per 64 windows (a /predict request; the headline ratio), one call per window,
and Keras's best case, one `predict` over 1,024 windows. Writes metrics/bench_serve.json.

Uses models/model.onnx and models/model.keras when both exist; otherwise exports an untrained
model of the configured architecture (same size, so the same cost) to a temporary folder.
Request bodies carry test windows rounded to 4 decimals, about what a sensor resolves.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before TensorFlow loads: CPU only, as the export stage
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from har.config import load_params, write_json  # noqa: E402
from serve.config import Settings  # noqa: E402
from serve.runtime import ModelRuntime  # noqa: E402

TOKEN = "bench-token-" + "0" * 20
TARGETS = {"p50_ms_1_client": 5.0, "predict_batch64_windows_per_s": 1000.0, "onnxruntime_over_keras": 5.0}


def tiny_stand_in(folder: Path, params: dict) -> tuple[Path, Path]:
    """An untrained model of the configured architecture, exported the way the export stage does it."""
    from har.fusion import CHANNELS
    from har.model import build_model
    from serve.modelfile import stamp
    from stages.export import build_metadata, convert, weights_version

    labels, length = params["data"]["labels"], params["window"]["length"]
    model = build_model(params["model"], window_length=length, n_channels=len(CHANNELS), n_classes=len(labels),
                        mean=np.zeros(len(CHANNELS)), variance=np.ones(len(CHANNELS)))
    keras_path = folder / "model.keras"
    model.save(keras_path)
    info = {"labels": labels, "window_length": length, "target_hz": params["data"]["target_hz"],
            "channels": CHANNELS, "units": {"acc": "m/s^2", "gyr": "rad/s"}}
    proto, converter = convert(model, length, len(CHANNELS), params["serve"]["export"]["opset"])
    metadata = build_metadata(info, params, version=weights_version(model), metrics={}, commit=None, data_hash=None,
                              keras_md5="untrained", converter=converter)
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(stamp(proto, metadata))
    return onnx_path, keras_path


def test_windows(n: int, length: int) -> np.ndarray:
    path = ROOT / "data/windows/test.npz"
    if path.exists():
        with np.load(path) as test:
            return test["X"][np.linspace(0, len(test["X"]) - 1, n).astype(int)]
    return np.random.default_rng(0).normal(size=(n, length, 6)).astype(np.float32)


def engine_rates(runtime: ModelRuntime, keras_model, windows: np.ndarray, repeats: int = 5) -> dict:
    """onnxruntime against Keras `predict` on the same windows, windows/s (median of `repeats` passes):
    per request (64 windows a call, and 1), and Keras's best case, all windows in one `predict`.
    Passes alternate between the engines, so that other load on the machine hits both alike."""
    def keras_predict(x):
        return keras_model.predict(x, batch_size=64, verbose=0)

    cases = {  # name: (predict, windows, windows per call)
        "onnxruntime_windows_per_s": (runtime.predict, windows, 64),
        "keras_predict_windows_per_s": (keras_predict, windows, 64),
        "onnxruntime_single_window_per_s": (runtime.predict, windows[:200], 1),
        "keras_predict_single_window_per_s": (keras_predict, windows[:10], 1),
        "keras_predict_bulk_windows_per_s": (keras_predict, windows, len(windows)),
    }
    rates = {name: [] for name in cases}
    for predict, data, per_call in cases.values():
        predict(data[:per_call])  # warm up
    for _ in range(repeats):
        for name, (predict, data, per_call) in cases.items():
            start = time.perf_counter()
            for i in range(0, len(data), per_call):
                predict(data[i:i + per_call])
            rates[name].append(len(data) / (time.perf_counter() - start))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {name: round(value, 1) for name, value in median.items()}
    result["onnxruntime_over_keras"] = round(median["onnxruntime_windows_per_s"] / median["keras_predict_windows_per_s"], 2)
    result["onnxruntime_over_keras_single_window"] = round(
        median["onnxruntime_single_window_per_s"] / median["keras_predict_single_window_per_s"], 1)
    result["onnxruntime_over_keras_bulk"] = round(
        median["onnxruntime_windows_per_s"] / median["keras_predict_bulk_windows_per_s"], 2)
    return result


# --- the server and a minimal HTTP/1.1 client --------------------------------------------------------

def start_server(model: Path, port: int, batching: bool, threads: int) -> subprocess.Popen:
    env = {**os.environ, "HAR_SERVE_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "serve", "--model", str(model), "--host", "127.0.0.1",
                                "--port", str(port), "--batching", "on" if batching else "off",
                                "--threads", str(threads), "--no-access-log", "--log-level", "warning"],
                               cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become ready within 60 s")


def predict_request(port: int, windows: np.ndarray) -> bytes:
    body = json.dumps({"windows": np.round(windows.astype(np.float64), 4).tolist()}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def client_loop(port: int, requests: list[bytes], until: float, latencies: list, statuses: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        i = 0
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(requests[i % len(requests)])
            await writer.drain()
            statuses.append(await read_response(reader))
            latencies.append(time.perf_counter() - start)
            i += 1
    finally:
        writer.close()


async def phase(port: int, requests_per_client: list[list[bytes]], seconds: float) -> tuple[list, list, float]:
    latencies, statuses = [], []
    started = time.perf_counter()
    await asyncio.gather(*(client_loop(port, r, started + seconds, latencies, statuses) for r in requests_per_client))
    return latencies, statuses, time.perf_counter() - started


def summarize(latencies: list, statuses: list, elapsed: float) -> dict:
    failed = sum(status != 200 for status in statuses)
    if failed:
        raise RuntimeError(f"{failed} of {len(statuses)} requests failed: {sorted(set(statuses))}")
    ms = np.array(latencies) * 1000
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "requests_per_s": round(len(ms) / elapsed, 1)}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_measure(model: Path, windows: np.ndarray, *, threads: int, clients: int, seconds: float,
                      rounds: int = 4) -> dict:
    """Both servers (batching on and off) up at once; every scenario alternates between them in short
    rounds, so that whatever else the shared machine does lands on both alike."""
    ports = {mode: free_port() for mode in ("batching_on", "batching_off")}
    processes = [start_server(model, port, mode == "batching_on", threads) for mode, port in ports.items()]
    try:
        def scenarios(port):
            singles = [[predict_request(port, windows[c * 8 + k:c * 8 + k + 1]) for k in range(8)] for c in range(clients)]
            return {"single_window_1_client": singles[:1], f"single_window_{clients}_clients": singles,
                    "predict_batch64_1_client": [[predict_request(port, windows[k * 64:(k + 1) * 64]) for k in range(4)]]}

        requests = {mode: scenarios(port) for mode, port in ports.items()}
        result = {mode: {} for mode in ports}
        for scenario in requests["batching_on"]:
            runs = {mode: ([], [], 0.0) for mode in ports}
            for mode, port in ports.items():  # warm-up, discarded
                asyncio.run(phase(port, requests[mode][scenario], min(1.0, seconds / 4)))
            for _ in range(rounds):
                for mode, port in ports.items():
                    latencies, statuses, elapsed = asyncio.run(phase(port, requests[mode][scenario], seconds / rounds))
                    runs[mode] = (runs[mode][0] + latencies, runs[mode][1] + statuses, runs[mode][2] + elapsed)
            for mode in ports:
                result[mode][scenario] = summarize(*runs[mode])
        for mode in ports:
            batch = result[mode]["predict_batch64_1_client"]
            batch["windows_per_s"] = round(batch["requests_per_s"] * 64)
        return result
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per scenario and server (in 4 alternating rounds)")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    settings = Settings.from_params(params)
    windows = test_windows(max(1024, args.clients * 8), params["window"]["length"])

    with tempfile.TemporaryDirectory() as folder:
        real = (ROOT / "models/model.onnx").exists() and (ROOT / "models/model.keras").exists()
        onnx_path, keras_path = ((ROOT / "models/model.onnx", ROOT / "models/model.keras") if real
                                 else tiny_stand_in(Path(folder), params))
        runtime = ModelRuntime(onnx_path, threads=settings.threads)
        import keras

        keras_model = keras.models.load_model(keras_path, compile=False)
        engines = engine_rates(runtime, keras_model, windows[:1024])
        served = serve_and_measure(onnx_path, windows, threads=settings.threads, clients=args.clients,
                                   seconds=args.seconds)

    many = f"single_window_{args.clients}_clients"
    on, off = served["batching_on"], served["batching_off"]
    result = {
        "model": {"source": "models/model.onnx" if real else "untrained stand-in of the configured architecture",
                  "version": runtime.card.version, "labels": len(runtime.card.labels)},
        "machine": {"cpus": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "settings": {"onnxruntime_threads": settings.threads, "max_batch_size": settings.max_batch_size,
                     "max_wait_ms": settings.max_wait_ms, "seconds_per_phase": args.seconds, "clients": args.clients},
        **engines,
        **served,
        "batching_on_over_off_requests_per_s_at_%d_clients" % args.clients:
            round(on[many]["requests_per_s"] / off[many]["requests_per_s"], 2),
    }
    batch64 = on["predict_batch64_1_client"]["windows_per_s"]
    result["targets"] = {
        "p50_ms_1_client": {"target_max": TARGETS["p50_ms_1_client"], "batching_on": on["single_window_1_client"]["p50_ms"],
                            "met": on["single_window_1_client"]["p50_ms"] <= TARGETS["p50_ms_1_client"]},
        "predict_batch64_windows_per_s": {"target_min": TARGETS["predict_batch64_windows_per_s"], "measured": batch64,
                                          "met": batch64 >= TARGETS["predict_batch64_windows_per_s"]},
        "onnxruntime_over_keras": {"target_min": TARGETS["onnxruntime_over_keras"], "measured": engines["onnxruntime_over_keras"],
                                   "met": engines["onnxruntime_over_keras"] >= TARGETS["onnxruntime_over_keras"]},
    }
    write_json(ROOT / "metrics/bench_serve.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
