"""The engine a batch run's tasks go through: a Dask cluster (a LocalCluster or an existing scheduler), or this
process one task after another. Bounded in flight, so memory stays flat on any number of recordings."""
from __future__ import annotations

import logging
import math
import os
import uuid

from serve.batch.jobs import Job
from serve.batch.task import Outcome

TASK_RETRIES = 2  # a task that raised is run again this often (a worker that died is handled by the scheduler)


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


def failed_outcome(job: Job, context: dict, error: Exception) -> Outcome:
    return Outcome(job.key, "failed").failed(job, context["input_folder"], f"{type(error).__name__}: {error}")


def engine_description(client) -> dict:
    if client is None:
        return {"kind": "in-process", "workers": 0, "threads": 1}
    threads = client.nthreads()
    return {"kind": "dask", "scheduler": client.scheduler.address, "workers": len(threads),
            "threads": sum(threads.values())}


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
    # worker that holds its next tasks starts them without waiting for a scheduler round trip. No
    # statistical profiler on the workers: it samples every thread's stack 100 times a second.
    with dask.config.set({"distributed.scheduler.worker-saturation": math.inf,
                          "distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING)
    return Client(cluster), cluster


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
