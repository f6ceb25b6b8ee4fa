"""`python -m serve.batch` on a real Dask cluster over loopback: `dask scheduler` and `dask worker` processes
started here. The cluster's answers are the in-process scorer's, byte for byte; a worker killed mid-run
costs nothing; a client killed mid-run and started again scores only the rest; a broken workbook is
reported while the rest is scored; progress is a bar on a terminal and plain lines elsewhere."""
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from batch_helpers import study_folder
from store_db import new_postgres_database, postgres_server  # noqa: F401 — a fixture: the session's PostgreSQL
from serve import batch
from serve_helpers import ROOT, write_tiny_model

DASK = Path(sys.executable).parent / "dask"
RECORDINGS, SECONDS = 24, 600  # ten minutes each: about 0.1 s of work per task, so a kill lands mid-run
TIMEOUT = 120  # every wait on a process or the cluster is bounded by this


def environment() -> dict:
    """Workers import serve.batch (Dask pickles the task by reference) from the project root, and this
    module's helpers from tests/."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


def start(*command, **options) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in command], cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **options)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def until(condition, what: str, timeout: float = TIMEOUT, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers on 127.0.0.1 (no nanny: a killed worker stays dead)."""
    if not DASK.exists():
        pytest.fail(f"{DASK} missing: pip install -r requirements.lock")
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    processes = [start(DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                       "--scheduler-file", scheduler_file)]
    try:
        until(lambda: scheduler_file.exists() and scheduler_file.stat().st_size, "the scheduler file")
        address = json.loads(scheduler_file.read_text())["address"]
        for number in range(2):
            processes.append(worker(address, f"worker-{number}"))
        from distributed import Client

        with Client(address, timeout=TIMEOUT) as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
            yield address, client
    finally:
        for process in reversed(processes):
            stop(process)


def worker(address: str, name: str) -> subprocess.Popen:
    return start(DASK, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                 "--host", "127.0.0.1", "--death-timeout", str(TIMEOUT))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    return folder, study_folder(folder, RECORDINGS, SECONDS, broken=True)


@pytest.fixture(scope="module")
def reference(study, model_path, tmp_path_factory):
    """The in-process scorer's outputs (`--workers 0`): what every cluster run must reproduce."""
    output = tmp_path_factory.mktemp("reference")
    assert batch.main([str(study[0]), str(output), "--model", str(model_path), "--workers", "0"]) == 1
    return output


def answers(output: Path, names) -> dict:
    return {name: (output / name / "recording.json").read_bytes() for name in names}


def executing(dask_worker) -> int:
    """Tasks a worker is running, including those the scheduler forgot (their client went away)."""
    return len(dask_worker.state.executing)


def cli(*arguments) -> list[str]:
    return [sys.executable, "-m", "serve.batch", *map(str, arguments)]



def run_losing_a_worker(client, address: str, argv: list[str]) -> int | None:
    """`serve.batch.main(argv)` on the cluster at `address` with a third worker that is killed (SIGKILL) as soon
    as it holds a task; the run's exit status (None if it did not finish within TIMEOUT)."""
    victim = worker(address, "victim")
    status = []
    try:
        client.wait_for_workers(3, timeout=TIMEOUT)
        [victim_address] = [a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "victim"]
        run = threading.Thread(target=lambda: status.append(batch.main(argv)), daemon=True)
        run.start()
        until(lambda: client.processing(workers=[victim_address])[victim_address], "a task on the victim")
        os.killpg(victim.pid, signal.SIGKILL)
        run.join(TIMEOUT)
    finally:
        stop(victim)
    return status[0] if status else None

def test_a_loopback_cluster_gives_the_in_process_answers_and_reports_the_broken_workbook(
        cluster, study, model_path, reference, tmp_path):
    address, _ = cluster
    folder, names = study
    status = batch.main([str(folder), str(tmp_path / "out"), "--model", str(model_path), "--scheduler", address])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert status == 1  # the broken pair failed: a cron job notices
    assert [s["recording"] for s in summary["scored"]] == names[1:]  # the folder's order, not finishing order
    assert answers(tmp_path / "out", names[1:]) == answers(reference, names[1:])
    [failed] = summary["failed"]
    assert failed["source"] == "broken-accelerometer_data.xlsx, broken-gyroscope_data.xlsx"
    assert "cannot be read as an Excel workbook" in failed["reason"]  # the reader's own message
    assert failed == json.loads((reference / "summary.json").read_text())["failed"][0]
    assert summary["engine"] == {"kind": "dask", "scheduler": address, "workers": 2, "threads": 2}
    # Both workers took part, and each loaded the model once for all its recordings.
    assert len(summary["workers"]) == 2 and sum(w["tasks"] for w in summary["workers"]) == RECORDINGS + 1
    assert [w["model_loads"] for w in summary["workers"]] == [1, 1]
    assert summary["recordings_per_second"] > 0


