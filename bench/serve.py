"""Benchmark: the inference service under load, against raw onnxruntime and Keras, in one run.

    python bench/serve.py [--seconds 4] [--clients 16] [--soak-requests 10000]

Starts the real server (`python -m serve`: uvicorn on httptools + uvloop) on 127.0.0.1 twice,
with dynamic batching on and off, and drives both from bounded client loops over loopback (a
minimal keep-alive HTTP/1.1 client on uvloop, so that the client spends as little of the shared
CPU as it can; bodies come from serve/client.py's encoders), alternating between them in short
rounds so that other load on the machine hits both alike. Measures: one raw-float32 window per
request (p50/p99, requests/s) at 1 and N clients; windows/s with 64 windows per request as raw
float32, as v2 binary and as JSON, each as a share of onnxruntime alone on the same 64-window
batches (the headline ratios); raw onnxruntime against Keras `predict`. Then a soak of the
batching server: --soak-requests requests from N clients, mixed JSON and binary bodies, one in
twenty malformed, counting server errors and dropped connections and sampling the server's RSS.
Writes metrics/bench_serve.json; `targets` says which of the service's targets were met.

Uses models/model.onnx and models/model.keras when both exist; otherwise exports an untrained
model of the configured architecture (same size, so the same cost) to a temporary folder.
JSON bodies carry test windows rounded to 4 decimals, about what a sensor resolves.
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
import uvloop  # noqa: E402

from har.config import load_params, write_json  # noqa: E402
from serve import client  # noqa: E402
from serve.config import Settings  # noqa: E402
from har.runtime import ModelRuntime  # noqa: E402
from serve.wire import JSON, NPY, OCTET_STREAM  # noqa: E402

TOKEN = "bench-token-" + "0" * 20
TARGETS = {"binary_batch64_share": 0.6, "p50_ms_1_client": 1.5, "requests_per_s_many_clients": 2000.0,
           "batching_on_over_off": 1.5, "predict_json_batch64_windows_per_s": 3000.0, "onnxruntime_over_keras": 5.0,
           "soak_rss_growth": 0.10}


def tiny_stand_in(folder: Path, params: dict) -> tuple[Path, Path]:
    """An untrained model of the configured architecture, exported the way the export stage does it."""
    from har.export import build_metadata, convert, weights_version
    from har.fusion import CHANNELS
    from har.model import build_model
    from har.modelfile import stamp

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
    Passes alternate between the engines, so that other load on the machine hits both alike.
    Without Keras (`keras_model` None: a serving-only environment) only onnxruntime is measured."""
    def keras_predict(x):
        return keras_model.predict(x, batch_size=64, verbose=0)

    cases = {  # name: (predict, windows, windows per call)
        "onnxruntime_windows_per_s": (runtime.predict, windows, 64),
        "keras_predict_windows_per_s": (keras_predict, windows, 64),
        "onnxruntime_single_window_per_s": (runtime.predict, windows[:200], 1),
        "keras_predict_single_window_per_s": (keras_predict, windows[:10], 1),
        "keras_predict_bulk_windows_per_s": (keras_predict, windows, len(windows)),
    }
    if keras_model is None:
        cases = {name: case for name, case in cases.items() if not name.startswith("keras")}
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
    if keras_model is None:
        return result
    result["onnxruntime_over_keras"] = round(median["onnxruntime_windows_per_s"] / median["keras_predict_windows_per_s"], 2)
    result["onnxruntime_over_keras_single_window"] = round(
        median["onnxruntime_single_window_per_s"] / median["keras_predict_single_window_per_s"], 1)
    result["onnxruntime_over_keras_bulk"] = round(
        median["onnxruntime_windows_per_s"] / median["keras_predict_bulk_windows_per_s"], 2)
    return result


# --- the server and a minimal HTTP/1.1 client --------------------------------------------------------

