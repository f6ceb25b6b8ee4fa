"""Batch scoring: a folder of recordings in, an activity timeline per recording out, on a Dask cluster.

    python -m serve.batch INPUT_FOLDER OUTPUT_FOLDER [--model models/model.onnx | models:/<name>@champion]
                          [--subject ID]   # that person's model (serve.personal.models_dir/ID.onnx) if there is one
                          [--workers N]    # a LocalCluster of N single-threaded worker processes (default: one
                                           # per core); 0 scores in this process, one recording after another
                          [--scheduler tcp://HOST:PORT]   # an existing Dask cluster instead
                          [--in-flight N]  # at most N recordings submitted and not yet answered

INPUT_FOLDER holds Garmin workbook pairs (`<session>-accelerometer_data.xlsx` +
`<session>-gyroscope_data.xlsx`) and/or fused tables (`<recording>.parquet` with columns t, ax..gz,
beside an index.csv with wall-clock start times and a quality.json with the fusion settings, as
`stages.fuse` writes them; also one level down, as in data/fused/garmin/<session>/).

One Dask task is one recording: `score_recording` reads it through the service's own path
(`har.timeline.garmin_windows`, the pipeline's reader, fusion and windowing with the model's
preprocessing), makes one `ModelRuntime` call, builds `har.timeline.recording_answer` and writes
OUTPUT_FOLDER/<recording>/: recording.json (what `POST /recordings` answers for the same pair, with
the recording's drift when the model's drift_reference.json lies beside it), timeline.csv,
episodes.csv, minutes_per_activity.csv, and last done.json (the model's sha256 and the sources' sizes
and times). Each worker process loads the model once (`scorer_for`). A recording whose done.json
names this model and these sources is skipped, so a run killed at any point and started again
scores only the rest; a task whose worker dies is run again on another (Dask reschedules it).
OUTPUT_FOLDER/summary.json lists what was scored, what was done before, what failed (with the
reader's message) and what is not a recording, and the recordings per second.

Exit status: 0 when every recording is scored (now or before), 1 when any failed or a file is not a
recording (or none was found), 2 when the model cannot be loaded or the cluster cannot be reached.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from har.config import load_params, write_json
from har.drift import load_reference, recording_drift, reference_path_for
from har.fusion import CHANNELS
from har.garmin import find_garmin_pairs
from har.logs import add_log_arguments, event_logger, setup_logging
from har.wear import WearRule
from serve.config import Settings
from har.modelfile import ModelFileError
from serve.personal import PersonalModels
from har.runtime import ModelRuntime, model_file
from har.timeline import (RecordingWindows, cut_recording, garmin_windows, recording_answer, recording_preprocessing,
                          worn_probabilities)
from serve.validation import RequestError

log = event_logger("serve.batch")
# Files that belong to a fused folder (stages.fuse writes them) but are not recordings themselves.
FUSED_FOLDER_FILES = {"index.csv", "quality.json"}
DONE = "done.json"  # written last in a recording's output folder: its presence means the rest is complete
TASK_RETRIES = 2  # a task that raised is run again this often (a worker that died is handled by the scheduler)


@dataclass
class Job:
    """One recording to score: a Garmin pair, or a fused table with what stages.fuse recorded beside it."""

    name: str
    sources: list[Path]
    kind: str  # "garmin" | "fused"
    start_time: str | None = None  # fused tables: from index.csv (a pair's workbooks carry their own)
    fusion: dict | None = None  # fused tables: the entry of quality.json
    subject: str | None = None  # whose recording, with --store (--subject, or the subject's folder)

    @property
    def key(self) -> str:
        """Unique in a run: recordings of two subjects may carry the same session name."""
        return f"{self.subject}/{self.name}" if self.subject else self.name


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to score as the client would: the model file (checked against the sha256
    the client verified), the drift reference beside the generic model, whose model it is, and the reading
    settings. Small and hashable: it travels with every task and keys the per-process model cache."""

    path: str
    sha256: str
    name: str = ""
    version: str | None = None
    threads: int = 1
    reference: str | None = None
    subject: str | None = None
    personal: bool = False
    timezone: str | None = None
    wear_rule: WearRule = WearRule()