def test_a_client_killed_mid_run_and_started_again_scores_only_the_rest(cluster, study, model_path, reference,
                                                                      tmp_path):
    address, client = cluster
    folder, names = study
    output = tmp_path / "out"
    first = start(*cli(folder, output, "--model", model_path, "--scheduler", address, "--in-flight", 2))
    try:
        until(lambda: len(list(output.glob(f"*/{batch.DONE}"))) >= 3, "three recordings scored")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(TIMEOUT)
    # A task already running when the client died still finishes its files: wait until no worker runs one.
    until(lambda: not any(client.processing().values()) and not any(client.run(executing).values()),
          "the cluster to fall idle", every=0.2)
    markers = {p.parent.name: p.stat().st_mtime_ns for p in output.glob(f"*/{batch.DONE}")}
    assert 3 <= len(markers) < RECORDINGS, "the first run was to be killed mid-run"
    assert not (output / "summary.json").exists()

    assert batch.main([str(folder), str(output), "--model", str(model_path), "--scheduler", address]) == 1
    summary = json.loads((output / "summary.json").read_text())
    assert summary["done_before"] == [name for name in names if name in markers]
    assert [s["recording"] for s in summary["scored"]] == [n for n in names[1:] if n not in markers]
    assert {p.parent.name: p.stat().st_mtime_ns for p in output.glob(f"*/{batch.DONE}") if p.parent.name in markers} \
        == markers  # what was done was not written again
    assert answers(output, names[1:]) == answers(reference, names[1:])
    assert [f["source"] for f in summary["failed"]] == ["broken-accelerometer_data.xlsx, broken-gyroscope_data.xlsx"]

    # A third run finds everything done; the broken pair is tried, and reported, again.
    assert batch.main([str(folder), str(output), "--model", str(model_path), "--scheduler", address]) == 1
    again = json.loads((output / "summary.json").read_text())
    assert again["scored"] == [] and again["done_before"] == names[1:] and len(again["failed"]) == 1


def test_a_worker_killed_mid_run_costs_nothing(cluster, study, model_path, reference, tmp_path):
    """A third worker joins, is killed while tasks are assigned to it; the scheduler gives them to the others."""
    address, client = cluster
    folder, names = study
    status = run_losing_a_worker(client, address, [str(folder), str(tmp_path / "out"), "--model", str(model_path),
                                                    "--scheduler", address])
    assert status == 1  # the broken pair failed; nothing else did
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["recording"] for s in summary["scored"]] == names[1:]  # every recording exactly once
    assert len(summary["failed"]) == 1
    assert answers(tmp_path / "out", names[1:]) == answers(reference, names[1:])
    assert summary["engine"]["workers"] == 3  # what the run started with
    until(lambda: len(client.nthreads()) == 2, "the scheduler to drop the dead worker")


def test_progress_is_a_bar_on_a_terminal(model_path, tmp_path, monkeypatch):
    """Through a LocalCluster (`--workers 1`: one worker process), onto a pseudo-terminal 100 columns wide."""
    study_folder(tmp_path / "in", 3, 60)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    chunks, finished = [], threading.Event()

    def read():  # all along, or a full terminal buffer would block the writer
        while not finished.is_set() or select.select([leader], [], [], 0.5)[0]:
            if select.select([leader], [], [], 0.1)[0]:
                chunks.append(os.read(leader, 65536))

    # Not until EOF: multiprocessing's resource tracker, started by the cluster, keeps the terminal open.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with open(follower, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        status = batch.main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model_path), "--workers", "1"])
        monkeypatch.undo()
        finished.set()
        reader.join(TIMEOUT)
    os.close(leader)
    shown = b"".join(chunks).decode()
    assert status == 0
    assert "scoring: 100%" in shown and "3/3" in shown and "\r" in shown  # one bar, redrawn in place
    assert "[1/3]" not in shown
    assert "scored 3, skipped as done 0, failed 0" in shown
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["engine"]["workers"] == 1