def start_server(model: Path, port: int, batching: bool, threads: int, params: Path | None = None,
                 extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return started([sys.executable, "-m", "serve", "--model", str(model), "--host", "127.0.0.1",
                    "--port", str(port), "--batching", "on" if batching else "off",
                    "--threads", str(threads), "--no-access-log", "--log-level", "warning",
                    *(["--params", str(params)] if params else []), *extra], port)


def started(command: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    """The server process of `command`, once its /ready answers 200."""
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HAR_SERVE_TOKEN": TOKEN, **(env or {})})
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


def http_request(port: int, path: str, headers: dict, body: bytes) -> bytes:
    """One keep-alive HTTP/1.1 POST, as bytes, so that the client loop only writes and reads."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {TOKEN}",
                                                  **headers, "Content-Length": len(body)}.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


def predict_request(port: int, windows: np.ndarray, media_type: str = OCTET_STREAM) -> bytes:
    if media_type == JSON:  # test windows rounded to 4 decimals, about what a sensor resolves
        windows = np.round(windows.astype(np.float64), 4)
    return http_request(port, "/predict", *client.predict_request(windows, media_type))


def v2_binary_request(port: int, windows: np.ndarray) -> bytes:
    return http_request(port, "/v2/models/har/infer", *client.v2_request(windows))


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


def scenarios(port: int, windows: np.ndarray, clients: int) -> dict:
    """name -> one list of requests per client; `*_batch64_*` requests carry 64 windows each."""
    singles = [[predict_request(port, windows[c * 8 + k:c * 8 + k + 1]) for k in range(8)] for c in range(clients)]
    batches = [windows[k * 64:(k + 1) * 64] for k in range(4)]
    return {"single_window_1_client": singles[:1], f"single_window_{clients}_clients": singles,
            "predict_binary_batch64_1_client": [[predict_request(port, b) for b in batches]],
            "v2_binary_batch64_1_client": [[v2_binary_request(port, b) for b in batches]],
            "predict_json_batch64_1_client": [[predict_request(port, b, JSON) for b in batches]]}


def serve_and_measure(ports: dict, windows: np.ndarray, *, clients: int, seconds: float, rounds: int = 4,
                      only: str | None = None) -> dict:
    """Every scenario (or `only` one) alternates between the servers in short rounds, so that
    whatever else the shared machine does lands on all of them alike."""
    requests = {mode: scenarios(port, windows, clients) for mode, port in ports.items()}
    result = {mode: {} for mode in ports}
    for scenario in [only] if only else next(iter(requests.values())):
        runs = {mode: ([], [], 0.0) for mode in ports}
        for mode, port in ports.items():  # warm-up, discarded
            run_async(phase(port, requests[mode][scenario], min(1.0, seconds / 4)))
        for _ in range(rounds):
            for mode, port in ports.items():
                latencies, statuses, elapsed = run_async(phase(port, requests[mode][scenario], seconds / rounds))
                runs[mode] = (runs[mode][0] + latencies, runs[mode][1] + statuses, runs[mode][2] + elapsed)
        for mode in ports:
            result[mode][scenario] = summarize(*runs[mode])
    for mode in ports:
        for name, figures in result[mode].items():
            if "batch64" in name:
                figures["windows_per_s"] = round(figures["requests_per_s"] * 64)
    return result


def run_async(coroutine):
    return uvloop.run(coroutine)  # the client's loop costs CPU on the same two cores as the server


# --- the soak: many requests, mixed and partly malformed, memory watched -------------------------------

def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def soak_requests(port: int, windows: np.ndarray) -> list[tuple[bytes, bool]]:
    """(request, malformed) in a fixed mix: JSON, raw float32, .npy and v2 binary bodies of 1 to 8
    windows, and one in twenty malformed (a truncated body, a NaN, JSON that does not parse)."""
    with_nan = windows[:2].copy()
    with_nan[1, 5, 3] = np.nan
    good = [predict_request(port, windows[:1], JSON), predict_request(port, windows[:1]),
            predict_request(port, windows[8:16], NPY), v2_binary_request(port, windows[16:20]),
            predict_request(port, windows[1:2]), predict_request(port, windows[24:32])]
    bad = [http_request(port, "/predict", {"Content-Type": OCTET_STREAM, "X-Windows-Shape": "2,200,6"},
                        windows[:2].tobytes()[:-3]),
           predict_request(port, with_nan),
           http_request(port, "/predict", {"Content-Type": JSON}, b'{"windows": [[[1.0, 2.0'),
           http_request(port, "/v2/models/har/infer", {"Content-Type": OCTET_STREAM,
                                                       "Inference-Header-Content-Length": "999999"}, b"{}")]
    return [(bad[(i // 20) % len(bad)], True) if i % 20 == 19 else (good[i % len(good)], False) for i in range(200)]


async def soak(port: int, pid: int, windows: np.ndarray, *, total: int, clients: int, warmup: int) -> dict:
    mix = soak_requests(port, windows)
    counts = {"ok": 0, "client_errors": 0, "server_errors": 0, "unexpected_status": 0, "dropped_connections": 0}
    rss, sent = [], 0

    async def one_client() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < total:
                request, malformed = mix[sent % len(mix)]
                sent += 1
                if sent % 500 == 0:
                    rss.append((sent, rss_mib(pid)))
                writer.write(request)
                try:
                    await writer.drain()
                    status = await read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError):
                    counts["dropped_connections"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                if status >= 500:
                    counts["server_errors"] += 1
                elif (status == 200) == malformed:
                    counts["unexpected_status"] += 1  # a malformed body accepted, or a good one refused
                else:
                    counts["ok" if status == 200 else "client_errors"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    after_warmup = [mib for n, mib in rss if n > warmup]
    return {"requests": total, "clients": clients, "malformed_share": round(sum(m for _, m in mix) / len(mix), 3),
            **counts, "seconds": round(elapsed, 1), "requests_per_s": round(total / elapsed, 1),
            "rss_mib_after_warmup": round(after_warmup[0], 1), "rss_mib_at_end": round(after_warmup[-1], 1),
            "rss_mib_max_after_warmup": round(max(after_warmup), 1),
            "rss_growth_after_warmup": round(max(after_warmup) / after_warmup[0] - 1, 3),
            "warmup_requests": warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per scenario and server (in 4 alternating rounds)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--soak-requests", type=int, default=10_000)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    settings = Settings.from_params(params)
    windows = test_windows(max(1024, args.clients * 8), params["window"]["length"])

    with tempfile.TemporaryDirectory() as folder:
        real = (ROOT / "models/model.onnx").exists() and (ROOT / "models/model.keras").exists()
        onnx_path, keras_path = ((ROOT / "models/model.onnx", ROOT / "models/model.keras") if real
                                 else tiny_stand_in(Path(folder), params))
        runtime = ModelRuntime(onnx_path, threads=settings.threads)
        ports = {mode: free_port() for mode in ("batching_on", "batching_off")}
        processes = {mode: start_server(onnx_path, port, mode == "batching_on", settings.threads)
                     for mode, port in ports.items()}
        try:  # the servers first: TensorFlow's thread pools, once loaded, would share this process's cores
            served = serve_and_measure(ports, windows, clients=args.clients, seconds=args.seconds)
            soaked = run_async(soak(ports["batching_on"], processes["batching_on"].pid, windows,
                                    total=args.soak_requests, clients=args.clients, warmup=args.soak_requests // 5))
        finally:
            for process in processes.values():
                process.terminate()
                process.wait(timeout=30)
        try:
            import keras
        except ImportError:  # a serving-only environment: onnxruntime figures only
            keras_model = None
        else:
            from har.model import load_model

            keras_model = load_model(keras_path, compile=False)
        engines = engine_rates(runtime, keras_model, windows[:1024])

    many = f"single_window_{args.clients}_clients"
    on, off = served["batching_on"], served["batching_off"]
    model_alone = engines["onnxruntime_windows_per_s"]
    ratios = {
        f"batching_on_over_off_requests_per_s_at_{args.clients}_clients":
            round(on[many]["requests_per_s"] / off[many]["requests_per_s"], 2),
        **{f"{name}_over_onnxruntime_alone": round(on[name]["windows_per_s"] / model_alone, 3)
           for name in ("predict_binary_batch64_1_client", "v2_binary_batch64_1_client", "predict_json_batch64_1_client")},
    }
    result = {
        "model": {"source": "models/model.onnx" if real else "untrained stand-in of the configured architecture",
                  "version": runtime.card.version, "labels": len(runtime.card.labels)},
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
        "settings": {"http": "uvicorn + httptools + uvloop", "onnxruntime_threads": settings.threads,
                     "max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                     "seconds_per_phase": args.seconds, "clients": args.clients},
        **engines,
        **served,
        **ratios,
        "soak": soaked,
    }
    binary64 = max(ratios["predict_binary_batch64_1_client_over_onnxruntime_alone"],
                   ratios["v2_binary_batch64_1_client_over_onnxruntime_alone"])
    checks = {  # name: (measured, target, "min" or "max")
        "binary_batch64_share_of_onnxruntime_alone": (binary64, TARGETS["binary_batch64_share"], "min"),
        "p50_ms_1_client": (on["single_window_1_client"]["p50_ms"], TARGETS["p50_ms_1_client"], "max"),
        f"requests_per_s_{args.clients}_clients": (on[many]["requests_per_s"], TARGETS["requests_per_s_many_clients"], "min"),
        "batching_on_over_off": (ratios[f"batching_on_over_off_requests_per_s_at_{args.clients}_clients"],
                                 TARGETS["batching_on_over_off"], "min"),
        "predict_json_batch64_windows_per_s": (on["predict_json_batch64_1_client"]["windows_per_s"],
                                               TARGETS["predict_json_batch64_windows_per_s"], "min"),
        "soak_server_errors": (soaked["server_errors"] + soaked["unexpected_status"], 0, "max"),
        "soak_dropped_connections": (soaked["dropped_connections"], 0, "max"),
        "soak_rss_growth_after_warmup": (soaked["rss_growth_after_warmup"], TARGETS["soak_rss_growth"], "max"),
    }
    if "onnxruntime_over_keras" in engines:
        checks["onnxruntime_over_keras"] = (engines["onnxruntime_over_keras"], TARGETS["onnxruntime_over_keras"], "min")
    result["targets"] = {name: {"measured": value, f"target_{kind}": target,
                                "met": value >= target if kind == "min" else value <= target}
                         for name, (value, target, kind) in checks.items()}
    write_json(ROOT / "metrics/bench_serve.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
