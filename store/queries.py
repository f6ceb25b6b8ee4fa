"""Every query of the study store, in one module; each takes the connection of its caller's transaction.

Writes that may race (the same upload twice at once) are INSERT ... ON CONFLICT DO NOTHING against a
unique constraint, then a SELECT of the row that won: never check-then-insert.
"""
from __future__ import annotations

import zlib
from datetime import datetime, timezone

import msgspec
from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from store.tables import Audit, Episode, Participant, Recording, Scoring

EPISODE_KEYS = ("label", "start_s", "end_s", "windows", "mean_confidence")


def now() -> datetime:
    return datetime.now(timezone.utc)


def _plain(value):
    """numpy scalars (an answer built from arrays may hold some) as the Python numbers they are."""
    if hasattr(value, "item"):
        return value.item()
    raise NotImplementedError(f"cannot store a {type(value).__name__} in an answer")


ENCODER = msgspec.json.Encoder(enc_hook=_plain)


def pack(answer: dict) -> bytes:
    """The answer as zlib-compressed JSON (msgspec encodes it some 15 times faster than json; level 1: the
    per-window timeline's repetition compresses tenfold already)."""
    return zlib.compress(ENCODER.encode(answer), 1)


def unpack(blob: bytes) -> dict:
    return msgspec.json.decode(zlib.decompress(blob))


