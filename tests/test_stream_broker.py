"""Live streams beyond one process, for real on 127.0.0.1: Debian's redis-server (started here, append-only file
fsynced on every write), `python -m serve` with `serve.stream.broker` as the gateway, and two scoring processes
(`python -m serve.stream_broker`) of one consumer group. Four watches stream a generated study session at once; the
two processes share them; one is SIGKILLed mid-stream, the other takes its watches over (XAUTOCLAIM) and replays
them; every client gets its whole timeline, and the stored recordings equal those of the embedded (in-process) mode.

redis-server missing: these tests fail in CI (env CI set; setup.sh installs it) and skip elsewhere."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from browser_helpers import write_params
from conftest import ROOT
from ops_helpers import need_binary, unused_port
from serve.client import garmin_batches, stream_batches
from serve.stream_broker import GROUP, PREFIX, WATCHES
from serve_helpers import TOKEN, start_server, stop_server
from test_stream import generated_session, jittered, service_params, timeline

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WATCHERS = ["B1", "B2", "B3", "B4"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """redis-server on a free loopback port, its append-only file fsynced on every write (an acknowledged batch
    survives Redis too)."""
    binary = need_binary("redis-server", "redis-server")
    folder = tmp_path_factory.mktemp("redis")
    port = unused_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                                "--appendfsync", "always", "--dir", str(folder)],
                               stdout=open(folder / "redis.log", "wb"), stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, (folder / "redis.log").read_text()
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, redis_url):
    folder = tmp_path_factory.mktemp("broker")
    pair, model, _ = generated_session(folder)

    def params(name: str, broker: str | None):
        p = service_params(folder / name)
        p["serve"]["stream"].update({"silent_s": 30, "broker": broker})
        return write_params(folder / f"{name}.yaml", p)

    return {"folder": folder, "pair": pair, "model": model, "batches": jittered(garmin_batches(*pair), seed=5),
            "embedded": params("embedded", None), "broker": params("broker", redis_url)}


def stored_answer(url: str, subject: str, recording: dict) -> dict:
    return httpx.get(f"{url}/subjects/{subject}/recordings/{recording['id']}", headers=AUTH, timeout=30).json()["answer"]


@pytest.fixture(scope="module")
def embedded(setup):
    """The same session streamed in the embedded mode (one process, no broker): its labels and stored answer."""
    process, url = start_server(setup["model"], setup["folder"] / "embedded.log", "--params", str(setup["embedded"]))
    try:
        streamed = stream_batches(url, "E1", setup["batches"], stream="watch", token=TOKEN, speed=None)
        return streamed, stored_answer(url, "E1", streamed.recording)
    finally:
        stop_server(process)


class ScoringProcess:
    def __init__(self, setup, name: str):
        self.log = setup["folder"] / f"{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve.stream_broker", "--params", str(setup["broker"]), "--model",
             str(setup["model"]), "--name", name, "--claim-after-s", "3"], cwd=ROOT, stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while b"reading" not in self.log.read_bytes():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def holders(client: redis.Redis) -> dict[str, int]:
    """Watches held per scoring process: the group's pending entries by consumer."""
    return {consumer["name"].decode(): consumer["pending"] for consumer in client.xinfo_consumers(WATCHES, GROUP)}


def test_scoring_processes_share_the_watches_and_one_killed_mid_stream_loses_nothing(setup, redis_url, embedded):
    reference, reference_answer = embedded
    client = redis.Redis.from_url(redis_url)
    gateway, url = start_server(setup["model"], setup["folder"] / "gateway.log", "--params", str(setup["broker"]))
    scorers = [ScoringProcess(setup, "s1"), ScoringProcess(setup, "s2")]
    labels_seen = {subject: 0 for subject in WATCHERS}

    def watch(subject: str):
        def counted(message):
            if message["type"] == "label":
                labels_seen[subject] += 1

        return stream_batches(url, subject, setup["batches"], stream="watch", token=TOKEN, speed=25, on_label=counted,
                              drop_after=len(setup["batches"]) // 2 if subject == "B1" else None)

    try:
        with ThreadPoolExecutor(len(WATCHERS)) as pool:
            futures = {subject: pool.submit(watch, subject) for subject in WATCHERS}
            deadline = time.monotonic() + 120
            while not (len(held := holders(client)) == 2 and min(held.values()) >= 1
                       and min(labels_seen.values()) >= 5):
                assert time.monotonic() < deadline and not any(f.done() for f in futures.values()), (held, labels_seen)
                time.sleep(0.1)
            shared = dict(held)
            scorers[0].process.send_signal(signal.SIGKILL)  # mid-stream: its watches are half scored
            scorers[0].process.wait(timeout=30)
            killed_at = dict(labels_seen)
            streamed = {subject: future.result(timeout=300) for subject, future in futures.items()}
        assert sum(shared.values()) == len(WATCHERS)  # the two processes shared the four watches (each held some)
        assert all(killed_at[s] < len(reference.labels) for s in WATCHERS)  # killed before any watch was done
        taken_over = scorers[1].log.read_text()
        assert taken_over.count("taken over by s2") == shared["s1"], taken_over[-3000:]
        for subject, result in streamed.items():  # every label once, in order, as the embedded mode gives them
            assert timeline(result.labels) == timeline(reference.labels), subject
            assert [m["window"] for m in result.labels] == list(range(len(reference.labels)))
            assert result.provisional, subject
            answer = stored_answer(url, subject, result.recording)
            for key in ("timeline", "episodes", "minutes_per_activity", "wear"):
                assert answer[key] == reference_answer[key], (subject, key)
            assert answer["recording"]["fused_seconds"] == reference_answer["recording"]["fused_seconds"]
        assert streamed["B1"].reconnects == 1  # resumed through the gateway from Redis' last batch
        # finished: no watch pending in the group, no batch left in Redis
        assert holders(client).get("s2") == 0 and not list(client.scan_iter(f"{PREFIX}w:*:in"))
    finally:
        for scorer in scorers:
            scorer.stop()
        stop_server(gateway)
