"""The study store on SQLite and on a real PostgreSQL server: days and hours worked out by hand, idempotent
ingest under concurrency, a killed ingest, re-scoring, erasure."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from store import NotFound, Store, queries, subject_hash
from store.tables import SUMMARY_TABLES, Audit, Episode, Participant, Recording, Scoring
from store_db import postgres_server, store, store_url  # noqa: F401  (fixtures)
from store_helpers import ACTIVITIES, MODEL, answer, fused
from har.audit import local_actor
from log_helpers import one_audit_event, recorded_audit

BERLIN = "Europe/Berlin"
ROOT_DIR = Path(__file__).resolve().parent.parent


def ingest(store, subject, start, episodes, *, content="c", tz=BERLIN, model=MODEL, seed=0):
    return store.ingest(subject, content_hash=content, fused=fused(60, seed), timezone=tz,
                        answer=answer(start, episodes, model=model))


def day(days, date):
    return next(d for d in days if d["date"] == date)


def table_counts(store) -> dict:
    with store.transaction() as conn:
        return {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in (Participant, Recording, Scoring, Episode, Audit, *SUMMARY_TABLES)}


def test_a_recording_crossing_midnight_is_split_between_its_two_days(store):
    rec, created = ingest(store, "p1", "2025-06-10T23:00:00", [("sitting", 0, 1800), ("typing", 1800, 5400),
                                                                ("not_worn", 5400, 7200)])
    assert created and rec["days"] == ["2025-06-10", "2025-06-11"]
    assert rec["start_time"] == "2025-06-10T23:00:00.000+02:00" and rec["end_time"] == "2025-06-11T01:00:00.000+02:00"
    first, second = store.days("p1")
    # Each 2-s window gives its episode's activity 0.7 and the others 0.15 (store_helpers.basis_of): spread 0.21
    # and 0.1275 per window second, times the interval scale 2.
    assert first == {"date": "2025-06-10", "weekday": "Tuesday", "day_hours": 24.0, "recorded_minutes": 60.0,
                     "worn_minutes": 60.0, "not_worn_minutes": 0.0, "uncertain_minutes": 0.0, "overlap_minutes": 0.0,
                     "minutes_per_activity": {"sitting": 25.5, "typing": 25.5, "clapping": 9.0},
                     "minutes_interval_90": {"sitting": [5.25, 45.75], "typing": [5.25, 45.75],
                                             "clapping": [0.0, 24.3]},
                     "counted_minutes_per_activity": {"sitting": 30.0, "typing": 30.0, "clapping": 0.0},
                     "unestimated_minutes": 0.0,
                     "episodes_per_activity": {"sitting": 1, "typing": 1, "clapping": 0}, "recordings": 1,
                     "valid": False}
    # typing runs on from 23:30 to 00:30: its episode is counted on the day it started
    assert second["counted_minutes_per_activity"] == {"sitting": 0.0, "typing": 30.0, "clapping": 0.0}
    assert second["minutes_per_activity"] == {"sitting": 4.5, "typing": 21.0, "clapping": 4.5}
    assert second["episodes_per_activity"]["typing"] == 0
    assert (second["worn_minutes"], second["not_worn_minutes"]) == (30.0, 30.0)


def test_daylight_saving_days_have_23_and_25_hours(store):
    ingest(store, "p1", "2025-03-30T00:00:00", [("sitting", 0, 23 * 3600)], content="spring")
    ingest(store, "p1", "2025-10-26T00:00:00", [("typing", 0, 25 * 3600)], content="autumn")
    spring, autumn = day(store.days("p1"), "2025-03-30"), day(store.days("p1"), "2025-10-26")
    assert spring["day_hours"] == 23.0 and spring["recorded_minutes"] == 23 * 60
    assert autumn["day_hours"] == 25.0 and autumn["recorded_minutes"] == 25 * 60
    assert [d["date"] for d in store.days("p1", "2025-03-29", "2025-03-31")] == ["2025-03-30", "2025-03-31"]
    assert day(store.days("p1"), "2025-03-31")["recorded_minutes"] == 0.0  # nothing recorded between the two
    profile = {h["hour"]: h for h in store.hours("p1")["weekend"]}  # both are Sundays
    # 02:00-03:00 happens twice in October (120 min that day), and not at all in March
    assert profile[2]["days"] == 1 and profile[2]["counted_minutes_per_activity"]["typing"] == 120.0
    assert profile[2]["minutes_per_activity"]["typing"] == 84.0  # 0.7 of each window
    assert profile[3]["days"] == 2 and profile[3]["recorded_minutes"] == 60.0
    assert store.hours("p1")["weekday"][3]["days"] == 0


def test_overlapping_recordings_count_each_second_once_and_report_the_overlap(store):
    ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 3600)], content="a")
    ingest(store, "p1", "2025-06-10T10:30:00", [("typing", 0, 3600)], content="b")
    (only,) = store.days("p1")
    assert only["recorded_minutes"] == 90.0 and only["overlap_minutes"] == 30.0 and only["recordings"] == 2
    # the recording that started first gives the overlapping half hour its label, and its windows the estimate
    assert only["counted_minutes_per_activity"] == {"sitting": 60.0, "typing": 30.0, "clapping": 0.0}
    assert only["minutes_per_activity"] == {"sitting": 46.5, "typing": 30.0, "clapping": 13.5}


def test_a_day_is_valid_with_the_configured_minimum_of_worn_hours(store):
    ingest(store, "p1", "2025-06-10T00:00:00", [("sitting", 0, 16 * 3600), ("not_worn", 16 * 3600, 24 * 3600)],
           content="a")
    ingest(store, "p1", "2025-06-11T00:00:00", [("sitting", 0, 16 * 3600 - 60), ("uncertain", 16 * 3600 - 60, 16 * 3600),
                                                ("not_worn", 16 * 3600, 24 * 3600)], content="b")
    ingest(store, "p1", "2025-06-12T00:00:00", [("sitting", 0, 16 * 3600 - 1)], content="c")
    assert [d["valid"] for d in store.days("p1")] == [True, True, False]  # uncertain time is worn time
    assert [d["valid"] for d in store.days("p1", min_worn_hours=21)] == [False, False, False]
    assert store.subjects() == [{"subject": "p1", "timezone": BERLIN, "recordings": 3, "first_day": "2025-06-10",
                                 "last_day": "2025-06-12", "days": 3, "valid_days": 2}]


def test_a_persons_days_add_up_to_their_per_recording_answers(store):
    rng = np.random.default_rng(3)
    answers, start = [], np.datetime64("2025-10-24T20:00:00")
    for i in range(12):  # back to back, across midnights and the October clock change
        cuts = np.sort(rng.uniform(0, 3 * 3600, 6)).round(1)
        bounds = [0.0, *cuts, 3 * 3600.0]
        labels = rng.choice([*ACTIVITIES, "uncertain", "not_worn"], len(bounds) - 1)
        episodes = [(str(label), a, b) for label, a, b in zip(labels, bounds[:-1], bounds[1:])]
        rec, _ = ingest(store, "p1", str(start + np.timedelta64(i * 3 * 3600 + 7, "s")), episodes, content=f"r{i}")
        answers.append(rec["answer"])
    days = store.days("p1")
    assert len(days) >= 3 and sum(d["overlap_minutes"] for d in days) == 0
    tolerance = 1e-3 * (len(days) + len(answers))  # both sides round to thousandths of a minute
    for activity in ACTIVITIES:
        for minutes in ("minutes_per_activity", "counted_minutes_per_activity"):
            assert sum(d[minutes][activity] for d in days) == pytest.approx(
                sum(a[minutes][activity] for a in answers), abs=tolerance)
    for state in ("uncertain", "not_worn"):
        assert sum(d[f"{state}_minutes"] for d in days) == pytest.approx(sum(a[f"{state}_minutes"] for a in answers),
                                                                         abs=tolerance)
    assert sum(d["recorded_minutes"] for d in days) == pytest.approx(sum(a["covered_minutes"] for a in answers),
                                                                     abs=tolerance)


def test_the_same_upload_twice_stores_nothing_new(store):
    first, created = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 600)])
    counts = table_counts(store)
    again, created_again = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 600)])
    assert created and not created_again and again == first and table_counts(store) == counts
    assert store.has_scoring("c", MODEL["sha256"]) and not store.has_scoring("c", "b" * 64)


def test_sixteen_concurrent_identical_uploads_store_one_recording(store):
    barrier, results, errors = threading.Barrier(16), [], []

    def upload():
        try:
            barrier.wait(timeout=30)
            results.append(ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 300), ("typing", 300, 600)]))
        except Exception as error:  # reported below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=upload) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 16
    assert sorted(created for _, created in results) == [False] * 15 + [True]
    assert len({rec["id"] for rec, _ in results}) == 1
    # one day, one hour, three activities with counted or estimated time in the summaries
    assert table_counts(store) == {"participants": 1, "recordings": 1, "scorings": 1, "episodes": 2, "audit": 0,
                                   "summary_days": 1, "summary_day_labels": 3, "summary_hours": 1,
                                   "summary_hour_labels": 3}


KILLED_INGEST = """
import os, sys, time
sys.path.insert(0, "tests")
import store
from store import Store, queries
from store_helpers import answer, fused


