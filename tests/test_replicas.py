"""Two replicas of the service behind HAProxy, for real on 127.0.0.1: `python -m serve --replicated --drain-s 3`
twice, sharing a PostgreSQL store (started by the tests, store_db.py), one model and the folders of the
store's blobs and the per-person models, and Debian's haproxy with the shipped ops/haproxy/haproxy.cfg.

What each replica keeps to itself (its metrics, its drift window, its caches, its per-person model sessions)
and what is shared (the store, the per-person model files); SQLite refused for replicas; a burst of uploads
and ingests through the balancer with one replica SIGKILLed in the middle, the client's retries finishing
the work and the store holding every recording exactly once; a rolling restart under load without a 5xx.

haproxy or PostgreSQL missing: these tests fail in CI (env CI set; setup.sh installs them) and skip elsewhere."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import GARMIN_ACC, GARMIN_GYR
from har.config import load_params
from replica_helpers import HAPROXY_CFG, Balancer, Replica, haproxy_binary, replica_args
from serve.client import HarClient
from serve_helpers import ROOT, TOKEN, random_windows, write_tiny_model, write_tiny_reference
from store_db import new_postgres_database, postgres_server  # noqa: F401  (a fixture)
from store_helpers import garmin_slice
from test_ops import compose, manifest
from test_personal_serving import write_personal_model

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REFUSED_SQLITE = "--replicated needs a study store that every replica shares"


# ---------------------------------------------------------------- the shipped files

def test_the_shipped_haproxy_config_is_valid():
    checked = subprocess.run([haproxy_binary(), "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0 and "Configuration file is valid" in checked.stdout + checked.stderr, checked.stderr


def test_compose_and_kubernetes_run_replicas_that_share_the_store_and_leave_rotation_before_they_stop():
    serve, balancer = compose()["services"]["serve"], compose()["services"]["balancer"]
    assert serve["deploy"]["replicas"] >= 2 and "--replicated" in serve["command"]
    assert serve["command"][serve["command"].index("--store") + 1].startswith("postgresql+psycopg://")
    config = HAPROXY_CFG.read_text()
    assert "./ops/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in balancer["volumes"]
    assert "uri /health/ready" in config and "inter 1s fall 2" in config  # down 2 s after readiness fails
    drain_s = float(serve["command"][serve["command"].index("--drain-s") + 1])
    assert drain_s > 2 and int(serve["stop_grace_period"].removesuffix("s")) >= drain_s + 30

    deployment, service = manifest("Deployment"), manifest("Service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] >= 2 and "--replicated" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    drain_s = float(container["args"][container["args"].index("--drain-s") + 1])
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain_s + 30
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_sqlite_is_refused_for_a_replicated_service(tmp_path):
    model = write_tiny_model(tmp_path / "model.onnx")
    for store in ([], ["--store", f"sqlite:///{tmp_path}/study.db"]):  # params.yaml's store.url, or a flag
        started = subprocess.run([sys.executable, "-m", "serve", "--model", str(model), "--port", "0", "--replicated",
                                  *store], cwd=ROOT, env={"HAR_SERVE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
                                 capture_output=True, text=True, timeout=120)
        assert started.returncode == 2, started.stderr[-2000:]
        assert REFUSED_SQLITE in started.stderr and "is an SQLite file on this machine" in started.stderr
        assert "Give --store postgresql+psycopg://" in started.stderr


# ---------------------------------------------------------------- two replicas, one store

OPEN_ON_SIGNAL = """
import sys
from store import Store
print("imported", flush=True)
sys.stdin.readline()  # all at once
Store.open(sys.argv[1], blob_root=sys.argv[2]).close()
"""


def test_replicas_opening_an_empty_postgresql_store_at_once_all_find_it_upgraded(postgres_server, tmp_path):
    """Replicas start together and each upgrades the store's schema on its first use: the upgrades queue
    (an advisory lock) instead of racing to create Alembic's version table."""
    for _ in range(3):
        url = new_postgres_database(postgres_server)
        openers = [subprocess.Popen([sys.executable, "-c", OPEN_ON_SIGNAL, url, str(tmp_path)], cwd=ROOT, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for _ in range(3)]
        for opener in openers:
            assert opener.stdout.readline() == "imported\n", opener.stderr.read()
        for opener in openers:
            opener.stdin.write("go\n")
            opener.stdin.flush()
        failed = [opener.stderr.read()[-600:] for opener in openers if opener.wait(timeout=120) != 0]
        assert failed == []


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """Two short pieces of the real Garmin hour (3 and 4 minutes): two recordings of distinct content."""
    folder = tmp_path_factory.mktemp("slices")
    return [garmin_slice(GARMIN_ACC, GARMIN_GYR, folder / f"{minutes}min", minutes=minutes) for minutes in (3, 4)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_server):
    haproxy_binary()  # missing: fail in CI, skip elsewhere, before anything starts
    folder = tmp_path_factory.mktemp("replicas")
    params = load_params(ROOT / "params.yaml")
    model = write_tiny_model(folder / "model.onnx")
    write_tiny_reference(model, params["monitor"])  # each replica's live drift watch compares against it
    shared = folder / "shared"  # what a compose volume or a ReadWriteMany claim would be
    (shared / "personal").mkdir(parents=True)
    params["store"]["blob_root"] = str(shared / "blobs")
    params["serve"]["personal"] = {"models_dir": str(shared / "personal"), "cache_size": 4}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    store_url = new_postgres_database(postgres_server)
    replicas, balancer = {}, None
    try:
        for name in ("r1", "r2"):
            replicas[name] = Replica(name, folder, model, replica_args(folder / "params.yaml", store_url))
        balancer = Balancer(folder, {name: replica.port for name, replica in replicas.items()})
        for name in replicas:
            balancer.wait_until(name, "UP")
        yield {"replicas": replicas, "balancer": balancer, "store_url": store_url, "shared": shared}
    finally:
        if balancer is not None:
            balancer.close()
        for replica in replicas.values():
            replica.close()


def samples(url: str) -> dict:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def predictions_served(url: str) -> float:
    return sum(v for (name, labels), v in samples(url).items() if name == "har_http_requests_total"
               and dict(labels).get("route") == "/predict" and dict(labels).get("status") == "200")


def drift_windows(url: str) -> float:
    return samples(url)[("har_drift_windows_observed", ())]


def files(pair) -> dict:
    return {"accelerometer": (pair[0].name, pair[0].read_bytes()), "gyroscope": (pair[1].name, pair[1].read_bytes())}


def test_each_replica_counts_and_watches_drift_for_itself_and_the_balancer_uses_both(cluster):
    replicas = cluster["replicas"]
    before = {name: (predictions_served(r.url), drift_windows(r.url)) for name, r in replicas.items()}
    with httpx.Client(base_url=cluster["balancer"].url, headers=AUTH, timeout=30) as client:
        for i in range(40):
            assert client.post("/predict", json={"windows": random_windows(5, seed=i).tolist()}).status_code == 200
    served = {name: predictions_served(r.url) - before[name][0] for name, r in replicas.items()}
    assert sum(served.values()) == 40 and min(served.values()) >= 10, served  # each replica counts its own
    for name, replica in replicas.items():  # and its drift window holds the windows it scored, no others
        assert drift_windows(replica.url) - before[name][1] == 5 * served[name]


def test_the_store_is_shared_and_no_replica_answers_from_a_stale_cache(cluster, slices):
    r1, r2 = cluster["replicas"].values()
    first = httpx.post(f"{r1.url}/subjects/shared/recordings", headers=AUTH, files=files(slices[0]), timeout=60)
    assert first.status_code == 201, first.text
    again = httpx.post(f"{r2.url}/subjects/shared/recordings", headers=AUTH, files=files(slices[0]), timeout=60)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]  # stored once, whoever is asked
    (day,) = httpx.get(f"{r2.url}/subjects/shared/days", headers=AUTH).json()
    assert day["recordings"] == 1
    # r2 now holds this participant's days in its cache; another recording arrives through r1
    second = httpx.post(f"{r1.url}/subjects/shared/recordings", headers=AUTH, files=files(slices[1]), timeout=60)
    assert second.status_code == 201, second.text
    (day,) = httpx.get(f"{r2.url}/subjects/shared/days", headers=AUTH).json()
    assert day["recordings"] == 2  # r2's cache is keyed by the store's version of the participant: never stale
    listed = httpx.get(f"{r2.url}/subjects/shared/recordings", headers=AUTH).json()
    assert sorted(r["id"] for r in listed) == sorted([first.json()["id"], second.json()["id"]])


