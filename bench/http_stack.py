"""Benchmark: the HTTP stack under the service, on the same app, model and requests, in one run.

    python bench/http_stack.py [--seconds 2] [--clients 16]

Candidates: uvicorn on h11 and asyncio (uvicorn's pure-Python default, what the service ran on
before), uvicorn on httptools + uvloop (what `python -m serve` runs now), and granian (Rust HTTP,
ASGI interface, one worker). Each serves `serve.app.create_app` with the settings of params.yaml
(batching on); scenarios and client as in bench/serve.py, alternating between the servers in short
rounds. Writes metrics/bench_http_stack.json, with each figure's ratio to h11.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_serve", Path(__file__).with_name("serve.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from har.config import load_params, write_json  # noqa: E402


def granian_app():
    """The app for granian (`--factory`): model and params from the environment bench sets."""
    from serve.app import create_app
    from serve.config import Settings

    settings = Settings.load(ROOT / "params.yaml", model_path=Path(os.environ["HAR_BENCH_MODEL"]))
    return create_app(settings, token=os.environ["HAR_SERVE_TOKEN"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    windows = bench.test_windows(max(256, args.clients * 8), params["window"]["length"])
    model = ROOT / "models/model.onnx"
    ports = {name: bench.free_port() for name in ("uvicorn_h11_asyncio", "uvicorn_httptools_uvloop", "granian")}
    processes = []
    try:
        processes.append(bench.start_server(model, ports["uvicorn_h11_asyncio"], True, 1, extra=("--http", "h11", "--loop", "asyncio")))
        processes.append(bench.start_server(model, ports["uvicorn_httptools_uvloop"], True, 1))
        processes.append(bench.started(
            [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
             "--port", str(ports["granian"]), "--workers", "1", "--no-ws", "--log-level", "warning",
             "--no-access-log", "bench.http_stack:granian_app"],
            ports["granian"], env={"HAR_BENCH_MODEL": str(model), "PYTHONPATH": str(ROOT)}))
        result = bench.serve_and_measure(ports, windows, clients=args.clients, seconds=args.seconds)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    for name, scenarios in result.items():
        for scenario, figures in scenarios.items():
            base = result["uvicorn_h11_asyncio"][scenario]["requests_per_s"]
            figures["requests_per_s_over_h11"] = round(figures["requests_per_s"] / base, 2)
    write_json(ROOT / "metrics/bench_http_stack.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
