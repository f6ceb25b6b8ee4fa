"""Benchmark: the study store on SQLite and on PostgreSQL, side by side, in one run.

    python bench/store.py [--days 365] [--participants 100] [--participant-days 30] [--hours-per-day 8]
                          [--fused FUSED.parquet] [--study DIR --model MODEL] [--out metrics/bench_store.json]

Days and hours are kept at ingest (store/summaries.py); the baseline, measured in the same run on the same
rows, is the whole-history computation they replaced (tests/store_reference.py: every episode of the
person read and resolved at each request, as main 0c795e0 did before its process cache).

- blob formats (once): the fused table of --fused (one hour of a real recording; without it one hour of
  noise at 50 Hz, which nothing compresses) in each candidate format: encoding and hashing, writing with
  fsync, reading back, size. The store writes BLOB_PARQUET.
- for each database (an SQLite file with WAL; a throwaway PostgreSQL server from Debian's package, started
  as the tests start it, on a unix socket):
  - store one scored hour: `Store.ingest` of one hour's answer (har.timeline.summarize's timeline of 1,800
    windows, episodes of about a minute) with the fused hour, p50 over --runs; the same with a one-row
    fused table (the database's share: rows and summaries), and the blob write alone;
  - days over --days days (a recording of 16 h a day): in fresh processes (`--cold-runs` of them), the
    first `Store.days` after `Store.open` (no cache exists), with the open and the first `Store.hours` beside
    it; from a fresh server (`python -m serve --store URL`): its first study request (a 404: the server
    imports and opens the store on first use), then the first GET /subjects/{subject}/days and the p50 of
    the next --requests; `Store.days` in process; the baseline's days;
  - collate --participants x --participant-days (a recording of --hours-per-day hours a day each):
    serve.collate's tables written as CSV and Parquet, in process; its peak memory (`python -m serve.collate`
    in a child process, max RSS) with half the participants stored and with all of them; the baseline's
    days and hours of every participant;
  - store size per recorded hour without the fused blobs (the database's size over the recorded hours of
    the collate study, the empty schema's size subtracted): rows, episodes, minutes bases and summaries;
  - the days' minutes against the per-recording answers added up (no overlaps: equal to rounding).
- With --study (a folder `python -m stages.sessions generate OUT --fused` wrote, and --model), the
  generated study with known truth: every session scored by `python -m serve.batch`, stored under its
  participant, the store's days against the per-session answers added up (exact to rounding) and against
  the truth's days (days.csv): the error in minutes per activity and of non-wear.
Answers are synthetic but made by har.timeline.summarize from probabilities with runs; no model is run (the
targets exclude scoring). The load average is written at the start and at the end: figures from a busy
machine are upper bounds.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import store_reference as reference  # noqa: E402
from har.config import write_json  # noqa: E402
from har.minutes import minutes_figures, sums, window_shares  # noqa: E402
from har.timeline import summarize  # noqa: E402
from serve.collate import write_tables  # noqa: E402
from store import BLOB_PARQUET, Store  # noqa: E402
from store.collate import study_tables  # noqa: E402

ACTIVITIES = ["sitting", "standing", "typing", "writing", "brushing_teeth", "eating_soup", "eating_chips",
              "eating_pasta", "eating_sandwich", "drinking", "clapping", "folding_clothes"]
MODEL = {"name": "har", "version": "bench", "sha256": "b" * 64, "subject": None, "personal": False}
WINDOW_S, STEP_S, HOUR_WINDOWS = 4.0, 2.0, 1800
BASIS_SWITCH_PROBABILITY = 0.01  # the minutes estimator's (metrics/eval.json -> minutes.switch_probability)
TARGETS = {"store_hour_p50_ms": 25.0, "days_cold_process_ms": 200.0, "collate_s": 6.0, "kb_per_hour": 100.0}


def hour_summary(rng: np.random.Generator, start_time: str) -> dict:
    """One hour's timeline: activities in runs of about 30 windows (a minute), some not worn or uncertain; with
    the worn windows' minutes basis as har/answer.py makes it (the rest of each window's mass spread at random;
    the shares are the HMM posteriors at the switch probability the estimator uses, in 4 decimals)."""
    run_lengths = rng.geometric(1 / 30, HOUR_WINDOWS)
    runs = len(run_lengths)
    labels = np.repeat(rng.integers(0, len(ACTIVITIES), runs), run_lengths)[:HOUR_WINDOWS]
    worn = np.repeat(rng.random(runs) > 0.05, run_lengths)[:HOUR_WINDOWS]
    # a run's windows are about equally confident; one run in ten falls below the threshold (uncertain)
    confidence = np.repeat(np.where(rng.random(runs) < 0.1, 0.45, 0.9), run_lengths)[:HOUR_WINDOWS]
    confidence = confidence + rng.uniform(-0.02, 0.02, HOUR_WINDOWS)
    probabilities = rng.dirichlet(np.ones(len(ACTIVITIES)), HOUR_WINDOWS) * (1 - confidence)[:, None]
    probabilities[np.arange(HOUR_WINDOWS), labels] += confidence
    summary = summarize(np.arange(HOUR_WINDOWS) * STEP_S, worn, probabilities[worn], ACTIVITIES, window_s=WINDOW_S,
                        threshold=0.5, start_time=start_time)
    start = (np.arange(HOUR_WINDOWS) * STEP_S)[worn]
    shares = window_shares(probabilities[worn], start, STEP_S, BASIS_SWITCH_PROBABILITY)
    summary["minutes_basis"] = {"start_s": start.tolist(), "end_s": (start + STEP_S).tolist(),
                                "shares": shares.tolist(), "interval_scale": 20.0}
    return summary


def shifted(summary: dict, seconds: float) -> tuple[list, list]:
    """The hour moved by `seconds`; its last window's tail beyond the hour is cut, so that hours chain without overlap."""
    timeline = [{**w, "start_s": round(w["start_s"] + seconds, 3)} for w in summary["timeline"]]
    episodes = [{**e, "start_s": e["start_s"] + seconds, "end_s": min(e["end_s"], 3600.0) + seconds}
                for e in summary["episodes"]]
    basis = summary["minutes_basis"]
    shifted_basis = {"start_s": [t + seconds for t in basis["start_s"]], "end_s": [t + seconds for t in basis["end_s"]],
                     "shares": basis["shares"]}
    return timeline, episodes, shifted_basis