@dataclass(frozen=True)
class StoreSpec:
    """The study store as a task needs it: its URL, its blob folder, a new participant's time zone, and who
    writes. With PostgreSQL every worker ingests its own results ("worker"); SQLite has one writer, the
    client process ("client"): a worker returns the answer and the fused table, the client ingests them."""

    url: str
    blob_root: str
    timezone: str | None = None
    writer: str = "client"


@functools.lru_cache(maxsize=2)
def store_for(spec: StoreSpec):
    """The process's connection pool to the store (the client upgraded its schema before any task ran)."""
    from store import Store

    return Store.open(spec.url, blob_root=spec.blob_root, migrate=False)


def recording_hash(job: Job) -> str:
    """What the store recognises a recording by: the raw pair's bytes (har.timeline.content_hash, as the
    service hashes an upload), or a fused table's bytes with its start time from index.csv."""
    from har.timeline import content_hash

    if job.kind == "garmin":
        return content_hash(*job.sources)
    return content_hash(job.sources[0], (job.start_time or "").encode())


def fused_index(folder: Path) -> tuple[dict, dict]:
    """Start times (index.csv) and fusion reports (quality.json) by recording, where stages.fuse wrote them."""
    start_times, fusion = {}, {}
    if (folder / "index.csv").is_file():
        index = pd.read_csv(folder / "index.csv", dtype={"recording": str, "file": str, "start_time": str})
        start_times = {Path(row.file).stem: row.start_time for row in index.itertuples() if isinstance(row.start_time, str)}
    if (folder / "quality.json").is_file():
        fusion = {entry["recording"]: entry for entry in json.loads((folder / "quality.json").read_text())}
    return start_times, fusion


def find_subject_jobs(folder: Path) -> tuple[list[Job], list[dict]]:
    """A folder per subject (`<folder>/<subject>/`, each laid out as find_jobs reads it): every recording with
    its subject, and a skip record for what lies outside a subject's folder or under a folder that is not a
    subject id."""
    from serve.personal import check_subject

    jobs, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if not path.is_dir():
            skipped.append({"source": path.name, "reason": "not in a subject's folder (expected <subject>/...)"})
            continue
        try:
            subject = check_subject(path.name)
        except RequestError as error:
            skipped.append({"source": path.name, "reason": error.message})
            continue
        found, passed_over = find_jobs(path)
        jobs += [Job(j.name, j.sources, j.kind, j.start_time, j.fusion, subject) for j in found]
        skipped += [{**item, "source": f"{path.name}/{item['source']}"} for item in passed_over]
    return jobs, skipped


def find_jobs(folder: Path) -> tuple[list[Job], list[dict]]:
    """Every recording in `folder` and in its fused session folders (`<session>/index.csv`, as stages.fuse
    writes them), and a skip record for everything else: nothing is passed over silently."""
    pairs, unpaired = find_garmin_pairs(folder)
    jobs = [Job(acc.name.removesuffix("-accelerometer_data.xlsx"), [acc, gyr], "garmin") for acc, gyr in pairs]
    skipped = [{"source": item["file"], "reason": item["reason"]} for item in unpaired]
    claimed = {p for job in jobs for p in job.sources} | {folder / item["file"] for item in unpaired}
    names = {job.name: job for job in jobs}
    sessions = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "index.csv").is_file())
    for fused_folder in [folder, *sessions]:
        start_times, fusion = fused_index(fused_folder)
        claimed |= {fused_folder / name for name in FUSED_FOLDER_FILES}
        for path in sorted(fused_folder.glob("*.parquet")):
            claimed.add(path)
            first = names.get(path.stem)
            if first is not None:  # one output folder per recording: the first source found wins
                skipped.append({"source": str(path.relative_to(folder)), "reason": f"recording {path.stem} is "
                                f"scored from {first.sources[0].relative_to(folder)}"})
            else:
                names[path.stem] = Job(path.stem, [path], "fused", start_times.get(path.stem), fusion.get(path.stem))
                jobs.append(names[path.stem])
    for path in sorted(p for f in [folder, *sessions] for p in f.iterdir()):
        if not path.name.startswith(".") and path not in claimed and path not in sessions:
            skipped.append({"source": str(path.relative_to(folder)),
                            "reason": "not a recording (expected <session>-accelerometer_data.xlsx + "
                                      "<session>-gyroscope_data.xlsx pairs, fused .parquet tables, or the "
                                      "<session>/ folders of stages.fuse)"})
    return jobs, skipped