def test_per_person_models_are_shared_files_and_an_erasure_reaches_every_replica(cluster, slices):
    write_personal_model(cluster["shared"] / "personal", "p1", "typing")
    replicas = list(cluster["replicas"].values())
    body = {"windows": random_windows(3).tolist(), "subject": "p1"}
    for replica in replicas:  # each loads the file into a session of its own
        answer = httpx.post(f"{replica.url}/predict", headers=AUTH, json=body).json()
        assert (answer["model"], answer["personal"]) == ("har-p1", True)
    stored = httpx.post(f"{replicas[1].url}/subjects/p1/recordings", headers=AUTH, files=files(slices[0]), timeout=60)
    assert stored.status_code == 201 and stored.json()["answer"]["model"]["personal"] is True
    erased = httpx.delete(f"{replicas[0].url}/subjects/p1", headers=AUTH)
    assert erased.status_code == 200 and erased.json()["personal_models"] == 1
    for replica in replicas:  # the file is gone for both: the other replica's loaded session is not used again
        answer = httpx.post(f"{replica.url}/predict", headers=AUTH, json=body).json()
        assert (answer["model"], answer["personal"]) == ("har", False)
    assert httpx.get(f"{replicas[1].url}/subjects/p1/days", headers=AUTH).status_code == 404


