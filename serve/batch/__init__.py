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

One Dask task is one recording (serve/batch/task.py `score_recording`): it goes the one scoring
path the service's uploads go (har/scoring.py: `prepare` with the model's preprocessing, then
`score` with one `ModelRuntime` call) and writes OUTPUT_FOLDER/<recording>/ (serve/batch/outputs.py):
recording.json (what `POST /recordings` answers for the same pair, with the recording's drift when
the model's drift_reference.json lies beside it), timeline.csv, episodes.csv,
minutes_per_activity.csv, and last done.json (the model's sha256 and the sources' sizes and times).
Each worker process loads the model once (`scorer_for`). A recording whose done.json names this
model and these sources is skipped, so a run killed at any point and started again scores only the
rest; a task whose worker dies is run again on another (Dask reschedules it; serve/batch/engine.py).
OUTPUT_FOLDER/summary.json lists what was scored, what was done before, what failed (with the
reader's message) and what is not a recording (serve/batch/jobs.py), and the recordings per second.

Exit status: 0 when every recording is scored (now or before), 1 when any failed or a file is not a
recording (or none was found), 2 when the model cannot be loaded or the cluster cannot be reached.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import replace
from pathlib import Path

from har.config import load_params, write_json
from har.drift import reference_path_for
from har.logs import add_log_arguments, event_logger, setup_logging
from har.modelfile import ModelFileError
from har.runtime import ModelRuntime, model_file
from serve.batch.engine import default_workers, engine_description, open_client, run_tasks
from serve.batch.jobs import Job, find_jobs, find_subject_jobs
from serve.batch.outputs import DONE, done_marker, is_done
from serve.batch.task import ModelSpec, Outcome, StoreSpec, ingest_on_client, score_recording, store_for
from serve.config import Settings
from serve.personal import PersonalModels
from serve.validation import RequestError

__all__ = ["DONE", "main", "run"]
log = event_logger("serve.batch")


class Progress:
    """A bar on a terminal (tqdm), one plain line per recording elsewhere (a log file, CI, cron mail)."""

    def __init__(self, total: int, stream):
        self.stream, self.total, self.number = stream, total, 0
        self.bar = None
        if total and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=stream, unit="rec", desc="scoring", dynamic_ncols=True)

    def update(self, job: Job, outcome: Outcome, failed: int) -> None:
        self.number += 1
        if self.bar is not None:
            self.bar.set_postfix(failed=failed, refresh=False)
            self.bar.update(1)
            return
        entry = outcome.entry
        said = {"scored": lambda: f"{entry['windows']} windows, {entry['covered_minutes']} min, mostly "
                                  f"{entry['most_minutes']} ({entry['seconds']:.1f} s)",
                "done": lambda: "in the store already, scored by this model",
                "failed": lambda: f"failed: {entry['reason']}"}[outcome.status]()
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
        jobs = [replace(j, subject=spec.subject) for j in jobs]
    # The store is asked by each task (it has the content hash); the output folder here, by done.json.
    done_before = [] if store else [job for job in jobs if is_done(
        output_folder / job.name, done_marker(spec.sha256, spec.subject, job.sources, input_folder))]
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
                if outcome.handed is not None:
                    outcome = ingest_on_client(client_store, job, outcome, store, input_folder)
                outcomes[outcome.status].append(outcome)
                if outcome.worker is not None:
                    pid = outcome.worker.pid
                    state = workers.setdefault(pid, {"pid": pid, "tasks": 0})
                    state.update(tasks=state["tasks"] + 1, rss_mib=outcome.worker.rss_mib,
                                 model_loads=outcome.worker.model_loads)
                bar.update(job, outcome, len(outcomes["failed"]))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    by_order = lambda outcome: order[outcome.recording]  # noqa: E731 — the folder's order, not finishing order
    scored = [{**o.entry, **{k: getattr(o, k) for k in ("output", "stored") if getattr(o, k) is not None}}
              for o in sorted(outcomes["scored"], key=by_order)]
    failed = [o.entry for o in sorted(outcomes["failed"], key=by_order)]
    done = sorted([job.key for job in done_before] + [o.recording for o in outcomes["done"]], key=order.get)
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


def load_runtime(model: str, params: dict, threads: int) -> tuple[ModelRuntime, Path, Path | None]:
    """A file path, or a registry URI (models:/<name>@<alias>) fetched through har.registry; the local file;
    and the drift reference shipped beside it (None without one)."""
    path = model_file(model, params.get("registry", {}).get("tracking_uri"))
    reference = reference_path_for(path)
    return ModelRuntime(path, threads=threads), path, reference if reference.exists() else None


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