def fused_windows(path: Path, preprocessing: dict, fusion: dict | None, wear_rule: WearRule, *,
                  start_time: str | None) -> RecordingWindows:
    """A fused table cut into the model's windows and marked worn or not; refused when it was fused with
    other settings than the model's."""
    table = pd.read_parquet(path)
    missing = [c for c in ["t", *CHANNELS] if c not in table.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {missing} (expected t, {', '.join(CHANNELS)})")
    step = float(np.median(np.diff(table["t"].to_numpy()))) if len(table) > 1 else float("nan")
    target_hz = float(preprocessing["target_hz"])
    if not np.isclose(step * target_hz, 1.0, rtol=1e-3):
        raise ValueError(f"{path.name}: sampled every {step:.6g} s, the model expects {target_hz:g} Hz "
                         f"(a step of {1 / target_hz:.6g} s)")
    for key in ("target_hz", "lowpass_hz"):  # quality.json records both; a mismatch would be training/serving skew
        if fusion and key in fusion and not np.isclose(float(fusion[key]), float(preprocessing[key])):
            raise ValueError(f"{path.name}: fused with {key} {fusion[key]} (quality.json), the model expects "
                             f"{preprocessing[key]}")
    fusion = fusion or {}
    quality = {**fusion, "samples_written": fusion.get("samples_written", int(len(table))),
               "fused_seconds": fusion.get("fused_seconds", round(len(table) / target_hz, 3)),
               "segments": fusion.get("segments")}
    return cut_recording(table, quality, preprocessing, wear_rule, recording_id=path.stem, start_time=start_time)


def replace_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename: a task run twice (its worker declared dead while still
    running) or killed mid-write never leaves a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_outputs(folder: Path, result: dict) -> None:
    """recording.json (the whole answer) and the three tables as CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    replace_text(folder / "recording.json", json.dumps(result, indent=2) + "\n")  # as har.config.write_json writes
    replace_text(folder / "timeline.csv", pd.DataFrame(
        result["timeline"], columns=["start_s", "time", "label", "activity", "confidence"]).to_csv(index=False))
    replace_text(folder / "episodes.csv", pd.DataFrame(
        result["episodes"], columns=["label", "start_s", "end_s", "duration_s", "start_time", "end_time", "windows",
                                     "mean_confidence"]).to_csv(index=False))
    # Activities first, then the two states, so the file adds up to the covered time.
    minutes = [*result["minutes_per_activity"].items(), ("uncertain", result["uncertain_minutes"]),
               ("not_worn", result["not_worn_minutes"])]
    replace_text(folder / "minutes_per_activity.csv",
                 pd.DataFrame(minutes, columns=["label", "minutes"]).to_csv(index=False))


def source_state(job: Job, input_folder: Path) -> list[dict]:
    """What the done marker remembers of a recording's sources: a re-exported file (new size or time) is
    scored again, as make and rsync would judge it, without reading the file."""
    return [{"path": str(p.relative_to(input_folder)), "bytes": (s := p.stat()).st_size, "mtime_ns": s.st_mtime_ns}
            for p in job.sources]


def done_marker(spec: ModelSpec, job: Job, input_folder: Path) -> dict:
    return {"model_sha256": spec.sha256, "subject": spec.subject, "sources": source_state(job, input_folder)}


def is_done(folder: Path, spec: ModelSpec, job: Job, input_folder: Path) -> bool:
    """Scored before by this model from these very sources (done.json is written after everything else)."""
    try:
        return json.loads((folder / DONE).read_text()) == done_marker(spec, job, input_folder)
    except (OSError, ValueError):  # no marker, or one cut short: not done
        return False


class Scorer:
    """The model of one ModelSpec, loaded once per process, and what it takes to score a recording with it."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.runtime = ModelRuntime(spec.path, threads=spec.threads)
        if self.runtime.card.sha256 != spec.sha256:  # replaced since the client checked it: never mix two models
            raise ModelFileError(f"{spec.path}: sha256 {self.runtime.card.sha256[:12]}..., the run was started "
                                 f"with {spec.sha256[:12]}...")
        self.reference = load_reference(Path(spec.reference)) if spec.reference else None
        self.preprocessing = recording_preprocessing(self.runtime.card)

    def windows(self, job: Job) -> RecordingWindows:
        preprocessing, wear_rule = self.preprocessing, self.spec.wear_rule
        if job.kind == "garmin":
            scored = garmin_windows(*job.sources, preprocessing, wear_rule, timezone=self.spec.timezone,
                                    recording_id=job.name)
        else:
            scored = fused_windows(job.sources[0], preprocessing, job.fusion, wear_rule, start_time=job.start_time)
        if len(scored.windows) == 0:  # the service's words for the same refusal
            raise ValueError(f"the recording holds no complete {preprocessing['window_length']}-sample window of "
                             f"fused data ({scored.quality['fused_seconds']} s fused)")
        return scored

    def answer(self, scored: RecordingWindows) -> dict:
        runtime = self.runtime
        probabilities = worn_probabilities(runtime.predict, scored, len(runtime.card.labels))
        result = recording_answer(runtime.card, scored, probabilities, self.spec.wear_rule, subject=self.spec.subject,
                                  personal=self.spec.personal)
        if self.reference is not None:
            result["drift"] = recording_drift(self.reference, scored.windows[scored.worn], probabilities,
                                              runtime.card.labels, not_worn=int((~scored.worn).sum()))
        return result


MODEL_LOADS = 0  # how often this process loaded a model: once per worker and model (the summary shows it)


@functools.lru_cache(maxsize=8)
def scorer_for(spec: ModelSpec) -> Scorer:
    """The process's Scorer for `spec`: each Dask worker process loads the model on its first task and keeps it."""
    global MODEL_LOADS
    MODEL_LOADS += 1
    return Scorer(spec)


def worker_state() -> dict:
    """Which process answered, its memory after the task and its model loads: how the summary and the benchmark
    see that each worker loaded the model once and that its memory stays flat."""
    import psutil  # a dependency of distributed

    return {"pid": os.getpid(), "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
            "model_loads": MODEL_LOADS}


def sources_text(job: Job, input_folder: Path) -> str:
    return ", ".join(str(p.relative_to(input_folder)) for p in job.sources)


def score_recording(job: Job, spec: ModelSpec, input_folder: Path, output_folder: Path,
                    store: StoreSpec | None = None) -> dict:
    """One task: read, fuse, window, mark wear, score and answer one recording; then write it to
    output_folder/<recording>/ (done.json last), or ingest it into the store (`store.writer` "worker"), or hand
    answer and fused table back for the client to ingest ("client").

    Returns the outcome: "scored" with the summary's entry, "done" when the store holds this recording
    scored by this model already, or "failed" with the reader's (or the store's) message: a bad recording
    is reported, it does not stop the run."""
    started = time.perf_counter()
    scorer = scorer_for(spec)
    outcome = {"recording": job.key, "status": "scored"}
    try:
        digest = recording_hash(job) if store else None
        if store and store_for(store).has_scoring(digest, spec.sha256):
            return {**outcome, "status": "done", "worker": worker_state()}
        scored = scorer.windows(job)
        result = scorer.answer(scored)
        if store is None:
            folder = output_folder / job.name
            write_outputs(folder, result)
            replace_text(folder / DONE, json.dumps(done_marker(spec, job, input_folder), indent=2) + "\n")
            outcome["output"] = str(folder)
        elif store.writer == "worker":
            stored, created = store_for(store).ingest(job.subject, content_hash=digest, fused=scored.fused,
                                                      answer=result, timezone=store.timezone)
            outcome.update(stored=stored["id"], status="scored" if created else "done")
        else:
            outcome["ingest"] = {"content_hash": digest, "fused": scored.fused, "answer": result}
    except (ValueError, OSError) as error:  # InputError and StoreError are ValueErrors: they name what is wrong
        return {**outcome, "status": "failed", "entry": {"source": sources_text(job, input_folder),
                                                         "reason": str(error)}, "worker": worker_state()}
    outcome["entry"] = scored_entry(job, result, input_folder, started)
    return {**outcome, "worker": worker_state()}


def scored_entry(job: Job, result: dict, input_folder: Path, started: float) -> dict:
    """The summary's line for a scored recording."""
    # What the recording mostly was, states included: a watch left on a desk is mostly not_worn.
    top = max([*result["minutes_per_activity"].items(), ("uncertain", result["uncertain_minutes"]),
               ("not_worn", result["not_worn_minutes"])], key=lambda item: item[1])
    return {"recording": job.name, **({"subject": job.subject} if job.subject else {}),
            "sources": [str(p.relative_to(input_folder)) for p in job.sources], "windows": result["windows"],
            "covered_minutes": result["covered_minutes"], "most_minutes": top[0],
            "seconds": round(time.perf_counter() - started, 3)}


def ingest_on_client(store, job: Job, outcome: dict, store_spec: StoreSpec, input_folder: Path) -> dict:
    """SQLite's one writer: the answer and fused table a worker handed back, ingested in this process."""
    handed = outcome.pop("ingest")
    try:
        stored, created = store.ingest(job.subject, timezone=store_spec.timezone, **handed)
    except ValueError as error:  # StoreError: no start time, another time zone, ...
        return {**outcome, "status": "failed", "entry": {"source": sources_text(job, input_folder),
                                                         "reason": str(error)}}
    return {**outcome, "stored": stored["id"], "status": "scored" if created else "done"}


def run_tasks(task, jobs: list[Job], context: dict, *, client=None, in_flight: int | None = None):
    """(job, outcome) for every job, in the order they finish: `task(job, **context)` in this process one after
    another without a client, else on the client's cluster with at most `in_flight` tasks submitted and not
    yet answered (as answers come back, as many new ones go in), so memory stays flat on any number of jobs.

    A task that raised, or whose workers kept dying (KilledWorker), becomes a "failed" outcome naming the
    error; the run goes on."""
    if client is None:
        for job in jobs:
            try:
                yield job, task(job, **context)
            except Exception as error:  # noqa: BLE001 — one recording's unexpected error must not stop the run
                yield job, failed_outcome(job, context, error)
        return
    from distributed import as_completed

    run_id = uuid.uuid4().hex[:8]
    pending = iter(jobs)
    by_future = {}

    def submit(count: int) -> list:
        """The next `count` jobs as tasks, in one message to the scheduler (client.map), not one each."""
        batch = [job for _, job in zip(range(count), pending)]  # range first: zip must not draw a job it drops
        futures = client.map(task, batch, key=[f"{task.__name__}-{job.key}-{run_id}" for job in batch],
                             retries=TASK_RETRIES, pure=False, **context) if batch else []
        by_future.update(zip(futures, batch))
        return futures

    finished = as_completed(submit(in_flight or default_in_flight(client)))
    for futures in finished.batches():  # all that finished meanwhile: their results in one gather, one round trip
        answered = [f for f in futures if f.status == "finished"]
        results = dict(zip(answered, client.gather(answered)))
        finished.update(submit(len(futures)))
        for future in futures:
            job = by_future.pop(future)
            # Not finished: KilledWorker (its workers kept dying), or a task that raised on every retry.
            outcome = results[future] if future in results else failed_outcome(job, context, future.exception())
            future.release()
            yield job, outcome


def default_in_flight(client) -> int:
    """Sixteen tasks per worker thread (at least 32): a worker always has its next recordings while the answers
    to its last ones travel back (on a busy machine a round trip takes tens of ms), answers come back in
    batches, and what waits is a few small Job records, whatever the folder's size."""
    return max(32, 16 * sum(client.nthreads().values()))


def failed_outcome(job: Job, context: dict, error: Exception) -> dict:
    return {"recording": job.key, "status": "failed", "entry": {"source": sources_text(job, context["input_folder"]),
                                                                "reason": f"{type(error).__name__}: {error}"}}


class Progress:
    """A bar on a terminal (tqdm), one plain line per recording elsewhere (a log file, CI, cron mail)."""

    def __init__(self, total: int, stream):
        self.stream, self.total, self.number = stream, total, 0
        self.bar = None
        if total and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=stream, unit="rec", desc="scoring", dynamic_ncols=True)

    def update(self, job: Job, outcome: dict, failed: int) -> None:
        self.number += 1
        if self.bar is not None:
            self.bar.set_postfix(failed=failed, refresh=False)
            self.bar.update(1)
            return
        entry = outcome.get("entry", {})
        said = {"scored": lambda: f"{entry['windows']} windows, {entry['covered_minutes']} min, mostly "
                                  f"{entry['most_minutes']} ({entry['seconds']:.1f} s)",
                "done": lambda: "in the store already, scored by this model",
                "failed": lambda: f"failed: {entry['reason']}"}[outcome["status"]]()
        print(f"[{self.number}/{self.total}] {job.key} ({job.kind}): {said}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(input_folder: Path, output_folder: Path, spec: ModelSpec, *, client=None, in_flight: int | None = None,
        progress=None, task=score_recording, store: StoreSpec | None = None, spec_for=None) -> dict:
    """Score every recording in `input_folder` not yet done by this model into `output_folder`, or into the
    study store (`store`), on the client's cluster (in this process without one); returns the summary (also
    output_folder/summary.json).

    With a store and no subject in `spec`, `input_folder` holds a folder per subject and `spec_for(subject)`
    gives that subject's model (their personal one where they have it). Progress goes to `progress`
    (default: sys.stderr as it is at the call). `task` is `score_recording`; the benchmark passes an empty
    task to time the engine alone."""
    progress = progress or sys.stderr
    started = time.perf_counter()
    engine = engine_description(client)  # what the run starts with (workers may join or die during it)
    per_subject = store is not None and spec.subject is None
    jobs, skipped = find_subject_jobs(input_folder) if per_subject else find_jobs(input_folder)
    if store is not None and not per_subject:
        jobs = [Job(j.name, j.sources, j.kind, j.start_time, j.fusion, spec.subject) for j in jobs]
    # The store is asked by each task (it has the content hash); the output folder here, by done.json.
    done_before = [] if store else [job for job in jobs if is_done(output_folder / job.name, spec, job, input_folder)]
    todo = [job for job in jobs if job not in done_before]
    if done_before:
        print(f"{len(done_before)} of {len(jobs)} recording(s) already scored by this model: skipped",
              file=progress, flush=True)
    order = {job.key: number for number, job in enumerate(jobs)}
    outcomes = {"scored": [], "done": [], "failed": []}
    workers: dict[int, dict] = {}
    client_store = store_for(store) if store and store.writer == "client" else None
    bar = Progress(len(todo), progress)
    try:
        for subject_spec, group in spec_groups(todo, spec, spec_for if per_subject else None):
            context = {"spec": subject_spec, "input_folder": input_folder, "output_folder": output_folder,
                       **({"store": store} if store else {})}
            for job, outcome in run_tasks(task, group, context, client=client, in_flight=in_flight):
                if "ingest" in outcome:
                    outcome = ingest_on_client(client_store, job, outcome, store, input_folder)
                outcomes[outcome["status"]].append(outcome)
                if "worker" in outcome:
                    pid = outcome["worker"]["pid"]
                    state = workers.setdefault(pid, {"pid": pid, "tasks": 0})
                    state.update(tasks=state["tasks"] + 1, rss_mib=outcome["worker"]["rss_mib"],
                                 model_loads=outcome["worker"]["model_loads"])
                bar.update(job, outcome, len(outcomes["failed"]))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    by_order = lambda outcome: order[outcome["recording"]]  # noqa: E731 — the folder's order, not finishing order
    scored = [{**o["entry"], **{k: o[k] for k in ("output", "stored") if k in o}}
              for o in sorted(outcomes["scored"], key=by_order)]
    failed = [o["entry"] for o in sorted(outcomes["failed"], key=by_order)]
    done = sorted([job.key for job in done_before] + [o["recording"] for o in outcomes["done"]], key=order.get)
    summary = {"input": str(input_folder),
               "model": {"name": spec.name, "version": spec.version, "sha256": spec.sha256,
                         "subject": spec.subject, "personal": spec.personal},
               "engine": engine, "store": {"url": safe_url(store.url), "writer": store.writer} if store else None,
               "recordings": len(jobs), "scored": scored, "done_before": done,
               "failed": failed, "skipped": skipped, "seconds": round(seconds, 3),
               "recordings_per_second": round(len(scored) / seconds, 3) if seconds > 0 else None,
               "workers": sorted(workers.values(), key=lambda w: w["pid"])}
    output_folder.mkdir(parents=True, exist_ok=True)
    write_json(output_folder / "summary.json", summary)
    print(f"scored {len(scored)}, skipped as done {len(done)}, failed {len(failed)}, not recordings "
          f"{len(skipped)}; {summary['recordings_per_second']} recordings/s; summary in "
          f"{output_folder / 'summary.json'}", file=progress)
    for item in failed:
        print(f"  failed {item['source']}: {item['reason']}", file=progress)
    for item in skipped:
        print(f"  skipped {item['source']}: {item['reason']}", file=progress)
    return summary