def answer(pool: list[dict], start_time: str, hours: int, rng: np.random.Generator) -> dict:
    """An answer of `hours` hours, made of hours from `pool` one after another."""
    timeline, episodes, basis = [], [], {"start_s": [], "end_s": [], "shares": [], "interval_scale": 20.0}
    for h in range(hours):
        t, e, b = shifted(pool[rng.integers(len(pool))], h * 3600.0)
        timeline += t
        episodes += e
        for key in ("start_s", "end_s", "shares"):
            basis[key] += b[key]
    seconds = {label: 0.0 for label in [*ACTIVITIES, "uncertain", "not_worn"]}
    for e in episodes:
        seconds[e["label"]] += e["end_s"] - e["start_s"]
    minutes = {label: round(s / 60, 3) for label, s in seconds.items()}
    owned = np.array(basis["end_s"]) - np.array(basis["start_s"])
    estimate_s, spread_s = sums(np.array(basis["shares"]).reshape(len(owned), len(ACTIVITIES)), owned)
    estimate, interval = minutes_figures(ACTIVITIES, estimate_s, 20.0 * spread_s, float(owned.sum()))
    return {"recording": {"id": f"r-{start_time}", "start_time": start_time, "fused_samples": hours * 180000,
                          "fused_seconds": hours * 3600.0, "segments": 1, "quality": {}},
            "model": MODEL, "windows": len(timeline), "window_s": WINDOW_S,
            "covered_minutes": round(sum(seconds.values()) / 60, 3),
            "labels": {"activities": ACTIVITIES}, "abstain_threshold": 0.5, "timeline": timeline, "episodes": episodes,
            "minutes_per_activity": estimate, "minutes_interval_90": interval,
            "counted_minutes_per_activity": {a: minutes[a] for a in ACTIVITIES}, "uncertain_minutes": minutes["uncertain"],
            "not_worn_minutes": minutes["not_worn"], "wear": {"episodes": []}, "findings": [], "minutes_basis": basis}