def insert_ignoring_conflict(conn: Connection, table, values: dict, conflict: list[str]):
    """INSERT that does nothing when a row with the same `conflict` columns exists (SQLite and PostgreSQL)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    return conn.execute(statement.returning(table.c.id)).scalar()


def participant(conn: Connection, subject: str):
    return conn.execute(select(Participant).where(Participant.subject == subject)).first()


def ensure_participant(conn: Connection, subject: str, tz: str):
    insert_ignoring_conflict(conn, Participant.__table__, {"subject": subject, "timezone": tz, "created_at": now()},
                             ["subject"])
    return participant(conn, subject)


def ensure_recording(conn: Connection, participant_id: int, values: dict) -> int:
    values = {**values, "participant_id": participant_id, "created_at": now()}
    insert_ignoring_conflict(conn, Recording.__table__, values, ["participant_id", "content_hash"])
    return conn.execute(select(Recording.id).where(Recording.participant_id == participant_id,
                                                   Recording.content_hash == values["content_hash"])).scalar_one()


def add_scoring(conn: Connection, recording_id: int, answer: dict) -> int | None:
    """The scoring and its episodes; None (and nothing written) when this model already scored the recording."""
    model = answer["model"]
    scoring_id = insert_ignoring_conflict(conn, Scoring.__table__, {
        "recording_id": recording_id, "model_name": model["name"], "model_version": str(model["version"]),
        "model_sha256": model["sha256"], "personal": bool(model.get("personal")),
        "labels": list(answer["labels"]["activities"]), "scored_at": now(), "answer": pack(answer)},
        ["recording_id", "model_sha256"])
    if scoring_id is None:
        return None
    rows = [{"scoring_id": scoring_id, **{k: e.get(k) for k in EPISODE_KEYS}} for e in answer["episodes"]]
    if rows:
        conn.execute(insert(Episode), rows)
    return scoring_id


def scoring_of(conn: Connection, recording_id: int, model_sha256: str):
    return conn.execute(select(Scoring).where(Scoring.recording_id == recording_id,
                                              Scoring.model_sha256 == model_sha256)).first()


def has_scoring(conn: Connection, content_hash: str, model_sha256: str) -> bool:
    return conn.execute(select(Scoring.id).join(Recording, Scoring.recording_id == Recording.id).where(
        Recording.content_hash == content_hash, Scoring.model_sha256 == model_sha256).limit(1)).first() is not None


def newest_scoring_ids():
    """recording_id -> its newest scoring (the largest id): what days and hours follow."""
    return select(Scoring.recording_id, func.max(Scoring.id).label("scoring_id")).group_by(
        Scoring.recording_id).subquery()


def participant_version(conn: Connection, participant_id: int) -> tuple:
    """Changes whenever a scoring of the participant is added or removed (the days cache's key)."""
    return tuple(conn.execute(select(func.count(Scoring.id), func.max(Scoring.id)).join(
        Recording, Scoring.recording_id == Recording.id).where(Recording.participant_id == participant_id)).one())


def driver_tuples(conn: Connection, statement) -> list[tuple]:
    """The rows of a SELECT as the database driver gives them (plain tuples): for the few queries that return
    hundreds of thousands of rows, where building SQLAlchemy Row objects would cost more than the query."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def timeline(conn: Connection, participant_ids: list[int]) -> list[tuple]:
    """Episodes of each recording's newest scoring: participant, recording, its start, label, start_s, end_s,
    windows, mean confidence, scoring."""
    newest = newest_scoring_ids()
    return driver_tuples(conn, 
        select(Recording.participant_id, Recording.id, Recording.start_epoch, Episode.label, Episode.start_s,
               Episode.end_s, Episode.windows, Episode.mean_confidence, Episode.scoring_id)
        .join(newest, newest.c.recording_id == Recording.id)
        .join(Episode, Episode.scoring_id == newest.c.scoring_id)
        .where(Recording.participant_id.in_(participant_ids))
        .order_by(Recording.participant_id, Recording.start_epoch, Recording.id, Episode.start_s))


def newest_labels(conn: Connection, participant_ids: list[int]) -> list:
    """(participant_id, labels) of each recording's newest scoring, in recording order."""
    newest = newest_scoring_ids()
    return conn.execute(select(Recording.participant_id, Scoring.labels)
                        .join(newest, newest.c.recording_id == Recording.id)
                        .join(Scoring, Scoring.id == newest.c.scoring_id)
                        .where(Recording.participant_id.in_(participant_ids))
                        .order_by(Recording.participant_id, Recording.start_epoch, Recording.id)).all()


def participants(conn: Connection) -> list:
    return conn.execute(select(Participant).order_by(Participant.subject)).all()


def recordings(conn: Connection, participant_ids: list[int]) -> list:
    return conn.execute(select(Recording).where(Recording.participant_id.in_(participant_ids))
                        .order_by(Recording.participant_id, Recording.start_epoch, Recording.id)).all()


def recording(conn: Connection, participant_id: int | None, recording_id: int):
    """A recording by id (of that participant, when one is named)."""
    query = select(Recording).where(Recording.id == recording_id)
    if participant_id is not None:
        query = query.where(Recording.participant_id == participant_id)
    return conn.execute(query).first()


def scorings(conn: Connection, recording_ids: list[int], *, with_answer: bool = False) -> list:
    columns = [Scoring.id, Scoring.recording_id, Scoring.model_name, Scoring.model_version, Scoring.model_sha256,
               Scoring.personal, Scoring.scored_at, *([Scoring.answer] if with_answer else [])]
    return conn.execute(select(*columns).where(Scoring.recording_id.in_(recording_ids))
                        .order_by(Scoring.recording_id, Scoring.id)).all()


def all_recordings(conn: Connection) -> list:
    return conn.execute(select(Recording).order_by(Recording.id)).all()


def blob_references(conn: Connection, shas: list[str], *, other_than: int | None = None) -> set[str]:
    """Which of `shas` a recording (of a participant other than `other_than`) still refers to."""
    query = select(Recording.blob_sha256).where(Recording.blob_sha256.in_(shas))
    if other_than is not None:
        query = query.where(Recording.participant_id != other_than)
    return set(conn.execute(query).scalars())


def erase_participant(conn: Connection, participant_id: int) -> dict:
    """Delete the participant's episodes, scorings, recordings and the participant; the counts of each."""
    recording_ids = select(Recording.id).where(Recording.participant_id == participant_id)
    scoring_ids = select(Scoring.id).where(Scoring.recording_id.in_(recording_ids))
    counts = {}
    counts["episodes"] = conn.execute(delete(Episode).where(Episode.scoring_id.in_(scoring_ids))).rowcount
    counts["scorings"] = conn.execute(delete(Scoring).where(Scoring.recording_id.in_(recording_ids))).rowcount
    counts["recordings"] = conn.execute(delete(Recording).where(Recording.participant_id == participant_id)).rowcount
    counts["participants"] = conn.execute(delete(Participant).where(Participant.id == participant_id)).rowcount
    return counts


def add_audit(conn: Connection, action: str, subject_hash: str | None, counts: dict) -> dict:
    row = {"action": action, "subject_hash": subject_hash, "at": now(), "counts": counts}
    conn.execute(insert(Audit), [row])
    return row


def audit_rows(conn: Connection) -> list:
    return conn.execute(select(Audit).order_by(Audit.id)).all()
