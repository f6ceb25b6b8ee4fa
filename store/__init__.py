"""The study store: participants, their recordings, each recording's scorings and timeline; days and hours.

    from store import Store
    store = Store.open("sqlite:///data/store/study.db")          # or postgresql+psycopg://user@host/db
    rec, created = store.ingest(subject, content_hash=..., fused=fused_table, answer=answer)
    store.days(subject, "2025-03-01", "2025-03-31"); store.hours(subject); store.erase(subject)

One unit of work is one transaction (`Store.transaction`): an ingest writes the participant (if new),
the recording (unique by content hash per participant), the scoring (unique by model sha256), its
episodes and the summaries of the days it touches (store/summaries.py), or nothing. Days, hours and
collate read the summaries only. The fused table goes to `blob_root/<sha256>.parquet` beside the
transaction (content-addressed, so a second upload of it writes nothing), and the transaction commits
only once the blob is on disk; `python -m store gc` removes blobs no recording refers to.
No HTTP here: serve/controllers/subjects.py and the command-line tools are the ways in, and they
validate subject ids (har.subject.check_subject) before calling.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from har.audit import audit, local_actor, subject_digest
from store import days as day_math
from store import queries, summaries

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = "sqlite:///data/store/study.db"
DEFAULT_BLOB_ROOT = Path("data/store/blobs")
DEFAULT_MIN_WORN_HOURS = 16.0  # GGIR's includedaycrit; stepcount 21 h, asleep 22 h (docs/study.md)
MIGRATION_LOCK = 0x6861_7273_746F_7265  # PostgreSQL advisory lock key of schema upgrades ("harstore")
ORPHAN_AGE_S = 3600.0  # gc leaves younger unreferenced blobs alone: an ingest may be between blob and commit
# The fused table's Parquet: each float's bytes split into streams (byte_stream_split), then zstd at level 1,
# no dictionary (sensor floats hardly repeat, and trying costs 20 times the write). Of the choices bench/store.py
# measures (`blob_formats` in metrics/bench_store.json) the smallest file, in less time than Snappy took before.
BLOB_PARQUET = {"compression": "zstd", "compression_level": 1, "use_byte_stream_split": True, "use_dictionary": False}
PENDING_BLOB = ""  # a new recording's blob_sha256 until its blob is on disk: set before the same commit


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


def head_revision() -> str:
    """The newest revision: the migrations are numbered files, NNNN_what.py, each revising the one before (a test
    checks that Alembic finds the same head)."""
    return max(p.name for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py")).split("_")[0]


def current_revision(engine) -> str | None:
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine, revision: str = "head") -> None:
    """`alembic upgrade head` (or to `revision`) on this database (store/migrations/), in place. A database
    already at the head is left as it is without loading Alembic (a process's first request waits for this)."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
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
        command.upgrade(config, revision)
        conn.commit()


def _local_days(start_epoch: float, end_epoch: float, tz: str) -> list[str]:
    first = day_math.local_date(start_epoch, tz)
    last = day_math.local_date(max(start_epoch, end_epoch - 1e-6), tz)
    return [d.date().isoformat() for d in pd.date_range(first, last, freq="D")]


def _sync_folder(folder: Path) -> None:
    """The folder's entries (a file's new name) on disk. A file system that cannot sync a folder (some FUSE
    mounts answer EINVAL) is left to its own ordering."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


def checked_episodes(answer: dict) -> tuple[np.ndarray, np.ndarray]:
    """(start_s, end_s) of the answer's episodes, once they are what days are computed from: labels of the
    model's activities or the two states, finite bounds in time order that do not overlap."""
    name = answer.get("recording", {}).get("id")
    known = {*answer["labels"]["activities"], *day_math.STATES}
    episodes = answer["episodes"]
    for k, episode in enumerate(episodes):
        if episode.get("label") not in known:
            raise StoreError(f"recording {name!r}: episode {k} has label {episode.get('label')!r}; expected one of "
                             f"the model's activities {sorted(answer['labels']['activities'])} or not_worn, uncertain")
    start = np.array([e["start_s"] for e in episodes], float)
    end = np.array([e["end_s"] for e in episodes], float)
    bad = ~np.isfinite(start) | ~np.isfinite(end) | (end < start)
    bad[1:] |= start[1:] < end[:-1]
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise StoreError(f"recording {name!r}: episode {k} spans [{start[k]}, {end[k]}) s; expected finite bounds, "
                         "start <= end, each episode starting where the one before ended or later")
    return start, end


def checked_basis(answer: dict) -> None:
    """The answer's minutes basis (where it has one), once it is what days add up: as many ends and share rows as
    window starts, a share per activity of the model, shares in [0, 1], spans in time order that do not overlap."""
    basis = answer.get("minutes_basis")
    if basis is None:
        return
    name = answer.get("recording", {}).get("id")
    k = len(answer["labels"]["activities"])
    start, end = np.asarray(basis["start_s"], float), np.asarray(basis["end_s"], float)
    rows = basis["shares"]
    if len(end) != len(start) or len(rows) != len(start) or any(len(r) != k for r in rows):
        raise StoreError(f"recording {name!r}: minutes_basis has {len(start)} window starts, {len(end)} ends and "
                         f"{len(rows)} share rows; expected one end and one row of {k} shares (the model's "
                         "activities) per start")
    shares = np.asarray(rows, float).reshape(len(start), k)
    bad = ~np.isfinite(start) | ~np.isfinite(end) | (end < start) | ~np.all((shares >= 0) & (shares <= 1), axis=1)
    bad[1:] |= start[1:] < end[:-1]
    if bad.any():
        w = int(np.flatnonzero(bad)[0])
        raise StoreError(f"recording {name!r}: minutes_basis window {w} spans [{start[w]}, {end[w]}) s with shares "
                         f"{shares[w].tolist()}; expected finite bounds in time order, not overlapping, and shares "
                         "between 0 and 1")
    scale = basis.get("interval_scale")
    if scale is not None and not (np.isfinite(scale) and scale >= 0):
        raise StoreError(f"recording {name!r}: minutes_basis interval_scale {scale!r}; expected a number >= 0 or null")


def covered_span(recording, episodes: tuple) -> tuple[float, float] | None:
    """The span the episodes cover, in seconds since 1970 UTC (the arithmetic of day_math.episode_frame)."""
    start = recording.start_epoch + episodes[0]
    end = recording.start_epoch + episodes[1]
    return (float(start.min()), float(end.max())) if len(start) else None


class Store:
    def __init__(self, engine, *, blob_root: Path, personal_models_dir: Path | None = None,
                 default_timezone: str = "UTC", min_worn_hours: float = DEFAULT_MIN_WORN_HOURS):
        self.engine, self.blob_root = engine, Path(blob_root)
        self.personal_models_dir = Path(personal_models_dir) if personal_models_dir else None
        self.default_timezone, self.min_worn_hours = default_timezone, float(min_worn_hours)
        # writes the fused blobs beside the ingest transactions (Parquet encoding, hashing and file writes
        # release the GIL while the transaction's Python runs)
        self._blob_writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-blob")

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
        self._blob_writer.shutdown(wait=True)
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, write: bool = False, snapshot: bool = False):
        """One unit of work: committed when the block ends, rolled back when it raises. `snapshot`: every
        statement sees the database as the first did (PostgreSQL's REPEATABLE READ; an SQLite read
        transaction in WAL mode does so anyway)."""
        with self.engine.connect() as conn:
            options = {"write": write}
            if snapshot and conn.dialect.name == "postgresql":
                options["isolation_level"] = "REPEATABLE READ"
            conn = conn.execution_options(**options)
            with conn.begin():
                yield conn

    # --- blobs -------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blob_root / f"{sha256}.parquet"

    def put_blob(self, fused: pd.DataFrame) -> str:
        """The fused table as Parquet under its own sha256; written once (a temporary file, then a rename)."""
        buffer = io.BytesIO()
        fused.to_parquet(buffer, index=False, **BLOB_PARQUET)
        data = buffer.getbuffer()
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            self.blob_root.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.blob_root, prefix=".tmp-", suffix=".parquet")
            with os.fdopen(handle, "wb") as f:
                f.write(data)
                os.fsync(f.fileno())  # the bytes, then the name, on disk before a row can name them
            os.replace(temporary, path)
            _sync_folder(self.blob_root)
        return sha

    def fused(self, recording_id: int) -> pd.DataFrame:
        with self.transaction() as conn:
            row = queries.recording(conn, None, recording_id)
        if row is None:
            raise NotFound(f"no recording {recording_id}")
        return pd.read_parquet(self.blob_path(row.blob_sha256))

    # --- writes -------------------------------------------------------------------------------------------
    def ingest(self, subject: str, *, content_hash: str, fused: pd.DataFrame, answer: dict,
               timezone: str | None = None, actor: str | None = None, replace: bool = False) -> tuple[dict, bool]:
        """Store one scored recording of `subject`; (stored recording, created). created is False when the same
        content was already scored by the same model: then nothing new is written and the stored one returns.
        `replace`: a live stream's recording (serve/streaming.py), which grows under one content hash: a stored
        one takes the newer fused table, reports and this model's scoring, and its days follow."""
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
        episodes = checked_episodes(answer)
        checked_basis(answer)
        blob = self._blob_writer.submit(self.put_blob, fused)
        try:
            with self.transaction(write=True) as conn:
                person = queries.ensure_participant(conn, subject, timezone or self.default_timezone)
                queries.lock_participant(conn, person.id)
                if timezone is not None and timezone != person.timezone:
                    raise StoreError(f"subject {subject!r} is stored with time zone {person.timezone!r}, "
                                     f"not {timezone!r}")
                start_epoch = day_math.epoch(start_time, person.timezone)
                fused_seconds = float(answer["recording"]["fused_seconds"])
                recording_id, inserted = queries.ensure_recording(conn, person.id, {
                    "content_hash": content_hash, "name": answer["recording"].get("id"), "start_time": start_time,
                    "start_epoch": start_epoch, "end_epoch": start_epoch + fused_seconds,
                    "fused_seconds": fused_seconds, "blob_sha256": PENDING_BLOB, "quality": answer["recording"],
                    "wear": answer.get("wear", {})})
                previous = queries.recording(conn, person.id, recording_id)
                if replace and not inserted:
                    queries.update_recording(conn, recording_id, {
                        "end_epoch": start_epoch + fused_seconds, "fused_seconds": fused_seconds,
                        "blob_sha256": blob.result(), "quality": answer["recording"], "wear": answer.get("wear", {})})
                    queries.delete_scoring(conn, recording_id, answer["model"]["sha256"])
                created = self._add_scoring(conn, person, queries.recording(conn, person.id, recording_id), answer,
                                            episodes, previous_span=(previous.start_epoch, previous.end_epoch))
                if inserted:  # the blob is on disk before the row that names it commits
                    queries.set_blob(conn, recording_id, blob.result())
                if not created:
                    row = queries.scoring_of(conn, recording_id, answer["model"]["sha256"])
                    answer = queries.stored_answer(row.answer, row.minutes_basis, row.interval_scale)
                stored = queries.recording(conn, person.id, recording_id)
        finally:
            wait([blob])  # no write of this call outlives it
        if created:  # the audit trail (har/audit.py): who stored what, by which model; nothing when nothing new
            audit("store.ingest", actor=actor or local_actor(), subject=subject, model=answer["model"]["name"],
                  version=answer["model"]["version"], counts={"recordings": 1, "episodes": len(answer["episodes"])},
                  recording_id=recording_id)
        return self._recording_entry(subject, person.timezone, stored) | {"answer": answer}, created

    @contextmanager
    def _stored_recording(self, recording_id: int, answer: dict):
        """A write transaction on a stored recording for a new answer of it (checked first), its participant
        locked: (conn, recording, participant, the answer's episode bounds)."""
        episodes = checked_episodes(answer)
        checked_basis(answer)
        with self.transaction(write=True) as conn:
            recording = queries.recording(conn, None, recording_id)
            if recording is None:
                raise NotFound(f"no recording {recording_id}")
            queries.lock_participant(conn, recording.participant_id)
            yield conn, recording, queries.participant_by_id(conn, recording.participant_id), episodes

    def add_scoring(self, recording_id: int, answer: dict) -> bool:
        """Another model's scoring of a stored recording (re-scoring); False when that model already scored it.
        Days and hours follow it from the commit on."""
        with self._stored_recording(recording_id, answer) as (conn, recording, person, episodes):
            return self._add_scoring(conn, person, recording, answer, episodes)

    def complete_scoring(self, recording_id: int, answer: dict) -> bool:
        """The same model's answer for a scoring stored without a minutes basis (before revision 0003): its answer,
        basis and episodes replaced, and the days it touches recomputed. False when there is no such scoring to
        complete (none by this model, or it has its basis already)."""
        with self._stored_recording(recording_id, answer) as (conn, recording, person, episodes):
            scoring = queries.scoring_of(conn, recording_id, answer["model"]["sha256"])
            if scoring is None or scoring.minutes_basis is not None or answer.get("minutes_basis") is None:
                return False
            covered = covered_span(recording, episodes)
            queries.replace_scoring(conn, scoring.id, answer, covered)
            first, last = summaries.dirty_dates(person.timezone, (recording.start_epoch, recording.end_epoch),
                                                [covered, (scoring.covered_start, scoring.covered_end)])
            summaries.refresh(conn, person.id, person.timezone, first, last)
            return True

    def _add_scoring(self, conn, person, recording, answer: dict, episodes: tuple,
                     previous_span: tuple[float, float] | None = None) -> bool:
        """The scoring, its episodes and the summaries of the days it changes (the participant is locked).
        `previous_span`: the recording's span before a live recording grew (its days change too)."""
        covered = covered_span(recording, episodes)
        previous = queries.newest_scoring(conn, recording.id)
        if queries.add_scoring(conn, recording.id, answer, covered) is None:
            return False
        first, last = summaries.dirty_dates(person.timezone, (recording.start_epoch, recording.end_epoch),
                                            [covered, previous and (previous.covered_start, previous.covered_end),
                                             previous_span])
        summaries.refresh(conn, person.id, person.timezone, first, last)
        return True

    def erase(self, subject: str, *, actor: str | None = None) -> dict:
        """Remove every row of `subject`, the blobs only they refer to, and their personal model file.

        Returns the counts; an audit row keeps them with a hash of the id and the time, nothing else.
        """
        with self.transaction(write=True) as conn:
            person = queries.participant(conn, subject)
            if person is None:
                raise NotFound(f"no subject {subject!r} in the store")
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
            files = sorted({*self.blob_root.glob("*.parquet"), *self.blob_root.glob(".tmp-*")})  # .tmp-*.parquet: once
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

    def scoring_state(self, recording_id: int, model_sha256: str) -> str | None:
        """None when the model has not scored the recording; "complete", or "without_basis" for a scoring stored
        before answers carried their minutes basis (store/rescore.py completes those)."""
        with self.transaction() as conn:
            row = queries.scoring_of(conn, recording_id, model_sha256)
        return None if row is None else "complete" if row.minutes_basis is not None else "without_basis"

    def _participant(self, conn, subject: str):
        person = queries.participant(conn, subject)
        if person is None:
            raise NotFound(f"no subject {subject!r} in the store")
        return person

    def _labels(self, conn, person) -> list[str]:
        return _labels([r.labels for r in queries.newest_labels(conn, [person.id])])

    def days(self, subject: str, date_from=None, date_to=None, *, min_worn_hours: float | None = None) -> list[dict]:
        """One dict per local day from the first to the last recorded day (within [date_from, date_to])."""
        rule = self.min_worn_hours if min_worn_hours is None else float(min_worn_hours)
        with self.transaction() as conn:
            person = self._participant(conn, subject)
            table = summaries.day_tables(conn, [person], date_from, date_to)[person.id]
            labels = self._labels(conn, person)
        return day_math.day_dicts(table, labels, min_worn_hours=rule)

    def hours(self, subject: str) -> dict:
        """The 24-hour profile per activity and of wear: all days, weekdays, weekend days."""
        with self.transaction() as conn:
            person = self._participant(conn, subject)
            labels = self._labels(conn, person)
            hours = summaries.hour_tables(conn, [person], {person.id: labels}, every_hour=False)[person.id]
        return {"subject": subject, "timezone": person.timezone, **day_math.hour_profile(hours, labels)}

    def hour_rows(self, subject: str) -> pd.DataFrame:
        """Every hour bin from the first to the last recorded day: date, bin, hour, hour_start, seconds recorded,
        overlapping and per label (the study page's heatmap)."""
        with self.transaction() as conn:
            person = self._participant(conn, subject)
            labels = self._labels(conn, person)
            return summaries.hour_tables(conn, [person], {person.id: labels}, every_hour=True)[person.id]

    def participant(self, subject: str) -> dict:
        with self.transaction() as conn:
            person = self._participant(conn, subject)
        return {"subject": person.subject, "timezone": person.timezone}

    def subjects(self) -> list[dict]:
        """Each participant: time zone, recordings, first and last day, days and valid days."""
        min_worn_s = self.min_worn_hours * 3600.0
        with self.transaction() as conn:
            people = queries.participants(conn)
            recordings = queries.recording_counts(conn)
            counts = {row[0]: row[1:] for row in queries.day_counts(conn, min_worn_s)}
        result = []
        for person in people:
            first, last, recorded, valid = counts.get(person.id, (None, None, 0, 0))
            days = (pd.Timestamp(last) - pd.Timestamp(first)).days + 1 if first else 0
            if 0.0 >= min_worn_s:  # the days between with nothing recorded meet a rule of no worn time
                valid += days - recorded
            result.append({"subject": person.subject, "timezone": person.timezone,
                           "recordings": recordings.get(person.id, 0), "first_day": first, "last_day": last,
                           "days": days, "valid_days": int(valid)})
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
                | {"scorings": [_scoring_entry(s) for s in scorings],
                   "answer": queries.stored_answer(scorings[-1].answer, scorings[-1].minutes_basis,
                                                   scorings[-1].interval_scale)})

    def stored_recordings(self) -> list:
        """Every recording row with its participant's subject (re-scoring walks these)."""
        with self.transaction() as conn:
            people = {p.id: p.subject for p in queries.participants(conn)}
            return [(people[r.participant_id], r) for r in queries.all_recordings(conn)]

    def activities(self) -> list[str]:
        """Every activity of the newest scorings of everyone, in the order first seen (collate's columns)."""
        with self.transaction() as conn:
            return _labels([r.labels for r in queries.newest_labels(conn)])

    def study_chunks(self, participants_per_chunk: int = 10):
        """Everyone, a few participants at a time, from one snapshot of the store (collate): per chunk the study's
        activities (`activities`), a list of {subject, timezone, recordings, labels, days (DayTable), hours (every
        bin)}, and the chunk's episodes table."""
        with self.transaction(snapshot=True) as conn:
            people = queries.participants(conn)
            recordings = queries.recording_counts(conn)
            activities = _labels([r.labels for r in queries.newest_labels(conn)])
            for at in range(0, len(people), participants_per_chunk):
                chunk = people[at:at + participants_per_chunk]
                ids = [p.id for p in chunk]
                labels_of: dict = {}
                for row in queries.newest_labels(conn, ids):
                    labels_of.setdefault(row.participant_id, []).append(row.labels)
                labels = {pid: _labels(lists) for pid, lists in labels_of.items()}
                days = summaries.day_tables(conn, chunk)
                hours = summaries.hour_tables(conn, chunk, labels, every_hour=True)
                episodes = self._episodes_table(conn, chunk)
                yield activities, [{"subject": p.subject, "timezone": p.timezone, "recordings": recordings.get(p.id, 0),
                        "labels": labels.get(p.id, []), "days": days[p.id], "hours": hours[p.id]}
                       for p in chunk], episodes

    EPISODE_COLUMNS = ["subject", "recording_id", "scoring_id", "label", "start_time", "end_time", "duration_s",
                       "windows", "mean_confidence"]

    def _episodes_table(self, conn, people: list) -> pd.DataFrame:
        """The stored episodes of each recording's newest scoring, with local wall-clock times; empty episodes
        are left out."""
        columns = queries.episode_columns(conn, [p.id for p in people])
        people = {p.id: p for p in people}
        start_s, end_s = columns["start_s"].astype(float), columns["end_s"].astype(float)
        keep = end_s > start_s
        participant = columns["participant_id"][keep]
        start_epoch = columns["start_epoch"].astype(float)[keep]
        start, end = start_epoch + start_s[keep], start_epoch + end_s[keep]
        start_time, end_time = np.empty(len(start), object), np.empty(len(start), object)
        for pid in np.unique(participant):
            mine = participant == pid
            # an episode mostly ends where the next begins: each instant is written once
            instants, at = np.unique(np.r_[start[mine], end[mine]], return_inverse=True)
            text = np.asarray(day_math.iso_times(instants, people[pid].timezone), object)[at]
            start_time[mine], end_time[mine] = text[:mine.sum()], text[mine.sum():]
        confidence = np.array([np.nan if c is None else c for c in columns["mean_confidence"]], float)[keep]
        return pd.DataFrame({
            "subject": pd.Series(participant).map({k: p.subject for k, p in people.items()}).to_numpy(object),
            "recording_id": columns["recording_id"][keep],
            "scoring_id": columns["scoring_id"][keep],
            "label": columns["label"][keep], "start_time": start_time, "end_time": end_time,
            "duration_s": np.round(end_s[keep] - start_s[keep], 3),
            "windows": columns["windows"].astype(np.int64)[keep], "mean_confidence": confidence},
            columns=self.EPISODE_COLUMNS)

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


def _iso(epoch: float, tz: str) -> str:
    return pd.Timestamp(round(epoch * 1e6), unit="us", tz="UTC").tz_convert(tz).isoformat(timespec="milliseconds")


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)


def _scoring_entry(s) -> dict:
    return {"id": s.id, "model": s.model_name, "version": s.model_version, "sha256": s.model_sha256,
            "personal": bool(s.personal), "scored_at": _utc(s.scored_at).isoformat()}