def fused_hour(rng: np.random.Generator, rows: int = 180000) -> pd.DataFrame:
    table = pd.DataFrame(rng.normal(size=(rows, 6)).astype(np.float32), columns=["ax", "ay", "az", "gx", "gy", "gz"])
    table.insert(0, "t", np.arange(rows) / 50.0)
    return table


def p50_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 2)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- blob formats ---------------------------------------------------------------------------------------------
BLOB_FORMATS = {
    "parquet_snappy": {"use_dictionary": False},  # main 0c795e0's blob
    "parquet_none": {"use_dictionary": False, "compression": None},
    "parquet_zstd1": {"use_dictionary": False, "compression": "zstd", "compression_level": 1},
    "parquet_zstd3": {"use_dictionary": False, "compression": "zstd", "compression_level": 3},
    "parquet_zstd1_byte_stream_split": BLOB_PARQUET,
    "arrow_ipc_raw": "uncompressed",  # the column buffers as they are in memory
    "arrow_ipc_lz4": "lz4",
}


def encode(fused: pd.DataFrame, options) -> bytes:
    buffer = io.BytesIO()
    if isinstance(options, str):
        import pyarrow.feather as feather

        feather.write_feather(fused, buffer, compression=options)
    else:
        fused.to_parquet(buffer, index=False, **options)
    return buffer.getvalue()


def blob_formats(fused: pd.DataFrame, folder: Path, runs: int) -> dict:
    """Each candidate on one fused hour: encode + sha256, write + fsync, read back (p50 ms), size."""
    import pyarrow.feather as feather

    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, options in BLOB_FORMATS.items():
        encoded, writes, reads = [], [], []
        for k in range(runs):
            start = time.perf_counter()
            data = encode(fused, options)
            hashlib.sha256(data).hexdigest()
            encoded.append(time.perf_counter() - start)
            path = folder / f"{name}-{k}"
            start = time.perf_counter()
            with open(path, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())
            writes.append(time.perf_counter() - start)
            reader = feather.read_feather if isinstance(options, str) else pd.read_parquet
            reads.append(timed(lambda: reader(path)))
            path.unlink()
        result[name] = {"encode_and_hash_p50_ms": p50_ms(encoded), "write_fsync_p50_ms": p50_ms(writes),
                        "read_p50_ms": p50_ms(reads), "mb": round(len(data) / 1e6, 2)}
    return result


# --- one hour -------------------------------------------------------------------------------------------------
def store_hour(url: str, folder: Path, pool: list[dict], runs: int, fused: pd.DataFrame) -> dict:
    store = Store.open(url, blob_root=folder / "blobs-hour")
    rng, full, database_only, blob = np.random.default_rng(1), [], [], []
    tiny = fused_hour(rng, rows=2)
    for i in range(runs):
        base = answer(pool, f"2025-01-{1 + i % 28:02d}T{8 + i // 28:02d}:00:00", 1, rng)
        distinct = fused.assign(t=fused["t"] + i * 1e-3)  # new bytes: content-addressed blobs are written once
        full.append(timed(lambda: store.ingest("hour", content_hash=f"full-{i}", fused=distinct, answer=base,
                                               timezone="Europe/Berlin")))
        database_only.append(timed(lambda: store.ingest("hour-db", content_hash=f"db-{i}", fused=tiny, answer=base,
                                                        timezone="Europe/Berlin")))
        again = fused.assign(t=fused["t"] + (runs + i) * 1e-3)
        blob.append(timed(lambda: store.put_blob(again)))
    store.close()
    return {"store_hour_p50_ms": p50_ms(full), "store_hour_without_blob_p50_ms": p50_ms(database_only),
            "blob_write_p50_ms": p50_ms(blob)}


