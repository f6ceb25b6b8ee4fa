"""Benchmark: tune the dynamic batcher (serve.batching max_batch_size, max_wait_ms) on the real server.

    python bench/serve_tuning.py [--seconds 2] [--clients 16] [--sizes 16 32 64] [--waits-ms 0.5 1 2]

Starts one `python -m serve` per setting on 127.0.0.1 (batching off, and each max_batch_size x
max_wait_ms pair), then measures one raw-float32 window per request from N clients and from 1
client, alternating between the servers in short rounds so that other load on the shared
machine lands on all alike. Ratios against batching off, measured in the same run, are what
to compare. Writes metrics/bench_serve_tuning.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# bench/serve.py holds the server start-up and the client loops (loaded by path: `serve` is the package)
_spec = importlib.util.spec_from_file_location("bench_serve", Path(__file__).with_name("serve.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from har.config import load_params, write_json  # noqa: E402

SIZES, WAITS_MS = (16, 32, 64), (0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per scenario and setting")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="max_batch_size values")
    parser.add_argument("--waits-ms", type=float, nargs="+", default=WAITS_MS, help="max_wait_ms values")
    parser.add_argument("--out", default="metrics/bench_serve_tuning.json")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    windows = bench.test_windows(max(256, args.clients * 8), params["window"]["length"])
    model = ROOT / "models/model.onnx"
    settings = {"off": None, **{f"{size}x{wait}ms": (size, wait) for size, wait in itertools.product(args.sizes, args.waits_ms)}}
    ports, processes = {}, []
    with tempfile.TemporaryDirectory() as folder:
        try:
            for name, setting in settings.items():
                path = Path(folder) / f"{name}.yaml"
                if setting:
                    params["serve"]["batching"].update(max_batch_size=setting[0], max_wait_ms=setting[1])
                path.write_text(yaml.safe_dump(params))
                ports[name] = bench.free_port()
                processes.append(bench.start_server(model, ports[name], setting is not None, 1, params=path))
            result = {}
            for scenario in (f"single_window_{args.clients}_clients", "single_window_1_client"):
                measured = bench.serve_and_measure(ports, windows, clients=args.clients, seconds=args.seconds,
                                                   only=scenario)
                off = measured["off"][scenario]["requests_per_s"]
                result[scenario] = {name: {**m[scenario], "over_off": round(m[scenario]["requests_per_s"] / off, 2)}
                                    for name, m in measured.items()}
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
    many = result[f"single_window_{args.clients}_clients"]
    result["best_at_many_clients"] = max((n for n in many if n != "off"), key=lambda n: many[n]["requests_per_s"])
    write_json(ROOT / args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
