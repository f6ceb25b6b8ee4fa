"""How many watches streaming at 50 Hz one `python -m serve` process holds (docs/streaming.md).

    python bench/stream.py --watches 50 100 200 300 --seconds 120 --model models/model.onnx
    python bench/stream.py --watches 50 --seconds 1800 --model models/model.onnx \
        --out metrics/bench_stream_soak.json     # the 30-minute soak, at the level one process holds

Each simulated watch streams a study-like signal (a Garmin-format pair made by har.study from the WISDM data,
repeated) in real time: one accelerometer and one gyroscope batch per 250 ms, 50 Hz, the gyroscope 30 ms behind,
over its own WebSocket (the asyncio client of `websockets`). The service runs pinned to 2 cores (taskset) with
its own journal and store in a temporary folder. Per level: the delay from a window's last sample to its
provisional label and to its final label (p50, p95 of each), the service's CPU seconds per watch-second, memory per
open stream (resident growth over the idle service, the baseline measured in the same run) and, over the run, the
resident memory's slope (flat or growing). Writes metrics/bench_stream.json (or --out) with os.getloadavg() beside
the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from har.config import load_params  # noqa: E402
from serve_helpers import TOKEN, cpu_seconds, start_server, status_mib, stop_server, write_tiny_model  # noqa: E402

WINDOW_S, HZ, BATCH_MS = 4.0, 50, 250


def watch_signal(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A wrist in motion at 50 Hz: accelerometer (milli-g, gravity on z) and gyroscope (deg/s)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * HZ)) / HZ
    acc = np.column_stack([200 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t), 150 * np.cos(2 * np.pi * 1.3 * t),
                           1000 + 80 * np.sin(2 * np.pi * 0.7 * t)]) + rng.normal(0, 20, (len(t), 3))
    gyr = np.column_stack([40 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + k) for k in range(3)]) + \
        rng.normal(0, 5, (len(t), 3))
    return acc, gyr


async def watch(url: str, subject: str, seconds: float, seed: int, delays: dict, failures: list) -> None:
    import msgspec
    from websockets.asyncio.client import connect

    acc, gyr = watch_signal(seconds, seed)
    per_batch = HZ * BATCH_MS // 1000
    start_ms = int(time.time() * 1000)
    async with connect(url.replace("http://", "ws://") + f"/subjects/{subject}/stream",
                       additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=2 ** 22) as socket:
        await socket.send(msgspec.json.encode({"type": "hello", "stream": "bench"}).decode())
        json.loads(await socket.recv())
        started = time.monotonic()

        async def receive():
            async for frame in socket:
                message = json.loads(frame)
                if message["type"] in delays:  # the window's last sample was recorded at start + its end
                    last_sample = started + message["start_s"] + WINDOW_S - 1.0 / HZ
                    delays[message["type"]].append(time.monotonic() - last_sample)
                elif message["type"] == "closed":
                    return

        receiver = asyncio.create_task(receive())
        receiver.add_done_callback(lambda task: task.cancelled() or task.exception())  # read: no "never retrieved"
        seq = 0
        for b in range(len(acc) // per_batch):
            at = started + (b + 1) * BATCH_MS / 1000  # a batch leaves once its 250 ms are recorded
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            for sensor, values, unit, phase in (("accelerometer", acc, "milli-g", 0), ("gyroscope", gyr, "deg/s", 30)):
                seq += 1
                rows = values[b * per_batch:(b + 1) * per_batch]
                await socket.send(msgspec.json.encode({
                    "type": "batch", "seq": seq, "sensor": sensor, "unit": unit,
                    "time_ms": start_ms + b * BATCH_MS + phase, "offsets_ms": [i * 1000 / HZ for i in range(len(rows))],
                    "x": rows[:, 0].tolist(), "y": rows[:, 1].tolist(), "z": rows[:, 2].tolist()}).decode())
        await socket.send(json.dumps({"type": "close"}))
        try:
            await asyncio.wait_for(receiver, 120)
        except Exception as error:
            failures.append(repr(error))


def level(url: str, pid: int, watches: int, seconds: float) -> dict:
    delays, failures, memory = {"provisional": [], "label": []}, [], []
    rss_before, cpu_before = status_mib(pid, "VmRSS"), cpu_seconds(pid)

    async def run():
        async def sample():
            while True:
                memory.append((time.monotonic(), status_mib(pid, "VmRSS")))
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample())
        # A watch whose connection fails (a keepalive ping unanswered: the service, or this client, fell behind)
        # counts as a failed watch; the level goes on with the others.
        outcomes = await asyncio.gather(*(watch(url, f"B{i:04d}", seconds, i, delays, failures)
                                          for i in range(watches)), return_exceptions=True)
        failures.extend(repr(o) for o in outcomes if isinstance(o, BaseException))
        sampler.cancel()

    started = time.monotonic()
    asyncio.run(run())
    wall = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    times, rss = np.array([m[0] for m in memory]), np.array([m[1] for m in memory])
    steady = times >= times[0] + min(60.0, seconds / 3) if len(times) else times
    slope = float(np.polyfit(times[steady] - times[0], rss[steady], 1)[0] * 60) if steady.sum() > 2 else None

    def percentile(kind: str, q: float) -> float | None:
        return float(np.percentile(delays[kind], q)) if delays[kind] else None

    return {"watches": watches, "seconds": seconds, "labels": len(delays["label"]),
            "provisional_labels": len(delays["provisional"]), "failed_watches": len(failures), "failures": failures[:5],
            "provisional_delay_p50_s": percentile("provisional", 50),
            "provisional_delay_p95_s": percentile("provisional", 95),
            "final_delay_p50_s": percentile("label", 50), "final_delay_p95_s": percentile("label", 95),
            "cpu_s_per_watch_s": cpu / (watches * wall), "cpu_cores_used": cpu / wall,
            "rss_peak_mib": float(rss.max()) if len(rss) else None,
            "memory_per_stream_mib": (float(np.median(rss[steady])) - rss_before) / watches if steady.any() else None,
            "rss_slope_mib_per_min": slope}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", help="ONNX model (default: a tiny one, for a check of the script)")
    parser.add_argument("--cores", default="0,1", help="taskset cores of the service (default 0,1)")
    parser.add_argument("--out", default=str(ROOT / "metrics" / "bench_stream.json"))
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        model = Path(args.model) if args.model else write_tiny_model(folder / "model.onnx")
        params = copy.deepcopy(load_params(ROOT / "params.yaml"))
        params["store"].update({"url": f"sqlite:///{folder / 'study.db'}", "blob_root": str(folder / "blobs")})
        params["serve"]["stream"].update({"journal": str(folder / "journal.db"), "max_streams": 10000,
                                          "silent_s": 60})
        import yaml

        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        process, url = start_server(model, folder / "server.log", "--params", str(folder / "params.yaml"),
                                    "--no-access-log")
        if shutil.which("taskset"):
            os.system(f"taskset -a -p -c {args.cores} {process.pid} >/dev/null")
        try:
            time.sleep(2)
            idle = {"rss_mib": status_mib(process.pid, "VmRSS")}
            levels = [level(url, process.pid, n, args.seconds) for n in args.watches]
        finally:
            stop_server(process)
        result = {"command": " ".join(sys.argv), "model": str(args.model or "tiny"), "cores": args.cores,
                  "loadavg": os.getloadavg(), "baseline_idle_service": idle, "levels": levels,
                  "target": "p95 delay (of the provisional label) <= 1 s at >= 200 watches, flat memory over 30 minutes"}
        Path(args.out).parent.mkdir(exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