# --- a year of days -------------------------------------------------------------------------------------------
COLD = """
import json, sys, time
sys.path.insert(0, {root!r})
from store import Store
start = time.perf_counter()
store = Store.open({url!r}, blob_root={blobs!r})
opened = time.perf_counter()
days = store.days({subject!r})
first = time.perf_counter()
store.hours({subject!r})
hours = time.perf_counter()
print(json.dumps({{"open": opened - start, "days": first - opened, "hours": hours - first, "n": len(days)}}))
"""


def cold_days(url: str, folder: Path, subject: str, runs: int) -> dict:
    """The first Store.days (and Store.hours) in fresh processes: nothing is cached anywhere."""
    script = COLD.format(root=str(ROOT), url=url, blobs=str(folder / "blobs-year"), subject=subject)
    figures = [json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                                         timeout=600).stdout) for _ in range(runs)]
    median = lambda key: round(statistics.median(f[key] for f in figures) * 1000, 1)
    return {"days_cold_process_ms": median("days"), "store_open_cold_ms": median("open"),
            "hours_cold_process_ms": median("hours")}


def serve_days(url: str, folder: Path, subject: str, requests: int) -> dict:
    from serve_helpers import TOKEN, start_server, stop_server, write_tiny_model

    model = write_tiny_model(folder / "model.onnx")
    process, base = start_server(model, folder / "server.log", "--store", url, "--no-access-log")
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            # the server's first study request imports and opens the store: a 404 for someone absent
            opening = timed(lambda: client.get("/subjects/nobody/days"))
            first = timed(lambda: client.get(f"/subjects/{subject}/days").raise_for_status())
            times = [timed(lambda: client.get(f"/subjects/{subject}/days").raise_for_status())
                     for _ in range(requests)]
    finally:
        stop_server(process)
    return {"server_first_study_request_ms": round(opening * 1000, 1), "days_first_request_ms": round(first * 1000, 1),
            "days_365_p50_ms": p50_ms(times)}


def year_of_days(url: str, folder: Path, pool: list[dict], days: int, requests: int, cold_runs: int) -> dict:
    store = Store.open(url, blob_root=folder / "blobs-year")
    rng, tiny = np.random.default_rng(2), fused_hour(np.random.default_rng(0), rows=2)
    start = time.perf_counter()
    for d in range(days):
        date = (pd.Timestamp("2025-01-01") + pd.Timedelta(days=d)).strftime("%Y-%m-%d")
        store.ingest("year", content_hash=f"y{d}", fused=tiny, answer=answer(pool, f"{date}T07:00:00", 16, rng),
                     timezone="Europe/Berlin")
    ingest_s = time.perf_counter() - start
    kept = store.days("year")
    warm = [timed(lambda: store.days("year")) for _ in range(requests)]
    baseline = [timed(lambda: reference.days(store, "year")) for _ in range(3)]
    assert reference.days(store, "year") == kept  # the baseline answers the same
    store.close()
    return {"year_ingest_s": round(ingest_s, 1), "year_days": len(kept),
            **cold_days(url, folder, "year", cold_runs),
            "days_in_process_p50_ms": p50_ms(warm), "days_whole_history_baseline_ms": p50_ms(baseline),
            **serve_days(url, folder, "year", requests)}


# --- collate --------------------------------------------------------------------------------------------------
def database_bytes(store: Store) -> int:
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(store.engine.url.database)
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())


PEAK_OF_CHILD = """
import runpy, sys
sys.argv = ["serve.collate", *sys.argv[1:]]
try:
    runpy.run_module("serve.collate", run_name="__main__")
finally:  # this process's own high-water mark: its rusage would also count the parent it was started from
    print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
"""


def collate_peak_rss_mb(url: str, out: Path) -> float:
    """Peak resident memory of `python -m serve.collate` run as a child process (VmHWM, read by the child: Linux
    hands a process started by exec the peak of the one it replaced, here this benchmark's own, in ru_maxrss)."""
    result = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, "--store", url, "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"serve.collate failed: {result.stderr[-2000:]}")
    return round(int(result.stdout.split()[-1]) / 1024, 1)  # kB