def spec_groups(jobs: list[Job], spec: ModelSpec, spec_for):
    """(model spec, its jobs): one group, or one per subject's model when each subject has their own."""
    if spec_for is None:
        yield spec, jobs
        return
    groups: dict[ModelSpec, list[Job]] = {}
    for job in jobs:
        groups.setdefault(spec_for(job.subject), []).append(job)
    yield from groups.items()


def safe_url(url: str) -> str:
    """The store's URL without its password, for the summary and the log."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def engine_description(client) -> dict:
    if client is None:
        return {"kind": "in-process", "workers": 0, "threads": 1}
    threads = client.nthreads()
    return {"kind": "dask", "scheduler": client.scheduler.address, "workers": len(threads),
            "threads": sum(threads.values())}


def load_runtime(model: str, params: dict, threads: int) -> tuple[ModelRuntime, Path, Path | None]:
    """A file path, or a registry URI (models:/<name>@<alias>) fetched through har.registry; the local file;
    and the drift reference shipped beside it (None without one)."""
    path = model_file(model, params.get("registry", {}).get("tracking_uri"))
    reference = reference_path_for(path)
    return ModelRuntime(path, threads=threads), path, reference if reference.exists() else None


def open_client(workers: int, scheduler: str | None):
    """(client, cluster): a Client of the cluster at `scheduler`, or of a LocalCluster of `workers`
    single-threaded worker processes (onnxruntime runs one thread per worker: processes, not threads,
    share the cores); (None, None) for `--workers 0`."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler, timeout="30s"), None
    if workers == 0:
        return None, None
    # The scheduler's HTTP server (health, Prometheus metrics) on a free loopback port: never a clash on 8787.
    # No queuing on the scheduler (worker-saturation inf): run_tasks bounds what is in flight itself, and a
    # worker that holds its next tasks starts them without waiting for a scheduler round trip.
    with dask.config.set({"distributed.scheduler.worker-saturation": math.inf}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING)
    return Client(cluster), cluster


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serve.batch", description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="folder of Garmin workbook pairs and/or fused .parquet tables")
    parser.add_argument("output", type=Path, help="folder for <recording>/... and summary.json (created)")
    parser.add_argument("--params", default="params.yaml", help="composed parameters (default: params.yaml)")
    parser.add_argument("--model", help="ONNX file or models:/<name>@<alias> (default: serve.model_path)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads per worker (default: serve.threads)")
    parser.add_argument("--timezone", help="wall-clock zone of the Garmin exports (default: data.timezone)")
    parser.add_argument("--subject", help="whose recordings: scored by that person's model if there is one "
                                          "(serve.personal.models_dir/<subject>.onnx), else by the generic model")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="worker processes of the LocalCluster (default: one per core); 0: in this process")
    parser.add_argument("--scheduler", help="tcp://HOST:PORT of a running Dask scheduler (instead of a LocalCluster)")
    parser.add_argument("--in-flight", type=int, help="most recordings submitted and not yet answered "
                                                      "(default: 16 per worker thread, at least 32)")
    parser.add_argument("--store", metavar="URL", help="ingest into the study store at URL (sqlite:///... or "
                        "postgresql+psycopg://...) instead of writing <recording>/ files; recordings it holds "
                        "scored by this model are skipped. Without --subject, INPUT holds a folder per subject")
    add_log_arguments(parser)
    args = parser.parse_args(argv)
    if args.workers < 0 or (args.in_flight is not None and args.in_flight < 1):
        parser.error("--workers must be 0 or more and --in-flight 1 or more")
    return args


