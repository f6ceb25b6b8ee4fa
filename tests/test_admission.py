"""Backpressure on recording uploads (serve/admission.py): the budget's queue on its own, then the real service
over HTTP with a budget that holds one one-hour upload, and the client's retries."""
import asyncio
import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from admission_helpers import budget_held, headers_only, metric, scrape, wait_for
from conftest import GARMIN_ACC, GARMIN_GYR
from har.config import load_params
from serve.admission import MiB, UploadBudget
from serve.client import HarClient, ServiceError, retry_after_seconds, retry_delay
from serve.monitoring import AdmissionMetrics
from serve_helpers import ROOT, TOKEN, start_server, stop_server, write_tiny_model

PAIR_BYTES = GARMIN_ACC.stat().st_size + GARMIN_GYR.stat().st_size  # about 6.08 MB
FACTOR = 15.0
BUDGET_MB = 100  # one one-hour upload (6.08 MB x 15 = 87 MiB) fits, two do not
WAIT_TIMEOUT_S = 3.0  # long enough that a loaded machine queues the next request within it
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------- the budget's queue, without HTTP

def budget(budget_bytes=100, max_waiting=2, wait_timeout_s=5.0) -> tuple[UploadBudget, AdmissionMetrics]:
    metrics = AdmissionMetrics(CollectorRegistry())
    return UploadBudget(budget_bytes, memory_per_uploaded_byte=1.0, max_upload_bytes=1000, max_waiting=max_waiting,
                        wait_timeout_s=wait_timeout_s, retry_after_s=3, metrics=metrics), metrics


def test_work_within_the_budget_runs_the_rest_waits_in_arrival_order_then_is_refused():
    async def scenario():
        admission, metrics = budget()
        assert await admission.acquire(60) is None and await admission.acquire(40) is None  # 100 of 100
        order = []

        async def wait_then_note(name, cost):
            refusal = await admission.acquire(cost)
            order.append(name if refusal is None else (name, refusal.status_code))

        first = asyncio.create_task(wait_then_note("big", 70))
        second = asyncio.create_task(wait_then_note("small", 10))
        await asyncio.sleep(0)
        assert admission.waiting == 2 and metrics.waiting._value.get() == 2
        full = await admission.acquire(1)  # a third would wait: the queue holds two
        assert (full.status_code, full.reason, full.retry_after_s) == (503, "queue_full", 3)
        assert "2 more wait (serve.recordings.max_waiting)" in full.message
        admission.release(40)  # 60 in flight: the small one would fit, but the big one came first
        await asyncio.sleep(0)
        assert order == [] and admission.waiting == 2
        admission.release(60)  # 0: both fit (70 + 10)
        await asyncio.gather(first, second)
        assert order == ["big", "small"] and admission.in_flight == 80
        assert metrics.in_flight._value.get() == 80 and metrics.waits._value.get() == 2
        assert metrics.admitted._value.get() == 4 and metrics.refusals.labels("queue_full")._value.get() == 1

    asyncio.run(scenario())


def test_a_wait_ends_at_the_timeout_and_frees_its_place():
    async def scenario():
        admission, metrics = budget(wait_timeout_s=0.05)
        assert await admission.acquire(90) is None
        started = time.perf_counter()
        refusal = await admission.acquire(20)
        assert time.perf_counter() - started >= 0.05
        assert (refusal.status_code, refusal.reason) == (503, "timeout") and "waited 0.05 s" in refusal.message
        assert admission.waiting == 0 and admission.in_flight == 90
        assert await admission.acquire(10) is None  # what fits still runs
        assert metrics.refusals.labels("timeout")._value.get() == 1

    asyncio.run(scenario())


def test_a_cancelled_wait_leaves_nothing_charged():
    async def scenario():
        admission, _ = budget()
        assert await admission.acquire(100) is None
        waiter = asyncio.create_task(admission.acquire(50))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        admission.release(100)
        assert (admission.in_flight, admission.waiting) == (0, 0)

    asyncio.run(scenario())


def test_an_upload_larger_than_the_whole_budget_is_refused_at_once_and_no_budget_admits_everything():
    async def scenario():
        admission, metrics = budget()
        refusal = await admission.acquire(101)
        assert (refusal.status_code, refusal.reason, refusal.retry_after_s) == (413, "too_large", None)
        assert "serve.recordings.memory_budget_mb" in refusal.message
        unbounded, _ = budget(budget_bytes=None)
        assert all([await unbounded.acquire(10 ** 9) is None for _ in range(3)]) and unbounded.in_flight == 3 * 10 ** 9

    asyncio.run(scenario())


def test_the_client_sleeps_the_retry_after_plus_jitter_bounded():
    assert retry_after_seconds("7") == 7 and retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_delay("4", 0, jitter=lambda: 0.0) == 4 and retry_delay("4", 0, jitter=lambda: 0.99) == pytest.approx(7.96)
    assert retry_delay("4", 2, jitter=lambda: 0.5) == 24  # doubled for each refusal before
    assert retry_delay(None, 2, first_s=0.5, jitter=lambda: 0.0) == 2.0  # no Retry-After: from first_s
    assert retry_delay("3600", 0, max_s=60) == 60 and retry_delay("4", 9, max_s=60) == 60


# ---------------------------------------------------------------- the real service

