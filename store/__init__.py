"""The study store: participants, their recordings, each recording's scorings and timeline; days and hours.

    from store import Store
    store = Store.open("sqlite:///data/store/study.db")          # or postgresql+psycopg://user@host/db
    rec, created = store.ingest(subject, content_hash=..., fused=fused_table, answer=answer)
    store.days(subject, "2025-03-01", "2025-03-31"); store.hours(subject); store.erase(subject)

One unit of work is one transaction (`Store.transaction`): an ingest writes the participant (if new),
the recording (unique by content hash per participant), the scoring (unique by model sha256) and its
episodes, or nothing. The fused table goes to `blob_root/<sha256>.parquet` first (content-addressed,
so a second upload of it writes nothing); `python -m store gc` removes blobs no recording refers to.
No HTTP here: serve/controllers/subjects.py and the command-line tools are the ways in, and they
validate subject ids (serve.personal.check_subject) before calling.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from har.audit import audit, local_actor, subject_digest
from store import days as day_math
from store import queries

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = "sqlite:///data/store/study.db"
DEFAULT_BLOB_ROOT = Path("data/store/blobs")
DEFAULT_MIN_WORN_HOURS = 16.0  # GGIR's includedaycrit; stepcount 21 h, asleep 22 h (docs/study.md)
MIGRATION_LOCK = 0x6861_7273_746F_7265  # PostgreSQL advisory lock key of schema upgrades ("harstore")
ORPHAN_AGE_S = 3600.0  # gc leaves younger unreferenced blobs alone: an ingest may be between blob and commit


class StoreError(ValueError):
    """A request the store cannot fulfil as asked; the message says what is wrong."""


class NotFound(StoreError):
    pass


def subject_hash(subject: str) -> str:
    """What an audit row keeps instead of the subject id: har.audit's digest, so that the store's row and the
    service-wide audit event of one erasure carry the same hash."""
    return subject_digest(subject)


def _sqlite_setup(engine) -> None:
    """WAL (readers never wait for the writer), a busy timeout, foreign keys on, and transactions that
    begin as the store says: BEGIN IMMEDIATE for writes, so that two writers queue at BEGIN instead of
    one failing when it upgrades its read lock (pysqlite's own transaction handling is switched off)."""

    @event.listens_for(engine, "connect")
    def connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")  # an erased person's bytes are overwritten, not left in free pages
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def upgrade(engine) -> None:
    """`alembic upgrade head` on this database (store/migrations/), in place."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        conn = conn.execution_options(write=True)
        if engine.dialect.name == "postgresql":
            # Service replicas that start together upgrade one at a time: the others wait here until the first
            # has committed, then find the schema at head (two at once both tried to create alembic_version).
            # SQLite's writers queue at BEGIN IMMEDIATE already.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()


def _local_days(start_epoch: float, end_epoch: float, tz: str) -> list[str]:
    first = day_math.local_date(start_epoch, tz)
    last = day_math.local_date(max(start_epoch, end_epoch - 1e-6), tz)
    return [d.date().isoformat() for d in pd.date_range(first, last, freq="D")]


class Store:
    def __init__(self, engine, *, blob_root: Path, personal_models_dir: Path | None = None,
                 default_timezone: str = "UTC", min_worn_hours: float = DEFAULT_MIN_WORN_HOURS):
        self.engine, self.blob_root = engine, Path(blob_root)
        self.personal_models_dir = Path(personal_models_dir) if personal_models_dir else None
        self.default_timezone, self.min_worn_hours = default_timezone, float(min_worn_hours)
        self._cache: OrderedDict = OrderedDict()  # (participant id, version) -> (hours, runs, labels)
        self._cache_lock = threading.Lock()

    @classmethod
    def open(cls, url: str | None = None, *, blob_root: str | Path | None = None, migrate: bool = True,
             **options) -> "Store":
        """The store at `url` (default: an SQLite file under data/), upgraded to the newest schema."""
        url = make_url(url or DEFAULT_URL)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_pre_ping=url.get_backend_name() == "postgresql")
        if url.get_backend_name() == "sqlite":
            _sqlite_setup(engine)
        if migrate:
            upgrade(engine)
        return cls(engine, blob_root=Path(blob_root) if blob_root else DEFAULT_BLOB_ROOT, **options)

    @classmethod
    def from_params(cls, params: dict, url: str | None = None, **overrides) -> "Store":
        """The store as params.yaml's `store:` section (conf/store/) says; `url` (--store) wins over store.url."""
        section = params.get("store", {})
        personal = params.get("serve", {}).get("personal", {}).get("models_dir")
        options = {"blob_root": section.get("blob_root"), "default_timezone": section.get("timezone", "UTC"),
                   "min_worn_hours": section.get("min_worn_hours", DEFAULT_MIN_WORN_HOURS),
                   "personal_models_dir": personal, **overrides}
        return cls.open(url or section.get("url"), **options)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, write: bool = False):
        """One unit of work: committed when the block ends, rolled back when it raises."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(write=write)
            with conn.begin():
                yield conn

    # --- blobs -------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blob_root / f"{sha256}.parquet"

    def put_blob(self, fused: pd.DataFrame) -> str:
        """The fused table as Parquet under its own sha256; written once (a temporary file, then a rename)."""
        buffer = io.BytesIO()
        # no dictionary encoding: sensor floats hardly repeat, and trying costs 20 times the write (bench/store.py)
        fused.to_parquet(buffer, index=False, use_dictionary=False)
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            self.blob_root.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.blob_root, prefix=".tmp-", suffix=".parquet")
            with os.fdopen(handle, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        return sha

    def fused(self, recording_id: int) -> pd.DataFrame:
        with self.transaction() as conn:
            row = queries.recording(conn, None, recording_id)
        if row is None:
            raise NotFound(f"no recording {recording_id}")
        return pd.read_parquet(self.blob_path(row.blob_sha256))

    # --- writes -------------------------------------------------------------------------------------------
    def ingest(self, subject: str, *, content_hash: str, fused: pd.DataFrame, answer: dict,
               timezone: str | None = None, actor: str | None = None) -> tuple[dict, bool]:
        """Store one scored recording of `subject`; (stored recording, created). created is False when the same
        content was already scored by the same model: then nothing new is written and the stored one returns."""
        start_time = answer["recording"].get("start_time")
        if not start_time:
            raise StoreError(f"recording {answer['recording'].get('id')!r} has no wall-clock start time: "
                             "it cannot be placed on a participant's days (set data.timezone or upload the "
                             "export with its timestamps)")
        if timezone is not None:
            try:
                day_math.check_timezone(timezone)
            except ValueError as error:
                raise StoreError(str(error)) from None
        blob = self.put_blob(fused)
        with self.transaction(write=True) as conn:
            person = queries.ensure_participant(conn, subject, timezone or self.default_timezone)
            if timezone is not None and timezone != person.timezone:
                raise StoreError(f"subject {subject!r} is stored with time zone {person.timezone!r}, "
                                 f"not {timezone!r}")
            start_epoch = day_math.epoch(start_time, person.timezone)
            fused_seconds = float(answer["recording"]["fused_seconds"])
            recording_id = queries.ensure_recording(conn, person.id, {
                "content_hash": content_hash, "name": answer["recording"].get("id"), "start_time": start_time,
                "start_epoch": start_epoch, "end_epoch": start_epoch + fused_seconds, "fused_seconds": fused_seconds,
                "blob_sha256": blob, "quality": answer["recording"], "wear": answer.get("wear", {})})
            created = queries.add_scoring(conn, recording_id, answer) is not None
            if not created:
                answer = queries.unpack(queries.scoring_of(conn, recording_id, answer["model"]["sha256"]).answer)
            stored = queries.recording(conn, person.id, recording_id)
        if created:  # the audit trail (har/audit.py): who stored what, by which model; nothing when nothing new
            audit("store.ingest", actor=actor or local_actor(), subject=subject, model=answer["model"]["name"],
                  version=answer["model"]["version"], counts={"recordings": 1, "episodes": len(answer["episodes"])},
                  recording_id=recording_id)
        return self._recording_entry(subject, person.timezone, stored) | {"answer": answer}, created

    def add_scoring(self, recording_id: int, answer: dict) -> bool:
        """Another model's scoring of a stored recording (re-scoring); False when that model already scored it."""
        with self.transaction(write=True) as conn:
            return queries.add_scoring(conn, recording_id, answer) is not None

    def erase(self, subject: str, *, actor: str | None = None) -> dict:
        """Remove every row of `subject`, the blobs only they refer to, and their personal model file.

        Returns the counts; an audit row keeps them with a hash of the id and the time, nothing else.
        """
        with self.transaction(write=True) as conn:
            person = queries.participant(conn, subject)
            if person is None:
                raise NotFound(f"no subject {subject!r} in the store")
            person = person
            shas = {r.blob_sha256 for r in queries.recordings(conn, [person.id])}
            shared = queries.blob_references(conn, sorted(shas), other_than=person.id)
            counts = queries.erase_participant(conn, person.id)
            doomed = sorted(shas - shared)
            model = self.personal_models_dir / f"{subject}.onnx" if self.personal_models_dir else None
            counts["blobs"] = sum(self.blob_path(sha).exists() for sha in doomed)
            counts["personal_models"] = int(model is not None and model.exists())
            audit_row = queries.add_audit(conn, "erase", subject_hash(subject), counts)
        if self.engine.dialect.name == "sqlite":  # the write-ahead log still holds the erased pages: fold it in
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        for sha in doomed:  # after the commit: a failed transaction must leave the person's data whole
            self.blob_path(sha).unlink(missing_ok=True)
        if model is not None:
            model.unlink(missing_ok=True)
        audit("store.erasure", actor=actor or local_actor(), subject_hash=subject_hash(subject), counts=counts)
        return {**counts, "at": audit_row["at"].isoformat()}

    def collect_garbage(self, *, min_age_s: float = ORPHAN_AGE_S) -> dict:
        """Remove blobs no recording refers to (and leftover temporary files), older than `min_age_s`."""
        if not self.blob_root.is_dir():
            return {"blobs": 0}
        with self.transaction() as conn:
            files = list(self.blob_root.glob("*.parquet")) + list(self.blob_root.glob(".tmp-*"))
            referenced = queries.blob_references(conn, [f.stem for f in files])
        removed, cutoff = 0, time.time() - min_age_s
        for path in files:
            if path.stem not in referenced and path.stat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return {"blobs": removed}

    # --- reads --------------------------------------------------------------------------------------------
    def has_scoring(self, content_hash: str, model_sha256: str) -> bool:
        with self.transaction() as conn:
            return queries.has_scoring(conn, content_hash, model_sha256)

    def _participant(self, conn, subject: str):
        person = queries.participant(conn, subject)
        if person is None:
            raise NotFound(f"no subject {subject!r} in the store")
        return person

    def _timeline(self, conn, person) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """(hours, runs, labels) of one participant, cached until a scoring of theirs is added or removed."""
        key = (person.id, person.timezone, queries.participant_version(conn, person.id))
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        rows = queries.timeline(conn, [person.id])
        labels = _labels([r.labels for r in queries.newest_labels(conn, [person.id])])
        hours, runs = day_math.hours_table(_episode_frame(rows), person.timezone, labels)
        per_day = self._recordings_per_day(conn, person)
        value = (hours, runs, labels, per_day, {})  # the last: day rows by valid-day rule, made on first use
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
        return value

    def _recordings_per_day(self, conn, person) -> dict:
        counts: dict = {}
        for row in queries.recordings(conn, [person.id]):
            r = row
            for day in _local_days(r.start_epoch, r.end_epoch, person.timezone):
                key = pd.Timestamp(day).date()
                counts[key] = counts.get(key, 0) + 1
        return counts

    def days(self, subject: str, date_from=None, date_to=None, *, min_worn_hours: float | None = None) -> list[dict]:
        """One dict per local day from the first to the last recorded day (within [date_from, date_to])."""
        rule = self.min_worn_hours if min_worn_hours is None else float(min_worn_hours)
        with self.transaction() as conn:
            hours, runs, labels, per_day, made = self._timeline(conn, self._participant(conn, subject))
        if rule not in made:
            made[rule] = day_math.day_rows(hours, runs, labels, recordings_per_day=per_day, min_worn_hours=rule)
        return [d for d in made[rule] if (date_from is None or d["date"] >= str(date_from))
                and (date_to is None or d["date"] <= str(date_to))]

    def hours(self, subject: str) -> dict:
        """The 24-hour profile per activity and of wear: all days, weekdays, weekend days."""
        with self.transaction() as conn:
            person = self._participant(conn, subject)
            hours, _, labels, _, _ = self._timeline(conn, person)
        return {"subject": subject, "timezone": person.timezone, **day_math.hour_profile(hours, labels)}

    def hour_rows(self, subject: str) -> pd.DataFrame:
        with self.transaction() as conn:
            hours, _, _, _, _ = self._timeline(conn, self._participant(conn, subject))
        return hours

    def participant(self, subject: str) -> dict:
        with self.transaction() as conn:
            person = self._participant(conn, subject)
        return {"subject": person.subject, "timezone": person.timezone}

    def subjects(self) -> list[dict]:
        """Each participant: time zone, recordings, first and last day, days and valid days."""
        result = []
        with self.transaction() as conn:
            people = [p for p in queries.participants(conn)]
            counts: dict = {}
            for row in queries.recordings(conn, [p.id for p in people]):
                counts[row.participant_id] = counts.get(row.participant_id, 0) + 1
            for person in people:
                hours, runs, labels, per_day, made = self._timeline(conn, person)
                if self.min_worn_hours not in made:
                    made[self.min_worn_hours] = day_math.day_rows(hours, runs, labels, recordings_per_day=per_day,
                                                                  min_worn_hours=self.min_worn_hours)
                rows = made[self.min_worn_hours]
                result.append({"subject": person.subject, "timezone": person.timezone,
                               "recordings": counts.get(person.id, 0),
                               "first_day": rows[0]["date"] if rows else None,
                               "last_day": rows[-1]["date"] if rows else None,
                               "days": len(rows), "valid_days": sum(d["valid"] for d in rows)})
        return result

    def _recording_entry(self, subject: str, tz: str, r) -> dict:
        return {"id": r.id, "subject": subject, "name": r.name, "content_hash": r.content_hash,
                "start_time": _iso(r.start_epoch, tz), "end_time": _iso(r.end_epoch, tz),
                "days": _local_days(r.start_epoch, r.end_epoch, tz)}

    def recordings(self, subject: str) -> list[dict]:
        """The participant's recordings in time order, each with its scorings (the newest last)."""
        with self.transaction() as conn:
            person = self._participant(conn, subject)
            stored = [r for r in queries.recordings(conn, [person.id])]
            scorings = queries.scorings(conn, [r.id for r in stored])
        by_recording: dict = {}
        for s in scorings:
            by_recording.setdefault(s.recording_id, []).append(_scoring_entry(s))
        return [self._recording_entry(subject, person.timezone, r) | {"scorings": by_recording.get(r.id, [])}
                for r in stored]

    def recording(self, subject: str, recording_id: int) -> dict:
        """One stored recording with its scorings and the newest scoring's answer."""
        with self.transaction() as conn:
            person = self._participant(conn, subject)
            row = queries.recording(conn, person.id, recording_id)
            if row is None:
                raise NotFound(f"subject {subject!r} has no recording {recording_id}")
            scorings = queries.scorings(conn, [recording_id], with_answer=True)
        return (self._recording_entry(subject, person.timezone, row)
                | {"scorings": [_scoring_entry(s) for s in scorings], "answer": queries.unpack(scorings[-1].answer)})

    def stored_recordings(self) -> list:
        """Every recording row with its participant's subject (re-scoring walks these)."""
        with self.transaction() as conn:
            people = {p.id: p.subject for p in queries.participants(conn)}
            return [(people[r.participant_id], r) for r in queries.all_recordings(conn)]

    def study(self) -> tuple[list[dict], pd.DataFrame]:
        """Everyone at once, for collate: ([{subject, timezone, recordings, labels, hours, runs, days}], episodes).

        One query for every participant's episodes instead of one per participant."""
        with self.transaction() as conn:
            people = [p for p in queries.participants(conn)]
            ids = [p.id for p in people]
            frame = _episode_frame(queries.timeline(conn, ids))
            labels_of: dict = {}
            for row in queries.newest_labels(conn, ids):
                labels_of.setdefault(row.participant_id, []).append(row.labels)
            recordings = [r for r in queries.recordings(conn, ids)]
        by_person = {pid: rows for pid, rows in frame.groupby("participant_id", sort=False)} if len(frame) else {}
        result = []
        for person in people:
            labels = _labels(labels_of.get(person.id, []))
            mine = by_person.get(person.id, frame.iloc[:0])
            hours, runs = day_math.hours_table(mine, person.timezone, labels)
            per_day: dict = {}
            count = 0
            for r in recordings:
                if r.participant_id == person.id:
                    count += 1
                    for day in _local_days(r.start_epoch, r.end_epoch, person.timezone):
                        key = pd.Timestamp(day).date()
                        per_day[key] = per_day.get(key, 0) + 1
            days = day_math.day_rows(hours, runs, labels, recordings_per_day=per_day, min_worn_hours=self.min_worn_hours)
            result.append({"subject": person.subject, "timezone": person.timezone, "recordings": count,
                           "labels": labels, "hours": hours, "days": days,
                           "first_day": days[0]["date"] if days else None, "last_day": days[-1]["date"] if days else None})
        return result, self._episodes_table(frame, {p.id: p for p in people})

    def activities(self) -> list[str]:
        """Every activity of the newest scorings of everyone, in the order first seen (collate's columns)."""
        with self.transaction() as conn:
            people = [p.id for p in queries.participants(conn)]
            return _labels([r.labels for r in queries.newest_labels(conn, people)])

    def _episodes_table(self, frame: pd.DataFrame, people: dict) -> pd.DataFrame:
        """The stored episodes of each recording's newest scoring, with local wall-clock times."""
        columns = ["subject", "recording_id", "scoring_id", "label", "start_time", "end_time", "duration_s",
                   "windows", "mean_confidence"]
        if frame.empty:
            return pd.DataFrame(columns=columns)
        zones = frame["participant_id"].map({k: p.timezone for k, p in people.items()}).to_numpy()
        start_time, end_time = np.empty(len(frame), object), np.empty(len(frame), object)
        for zone in set(zones):
            mine = zones == zone
            start_time[mine] = _iso_many(frame["start"].to_numpy()[mine], zone)
            end_time[mine] = _iso_many(frame["end"].to_numpy()[mine], zone)
        return pd.DataFrame({
            "subject": frame["participant_id"].map({k: p.subject for k, p in people.items()}),
            "recording_id": frame["recording_id"], "scoring_id": frame["scoring_id"], "label": frame["label"],
            "start_time": start_time, "end_time": end_time,
            "duration_s": (frame["end_s"] - frame["start_s"]).round(3), "windows": frame["windows"],
            "mean_confidence": frame["mean_confidence"]}, columns=columns).reset_index(drop=True)

    def audit_rows(self) -> list[dict]:
        with self.transaction() as conn:
            return [{"action": a.action, "subject_hash": a.subject_hash, "at": _utc(a.at).isoformat(),
                     "counts": a.counts} for a in queries.audit_rows(conn)]



