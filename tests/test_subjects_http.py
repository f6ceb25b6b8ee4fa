"""The study store's routes on a real server (python -m serve --store URL), on SQLite and on PostgreSQL:
ingest (201, then 200 with the same body, 16 at once), days, hours, recordings, erasure, the read-only token."""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest

from conftest import GARMIN_ACC, GARMIN_GYR
from log_helpers import json_lines, one_audit_event
from serve_helpers import TOKEN, start_server, stop_server, write_tiny_model
from store_db import new_postgres_database, postgres_server  # noqa: F401  (a fixture)
from store import subject_hash
from store_helpers import garmin_slice

READ_TOKEN = "read-only-token-0123456789"
WRITE, READ = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {READ_TOKEN}"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Five minutes of the real Garmin pair, as workbooks (a short upload keeps 16 at once quick)."""
    return garmin_slice(GARMIN_ACC, GARMIN_GYR, tmp_path_factory.mktemp("pair"), minutes=5)


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory):
    """Four minutes of it: other content (its own fused blob)."""
    return garmin_slice(GARMIN_ACC, GARMIN_GYR, tmp_path_factory.mktemp("other"), minutes=4)


SERVER_LOGS = {}  # base URL -> the server's log


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    """One server per database for the module; each test uses subjects of its own."""
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    url = (f"sqlite:///{folder}/study.db" if request.param == "sqlite"
           else new_postgres_database(request.getfixturevalue("postgres_server")))
    model = write_tiny_model(folder / "model.onnx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HAR_SERVE_READ_TOKEN", READ_TOKEN)
        process, base = start_server(model, folder / "server.log", "--store", url, "--no-access-log")
    SERVER_LOGS[base] = folder / "server.log"
    try:
        yield base
    finally:
        stop_server(process)


def files(pair):
    return {"accelerometer": (pair[0].name, pair[0].read_bytes()), "gyroscope": (pair[1].name, pair[1].read_bytes())}


def test_a_stored_recording_answers_what_recordings_answers_and_is_stored_once(server, pair):
    scored = httpx.post(f"{server}/recordings", headers=WRITE, files=files(pair), timeout=60)
    first = httpx.post(f"{server}/subjects/p1/recordings?timezone=Europe/Berlin", headers=WRITE, files=files(pair),
                       timeout=60)
    assert scored.status_code == 200 and first.status_code == 201, first.text
    stored = first.json()
    assert stored["answer"] == {**scored.json(), "model": {**scored.json()["model"], "subject": "p1"}}
    assert (stored["start_time"], stored["days"]) == ("2025-03-24T07:52:19.766+01:00", ["2025-03-24"])
    again = httpx.post(f"{server}/subjects/p1/recordings", headers=WRITE, files=files(pair), timeout=60)
    assert again.status_code == 200 and again.json() == stored
    listed = httpx.get(f"{server}/subjects/p1/recordings", headers=READ).json()
    assert [r["id"] for r in listed] == [stored["id"]] and len(listed[0]["scorings"]) == 1
    one = httpx.get(f"{server}/subjects/p1/recordings/{stored['id']}", headers=READ).json()
    assert one["answer"] == stored["answer"]
    (day,) = httpx.get(f"{server}/subjects/p1/days", headers=READ).json()
    assert day["date"] == "2025-03-24" and day["recordings"] == 1
    for activity, minutes in stored["answer"]["minutes_per_activity"].items():  # one recording: its own minutes
        assert day["minutes_per_activity"][activity] == pytest.approx(minutes, abs=1e-3)
    assert day["recorded_minutes"] == pytest.approx(stored["answer"]["covered_minutes"], abs=1e-3)


def test_sixteen_identical_uploads_at_once_store_one_recording(server, pair):
    body = files(pair)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{server}/subjects/p2/recordings", headers=WRITE, files=body,
                                                     timeout=120), range(16)))
    assert sorted(a.status_code for a in answers) == [200] * 15 + [201]
    assert all(a.json() == answers[0].json() for a in answers)
    assert len(httpx.get(f"{server}/subjects/p2/recordings", headers=READ).json()) == 1


