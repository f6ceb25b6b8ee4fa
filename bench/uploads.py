"""Benchmark: bursts of the real one-hour Garmin pair posted to `POST /recordings`, with and without the
upload budget (serve/admission.py), on one service process on 127.0.0.1.

    python bench/uploads.py [--clients 32] [--probe 8] [--runs 5] [--model models/model.onnx]

1. One upload alone, budget on (the shipped params) against off: two services, each warmed up by one
   upload, `--runs` uploads to each, alternating, median of each. The service's CPU seconds per upload against the upload's wall time on
   an idle machine (bench/batch.py) say how much of a core one upload in flight keeps busy: what
   saturates first, and what the HPA scales on.
2. What an upload costs. The service without a budget (serve.recordings.memory_budget_mb: null): its
   resting RSS after those uploads is the base; then `--probe` uploads at once, and the growth of its
   peak RSS (VmHWM) over the base per upload in flight, divided by the upload's size, is the
   `memory_per_uploaded_byte` the budget charges (conf/serve/default.yaml quotes it).
3. `--clients` uploads at once against the budget-on service, each through serve/client.py with its
   retries: every attempt's status (200, 503 with Retry-After, anything else), dropped connections,
   whether all were scored in the end, and the service's peak RSS against the budget plus the base.

Without --model, models/model.onnx when the pipeline has made one, else the tests' tiny ONNX model.
Writes metrics/bench_uploads.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

from timing import report  # noqa: E402

from har.config import load_params, resolve_raw  # noqa: E402
from har.garmin import find_garmin_pairs  # noqa: E402
from serve.admission import MiB  # noqa: E402
from serve.client import HarClient, ServiceError  # noqa: E402
from serve.config import Settings  # noqa: E402
from tests.serve_helpers import TOKEN, cpu_seconds, start_server, status_mib, stop_server, write_tiny_model  # noqa: E402


def upload(client: HarClient, acc: Path, gyr: Path) -> str:
    """One upload through the client (its retries included): 'scored', 'refused' (given up) or 'dropped'."""
    try:
        client.recording(acc, gyr)
        return "scored"
    except ServiceError:
        return "refused"
    except httpx.TransportError:  # the connection went without an answer
        return "dropped"


def upload_once(url: str, acc: Path, gyr: Path) -> str:
    with HarClient(url, token=TOKEN, retries=0) as client:
        return upload(client, acc, gyr)


def serve(folder: Path, model: Path, name: str, recordings: dict):
    params = load_params(ROOT / "params.yaml")
    params["serve"]["recordings"] = {**params["serve"]["recordings"], **recordings}
    path = folder / f"params-{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    return start_server(model, folder / f"server-{name}.log", "--params", str(path), "--no-access-log")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32, help="uploads at once against the budget")
    parser.add_argument("--probe", type=int, default=8, help="uploads at once, without a budget, to measure the cost")
    parser.add_argument("--runs", type=int, default=5, help="single uploads to each service (median)")
    parser.add_argument("--model", help="ONNX model (default: models/model.onnx if present, else the tiny one)")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    settings = Settings.from_params(params)
    acc, gyr = find_garmin_pairs(resolve_raw(ROOT / params["paths"]["garmin"]))[0][0]  # the one-hour pair
    pair_bytes = acc.stat().st_size + gyr.stat().st_size
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        folder = Path(tmp)
        model = Path(args.model) if args.model else ROOT / "models" / "model.onnx"
        if not model.exists() and args.model is None:
            model = write_tiny_model(folder / "model.onnx")
        off, off_url = serve(folder, model, "off", {"memory_budget_mb": None})
        on, on_url = serve(folder, model, "on", {})
        try:
            with HarClient(off_url, token=TOKEN) as off_client, HarClient(on_url, token=TOKEN) as on_client:
                for client in (off_client, on_client):  # warm-up: first-use imports and allocations
                    client.recording(acc, gyr)

                # 1. one upload alone, on against off, alternating (both warmed up alike: one upload each)
                timings = {"on": [], "off": []}
                cpu = []  # the service's CPU seconds per upload
                pair = [("on", on_client, on), ("off", off_client, off)]
                for run in range(args.runs):
                    for name, client, process in (pair if run % 2 == 0 else pair[::-1]):  # neither always first
                        cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
                        client.recording(acc, gyr)
                        timings[name].append(time.perf_counter() - started)
                        cpu.append(cpu_seconds(process.pid) - cpu_before)

                base_mib = status_mib(off.pid, "VmRSS")
                on_base_mib = status_mib(on.pid, "VmRSS")

                # 2. the cost of an upload in flight, no budget
                with ThreadPoolExecutor(args.probe) as pool:
                    probe = Counter(pool.map(lambda _: upload_once(off_url, acc, gyr), range(args.probe)))
                probe_peak_mib = status_mib(off.pid, "VmHWM")
                per_upload_mib = (probe_peak_mib - base_mib) / args.probe

            # 3. the burst against the budget, each client with its retries
            clients = [HarClient(on_url, token=TOKEN) for _ in range(args.clients)]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                outcomes = Counter(pool.map(lambda client: upload(client, acc, gyr), clients))
            burst_s = time.perf_counter() - started
            answered = sum((c.answered for c in clients), Counter())
            for client in clients:
                client.close()
            burst_peak_mib = status_mib(on.pid, "VmHWM")
            scrape = httpx.get(on_url + "/metrics").text
        finally:
            stop_server(off)
            stop_server(on)

    budget_mib = settings.memory_budget_bytes / MiB
    admitted_at_once = int(settings.memory_budget_bytes // (pair_bytes * settings.memory_per_uploaded_byte))
    on_s, off_s = statistics.median(timings["on"]), statistics.median(timings["off"])
    admission = {line.split()[0]: float(line.split()[1]) for line in scrape.splitlines()
                 if line.startswith("har_admission_") and not line.startswith("har_admission_wait_seconds_bucket")}
    result = {
        "model": {"source": str(args.model or ("models/model.onnx" if (ROOT / "models" / "model.onnx").exists()
                                              else "tests tiny ONNX model"))},
        "recording": acc.name.removesuffix("-accelerometer_data.xlsx"),
        "upload_bytes": pair_bytes,
        "cost": {
            "concurrent_uploads": args.probe,
            "outcomes": dict(probe),
            "base_rss_mib": round(base_mib, 1),
            "peak_rss_mib": round(probe_peak_mib, 1),
            "peak_growth_per_upload_mib": round(per_upload_mib, 1),
            "memory_per_uploaded_byte": round(per_upload_mib * MiB / pair_bytes, 2),
            "configured_memory_per_uploaded_byte": settings.memory_per_uploaded_byte,
        },
        "single_upload": {
            "runs": args.runs,
            "budget_on_median_s": round(on_s, 3),
            "budget_off_median_s": round(off_s, 3),
            "on_over_off": round(on_s / off_s, 3),
            "budget_on_s": [round(t, 3) for t in timings["on"]],  # every run: the spread is the noise
            "budget_off_s": [round(t, 3) for t in timings["off"]],
            "service_cpu_seconds_median": round(statistics.median(cpu), 3),
        },
        "burst": {
            "clients": args.clients,
            "memory_budget_mib": round(budget_mib),
            "uploads_admitted_at_once": admitted_at_once,
            "max_waiting": settings.max_waiting_uploads,
            "wait_timeout_s": settings.upload_wait_timeout_s,
            "attempts_by_status": {str(k): v for k, v in sorted(answered.items())},
            "server_errors": sum(v for k, v in answered.items() if k >= 500 and k != 503),
            "dropped_connections": outcomes.get("dropped", 0),
            "scored": outcomes.get("scored", 0),
            "given_up": outcomes.get("refused", 0),
            "all_scored": outcomes.get("scored", 0) == args.clients,
            "seconds": round(burst_s, 1),
            "base_rss_mib": round(on_base_mib, 1),
            "peak_rss_mib": round(burst_peak_mib, 1),
            "budget_plus_base_mib": round(budget_mib + on_base_mib, 1),
            "peak_within_budget_plus_base": burst_peak_mib <= budget_mib + on_base_mib,
            # the budget's churn (uploads ending and starting in reused, fragmented memory) costs more than a probe
            "memory_per_uploaded_byte_in_burst": round((burst_peak_mib - on_base_mib) * MiB / (admitted_at_once * pair_bytes), 2),
            "metrics": {k: v for k, v in admission.items() if "_created" not in k},
        },
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    report(result, "uploads")


if __name__ == "__main__":
    main()