def _labels(label_lists) -> list[str]:
    """The union of the models' activity lists, in the order first seen."""
    seen: dict = {}
    for labels in label_lists:
        seen.update(dict.fromkeys(labels))
    return list(seen)


def _episode_frame(rows) -> pd.DataFrame:
    """Episode rows -> start, end (epoch s), label, priority (earlier-starting recording first), recording."""
    names = ["participant_id", "recording_id", "start_epoch", "label", "start_s", "end_s", "windows",
             "mean_confidence", "scoring_id"]
    columns = list(zip(*rows)) if rows else [[] for _ in names]  # rows: plain tuples (queries.driver_tuples)
    # labels as a categorical: a handful of distinct strings over hundreds of thousands of rows
    frame = pd.DataFrame({n: pd.Categorical(c) if n == "label" else np.asarray(c) for n, c in zip(names, columns)})
    frame["start"] = frame["start_epoch"].astype(float) + frame["start_s"].astype(float)
    frame["end"] = frame["start_epoch"].astype(float) + frame["end_s"].astype(float)
    # rows come ordered by recording start, then id: priority is the recording's rank in that order
    new_recording = np.r_[True, frame["recording_id"].to_numpy()[1:] != frame["recording_id"].to_numpy()[:-1]]
    frame["priority"] = np.cumsum(new_recording) - 1 if len(frame) else np.zeros(0, np.int64)
    return frame[frame["end"] > frame["start"]]


def _iso_many(epochs, tz: str) -> list[str]:
    """Epoch seconds -> local ISO times with milliseconds and the UTC offset, as _iso gives them, for many at once
    (numpy formats the wall-clock times; the few distinct offsets are formatted once each)."""
    if len(epochs) == 0:
        return []
    utc = pd.to_datetime(np.round(np.asarray(epochs, float) * 1e6).astype(np.int64), unit="us", utc=True)
    wall = utc.tz_convert(tz).tz_localize(None).to_numpy()
    offset_min = ((wall - utc.tz_localize(None).to_numpy()) // np.timedelta64(1, "m")).astype(np.int64)
    text = {m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}" for m in np.unique(offset_min)}
    return [t + text[m] for t, m in zip(np.datetime_as_string(wall, unit="ms"), offset_min)]


def _iso(epoch: float, tz: str) -> str:
    return pd.Timestamp(round(epoch * 1e6), unit="us", tz="UTC").tz_convert(tz).isoformat(timespec="milliseconds")


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)


def _scoring_entry(s) -> dict:
    return {"id": s.id, "model": s.model_name, "version": s.model_version, "sha256": s.model_sha256,
            "personal": bool(s.personal), "scored_at": _utc(s.scored_at).isoformat()}