def test_days_hours_and_subjects_read_as_json_and_csv(server, pair):
    httpx.post(f"{server}/subjects/p3/recordings", headers=WRITE, files=files(pair), timeout=60).raise_for_status()
    days = httpx.get(f"{server}/subjects/p3/days?from=2025-03-24&to=2025-03-24", headers=READ).json()
    assert [d["date"] for d in days] == ["2025-03-24"]
    assert httpx.get(f"{server}/subjects/p3/days?from=2025-03-25", headers=READ).json() == []
    as_csv = httpx.get(f"{server}/subjects/p3/days", headers={**READ, "Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(as_csv.text))
    assert list(table["date"]) == ["2025-03-24"] and table["worn_min"][0] == days[0]["worn_minutes"]
    assert httpx.get(f"{server}/subjects/p3/days.csv", headers=READ).text == as_csv.text
    hours = httpx.get(f"{server}/subjects/p3/hours", headers=READ).json()
    assert [h["hour"] for h in hours["all"]] == list(range(24)) and hours["weekend"][7]["days"] == 0
    assert hours["weekday"][7]["recorded_minutes"] == pytest.approx(days[0]["recorded_minutes"], abs=1e-3)
    subject = next(s for s in httpx.get(f"{server}/subjects", headers=READ).json() if s["subject"] == "p3")
    assert subject == {"subject": "p3", "timezone": "UTC", "recordings": 1, "first_day": "2025-03-24",
                       "last_day": "2025-03-24", "days": 1, "valid_days": 0}
    assert httpx.get(f"{server}/subjects/nobody/days", headers=READ).status_code == 404
    assert httpx.get(f"{server}/subjects/p3/recordings/999", headers=READ).status_code == 404
    assert httpx.get(f"{server}/subjects/-bad-/days", headers=READ).status_code == 400
    assert httpx.get(f"{server}/subjects/p3/days?from=yesterday", headers=READ).status_code == 400


def test_the_read_only_token_reads_but_cannot_write(server, pair):
    httpx.post(f"{server}/subjects/p4/recordings", headers=WRITE, files=files(pair), timeout=60).raise_for_status()
    assert httpx.get(f"{server}/subjects/p4/days", headers=READ).status_code == 200
    assert httpx.post(f"{server}/subjects/p4/recordings", headers=READ, files=files(pair), timeout=60).status_code == 403
    assert httpx.delete(f"{server}/subjects/p4", headers=READ).status_code == 403
    assert httpx.post(f"{server}/recordings", headers=READ, files=files(pair), timeout=60).status_code == 403
    assert httpx.get(f"{server}/subjects/p4/days").status_code == 401
    assert httpx.get(f"{server}/subjects/p4/days", headers={"Authorization": "Bearer wrong-token-0123456789"}
                     ).status_code == 401


def test_erasure_over_http_returns_the_counts_and_leaves_no_subject(server, other_pair):
    stored = httpx.post(f"{server}/subjects/p5/recordings", headers={**WRITE, "X-Request-ID": "ingest-0001"},
                        files=files(other_pair), timeout=60).json()
    erased = httpx.delete(f"{server}/subjects/p5", headers={**WRITE, "X-Request-ID": "erase-0001"})
    assert erased.status_code == 200
    # Each wrote one audit line, under its request's id, naming the token kind; the erasure holds no id.
    audits = [e for e in json_lines(SERVER_LOGS[server].read_text()) if e["logger"] == "audit"]
    ingest = one_audit_event(audits, "store.ingest", request_id="ingest-0001", subject="p5", actor="token:service")
    assert ingest["counts"] == {"recordings": 1, "episodes": len(stored["answer"]["episodes"])}
    erasure = one_audit_event(audits, "store.erasure", request_id="erase-0001", subject=None, actor="token:service",
                              subject_hash=subject_hash("p5"))
    assert erasure["counts"] == {k: v for k, v in erased.json().items() if k != "at"}
    assert not [e for e in audits if "p5" in json.dumps(e) and e["action"] == "store.erasure"]
    counts = erased.json()
    assert (counts["participants"], counts["recordings"], counts["scorings"], counts["blobs"]) == (1, 1, 1, 1)
    assert counts["episodes"] == len(stored["answer"]["episodes"])
    assert "p5" not in [s["subject"] for s in httpx.get(f"{server}/subjects", headers=READ).json()]
    assert httpx.get(f"{server}/subjects/p5/days", headers=READ).status_code == 404
    assert httpx.delete(f"{server}/subjects/p5", headers=WRITE).status_code == 404