def test_a_replica_killed_mid_burst_loses_nothing_and_the_store_holds_each_recording_once(cluster, slices):
    balancer, (r1, _) = cluster["balancer"], cluster["replicas"].values()
    subjects = [f"k{i:02d}" for i in range(8)]
    work = [("ingest", s, pair) for s in subjects for pair in slices] + [("score", s, slices[0]) for s in subjects]
    done, clients = [], {}

    def run(index):
        kind, subject, pair = item = work[index]
        with HarClient(balancer.url, token=TOKEN, retries=6, max_retry_wait_s=4, timeout=60) as client:
            clients[index] = client
            result = client.ingest(subject, *pair) if kind == "ingest" else client.recording(*pair)
        done.append(item)
        return result

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(run, index) for index in range(len(work))]
        deadline = time.monotonic() + 60
        while not (len(done) >= 3 and int(balancer.servers()["r1"]["scur"]) >= 2):  # r1 busy: both cannot end now
            assert time.monotonic() < deadline, "r1 never had two requests in flight"
            time.sleep(0.005)
        answered_before_kill = len(done)
        r1.kill()
        results = [future.result(timeout=180) for future in futures]  # every one finished, by its retries
    try:
        def lost(client) -> int:  # attempts whose answer went with r1 (the balancer's 502/504, or a dropped connection)
            return client.answered[502] + client.answered[504] + sum(client.dropped.values())

        retried = sum(lost(c) + c.answered[503] for c in clients.values())
        print(f"\nr1 killed after {answered_before_kill} of {len(work)} answers: {retried} attempts retried")
        assert retried >= 1  # the kill cost somebody an answer, which a retry got
        ingested = [(index, result) for index, result in enumerate(results) if work[index][0] == "ingest"]
        hashes = {stored["content_hash"] for _, (stored, _) in ingested}
        assert len(hashes) == 2
        # An ingest that r1 committed before it was killed, but whose answer was lost, is answered 200 (already
        # stored) on its retry: `created` is False only for a call that lost an attempt, and the store decides.
        assert all(created or lost(clients[index]) for index, (_, created) in ingested)
        from store import Store

        store = Store.open(cluster["store_url"], blob_root=cluster["shared"] / "blobs")
        try:
            for subject in subjects:  # each recording once, scored once: none lost, none twice
                stored = store.recordings(subject)
                assert sorted(r["content_hash"] for r in stored) == sorted(hashes), subject
                assert [len(r["scorings"]) for r in stored] == [1, 1], subject
        finally:
            store.close()
    finally:
        r1.start()
        balancer.wait_until("r1", "UP")


