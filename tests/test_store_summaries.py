"""Days and hours kept at ingest (store/summaries.py) against the whole-history computation they replace
(tests/store_reference.py): equal to the bit on a generated study with overlaps, touching recordings, DST days,
re-scorings and an erasure; re-scoring and erasure worked out by hand; the migration that fills the summaries
for rows stored before them; concurrent writers of one participant. On SQLite and on PostgreSQL."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
from sqlalchemy import func, select

import store_reference as reference
from serve.collate import write_tables
from store import Store
from store.collate import days_frame, hours_frame, participants_frame, study_tables
from store.tables import SUMMARY_TABLES, Participant, SummaryHourLabel
from store_db import postgres_server, store, store_url  # noqa: F401  (fixtures)
from store_helpers import ACTIVITIES, MODEL, answer, fused

ZONES = {"p1": "Europe/Berlin", "p2": "America/New_York", "p3": "UTC"}
CHAMPION = {"name": "har", "version": "v2", "sha256": "c" * 64}
CHAMPION_ACTIVITIES = ["typing", "drinking", "sitting"]  # another model's set: drinking is new, clapping gone


def generated_episodes(rng: np.random.Generator, seconds: float, activities: list[str], *,
                       first_label: str | None = None, last_label: str | None = None) -> list[tuple]:
    """(label, start_s, end_s) over [0, seconds) on a 0.1 s grid: runs of 1-90 min, now and then a gap."""
    cuts = np.unique(np.round(np.r_[0.0, np.sort(rng.uniform(0, seconds, max(1, int(seconds // 1500)))), seconds], 1))
    labels = rng.choice([*activities, "uncertain", "not_worn"], len(cuts) - 1)
    if first_label:
        labels[0] = first_label
    if last_label:
        labels[-1] = last_label
    episodes = []
    for k, (label, a, b) in enumerate(zip(labels, cuts[:-1], cuts[1:])):
        if 0 < k < len(labels) - 1 and rng.random() < 0.1:  # a gap: the windows of a missing stretch
            a = round(a + min(60.0, (b - a) / 2), 1)
        episodes.append((str(label), float(a), float(b)))
    return episodes


def generated_study(seed: int = 7) -> list[tuple]:
    """Ingests and re-scorings of three participants, in the order they are stored (not time order):
    ("ingest", subject, content, start_time, episodes) or ("rescore", subject, content, episodes)."""
    rng = np.random.default_rng(seed)
    ingests = []
    # Around the clock changes: Berlin's 2025-03-30 and 2025-10-26, New York's 2025-03-09; UTC has none.
    anchors = {"p1": ["2025-03-28", "2025-10-24"], "p2": ["2025-03-07"], "p3": ["2025-06-13"]}
    for subject, days in anchors.items():
        for anchor in days:
            at = pd.Timestamp(anchor) + pd.Timedelta(hours=20)
            for k in range(9):
                seconds = float(np.round(rng.uniform(0.3, 20) * 3600, 1))
                start = at + pd.Timedelta(seconds=float(np.round(rng.uniform(-4, 10) * 3600, 1)))
                first = None
                if k == 3:  # right where the one before ends, with its last label: one run across the two
                    start, first = end, ingests[-1][4][-1][0]
                content = f"{subject}-{anchor}-{k}"
                ingests.append(("ingest", subject, content, start.isoformat(timespec="milliseconds"),
                                generated_episodes(rng, seconds, ACTIVITIES, first_label=first)))
                end = start + pd.Timedelta(seconds=ingests[-1][4][-1][2])
                at = start + pd.Timedelta(hours=float(rng.uniform(2, 12)))
        # a recording ending at local midnight and one starting there with the same label
        midnight = pd.Timestamp(days[0]) + pd.Timedelta(days=6)
        ingests.append(("ingest", subject, f"{subject}-before-midnight", (midnight - pd.Timedelta(hours=2)).isoformat(),
                        generated_episodes(rng, 7200.0, ACTIVITIES, last_label="typing")))
        ingests.append(("ingest", subject, f"{subject}-after-midnight", midnight.isoformat(),
                        generated_episodes(rng, 5400.0, ACTIVITIES, first_label="typing")))
    # a recording over two days, re-scored below by a model whose windows cover its first hours only, and one
    # going on at midnight where it ends, with its last label: the run that then began on the 23rd
    ingests.append(("ingest", "p3", "p3-long", "2025-06-21T18:00:00",
                    generated_episodes(rng, 30 * 3600.0, ACTIVITIES, last_label="sitting")))
    ingests.append(("ingest", "p3", "p3-next", "2025-06-23T00:00:00",
                    generated_episodes(rng, 3600.0, ACTIVITIES, first_label=ingests[-1][4][-1][0])))
    ordered = [ingests[k] for k in rng.permutation(len(ingests))]
    for first, then in [*((f"{s}-before-midnight", f"{s}-after-midnight") for s in anchors), ("p3-long", "p3-next")]:
        # the days after midnight computed once the recording before it is stored
        before = next(k for k, plan in enumerate(ordered) if plan[2] == first)
        after = next(k for k, plan in enumerate(ordered) if plan[2] == then)
        if after < before:
            ordered[after], ordered[before] = ordered[before], ordered[after]
    rescored = [*rng.choice(len(ingests) - 2, 7, replace=False), len(ingests) - 2]
    for chosen in rescored:  # the champion re-scores some, after their ingest (and p3-next's: see above)
        _, subject, content, _, episodes = ingests[chosen]
        # another model's windows may cover less
        seconds = 5 * 3600.0 if content == "p3-long" else episodes[-1][2] * float(rng.choice([0.8, 1.0]))
        after = max(k for k, plan in enumerate(ordered) if plan[2] in (content, "p3-next")) + 1
        ordered.insert(int(rng.integers(after, len(ordered) + 1)),
                       ("rescore", subject, content, generated_episodes(rng, seconds, CHAMPION_ACTIVITIES)))
    return ordered


def store_plans(store, plans, ids: dict) -> None:
    """Carry the plans out; `ids` collects the recording ids by content."""
    for plan in plans:
        if plan[0] == "ingest":
            _, subject, content, start_time, episodes = plan
            rec, created = store.ingest(subject, content_hash=content, fused=fused(60, len(ids)),
                                        timezone=ZONES[subject], answer=answer(start_time, episodes, name=content))
            assert created
            ids[content] = (rec["id"], start_time)
        else:
            _, subject, content, episodes = plan
            recording_id, start_time = ids[content]
            assert store.add_scoring(recording_id, answer(start_time, episodes, model=CHAMPION,
                                                          activities=CHAMPION_ACTIVITIES, name=content))


def assert_as_the_whole_history_gives(store, subjects) -> None:
    for subject in subjects:
        expected = reference.days(store, subject)
        assert store.days(subject) == expected, subject
        assert store.days(subject, min_worn_hours=4) == reference.days(store, subject, min_worn_hours=4)
        middle = expected[len(expected) // 3]["date"], expected[2 * len(expected) // 3]["date"]
        assert store.days(subject, *middle) == reference.days(store, subject, *middle)
        assert store.hours(subject) == reference.hours(store, subject), subject
        kept, whole = store.hour_rows(subject), reference.hour_rows(store, subject)
        common = [c for c in whole.columns if c in kept.columns]
        pd.testing.assert_frame_equal(kept[common], whole[common], check_exact=True, check_dtype=False)
        for only in {*kept.columns, *whole.columns} - set(common):  # a label only one side lists holds no time
            assert not (kept if only in kept else whole)[only].any(), only
    assert store.subjects() == reference.subjects(store)


def test_summaries_equal_the_whole_history_computation(store, tmp_path):
    plans, ids = generated_study(), {}
    assert sum(p[0] == "rescore" for p in plans) == 8
    store_plans(store, plans[: len(plans) // 2], ids)
    assert_as_the_whole_history_gives(store, ZONES)  # halfway, later and earlier recordings still to come
    store_plans(store, plans[len(plans) // 2:], ids)
    days = {s: store.days(s) for s in ZONES}
    assert sum(d["overlap_minutes"] for s in days for d in days[s]) > 60  # the study has overlaps
    assert {d["day_hours"] for s in ("p1", "p2") for d in days[s]} == {23.0, 24.0, 25.0}  # and both clock changes
    assert_as_the_whole_history_gives(store, ZONES)
    # an erased participant stored again: nothing of the first time remains in their days
    store.erase("p3")
    store_plans(store, [p for p in plans if p[1] == "p3"], ids)
    assert_as_the_whole_history_gives(store, ZONES)

    # collate: the tables the whole-history days and hours give, however many participants a part holds
    for per_part in (1, 2, 10):
        write_tables(study_tables(store, participants_per_chunk=per_part), tmp_path / f"by{per_part}")
    activities = store.activities()
    assert activities == list(dict.fromkeys([*ACTIVITIES, *CHAMPION_ACTIVITIES]))
    people, day_parts, hour_parts = [], [], []
    for subject in sorted(ZONES):
        whole = reference.days(store, subject)
        day_parts.append(days_frame(subject, whole, activities))
        hour_parts.append(hours_frame(subject, reference.hour_rows(store, subject), activities))
        people.append({"subject": subject, "timezone": ZONES[subject], "first_day": whole[0]["date"],
                       "last_day": whole[-1]["date"],
                       "recordings": sum(p[0] == "ingest" and p[1] == subject for p in plans)})
    expected = {"days": pd.concat(day_parts, ignore_index=True), "hours": pd.concat(hour_parts, ignore_index=True)}
    expected["participants"] = participants_frame(people, expected["days"], activities)
    for per_part in (1, 2, 10):
        for table, frame in expected.items():
            written = pd.read_parquet(tmp_path / f"by{per_part}" / f"{table}.parquet")
            pd.testing.assert_frame_equal(written, frame, check_exact=True, check_dtype=False)
        for table in ("participants", "days", "hours", "episodes"):
            assert (tmp_path / f"by{per_part}" / f"{table}.csv").read_bytes() == \
                (tmp_path / "by1" / f"{table}.csv").read_bytes(), (per_part, table)


def summary_counts(store) -> dict:
    """Rows per summary table and participant id."""
    with store.transaction() as conn:
        return {(t.__tablename__, pid): n for t in SUMMARY_TABLES
                for pid, n in conn.execute(select(t.participant_id, func.count()).group_by(t.participant_id))}


def test_a_rescoring_moves_the_days_to_the_newest_scoring_where_recordings_overlap(store):
    first, _ = store.ingest("p1", content_hash="a", fused=fused(60, 1), timezone="UTC",
                            answer=answer("2025-06-10T10:00:00", [("sitting", 0, 3600)]))
    store.ingest("p1", content_hash="b", fused=fused(60, 2), timezone="UTC",
                 answer=answer("2025-06-10T10:30:00", [("typing", 0, 3600)]))
    (before,) = store.days("p1")
    assert (before["recorded_minutes"], before["overlap_minutes"]) == (90.0, 30.0)
    assert before["counted_minutes_per_activity"] == {"sitting": 60.0, "typing": 30.0, "clapping": 0.0}
    # the estimate: the first recording's windows (sitting 0.7, the others 0.15 each) own 10:00-11:00, the
    # second's (typing 0.7) 11:00-11:30
    assert before["minutes_per_activity"] == {"sitting": 46.5, "typing": 30.0, "clapping": 13.5}
    assert before["unestimated_minutes"] == 0.0 and before["minutes_interval_90"]["typing"][0] < 30.0
    # The champion hears drinking in the first recording's first 20 minutes only: from 10:30 the second
    # recording is alone, and its typing counts whole.
    assert store.add_scoring(first["id"], answer("2025-06-10T10:00:00", [("drinking", 0, 1200)], model=CHAMPION,
                                                 activities=CHAMPION_ACTIVITIES))
    (after,) = store.days("p1")
    assert (after["recorded_minutes"], after["overlap_minutes"]) == (80.0, 0.0)
    assert after["counted_minutes_per_activity"] == {"typing": 60.0, "drinking": 20.0, "sitting": 0.0, "clapping": 0.0}
    # drinking's 20 minutes (0.7 drinking, 0.15 typing and sitting), then the second recording's typing hour
    assert after["minutes_per_activity"] == {"typing": 45.0, "drinking": 14.0, "sitting": 12.0, "clapping": 9.0}
    assert after["episodes_per_activity"] == {"typing": 1, "drinking": 1, "sitting": 0, "clapping": 0}
    with store.transaction() as conn:  # the kept rows themselves, hour by hour
        rows = conn.execute(select(SummaryHourLabel.bin, SummaryHourLabel.label, SummaryHourLabel.seconds,
                                   SummaryHourLabel.estimate_seconds)
                            .order_by(SummaryHourLabel.bin, SummaryHourLabel.label)).all()
    assert [(b, label, s, round(e, 6)) for b, label, s, e in rows] == [
        (10, "clapping", 0.0, 270.0), (10, "drinking", 1200.0, 840.0), (10, "sitting", 0.0, 450.0),
        (10, "typing", 1800.0, 1440.0), (11, "clapping", 0.0, 270.0), (11, "sitting", 0.0, 270.0),
        (11, "typing", 1800.0, 1260.0)]
    assert store.days("p1") == reference.days(store, "p1") and store.hours("p1") == reference.hours(store, "p1")


def test_erasure_removes_the_persons_summaries_and_no_one_elses(store):
    for subject, seed in (("p1", 1), ("p2", 2)):
        store.ingest(subject, content_hash=subject, fused=fused(60, seed), timezone="UTC",
                     answer=answer("2025-06-10T23:30:00", [("sitting", 0, 1800), ("typing", 1800, 3600)]))
    with store.transaction() as conn:
        ids = dict(conn.execute(select(Participant.subject, Participant.id)).all())
    before = summary_counts(store)
    # two dates, two hours, three activities: one day row per date, one label row per date and activity that has
    # counted or estimated time (every window shares some with each activity)
    assert {t: before[(t, ids["p1"])] for t, _ in before if _ == ids["p1"]} == {
        "summary_days": 2, "summary_day_labels": 6, "summary_hours": 2, "summary_hour_labels": 6}
    store.erase("p1")
    assert summary_counts(store) == {k: n for k, n in before.items() if k[1] == ids["p2"]}


ROW_0001 = {  # the 0001 schema's columns that an ingest fills (no summaries, no covered span)
    "participants": "INSERT INTO participants (subject, timezone, created_at) VALUES (:subject, :tz, :at) RETURNING id",
    "recordings": "INSERT INTO recordings (participant_id, content_hash, name, start_time, start_epoch, end_epoch, "
                  "fused_seconds, blob_sha256, quality, wear, created_at) VALUES (:participant_id, :content, "
                  ":content, :start_time, :start_epoch, :end_epoch, :seconds, :blob, '{}', '{}', :at) RETURNING id",
    "scorings": "INSERT INTO scorings (recording_id, model_name, model_version, model_sha256, personal, labels, "
                "scored_at, answer) VALUES (:recording_id, 'har', :version, :sha, false, :labels, :at, :answer) "
                "RETURNING id",
    "episodes": "INSERT INTO episodes (scoring_id, label, start_s, end_s, windows, mean_confidence) "
                "VALUES (:scoring_id, :label, :start_s, :end_s, 1, 0.9)"}


def test_the_migration_fills_the_summaries_of_rows_stored_before_them(store_url, tmp_path):
    """A database at revision 0001 holding the generated study, upgraded: days and hours as the whole history
    gives them, and ingests after the upgrade keep them so."""
    import json

    from sqlalchemy import create_engine, text

    from store import _sqlite_setup, queries, upgrade
    from store.days import epoch

    engine = create_engine(store_url)
    if store_url.startswith("sqlite"):
        _sqlite_setup(engine)
    upgrade(engine, "0001")
    plans, at = generated_study(), pd.Timestamp("2025-01-01", tz="UTC").to_pydatetime()
    recordings = {}
    with engine.connect() as conn, conn.begin():
        insert = lambda table, values: conn.execute(text(ROW_0001[table]), values)
        people = {s: insert("participants", {"subject": s, "tz": ZONES[s], "at": at}).scalar_one() for s in ZONES}
        for plan in plans:
            subject, content, episodes = plan[1], plan[2], plan[-1]
            model, activities = (MODEL, ACTIVITIES) if plan[0] == "ingest" else (CHAMPION, CHAMPION_ACTIVITIES)
            if plan[0] == "ingest":
                start_epoch = epoch(plan[3], ZONES[subject])
                recordings[content] = insert("recordings", {
                    "participant_id": people[subject], "content": content, "start_time": plan[3],
                    "start_epoch": start_epoch, "end_epoch": start_epoch + episodes[-1][2], "seconds": episodes[-1][2],
                    "blob": "0" * 64, "at": at}).scalar_one()
            scoring = insert("scorings", {"recording_id": recordings[content], "version": model["version"],
                                          "sha": model["sha256"], "labels": json.dumps(activities), "at": at,
                                          "answer": queries.pack({"labels": activities})}).scalar_one()
            insert("episodes", [{"scoring_id": scoring, "label": label, "start_s": a, "end_s": b}
                                for label, a, b in episodes])
    engine.dispose()
    upgraded = Store.open(store_url, blob_root=tmp_path / "blobs")
    try:
        assert sum(summary_counts(upgraded).values()) > 0
        assert_as_the_whole_history_gives(upgraded, ZONES)
        upgraded.ingest("p1", content_hash="after", fused=fused(60), timezone=ZONES["p1"],
                        answer=answer("2025-03-30T01:30:00", [("clapping", 0, 7200)]))  # over the spring gap
        assert_as_the_whole_history_gives(upgraded, ["p1"])
    finally:
        upgraded.close()


def test_concurrent_ingests_of_one_participant_keep_the_days_exact(store):
    """Eight overlapping recordings of one person stored at once: each ingest recomputes days another is
    changing, so they must take turns (PostgreSQL: the participant's row lock)."""
    store.ingest("p1", content_hash="first", fused=fused(60), timezone="UTC",
                 answer=answer("2025-06-10T08:00:00", [("sitting", 0, 600)]))
    barrier, errors = threading.Barrier(8), []

    def ingest(k: int) -> None:
        try:
            episodes = generated_episodes(np.random.default_rng(k), 4 * 3600.0, ACTIVITIES)
            barrier.wait(timeout=30)
            store.ingest("p1", content_hash=f"c{k}", fused=fused(60, k), timezone="UTC",
                         answer=answer(f"2025-06-10T{8 + k}:{7 * k:02d}:00", episodes))
        except Exception as error:  # reported below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=ingest, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    days = store.days("p1")
    assert days[0]["recordings"] == 9 and days[0]["overlap_minutes"] > 0
    assert days == reference.days(store, "p1") and store.hours("p1") == reference.hours(store, "p1")


def test_the_head_revision_read_from_the_file_names_is_alembics(store_url):
    """Store.open skips Alembic for a database at the head it reads from the migrations' file names."""
    from alembic.script import ScriptDirectory

    from store import MIGRATIONS, current_revision, head_revision

    assert head_revision() == ScriptDirectory(str(MIGRATIONS)).get_current_head() == "0003"
    opened = Store.open(store_url)
    try:
        assert current_revision(opened.engine) == "0003"
    finally:
        opened.close()