def hang(said):
    def hanging(*args):
        print(said, flush=True)
        time.sleep(60)
    return hanging


if sys.argv[3] == "blob written":  # the blob renamed into place, every row written, the commit still to come
    queries.set_blob = hang("blob written")
else:  # the blob's bytes in a temporary file, not yet renamed into place; the transaction waits for it
    store.os = type("os", (), {**vars(os), "replace": hang("blob half written")})
opened = Store.open(sys.argv[1], blob_root=sys.argv[2])
opened.ingest("p1", content_hash="c", fused=fused(60), timezone="UTC",
              answer=answer("2025-06-10T10:00:00", [("sitting", 0, 600)]))
"""


@pytest.mark.parametrize("moment", ["blob written", "blob half written"])
def test_an_ingest_killed_between_blob_and_row_leaves_nothing_half_stored(store, store_url, tmp_path, moment):
    blobs = tmp_path / "blobs"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_INGEST), store_url, str(blobs), moment],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.strip() == moment, process.stderr.read()
    finally:
        process.kill()
        process.wait(timeout=10)
    # no row (no participant, no summary); the blob, whole or half, is a file nothing refers to, and gc takes it
    assert table_counts(store) == {"participants": 0, "recordings": 0, "scorings": 0, "episodes": 0, "audit": 0,
                                   "summary_days": 0, "summary_day_labels": 0, "summary_hours": 0,
                                   "summary_hour_labels": 0}
    left = [p.name for p in blobs.iterdir()]
    assert len(left) == 1 and left[0].endswith(".parquet") and left[0].startswith(".tmp-") == (moment != "blob written")
    assert store.collect_garbage(min_age_s=0) == {"blobs": 1}
    assert not list(blobs.iterdir())
    rec, created = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 600)])  # the retry goes through
    assert created and store.days("p1")[0]["recorded_minutes"] == 10.0
    assert store.fused(rec["id"]).equals(fused(60))


def test_a_new_scoring_keeps_the_old_one_and_days_follow_it(store):
    rec, _ = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 600)])
    champion = {"name": "har", "version": "v2", "sha256": "b" * 64}
    with_labels = answer("2025-06-10T10:00:00", [("typing", 0, 300), ("drinking", 300, 600)], model=champion,
                         activities=["typing", "drinking"])
    assert store.add_scoring(rec["id"], with_labels) and not store.add_scoring(rec["id"], with_labels)
    (only,) = store.days("p1")
    # the union of both models' activities, in the order first seen; the newest scoring's minutes
    assert only["minutes_per_activity"] == {"typing": 5.0, "drinking": 5.0}
    stored = store.recording("p1", rec["id"])
    assert [s["version"] for s in stored["scorings"]] == ["v1", "v2"] and stored["answer"]["model"]["version"] == "v2"
    assert [s["version"] for s in store.recordings("p1")[0]["scorings"]] == ["v1", "v2"]


def test_an_ingest_writes_one_audit_event_and_the_same_content_again_none(store):
    with recorded_audit() as events:
        first, created = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 600)], content="a")
        again, created_again = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 600)], content="a")
    assert created and not created_again
    one_audit_event(events, "store.ingest", subject="p1", model=MODEL["name"], version=MODEL["version"],
                    counts={"recordings": 1, "episodes": 1}, recording_id=first["id"], actor=local_actor())
    assert len(events) == 1


def test_erasure_leaves_nothing_of_the_person(store, store_url, tmp_path):
    # A long id: two bytes like b"p1" turn up by chance in a database file's checksums and compressed blobs.
    erased = "participant-to-erase-7"
    (tmp_path / "personal").mkdir()
    (tmp_path / "personal" / f"{erased}.onnx").write_bytes(b"model of p1")
    (tmp_path / "personal" / "p2.onnx").write_bytes(b"model of p2")
    ingest(store, erased, "2025-06-10T10:00:00", [("sitting", 0, 600)], content="a", seed=1)
    ingest(store, erased, "2025-06-11T10:00:00", [("typing", 0, 600), ("sitting", 600, 900)], content="b", seed=2)
    ingest(store, "p2", "2025-06-10T10:00:00", [("sitting", 0, 600)], content="c", seed=3)
    blobs_before = set((tmp_path / "blobs").glob("*.parquet"))
    with recorded_audit() as events:
        counts = store.erase(erased)
    # One audit event, the same counts as the store's row, a hash of the id and never the id itself.
    event = one_audit_event(events, "store.erasure", subject=None, subject_hash=subject_hash(erased),
                            counts={k: v for k, v in counts.items() if k != "at"})
    assert len(events) == 1 and erased not in str(event.values())
    assert {k: v for k, v in counts.items() if k != "at"} == {
        "episodes": 3, "scorings": 2, "recordings": 2, "participants": 1, "blobs": 2, "personal_models": 1}
    assert [s["subject"] for s in store.subjects()] == ["p2"]
    assert len(blobs_before) == 3 and len(list((tmp_path / "blobs").glob("*.parquet"))) == 1
    assert sorted(p.name for p in (tmp_path / "personal").iterdir()) == ["p2.onnx"]
    (audit,) = store.audit_rows()
    assert audit["subject_hash"] == subject_hash(erased) and audit["counts"] == {k: v for k, v in counts.items()
                                                                               if k != "at"}
    with pytest.raises(NotFound):
        store.days(erased)
    with store.transaction() as conn:  # no row of the store's tables names the person any more
        rows = [str(tuple(row)) for table in (Participant, Recording, Scoring, Episode, Audit)
                for row in conn.execute(select(table)).all()]
    assert rows and not any("'" + erased + "'" in row for row in rows)
    if store_url.startswith("sqlite"):  # nor do the database's bytes (secure_delete, the WAL folded in)
        database = tmp_path / "study.db"
        files = [database, *database.parent.glob("study.db-*")]
        assert not any(erased.encode() in path.read_bytes() for path in files)


def test_unknown_time_zones_and_start_times_are_refused_with_the_reason(store):
    from store import StoreError

    with pytest.raises(StoreError, match="Mars/Olympus"):
        ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 60)], tz="Mars/Olympus")
    with pytest.raises(StoreError, match="no wall-clock start time"):
        store.ingest("p1", content_hash="x", fused=fused(60), answer=answer(None, [("sitting", 0, 60)]))
    ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 60)])
    with pytest.raises(StoreError, match="stored with time zone 'Europe/Berlin'"):
        ingest(store, "p1", "2025-06-11T10:00:00", [("sitting", 0, 60)], content="d", tz="UTC")


def test_episodes_that_days_cannot_be_computed_from_are_refused_with_the_reason(store):
    from store import StoreError

    with pytest.raises(StoreError, match=r"episode 1 has label 'dancing'; expected one of the model's activities"):
        ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 60), ("dancing", 60, 120)])
    with pytest.raises(StoreError, match=r"episode 1 spans \[50.0, 120.0\) s; expected .* starting where the one "
                                         r"before ended or later"):
        ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 60), ("typing", 50, 120)])
    rec, _ = ingest(store, "p1", "2025-06-10T10:00:00", [("sitting", 0, 60)])
    with pytest.raises(StoreError, match=r"episode 0 spans \[60.0, 0.0\) s"):
        store.add_scoring(rec["id"], answer("2025-06-10T10:00:00", [("sitting", 60, 0)],
                                            model={**MODEL, "sha256": "f" * 64}))
    assert table_counts(store)["scorings"] == 1 and store.days("p1")[0]["recorded_minutes"] == 1.0


def test_a_minutes_basis_that_days_cannot_add_up_is_refused_with_the_reason(store):
    from store import StoreError

    def broken(change) -> dict:
        result = answer("2025-06-10T10:00:00", [("sitting", 0, 60)], name="r9")
        change(result["minutes_basis"])
        return result

    cases = [(lambda b: b["shares"].pop(), r"recording 'r9': minutes_basis has 30 window starts, 30 ends and 29 share "
                                          r"rows; expected one end and one row of 3 shares"),
             (lambda b: b["shares"][4].__setitem__(0, 1.5), r"minutes_basis window 4 spans \[8.0, 10.0\) s with "
                                                            r"shares \[1.5, 0.15, 0.15\]; expected .* shares between"),
             (lambda b: b["start_s"].__setitem__(3, 5.0), r"minutes_basis window 3 spans \[5.0, 8.0\) s"),
             (lambda b: b.__setitem__("interval_scale", -1), r"interval_scale -1; expected a number >= 0 or null")]
    for change, message in cases:
        with pytest.raises(StoreError, match=message):
            store.ingest("p1", content_hash="x", fused=fused(60), timezone=BERLIN, answer=broken(change))
    assert table_counts(store)["recordings"] == 0
