"""One batch task: one recording through the one scoring path (har/scoring.py), written out or stored.

`score_recording` runs on a Dask worker (or in the client's process with `--workers 0`): it prepares
the recording as the service prepares an upload, scores it with the worker's copy of the model
(`scorer_for`: loaded once per process and model) and returns an `Outcome`.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from har.answer import Answer
from har.drift import load_reference
from har.modelfile import ModelFileError
from har.preprocessing import Preprocessing
from har.runtime import ModelRuntime
from har.scoring import prepare, score
from har.wear import WearRule
from serve.batch.jobs import Job, recording_hash
from serve.batch.outputs import done_marker, write_done, write_outputs


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


@dataclass(frozen=True)
class WorkerState:
    """Which process answered, its memory after the task and its model loads: how the summary and the benchmark
    see that each worker loaded the model once and that its memory stays flat."""

    pid: int
    rss_mib: float
    model_loads: int


@dataclass(frozen=True)
class Handed:
    """What a worker hands the client to ingest (SQLite's one writer): the store's arguments for one recording."""

    content_hash: str
    fused: pd.DataFrame
    answer: dict


@dataclass
class Outcome:
    """What became of one recording: "scored" (now), "done" (the store held it scored by this model) or
    "failed" (a bad recording is reported, it does not stop the run)."""

    recording: str  # the job's key
    status: str
    entry: dict = field(default_factory=dict)  # the summary's line: scored (windows, minutes...) or failed (reason)
    output: str | None = None  # the recording's output folder (files written)
    stored: int | None = None  # the stored recording's id (with a store)
    worker: WorkerState | None = None
    handed: Handed | None = None  # for the client to ingest

    def failed(self, job: Job, input_folder: Path, reason: str) -> "Outcome":
        self.status, self.entry = "failed", {"source": job.sources_text(input_folder), "reason": reason}
        return self


@functools.lru_cache(maxsize=2)
def store_for(spec: StoreSpec):
    """The process's connection pool to the store (the client upgraded its schema before any task ran)."""
    from store import Store

    return Store.open(spec.url, blob_root=spec.blob_root, migrate=False)


class Scorer:
    """The model of one ModelSpec, loaded once per process, and what it takes to score a recording with it."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.runtime = ModelRuntime(spec.path, threads=spec.threads)
        if self.runtime.card.sha256 != spec.sha256:  # replaced since the client checked it: never mix two models
            raise ModelFileError(f"{spec.path}: sha256 {self.runtime.card.sha256[:12]}..., the run was started "
                                 f"with {spec.sha256[:12]}...")
        self.reference = load_reference(Path(spec.reference)) if spec.reference else None
        self.preprocessing = Preprocessing.from_card(self.runtime.card)

    def answer(self, job: Job):
        """(prepared recording, answer) of one job."""
        spec = self.spec
        prepared = prepare(job.source(spec.timezone), self.preprocessing, spec.wear_rule)
        return prepared, score(prepared, self.runtime.predict, self.runtime.card, spec.wear_rule,
                               reference=self.reference, subject=spec.subject, personal=spec.personal)


MODEL_LOADS = 0  # how often this process loaded a model: once per worker and model (the summary shows it)


@functools.lru_cache(maxsize=8)
def scorer_for(spec: ModelSpec) -> Scorer:
    """The process's Scorer for `spec`: each Dask worker process loads the model on its first task and keeps it."""
    global MODEL_LOADS
    MODEL_LOADS += 1
    return Scorer(spec)


def worker_state() -> WorkerState:
    import psutil  # a dependency of distributed

    return WorkerState(os.getpid(), round(psutil.Process().memory_info().rss / 2**20, 1), MODEL_LOADS)


def score_recording(job: Job, spec: ModelSpec, input_folder: Path, output_folder: Path,
                    store: StoreSpec | None = None) -> Outcome:
    """One task: prepare, score and answer one recording; then write it to output_folder/<recording>/ (done.json
    last), or ingest it into the store (`store.writer` "worker"), or hand answer and fused table back for the
    client to ingest ("client"). A reader's or the store's refusal is the outcome "failed" with its message."""
    started = time.perf_counter()
    scorer = scorer_for(spec)
    outcome = Outcome(job.key, "scored")
    try:
        digest = recording_hash(job) if store else None
        if store and store_for(store).has_scoring(digest, spec.sha256):
            outcome.status = "done"
        else:
            prepared, answer = scorer.answer(job)
            result = answer.to_builtins()
            if store is None:
                folder = output_folder / job.name
                write_outputs(folder, result)
                write_done(folder, done_marker(spec.sha256, spec.subject, job.sources, input_folder))
                outcome.output = str(folder)
            elif store.writer == "worker":
                stored, created = store_for(store).ingest(job.subject, content_hash=digest, fused=prepared.fused,
                                                          answer=result, timezone=store.timezone)
                outcome.stored, outcome.status = stored["id"], "scored" if created else "done"
            else:
                outcome.handed = Handed(digest, prepared.fused, result)
            outcome.entry = scored_entry(job, answer, input_folder, started)
    except (ValueError, OSError) as error:  # InputError and StoreError are ValueErrors: they name what is wrong
        outcome.failed(job, input_folder, str(error))
    outcome.worker = worker_state()
    return outcome


def scored_entry(job: Job, answer: Answer, input_folder: Path, started: float) -> dict:
    """The summary's line for a scored recording."""
    # What the recording mostly was by the estimate (which shares out the uncertain time), or not worn: a watch left
    # on a desk is mostly not_worn.
    top = max([*answer.minutes_per_activity.items(), ("not_worn", answer.not_worn_minutes)], key=lambda item: item[1])
    return {"recording": job.name, **({"subject": job.subject} if job.subject else {}),
            "sources": [str(p.relative_to(input_folder)) for p in job.sources], "windows": answer.windows,
            "covered_minutes": answer.covered_minutes, "most_minutes": top[0],
            "seconds": round(time.perf_counter() - started, 3)}


def ingest_on_client(store, job: Job, outcome: Outcome, store_spec: StoreSpec, input_folder: Path) -> Outcome:
    """SQLite's one writer: the answer and fused table a worker handed back, ingested in this process."""
    handed, outcome.handed = outcome.handed, None
    try:
        stored, created = store.ingest(job.subject, timezone=store_spec.timezone, content_hash=handed.content_hash,
                                       fused=handed.fused, answer=handed.answer)
    except ValueError as error:  # StoreError: no start time, another time zone, ...
        return outcome.failed(job, input_folder, str(error))
    outcome.stored, outcome.status = stored["id"], "scored" if created else "done"
    return outcome
