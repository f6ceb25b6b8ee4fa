"""Benchmark: batch scoring (`python -m serve.batch`), in one process and on a Dask LocalCluster.

    python bench/batch.py [--runs 3] [--model models/model.onnx] [--recordings 40] [--minutes 60]
                          [--memory-recordings 2000] [--memory-minutes 2] [--workers 2]

One recording, in this process (`--workers 0`, one onnxruntime thread): `serve.batch.run` end to end
(read, fuse, window, score, write the outputs) on the real one-hour Garmin pair, and on the same
recording as a fused table (what `stages.fuse` leaves in data/fused/garmin); the model alone on its
windows.

A study, in the same run: `--recordings` fused tables of `--minutes` each, made of the WISDM test
windows (data/windows/test.npz) laid end to end, so every window is worn and scored. Measured on it:
- recordings per second in this process and on a LocalCluster of `--workers` single-threaded worker
  processes (cluster start-up timed apart), and whether every recording.json is byte for byte the same;
- Dask's own cost per task: an empty task (it returns at once) through the same `run` on the same
  cluster, per recording, against the in-process scoring time of a recording;
- worker memory over `--memory-recordings` recordings of `--memory-minutes` (symlinks to 20 tables
  under other names, so every one is scored and written): each worker's resident memory after each
  task, the median of its first tenth after warm-up against the median of its last tenth.
Wall times are medians of `--runs` rounds (in-process, cluster, empty task in turn); CPU times (this
process, which holds the client and the LocalCluster's scheduler, plus every worker) are given beside
them because the machine is shared and wall-clock ratios move with the other load.
Writes metrics/bench_batch.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from timing import median_seconds, report  # noqa: E402

from har.config import load_params, resolve_raw  # noqa: E402
from har.fusion import CHANNELS  # noqa: E402
from har.garmin import find_garmin_pairs, read_garmin_pair  # noqa: E402
from har.runtime import ModelRuntime  # noqa: E402
from har.preprocessing import Preprocessing  # noqa: E402
from har.scoring import FusedTable, prepare  # noqa: E402
from har.wear import WearRule  # noqa: E402
from serve.batch import run  # noqa: E402
from serve.batch.engine import open_client, run_tasks  # noqa: E402
from serve.batch.jobs import find_jobs  # noqa: E402
from serve.batch.task import ModelSpec, Outcome, score_recording, worker_state  # noqa: E402

WARM_UP = 0.1  # share of each worker's tasks before its memory is taken as the baseline


def empty_task(job, spec, input_folder, output_folder) -> Outcome:
    """What `score_recording` returns, without the work: the engine's own cost per task."""
    return Outcome(job.key, "scored", worker=worker_state(), entry={
        "recording": job.name, "windows": 0, "covered_minutes": 0.0, "most_minutes": None, "seconds": 0.0})


def study_tables(folder: Path, windows: np.ndarray, recordings: int, minutes: float, target_hz: float) -> None:
    """`recordings` fused tables (study-0000.parquet ...) of real worn motion: every other WISDM test window
    (they overlap by half), from a different starting window each, with an index.csv of start times."""
    per_table = int(minutes * 60 * target_hz) // windows.shape[1]
    rows = []
    for number in range(recordings):
        picks = (number * 97 + 2 * np.arange(per_table)) % len(windows)
        samples = windows[picks].reshape(-1, windows.shape[2])
        table = pd.DataFrame({"t": np.arange(len(samples)) / target_hz,
                              **{c: samples[:, i] for i, c in enumerate(CHANNELS)}})
        name = f"study-{number:04d}"
        table.to_parquet(folder / f"{name}.parquet")
        rows.append({"recording": name, "file": f"{name}.parquet", "start_time": "2025-03-24T08:00:00"})
    pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)


def linked_study(source: Path, folder: Path, recordings: int) -> None:
    """`recordings` names for the tables in `source` (symlinks, round robin): a big study without the disk."""
    tables = sorted(source.glob("*.parquet"))
    for number in range(recordings):
        (folder / f"linked-{number:05d}.parquet").symlink_to(tables[number % len(tables)])


def timed_run(folder: Path, output: Path, spec: ModelSpec, **options) -> tuple[dict, float]:
    started = time.perf_counter()
    summary = run(folder, output, spec, progress=io.StringIO(), **options)
    return summary, time.perf_counter() - started


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (on a worker: of that worker)."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def measured(fn, client) -> dict:
    """Wall time of `fn()` and the CPU time it took: this process (the client, and the LocalCluster's
    scheduler, which runs in it) plus every worker. CPU time is what a busy shared machine hardly changes."""
    cpu_before = cpu_seconds() + (sum(client.run(cpu_seconds).values()) if client else 0.0)
    summary, wall = fn()
    cpu_after = cpu_seconds() + (sum(client.run(cpu_seconds).values()) if client else 0.0)
    return {"summary": summary, "wall_s": wall, "cpu_s": cpu_after - cpu_before}