@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("admission")
    params = load_params(ROOT / "params.yaml")
    params["serve"]["recordings"] = {"memory_budget_mb": BUDGET_MB, "memory_per_uploaded_byte": FACTOR,
                                     "max_waiting": 1, "wait_timeout_s": WAIT_TIMEOUT_S, "retry_after_s": 1}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    process, url = start_server(write_tiny_model(folder / "model.onnx"), folder / "server.log",
                                "--params", str(folder / "params.yaml"), "--no-access-log")
    yield url
    stop_server(process)


def upload(url: str) -> httpx.Response:
    with open(GARMIN_ACC, "rb") as acc, open(GARMIN_GYR, "rb") as gyr, httpx.Client(timeout=120) as client:
        return client.post(url + "/recordings", headers=AUTH,
                           files={"accelerometer": (GARMIN_ACC.name, acc), "gyroscope": (GARMIN_GYR.name, gyr)})


@pytest.fixture
def holding(service):
    """An admitted upload that holds the budget until the test lets go: its body never comes."""
    with budget_held(service, PAIR_BYTES) as connection:
        yield connection


def test_concurrent_uploads_get_200_or_503_with_retry_after_never_500(service):
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: upload(service), range(4)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 1, statuses  # one runs, one may wait, the rest wait no more
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["retry-after"] == "1"
            assert "100 MiB memory budget for uploads (serve.recordings.memory_budget_mb)" in answer.json()["detail"]
        else:
            assert answer.json()["windows"] > 1000  # the hour, scored
    assert metric(service, "har_admission_in_flight_bytes") == 0 and metric(service, "har_admission_waiting") == 0


def test_a_waiting_upload_is_refused_at_the_queue_timeout_and_the_metrics_say_so(service, holding):
    before = scrape(service)
    assert metric(service, "har_admission_in_flight_bytes") == int(-(-PAIR_BYTES * FACTOR // 1))  # ceil
    started = time.perf_counter()
    waiter = headers_only(service, PAIR_BYTES)  # queued: it cannot fit beside the held one
    wait_for(lambda: metric(service, "har_admission_waiting") == 1)
    answer = waiter.getresponse()
    waited = time.perf_counter() - started
    assert answer.status == 503 and answer.getheader("Retry-After") == "1"
    assert WAIT_TIMEOUT_S <= waited < WAIT_TIMEOUT_S + 5
    assert f"waited {WAIT_TIMEOUT_S:g} s (serve.recordings.wait_timeout_s)" in answer.read().decode()
    waiter.close()
    after = scrape(service)
    moved = {name[0]: after[name] - before[name] for name in after if after[name] != before.get(name)}
    assert moved["har_admission_waits_total"] == 1 and moved["har_admission_wait_seconds_count"] == 1
    assert moved["har_admission_wait_seconds_sum"] >= WAIT_TIMEOUT_S - 0.002  # uvloop's timers tick in milliseconds
    assert after[("har_admission_refusals_total", (("reason", "timeout"),))] - \
        before[("har_admission_refusals_total", (("reason", "timeout"),))] == 1
    assert metric(service, "har_admission_waiting") == 0
    assert metric(service, "har_admission_budget_bytes") == BUDGET_MB * MiB


def test_an_upload_that_cannot_fit_is_refused_before_its_body_is_read(service):
    """The headers alone get the answer: were the body awaited, this would time out (none is ever sent)."""
    too_large = int(BUDGET_MB * MiB / FACTOR) + 1000  # well under serve.max_upload_mb (32)
    connection = headers_only(service, too_large, timeout_s=10)
    answer = connection.getresponse()
    assert answer.status == 413 and answer.getheader("Retry-After") is None
    assert "more than all of the 100 MiB memory budget" in answer.read().decode()
    connection.close()
    assert metric(service, "har_admission_refusals_total", reason="too_large") >= 1


def test_a_full_queue_is_refused_before_the_body_is_read(service, holding):
    waiter = headers_only(service, PAIR_BYTES)  # takes the one place in the queue
    wait_for(lambda: metric(service, "har_admission_waiting") == 1)
    refused = headers_only(service, PAIR_BYTES, timeout_s=10).getresponse()
    assert refused.status == 503 and refused.getheader("Retry-After") == "1"
    assert "1 more wait (serve.recordings.max_waiting)" in refused.read().decode()
    waiter.close()


def test_an_unauthenticated_upload_takes_no_place(service, holding):
    parts = urlsplit(service)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/recordings", body=b"x" * 100, headers={"Content-Type": "multipart/form-data"})
    assert connection.getresponse().status == 401  # at once: the guard runs before the queue
    connection.close()


def test_the_client_retries_a_503_then_succeeds(service, holding):
    result = {}
    with HarClient(service, token=TOKEN, retries=3) as client:
        thread = threading.Thread(target=lambda: result.update(answer=client.recording(GARMIN_ACC, GARMIN_GYR)))
        thread.start()
        wait_for(lambda: client.answered[503] >= 1)  # refused once (the queue wait timed out): now it sleeps 1-2 s
        holding.close()  # room again before the retry
        thread.join(timeout=120)
    assert result["answer"]["windows"] > 1000
    assert client.answered[503] >= 1 and client.answered[200] == 1


def test_the_client_gives_up_after_its_retries(service, holding):
    with HarClient(service, token=TOKEN, retries=1, max_retry_wait_s=0.1) as client:
        with pytest.raises(ServiceError) as refused:
            client.recording(GARMIN_ACC, GARMIN_GYR)
    assert refused.value.status_code == 503 and client.answered == {503: 2}