def study(url: str, folder: Path, pool: list[dict], participants: int, participant_days: int, hours: int) -> dict:
    empty = Store.open(url, blob_root=folder / "blobs-empty")
    empty_bytes = database_bytes(empty)
    empty.close()
    store = Store.open(url, blob_root=folder / "blobs-study")
    rng, tiny = np.random.default_rng(3), fused_hour(np.random.default_rng(0), rows=2)
    answers: dict[str, list[dict]] = {}
    memory = {}
    for p in range(participants):
        if p == participants // 2:
            memory[str(p)] = collate_peak_rss_mb(url, folder / "tables-half")
        for d in range(participant_days):
            date = (pd.Timestamp("2025-03-01") + pd.Timedelta(days=d)).strftime("%Y-%m-%d")
            a = answer(pool, f"{date}T{8 + p % 8:02d}:00:00", hours, rng)
            store.ingest(f"s{p:03d}", content_hash=f"s{p}-{d}", fused=tiny, answer=a, timezone="Europe/Berlin")
            answers.setdefault(f"s{p:03d}", []).append(a)
    memory[str(participants)] = collate_peak_rss_mb(url, folder / "tables-all")
    size = database_bytes(store) - empty_bytes
    start = time.perf_counter()
    rows = write_tables(study_tables(store), folder / "tables")
    collate_s = time.perf_counter() - start
    start = time.perf_counter()
    for subject in answers:  # what collate computed before: every participant's whole history
        reference.days(store, subject), reference.hour_rows(store, subject)
    baseline_s = time.perf_counter() - start
    # the days' minutes against the answers added up, per participant and activity
    days = pd.read_parquet(folder / "tables" / "days.parquet")
    worst = 0.0
    for subject, given in answers.items():
        mine = days[days["subject"] == subject]
        for activity in ACTIVITIES:
            worst = max(worst, abs(mine[f"{activity}_min"].sum() - sum(a["minutes_per_activity"][activity] for a in given)))
    store.close()
    return {"collate_s": round(collate_s, 2), "collate_rows": rows,
            "collate_days_hours_whole_history_baseline_s": round(baseline_s, 2),
            "collate_peak_rss_mb_by_participants": memory,
            "kb_per_hour": round(size / 1024 / (participants * participant_days * hours), 2),
            "days_vs_answers_max_abs_min": round(float(worst), 3),
            "days_vs_answers_rounding_bound_min": round(0.001 * participant_days * 2, 3)}


# --- the generated study with known truth ----------------------------------------------------------------------
def score_study(study_dir: Path, model: Path, out: Path) -> None:
    """Every session of the generated study scored once by the batch scorer (the service's own path)."""
    subprocess.run([sys.executable, "-m", "serve.batch", str(study_dir / "recordings"), str(out), "--model", str(model)],
                   cwd=ROOT, check=True, capture_output=True, timeout=3600)


def against_truth(url: str, folder: Path, study_dir: Path, scored: Path) -> dict:
    """Store the scored sessions, then compare the store's days with the answers and with the study's truth."""
    store = Store.open(url, blob_root=folder / "blobs-truth")
    sessions = pd.read_csv(study_dir / "sessions.csv")
    timezone = json.loads((study_dir / "study.json").read_text())["plan"]["timezone"]
    answers: dict[str, list[dict]] = {}
    for row in sessions.itertuples():
        table = study_dir / "recordings" / f"{row.session}.parquet"
        answer_ = json.loads((scored / row.session / "recording.json").read_text())
        store.ingest(row.participant, content_hash=hashlib.sha256(table.read_bytes()).hexdigest(),
                     fused=pd.read_parquet(table), answer=answer_, timezone=timezone)
        answers.setdefault(row.participant, []).append(answer_)
    truth = pd.read_csv(study_dir / "days.csv", dtype={"date": str})
    activities = [a for a in ACTIVITIES if a in truth.columns]
    sum_error, errors, not_worn, truth_minutes, days_compared = 0.0, [], [], 0.0, 0
    for participant, given in answers.items():
        days = {d["date"]: d for d in store.days(participant)}
        for activity in activities:
            stored = sum(d["minutes_per_activity"].get(activity, 0.0) for d in days.values())
            sum_error = max(sum_error, abs(stored - sum(a["minutes_per_activity"][activity] for a in given)))
        for day in truth[truth["participant"] == participant].itertuples():
            mine = days.get(day.date)
            days_compared += 1
            for activity in activities:
                errors.append((mine["minutes_per_activity"].get(activity, 0.0) if mine else 0.0) - getattr(day, activity))
                truth_minutes += getattr(day, activity)
            not_worn.append((mine["not_worn_minutes"] if mine else 0.0) - day.not_worn_minutes)
    store.close()
    errors = np.abs(errors)
    return {"truth_sessions": len(sessions), "truth_participant_days": days_compared,
            "truth_days_vs_answers_max_abs_min": round(sum_error, 3),
            "truth_activity_abs_error_min_per_day_mean": round(float(errors.mean()), 2),
            "truth_activity_abs_error_share": round(float(errors.sum() / truth_minutes), 3),
            "truth_not_worn_error_min_per_day_mean": round(float(np.mean(not_worn)), 2)}