def test_progress_is_plain_lines_elsewhere(model_path, tmp_path, capsys):
    """In a pipe or a file (a log, cron mail): one line per recording, nothing redrawn."""
    names = study_folder(tmp_path / "in", 3, 60)
    assert batch.main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model_path), "--workers", "0"]) == 0
    shown = capsys.readouterr().err
    lines = shown.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [f"[{n}/3] {name} (fused)" for n, name in enumerate(names, 1)]
    assert all(" windows, " in line for line in lines[:3]) and "\r" not in shown
    assert lines[3].startswith("scored 3, skipped as done 0, failed 0, not recordings 0;")
    # The same folder again: all done, said in one line.
    assert batch.main([str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(model_path), "--workers", "0"]) == 0
    assert capsys.readouterr().err.startswith("3 of 3 recording(s) already scored by this model: skipped\nscored 0")


def subject_folders(folder: Path, recordings: dict) -> Path:
    """A folder per subject (`<folder>/<subject>/`), `recordings[subject]` fused tables of ten minutes each."""
    for subject, count in recordings.items():
        study_folder(folder / subject, count, SECONDS)
    (folder / "readme.txt").write_text("one folder per participant")
    return folder


def stored(url: str, tmp_path: Path) -> dict:
    """subject -> [(recording name, number of scorings, newest answer)] as the store holds them."""
    from store import Store

    opened = Store.open(url, blob_root=tmp_path / "blobs", migrate=False)
    try:
        return {person["subject"]: [(r["name"], len(r["scorings"]), opened.recording(person["subject"], r["id"])["answer"])
                                    for r in opened.recordings(person["subject"])] for person in opened.subjects()}
    finally:
        opened.close()


def test_into_sqlite_through_one_writer_a_folder_per_subject_and_again_nothing(cluster, model_path, tmp_path):
    address, _ = cluster
    folder = subject_folders(tmp_path / "study", {"p01": 3, "p02": 2})
    url = f"sqlite:///{tmp_path}/study.db"
    command = [str(folder), str(tmp_path / "out"), "--model", str(model_path), "--scheduler", address, "--store", url]
    assert batch.main(command) == 1  # readme.txt is not a recording
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["store"] == {"url": url, "writer": "client"}  # SQLite: the client ingests what workers return
    assert [(s["subject"], s["recording"]) for s in summary["scored"]] == [
        ("p01", "p000"), ("p01", "p001"), ("p01", "p002"), ("p02", "p000"), ("p02", "p001")]
    assert summary["skipped"] == [{"source": "readme.txt", "reason": "not in a subject's folder (expected <subject>/...)"}]
    assert not list((tmp_path / "out").glob("*/recording.json"))  # into the store, not into files

    held = stored(url, tmp_path)
    assert {subject: [(name, scorings) for name, scorings, _ in rows] for subject, rows in held.items()} == {
        "p01": [("p000", 1), ("p001", 1), ("p002", 1)], "p02": [("p000", 1), ("p001", 1)]}
    # What the store holds is the in-process scorer's answer for the same table.
    assert batch.main([str(folder / "p02"), str(tmp_path / "files"), "--model", str(model_path), "--workers", "0",
                       "--subject", "p02"]) == 0
    assert held["p02"][0][2] == json.loads((tmp_path / "files" / "p000" / "recording.json").read_text())

    assert batch.main(command) == 1
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert again["scored"] == [] and again["done_before"] == ["p01/p000", "p01/p001", "p01/p002", "p02/p000",
                                                             "p02/p001"]
    assert {s: [n for _, n, _ in rows] for s, rows in stored(url, tmp_path).items()} == {"p01": [1, 1, 1],
                                                                                           "p02": [1, 1]}


def test_into_postgresql_every_worker_writes_and_a_killed_one_leaves_no_duplicate(
        cluster, study, model_path, tmp_path, postgres_server):
    address, client = cluster
    folder, names = study
    url = new_postgres_database(postgres_server)
    status = run_losing_a_worker(client, address, [str(folder), str(tmp_path / "out"), "--model", str(model_path),
                                                    "--scheduler", address, "--store", url, "--subject", "p01"])
    assert status == 1  # the broken pair failed; nothing else did
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["store"]["writer"] == "worker"  # PostgreSQL: each worker ingests its own results
    # A task whose worker died after its commit runs again and finds its recording stored: done, not twice.
    assert sorted([s["recording"] for s in summary["scored"]] + [d.split("/")[-1] for d in summary["done_before"]]) \
        == names[1:]
    held = stored(url, tmp_path)["p01"]
    assert sorted(name for name, _, _ in held) == names[1:]  # every recording once
    assert all(scorings == 1 for _, scorings, _ in held)  # and scored once
    until(lambda: len(client.nthreads()) == 2, "the scheduler to drop the dead worker")