def test_a_replica_given_sigterm_leaves_the_balancer_before_it_stops_listening(cluster):
    """--drain-s 3: readiness 503 at once while predictions are still answered; HAProxy marks the replica down
    (2 failed checks, 1 s apart) before it stops listening: a balancer without retries (a Kubernetes Service)
    sends it nothing it cannot answer."""
    balancer, replica = cluster["balancer"], cluster["replicas"]["r2"]
    body = {"windows": random_windows(1).tolist()}
    replica.process.terminate()
    seen = []  # (seconds since SIGTERM, readiness, prediction, HAProxy's status)
    started = time.monotonic()
    try:
        while replica.process.poll() is None and time.monotonic() - started < 30:
            try:
                ready = httpx.get(f"{replica.url}/health/ready", timeout=2).status_code
                predicted = httpx.post(f"{replica.url}/predict", headers=AUTH, json=body, timeout=5).status_code
            except httpx.ConnectError:
                ready = predicted = "refused"
            seen.append((time.monotonic() - started, ready, predicted, balancer.servers()["r2"]["status"]))
            time.sleep(0.1)
        assert replica.process.wait(timeout=30) == -signal.SIGTERM  # uvicorn's clean exit re-raises the signal
    finally:
        replica.start()
        balancer.wait_until("r2", "UP")
    serving = [s for s in seen if s[2] == 200]
    unready = next(i for i, s in enumerate(serving) if s[1] == 503)  # within uvicorn's 0.1 s tick of the signal
    assert all(ready == 503 for _, ready, _, _ in serving[unready:])  # and not ready again
    assert serving[-1][0] - serving[unready][0] >= 2.5  # serving all the while (--drain-s 3)
    assert any(status.startswith("DOWN") for *_, status in serving)  # out of rotation while still serving
    assert seen[-1][1:3] == ("refused", "refused")  # then it stopped listening


def test_a_rolling_restart_under_load_answers_every_request(cluster, slices):
    balancer, replicas = cluster["balancer"], cluster["replicas"]
    outcomes, stop = [], threading.Event()

    def load(kind: str) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens to the restarts
        with httpx.Client(base_url=balancer.url, headers=AUTH, timeout=60) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    if kind == "predict":
                        status = client.post("/predict", json={"windows": random_windows(2).tolist()}).status_code
                    else:
                        status = client.post("/recordings", files=files(slices[0])).status_code
                except httpx.HTTPError as error:
                    status = f"{type(error).__name__}: {error}"
                outcomes.append((kind, time.monotonic(), status))

    threads = [threading.Thread(target=load, args=(kind,), daemon=True) for kind in ("predict", "predict", "upload")]
    for thread in threads:
        thread.start()
    restarted = {}
    try:
        time.sleep(1.0)
        for name, replica in replicas.items():  # one at a time: the other carries the load meanwhile
            replica.stop()  # SIGTERM: 3 s not ready while serving, then it stops listening and finishes
            replica.start()
            restarted[name] = time.monotonic()
            balancer.wait_until(name, "UP")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    during = [o for o in outcomes if o[1] <= max(restarted.values())]
    print(f"\nrolling restart: {len(outcomes)} requests, {len(during)} before the last replica was back")
    failed = [(kind, status) for kind, _, status in outcomes if status != 200]
    assert failed == [], failed[:10]
    assert {kind for kind, _, _ in outcomes} == {"predict", "upload"} and len(outcomes) > 50
    assert all(predictions_served(r.url) > 0 for r in replicas.values())  # both back in rotation, serving