def postgres_url(socket: Path, name: str) -> str:
    import psycopg

    with psycopg.connect(host=str(socket), user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@/{name}?host={socket}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh processes for the cold days")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--participant-days", type=int, default=30)
    parser.add_argument("--hours-per-day", type=int, default=8)
    parser.add_argument("--fused", type=Path, help="one hour's fused table (Parquet) for the blob figures")
    parser.add_argument("--study", type=Path, help="a generated study (stages.sessions generate --fused)")
    parser.add_argument("--model", type=Path, default=ROOT / "models/model.onnx", help="scores --study's sessions")
    parser.add_argument("--out", type=Path, default=ROOT / "metrics" / "bench_store.json")
    args = parser.parse_args()
    from store_db import postgres_bin, throwaway_postgres

    rng = np.random.default_rng(0)
    pool = [hour_summary(rng, "2025-01-01T00:00:00") for _ in range(24)]
    fused = pd.read_parquet(args.fused) if args.fused else fused_hour(np.random.default_rng(4))
    result = {"load_average_start": [round(x, 2) for x in os.getloadavg()],
              "workload": {"windows_per_hour": HOUR_WINDOWS,
                           "episodes_per_hour_mean": round(statistics.mean(len(p["episodes"]) for p in pool), 1),
                           "days": args.days, "participants": args.participants,
                           "participant_days": args.participant_days, "hours_per_day": args.hours_per_day,
                           "fused": str(args.fused) if args.fused else "one hour of noise at 50 Hz",
                           "fused_rows": len(fused), "cpus": os.cpu_count()}, "targets": TARGETS}
    backends = ["sqlite", *(["postgresql"] if postgres_bin() else [])]
    if args.study:
        result["workload"]["study"] = str(args.study)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp, \
            (throwaway_postgres() if "postgresql" in backends else tempfile.TemporaryDirectory()) as socket:
        result["blob_formats"] = blob_formats(fused, Path(tmp) / "formats", args.runs)
        result["blob_format_stored"] = next(k for k, v in BLOB_FORMATS.items() if v == BLOB_PARQUET)
        if args.study:
            score_study(args.study, args.model, Path(tmp) / "scored")
        for backend in backends:
            folder = Path(tmp) / backend
            folder.mkdir()
            url = (lambda name: f"sqlite:///{folder}/{name}.db") if backend == "sqlite" else \
                (lambda name: postgres_url(Path(socket), name))
            figures = {**store_hour(url("hour"), folder, pool, args.runs, fused),
                       **year_of_days(url("year"), folder, pool, args.days, args.requests, args.cold_runs),
                       **study(url("study"), folder, pool, args.participants, args.participant_days, args.hours_per_day)}
            if args.study:
                figures.update(against_truth(url("truth"), folder, args.study, Path(tmp) / "scored"))
            figures["met"] = {k: figures[k] <= v for k, v in TARGETS.items()}
            result[backend] = figures
            print(backend, figures, flush=True)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
