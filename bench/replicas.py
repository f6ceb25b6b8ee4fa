"""Benchmark: one replica of the service against two behind HAProxy, in one run, and what a SIGKILL costs.

    python bench/replicas.py [--seconds 8] [--clients 16] [--uploads 8] [--upload-clients 4] [--rounds 2]
                             [--kill-burst 12] [--model models/model.onnx]

Starts PostgreSQL (the store, as tests/store_db.py does), two replicas (`python -m serve --replicated
--drain-s 3`, one model, one store) and two HAProxies with the shipped ops/haproxy/haproxy.cfg, all on
127.0.0.1: one balancer in front of replica A alone, one in front of A and B. Then, alternating between the
configurations in `--rounds` rounds so that other load on the machine hits them alike:

1. single-window POST /predict from `--clients` keep-alive clients (bench/serve.py's minimal client on
   uvloop) for `--seconds` per configuration: to A directly (the balancer's own cost), to A through its
   balancer, to A and B through theirs. Requests/s, p50, p99.
2. the real one-hour Garmin pair to POST /recordings from `--upload-clients` clients (serve/client.py, with
   its retries), `--uploads` per round: uploads/s through one balancer and the other; the CPU seconds each
   upload cost replica A, HAProxy and this client. On a machine with few cores the ratio two/one is bounded
   by the cores: one upload keeps about one core busy (Python under the GIL), and the client and HAProxy
   want their share too.
3. `--kill-burst` ingests of that pair (one subject each) through the two-replica balancer from 6 clients
   with retries, once as they are and once with A SIGKILLed while it has requests in flight: the
   retries it cost, the burst's seconds against the undisturbed one, and whether the store holds each
   recording exactly once.

Without --model, models/model.onnx when the pipeline has made one, else the tests' tiny ONNX model.
Writes metrics/bench_replicas.json (with the machine's cores and load average: run it on a quiet machine).
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
sys.path.insert(1, str(ROOT / "tests"))  # the tests' helpers that run replicas, HAProxy and PostgreSQL

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from bench.serve import TOKEN, phase, predict_request, run_async, summarize, test_windows  # noqa: E402
from bench.timing import report  # noqa: E402
from har.config import load_params, resolve_raw  # noqa: E402
from har.garmin import find_garmin_pairs  # noqa: E402
from har.runtime import ModelRuntime  # noqa: E402
from replica_helpers import Balancer, Replica, replica_args  # noqa: E402
from serve.client import HarClient  # noqa: E402
from serve_helpers import cpu_seconds, write_tiny_model  # noqa: E402
from store_db import new_postgres_database, throwaway_postgres  # noqa: E402

CONFIGS = ("one_replica", "two_replicas")


def predictions(ports: dict[str, int], windows: np.ndarray, *, clients: int, seconds: float, rounds: int) -> dict:
    """Single-window /predict per configuration: keep-alive clients, `rounds` alternating rounds."""
    requests = {name: [[predict_request(port, windows[(c * 8 + k) % len(windows)][None]) for k in range(8)]
                       for c in range(clients)] for name, port in ports.items()}
    runs = {name: {"latencies": [], "statuses": [], "elapsed": 0.0, "rates": []} for name in ports}
    for name, port in ports.items():  # warm-up, discarded
        run_async(phase(port, requests[name], 0.5))
    for _ in range(rounds):
        for name, port in ports.items():
            latencies, statuses, elapsed = run_async(phase(port, requests[name], seconds / rounds))
            runs[name]["latencies"] += latencies
            runs[name]["statuses"] += statuses
            runs[name]["elapsed"] += elapsed
            runs[name]["rates"].append(round(len(statuses) / elapsed, 1))
    result = {}
    for name, run in runs.items():
        result[name] = {**summarize(run["latencies"], run["statuses"], run["elapsed"]),
                        "rounds_requests_per_s": run["rates"],
                        "requests_per_s_median": statistics.median(run["rates"])}
    return result


def upload_round(url: str, pair: tuple[Path, Path], uploads: int, clients: int) -> tuple[float, Counter]:
    """`uploads` uploads of the pair from `clients` clients at once; (seconds, statuses of every attempt)."""
    senders = [HarClient(url, token=TOKEN, timeout=300) for _ in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: senders[i % clients].recording(*pair), range(uploads)))
    elapsed = time.perf_counter() - started
    answered = sum((s.answered for s in senders), Counter())
    for sender in senders:
        sender.close()
    return elapsed, answered


def uploads(urls: dict[str, str], pair, *, per_round: int, clients: int, rounds: int, replica_a, balancer_one) -> dict:
    result = {name: {"rounds_uploads_per_s": [], "attempts_by_status": Counter()} for name in urls}
    cpu = {"replica": 0.0, "balancer": 0.0, "client": 0.0, "uploads": 0}
    for name, url in urls.items():  # warm-up: first-use imports and allocations on every replica
        upload_round(url, pair, clients, clients)
    for _ in range(rounds):
        for name, url in urls.items():
            before = (cpu_seconds(replica_a.process.pid), cpu_seconds(balancer_one.process.pid), time.process_time())
            elapsed, answered = upload_round(url, pair, per_round, clients)
            if name == "one_replica":  # all of it on A: what one upload costs each party
                cpu["replica"] += cpu_seconds(replica_a.process.pid) - before[0]
                cpu["balancer"] += cpu_seconds(balancer_one.process.pid) - before[1]
                cpu["client"] += time.process_time() - before[2]
                cpu["uploads"] += per_round
            result[name]["rounds_uploads_per_s"].append(round(per_round / elapsed, 3))
            result[name]["attempts_by_status"] += answered
    for name in urls:
        result[name]["uploads_per_s_median"] = statistics.median(result[name]["rounds_uploads_per_s"])
        result[name]["attempts_by_status"] = {str(k): v for k, v in sorted(result[name]["attempts_by_status"].items())}
    per_upload = {party: round(cpu[party] / cpu["uploads"], 3) for party in ("replica", "balancer", "client")}
    result["cpu_s_per_upload"] = per_upload
    # cores one replica keeps busy at its measured rate: near 1, a second replica can only use what is left
    result["one_replica_cores_busy"] = round(per_upload["replica"] * result["one_replica"]["uploads_per_s_median"], 2)
    result["two_over_one"] = round(result["two_replicas"]["uploads_per_s_median"]
                                   / result["one_replica"]["uploads_per_s_median"], 2)
    return result


def ingest_burst(url: str, pair, subjects: list[str], *, kill=None, balancer=None) -> dict:
    """Each subject's ingest of the pair from 6 clients with retries; `kill()` once two answers are in and
    replica "a" has two requests in flight (HAProxy's stats say so: one of them cannot end just then)."""
    clients, answered_at_kill, done = [], None, []

    def ingest(subject):
        with HarClient(url, token=TOKEN, retries=8, max_retry_wait_s=8, timeout=300) as client:
            clients.append(client)
            started = time.perf_counter()
            client.ingest(subject, *pair)
            done.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(ingest, subject) for subject in subjects]
        if kill is not None:
            while not (len(done) >= 2 and int(balancer.servers()["a"]["scur"]) >= 2):
                if all(f.done() for f in futures):
                    raise RuntimeError("the burst ended before replica A had a request in flight: use more --kill-burst")
                time.sleep(0.005)
            answered_at_kill = len(done)
            kill()
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - started
    answered = sum((c.answered for c in clients), Counter())
    dropped = sum((c.dropped for c in clients), Counter())
    return {"seconds": round(elapsed, 2), "slowest_ingest_s": round(max(done), 2),
            "attempts_by_status": {str(k): v for k, v in sorted(answered.items())}, "dropped": dict(dropped),
            "retried_attempts": sum(answered[s] for s in (502, 503, 504)) + sum(dropped.values()),
            **({"answered_before_kill": answered_at_kill} if kill else {})}