def model_specs(args: argparse.Namespace, params: dict, settings: Settings):
    """The model this run scores with (for `--subject`, their personal one where they have it), loaded and
    checked here before any work is sent out, and `spec_for(subject)` for a folder per subject (raises
    ModelFileError, OSError, ValueError or RequestError)."""
    runtime, path, reference = load_runtime(args.model or str(settings.model_path), params, settings.threads)
    personal = PersonalModels(settings.personal_dir, runtime.card, cache_size=1, threads=settings.threads)

    @functools.cache
    def spec_for(subject: str | None) -> ModelSpec:
        person = personal.runtime_for(subject)
        card, file = (person.card, settings.personal_dir / f"{subject}.onnx") if person else (runtime.card, path)
        return ModelSpec(path=str(Path(file).resolve()), sha256=card.sha256, name=card.name, version=card.version,
                         threads=settings.threads, reference=str(reference.resolve()) if reference else None,
                         subject=subject, personal=person is not None, timezone=settings.timezone,
                         wear_rule=settings.wear)

    return spec_for(args.subject), spec_for


def store_spec(url: str, params: dict, settings: Settings) -> StoreSpec:
    """The study store at `url`, opened (and its schema upgraded) here once before any task uses it; an
    SQLite file's path made absolute, so workers started elsewhere find the same file."""
    from sqlalchemy.engine import make_url

    from store import Store

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        url = parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(hide_password=False)
    opened = Store.from_params(params, url=url)
    blob_root = str(Path(opened.blob_root).resolve())
    opened.close()
    return StoreSpec(url=url, blob_root=blob_root, timezone=settings.timezone,
                     writer="worker" if backend == "postgresql" else "client")


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_format, args.log_level)  # log lines; the progress (a bar or a line per recording) is apart
    params = load_params(args.params)
    settings = Settings.from_params(params, threads=args.threads, timezone=args.timezone)
    if not args.input.is_dir():
        log.error(f"serve.batch: {args.input} is not a folder")
        return 2
    try:
        spec, spec_for = model_specs(args, params, settings)
    except (ModelFileError, FileNotFoundError, OSError, ValueError) as error:
        log.error(f"serve.batch: cannot load the model: {error}")
        return 2
    except RequestError as error:
        log.error(f"serve.batch: {error.message}")
        return 2
    try:
        store = store_spec(args.store, params, settings) if args.store else None
    except Exception as error:  # noqa: BLE001 — SQLAlchemy's and the driver's errors: the URL or the server
        log.error(f"serve.batch: cannot open the store {args.store}: {error}")
        return 2
    try:
        client, cluster = open_client(args.workers, args.scheduler)
    except (OSError, TimeoutError) as error:
        log.error(f"serve.batch: cannot reach the Dask scheduler {args.scheduler}: {error}")
        return 2
    try:
        summary = run(args.input, args.output, spec, client=client, in_flight=args.in_flight, store=store,
                      spec_for=spec_for)
    except RequestError as error:  # a subject's personal model refused (folder per subject)
        log.error(f"serve.batch: {error.message}")
        return 2
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    complete = summary["scored"] or summary["done_before"]
    return 0 if complete and not summary["failed"] and not summary["skipped"] else 1


if __name__ == "__main__":
    # Run as the module serve.batch, not as __main__: Dask pickles score_recording by reference, and a
    # worker imports it from there.
    from serve.batch import main as module_main

    sys.exit(module_main())