def memory_series(folder: Path, output: Path, spec: ModelSpec, client) -> dict:
    """Each worker's resident memory after each of its tasks, over every recording in `folder`."""
    jobs, _ = find_jobs(folder)
    series: dict[int, list[float]] = {}
    started = time.perf_counter()
    context = {"spec": spec, "input_folder": folder, "output_folder": output}
    for _, outcome in run_tasks(score_recording, jobs, context, client=client):
        assert outcome.status == "scored", outcome
        series.setdefault(outcome.worker.pid, []).append(outcome.worker.rss_mib)
    seconds = time.perf_counter() - started
    workers = []
    for rss in series.values():
        skip = max(1, int(len(rss) * WARM_UP))
        tenth = max(1, len(rss) // 10)
        baseline, last = statistics.median(rss[skip:skip + tenth]), statistics.median(rss[-tenth:])
        workers.append({"tasks": len(rss), "rss_mib_first_task": rss[0], "rss_mib_after_warm_up": baseline,
                        "rss_mib_last_tenth": last, "rss_mib_max": max(rss),
                        "growth_after_warm_up": round(last / baseline - 1, 4)})
    return {"recordings": len(jobs), "seconds": round(seconds, 1),
            "recordings_per_second": round(len(jobs) / seconds, 2), "workers": workers,
            "max_growth_after_warm_up": max(w["growth_after_warm_up"] for w in workers)}


def same_answers(first: Path, second: Path, names: list[str]) -> int:
    """How many recordings' recording.json differ in a byte between the two output folders."""
    return sum((first / n / "recording.json").read_bytes() != (second / n / "recording.json").read_bytes() for n in names)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="models/model.onnx", help="relative to the project root")
    parser.add_argument("--recordings", type=int, default=40, help="fused tables in the study folder")
    parser.add_argument("--memory-recordings", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of each study recording (the real "
                                                                    "Garmin export is an hour)")
    parser.add_argument("--memory-minutes", type=float, default=2.0, help="length of the memory run's recordings")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model_path = ROOT / args.model
    runtime = ModelRuntime(model_path, threads=1)
    wear_rule = WearRule.from_params(params.get("wear"))
    spec = ModelSpec(path=str(model_path), sha256=runtime.card.sha256, name=runtime.card.name,
                     version=runtime.card.version, wear_rule=wear_rule)
    preprocessing = Preprocessing.from_card(runtime.card)
    acc, gyr = find_garmin_pairs(resolve_raw(ROOT / params["paths"]["garmin"]))[0][0]  # the first pair

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        raw, fused, study, short, linked = (tmp / name for name in ("raw", "fused", "study", "short", "linked"))
        for folder in (raw, fused, study, short, linked):
            folder.mkdir()
        (raw / acc.name).symlink_to(acc)
        (raw / gyr.name).symlink_to(gyr)
        # The fused table as stages.fuse writes it (the same reader and fusion the service uses).
        recording = read_garmin_pair(acc, gyr)
        table, quality = preprocessing.fuse(recording)
        table.to_parquet(fused / f"{recording.recording_id}.parquet")
        pd.DataFrame([{"recording": recording.recording_id, "file": f"{recording.recording_id}.parquet",
                       "start_time": recording.start_time}]).to_csv(fused / "index.csv", index=False)
        prepared = prepare(FusedTable(table, recording.recording_id, recording.start_time, quality), preprocessing,
                           wear_rule)
        # One recording, in this process; a fresh output folder each run (a recording already done is skipped).
        outputs = iter([tmp / f"out-{n}" for n in range(2 * args.runs)])
        from_raw = median_seconds(lambda: timed_run(raw, next(outputs), spec), args.runs)
        from_fused = median_seconds(lambda: timed_run(fused, next(outputs), spec), args.runs)
        last = tmp / f"out-{2 * args.runs - 1}"
        model_only = median_seconds(lambda: runtime.predict(prepared.windows), args.runs)
        answer = json.loads(next(last.glob("*/recording.json")).read_text())
        sizes = {"raw_pair_mb": round((acc.stat().st_size + gyr.stat().st_size) / 1e6, 2),
                 "fused_table_mb": round(sum(f.stat().st_size for f in fused.glob("*.parquet")) / 1e6, 2),
                 "outputs_mb": round(sum(f.stat().st_size for f in last.rglob("*") if f.is_file()) / 1e6, 2)}

        # A study: in this process, then on the cluster, then the empty task, then memory over many recordings.
        windows = np.load(ROOT / "data" / "windows" / "test.npz")["X"]
        study_tables(study, windows, args.recordings, args.minutes, preprocessing.target_hz)
        study_tables(short, windows, 20, args.memory_minutes, preprocessing.target_hz)
        linked_study(short, linked, args.memory_recordings)
        warm = tmp / "warm"  # a few recordings first: the model loaded and every code path run once
        warm.mkdir()
        linked_study(study, warm, 4 * args.workers)
        timed_run(warm, tmp / "warm-in-process", spec)
        started = time.perf_counter()
        client, cluster = open_client(args.workers, None)
        client.run(lambda: None)  # every worker up and answering
        cluster_start_s = time.perf_counter() - started
        try:
            timed_run(warm, tmp / "warm-dask", spec, client=client)
            # In turn, `--runs` times, so that the machine's other load falls alike on all three.
            rounds = []
            for number in range(args.runs):
                rounds.append({
                    "in_process": measured(lambda: timed_run(study, tmp / f"in-process-{number}", spec), None),
                    "dask": measured(lambda: timed_run(study, tmp / f"dask-{number}", spec, client=client), client),
                    "empty": measured(lambda: timed_run(study, tmp / f"empty-{number}", spec, client=client,
                                                        task=empty_task), client)})
            memory = memory_series(linked, tmp / "linked-out", spec, client)
        finally:
            client.close()
            cluster.close()
        in_process = rounds[0]["in_process"]["summary"]
        names = [entry["recording"] for entry in in_process["scored"]]
        assert len(names) == args.recordings and not in_process["failed"], in_process["failed"]
        differing = sum(same_answers(tmp / "in-process-0", tmp / f"dask-{n}", names) for n in range(args.runs))
        windows_scored = in_process["scored"][0]["windows"]

    def median(kind: str, what: str) -> float:
        return statistics.median(r[kind][what] for r in rounds) / args.recordings

    per_recording_s, on_dask_s, empty_s = (median(k, "wall_s") for k in ("in_process", "dask", "empty"))
    per_recording_cpu, on_dask_cpu, empty_cpu = (median(k, "cpu_s") for k in ("in_process", "dask", "empty"))
    result = {
        "runs": args.runs,
        "model": {"source": args.model, "version": runtime.card.version, "labels": len(runtime.card.labels)},
        "recording": {"id": recording.recording_id, "minutes": answer["covered_minutes"],
                      "windows": answer["windows"], **sizes},
        "onnxruntime_threads": 1,
        "raw_pair_median_s": round(from_raw, 3),
        "fused_table_median_s": round(from_fused, 3),
        "model_only_median_s": round(model_only, 3),
        "raw_over_fused": round(from_raw / from_fused, 2),
        "model_share_of_raw": round(model_only / from_raw, 3),
        "raw_recordings_per_core_hour": round(3600 / from_raw),
        "fused_recordings_per_core_hour": round(3600 / from_fused),
        "study": {"recordings": args.recordings, "minutes_each": args.minutes, "windows_each": windows_scored,
                  "source": "data/windows/test.npz, every other window end to end"},
        "memory_run": {"recordings": args.memory_recordings, "minutes_each": args.memory_minutes,
                       "distinct_tables": 20},
        "study_runs": args.runs,
        "in_process_recordings_per_s": round(1 / per_recording_s, 2),
        "in_process_s_per_recording": round(per_recording_s, 4),
        "in_process_cpu_s_per_recording": round(per_recording_cpu, 4),
        "dask_workers": args.workers,
        "dask_cluster_start_s": round(cluster_start_s, 2),
        "dask_recordings_per_s": round(1 / on_dask_s, 2),
        "dask_over_in_process": round(per_recording_s / on_dask_s, 2),
        "dask_target_speedup": 1.7,
        "dask_cpu_s_per_recording": round(on_dask_cpu, 4),
        "answers_differing_from_in_process": differing,
        "empty_task_s_per_recording": round(empty_s, 5),
        "empty_task_share_of_scoring": round(empty_s / per_recording_s, 4),
        "empty_task_cpu_s_per_recording": round(empty_cpu, 5),
        "empty_task_cpu_share_of_scoring": round(empty_cpu / per_recording_cpu, 4),
        "empty_task_target_share": 0.05,
        "memory": memory,
        "memory_target_growth": 0.10,
        "client_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    report(result, "batch")


if __name__ == "__main__":
    main()