def stored_once(store_url: str, blobs: Path, subjects: list[str]) -> bool:
    from store import Store

    store = Store.open(store_url, blob_root=blobs)
    try:
        return all(len(store.recordings(subject)) == 1 for subject in subjects)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured /predict seconds per configuration")
    parser.add_argument("--clients", type=int, default=16, help="keep-alive /predict clients")
    parser.add_argument("--uploads", type=int, default=8, help="one-hour uploads per round and configuration")
    parser.add_argument("--upload-clients", type=int, default=4, help="uploads at once")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each measurement")
    parser.add_argument("--kill-burst", type=int, default=12, help="ingests in the burst a replica is killed in")
    parser.add_argument("--model", help="ONNX model (default: models/model.onnx if present, else the tiny one)")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    pair = find_garmin_pairs(resolve_raw(ROOT / params["paths"]["garmin"]))[0][0]  # the one-hour pair
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, throwaway_postgres() as socket_folder:
        folder = Path(tmp)
        model = Path(args.model) if args.model else ROOT / "models" / "model.onnx"
        if not model.exists() and args.model is None:
            model = write_tiny_model(folder / "model.onnx")
        params["store"]["blob_root"] = str(folder / "blobs")
        params["serve"]["personal"] = {"models_dir": str(folder / "personal")}
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        store_url = new_postgres_database(socket_folder)
        started = []  # replicas and balancers, stopped in reverse
        try:
            for name in ("a", "b"):
                started.append(Replica(name, folder, model, replica_args(folder / "params.yaml", store_url),
                                       token=TOKEN))
            a, b = started
            for name, behind in (("one", {"a": a.port}), ("two", {"a": a.port, "b": b.port})):
                (folder / name).mkdir()
                started.append(Balancer(folder / name, behind))
            alone, both = started[2:]
            for balancer, names in ((alone, ["a"]), (both, ["a", "b"])):
                for name in names:
                    balancer.wait_until(name, "UP")

            card = ModelRuntime(model).card
            windows = test_windows(512, card.window_length)
            predict = predictions({"direct_one_replica": a.port, "one_replica": alone.port, "two_replicas": both.port},
                                  windows, clients=args.clients, seconds=args.seconds, rounds=args.rounds)
            predict["two_over_one"] = round(predict["two_replicas"]["requests_per_s_median"]
                                            / predict["one_replica"]["requests_per_s_median"], 2)
            predict["balancer_over_direct"] = round(predict["one_replica"]["requests_per_s_median"]
                                                    / predict["direct_one_replica"]["requests_per_s_median"], 2)

            upload = uploads({"one_replica": alone.url, "two_replicas": both.url}, pair, per_round=args.uploads,
                             clients=args.upload_clients, rounds=args.rounds, replica_a=a, balancer_one=alone)

            calm_subjects = [f"calm{i:03d}" for i in range(args.kill_burst)]
            killed_subjects = [f"kill{i:03d}" for i in range(args.kill_burst)]
            calm = ingest_burst(both.url, pair, calm_subjects)
            killed = ingest_burst(both.url, pair, killed_subjects, kill=a.kill, balancer=both)
            sigkill = {"ingests": args.kill_burst, "clients": 6, "without_kill": calm, "with_kill": killed,
                       "cost_s": round(killed["seconds"] - calm["seconds"], 2),
                       "cost_retries": killed["retried_attempts"] - calm["retried_attempts"],
                       "stored_exactly_once": stored_once(store_url, folder / "blobs", calm_subjects + killed_subjects)}
        finally:
            for process in reversed(started):
                process.close()

    result = {
        "model": {"source": str(args.model or ("models/model.onnx" if (ROOT / "models" / "model.onnx").exists()
                                              else "tests tiny ONNX model"))},
        "cpu_count": os.cpu_count(),
        "recording": pair[0].name.removesuffix("-accelerometer_data.xlsx"),
        "upload_bytes": pair[0].stat().st_size + pair[1].stat().st_size,
        "predict_single_window": {"clients": args.clients, "seconds": args.seconds, "rounds": args.rounds, **predict},
        "uploads": {"clients": args.upload_clients, "per_round": args.uploads, "rounds": args.rounds, **upload},
        "sigkill": sigkill,
        "load_average_1min_at_start": round(load_at_start, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    report(result, "replicas")


if __name__ == "__main__":
    main()
