"""Every query of the study store, in one module; each takes the connection of its caller's transaction.

Writes that may race (the same upload twice at once) are INSERT ... ON CONFLICT DO NOTHING against a
unique constraint, then a SELECT of the row that won: never check-then-insert.
"""
from __future__ import annotations

import zlib
from datetime import datetime, timezone

import msgspec
import numpy as np
from sqlalchemy import Connection, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store.days import NOT_WORN
from store.tables import (SUMMARY_TABLES, Audit, Episode, Participant, Recording, Scoring, SummaryDay,
                          SummaryDayLabel, SummaryHour, SummaryHourLabel)

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


SHARE_SCALE = 10_000  # shares come with 4 decimals (har.minutes.SHARE_DECIMALS): kept exactly as 16-bit integers


def pack_basis(basis: dict) -> bytes:
    """The answer's minutes basis as bytes: n and k, the windows' starts and ends (float64), then each activity's
    shares as 16-bit integers in ten-thousandths, column by column (a confident stretch is long runs of 0 and
    10000), zlib-compressed: some 5 KB per recorded hour."""
    start = np.asarray(basis["start_s"], "<f8")
    shares = np.asarray(basis["shares"], np.float64).reshape(len(start), -1)
    header = np.array(shares.shape, "<i8")
    return zlib.compress(header.tobytes() + start.tobytes() + np.asarray(basis["end_s"], "<f8").tobytes()
                         + np.round(shares * SHARE_SCALE).astype("<u2").T.tobytes(), 6)


def unpack_basis(blob: bytes) -> dict:
    """pack_basis's arrays: start_s, end_s [n] and shares [n, k]."""
    data = zlib.decompress(blob)
    n, k = np.frombuffer(data[:16], "<i8")
    start = np.frombuffer(data, "<f8", count=n, offset=16)
    end = np.frombuffer(data, "<f8", count=n, offset=16 + 8 * n)
    shares = np.frombuffer(data, "<u2", count=n * k, offset=16 + 16 * n).reshape(k, n).T / SHARE_SCALE
    return {"start_s": start, "end_s": end, "shares": shares}


def stored_answer(answer: bytes, basis: bytes | None, interval_scale: float | None) -> dict:
    """A scoring's answer as it was given: the packed answer with its minutes basis put back."""
    result = unpack(answer)
    if basis is not None:
        arrays = unpack_basis(basis)
        result["minutes_basis"] = {"start_s": arrays["start_s"].tolist(), "end_s": arrays["end_s"].tolist(),
                                   "shares": arrays["shares"].round(4).tolist(), "interval_scale": interval_scale}
    return result


def insert_ignoring_conflict(conn: Connection, table, values: dict, conflict: list[str]):
    """INSERT that does nothing when a row with the same `conflict` columns exists (SQLite and PostgreSQL)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict)
    return conn.execute(statement.returning(table.c.id)).scalar()


def participant(conn: Connection, subject: str):
    return conn.execute(select(Participant).where(Participant.subject == subject)).first()


def participant_by_id(conn: Connection, participant_id: int):
    return conn.execute(select(Participant).where(Participant.id == participant_id)).first()


def ensure_participant(conn: Connection, subject: str, tz: str):
    insert_ignoring_conflict(conn, Participant.__table__, {"subject": subject, "timezone": tz, "created_at": now()},
                             ["subject"])
    return participant(conn, subject)


def lock_participant(conn: Connection, participant_id: int) -> None:
    """Writers of one participant take turns from here to their commit, so that each recomputes the days it
    touches from what the one before committed (PostgreSQL: the row's lock; SQLite's writers already queue at
    BEGIN IMMEDIATE, and SQLite ignores FOR UPDATE)."""
    conn.execute(select(Participant.id).where(Participant.id == participant_id).with_for_update())


def ensure_recording(conn: Connection, participant_id: int, values: dict) -> tuple[int, bool]:
    """(recording id, whether this call inserted it)."""
    values = {**values, "participant_id": participant_id, "created_at": now()}
    inserted = insert_ignoring_conflict(conn, Recording.__table__, values, ["participant_id", "content_hash"])
    if inserted is not None:
        return inserted, True
    existing = conn.execute(select(Recording.id).where(Recording.participant_id == participant_id,
                                                       Recording.content_hash == values["content_hash"])).scalar_one()
    return existing, False


def update_recording(conn: Connection, recording_id: int, values: dict) -> None:
    """A live stream's recording grew: its end, seconds, fusion and wear reports, blob."""
    conn.execute(update(Recording).where(Recording.id == recording_id).values(**values))


def delete_scoring(conn: Connection, recording_id: int, model_sha256: str) -> None:
    """This model's scoring of the recording and its episodes (a live recording's is replaced as it grows)."""
    scoring = select(Scoring.id).where(Scoring.recording_id == recording_id, Scoring.model_sha256 == model_sha256)
    conn.execute(delete(Episode).where(Episode.scoring_id.in_(scoring)))
    conn.execute(delete(Scoring).where(Scoring.recording_id == recording_id, Scoring.model_sha256 == model_sha256))


def set_blob(conn: Connection, recording_id: int, blob_sha256: str) -> None:
    conn.execute(update(Recording).where(Recording.id == recording_id).values(blob_sha256=blob_sha256))


def scoring_values(answer: dict, covered: tuple[float, float] | None) -> dict:
    """A scoring row's answer, minutes basis (kept apart: days add it up) and covered span."""
    basis = answer.get("minutes_basis")
    return {"answer": pack({k: v for k, v in answer.items() if k != "minutes_basis"}),
            "minutes_basis": pack_basis(basis) if basis is not None else None,
            "interval_scale": basis.get("interval_scale") if basis is not None else None,
            "covered_start": covered[0] if covered else None, "covered_end": covered[1] if covered else None}


def add_episodes(conn: Connection, scoring_id: int, answer: dict) -> None:
    rows = [{"scoring_id": scoring_id, **{k: e.get(k) for k in EPISODE_KEYS}} for e in answer["episodes"]]
    if rows:
        conn.execute(insert(Episode), rows)


def add_scoring(conn: Connection, recording_id: int, answer: dict, covered: tuple[float, float] | None) -> int | None:
    """The scoring and its episodes; None (and nothing written) when this model already scored the recording.
    `covered`: the span the episodes cover, in seconds since 1970 UTC."""
    model = answer["model"]
    scoring_id = insert_ignoring_conflict(conn, Scoring.__table__, {
        "recording_id": recording_id, "model_name": model["name"], "model_version": str(model["version"]),
        "model_sha256": model["sha256"], "personal": bool(model.get("personal")),
        "labels": list(answer["labels"]["activities"]), "scored_at": now(), **scoring_values(answer, covered)},
        ["recording_id", "model_sha256"])
    if scoring_id is None:
        return None
    add_episodes(conn, scoring_id, answer)
    return scoring_id


def replace_scoring(conn: Connection, scoring_id: int, answer: dict, covered: tuple[float, float] | None) -> None:
    """A scoring's answer, basis and episodes replaced by the same model's new answer (re-scoring a scoring stored
    before its model's answers carried a minutes basis)."""
    conn.execute(update(Scoring).where(Scoring.id == scoring_id).values(**scoring_values(answer, covered)))
    conn.execute(delete(Episode).where(Episode.scoring_id == scoring_id))
    add_episodes(conn, scoring_id, answer)


def scoring_labels(conn: Connection, scoring_ids: list[int]) -> list:
    """(id, labels) of the scorings: their models' activities."""
    return conn.execute(select(Scoring.id, Scoring.labels).where(Scoring.id.in_(scoring_ids))
                        .order_by(Scoring.id)).all()


def bases_of(conn: Connection, scoring_ids: list[int]) -> dict[int, dict | None]:
    """scoring id -> its minutes basis (unpack_basis's arrays, its activities and interval scale), None without."""
    rows = conn.execute(select(Scoring.id, Scoring.minutes_basis, Scoring.labels, Scoring.interval_scale)
                        .where(Scoring.id.in_(scoring_ids))).all()
    return {r.id: None if r.minutes_basis is None else
            {**unpack_basis(r.minutes_basis), "activities": list(r.labels), "interval_scale": r.interval_scale}
            for r in rows}


def scoring_of(conn: Connection, recording_id: int, model_sha256: str):
    return conn.execute(select(Scoring).where(Scoring.recording_id == recording_id,
                                              Scoring.model_sha256 == model_sha256)).first()


def has_scoring(conn: Connection, content_hash: str, model_sha256: str) -> bool:
    return conn.execute(select(Scoring.id).join(Recording, Scoring.recording_id == Recording.id).where(
        Recording.content_hash == content_hash, Scoring.model_sha256 == model_sha256).limit(1)).first() is not None


def newest_scoring_id():
    """The newest scoring (the largest id) of the recording of the enclosing query: what days and hours follow.
    Correlated, so that it reads the index on scorings.recording_id for the recordings asked about only."""
    return select(func.max(Scoring.id)).where(Scoring.recording_id == Recording.id).correlate(
        Recording).scalar_subquery()


def newest_scoring(conn: Connection, recording_id: int):
    """(id, covered_start, covered_end) of the recording's newest scoring, None when it has none."""
    return conn.execute(select(Scoring.id, Scoring.covered_start, Scoring.covered_end)
                        .where(Scoring.recording_id == recording_id).order_by(Scoring.id.desc()).limit(1)).first()


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


def columns(rows: list[tuple], names: list[str]) -> dict:
    """driver_tuples' rows as one numpy array per column (objects where a column holds text or None)."""
    result = {}
    for k, name in enumerate(names):
        values = [row[k] for row in rows]
        kind = type(values[0]) if values else float
        result[name] = np.asarray(values, dtype=None if kind in (int, float) and None not in values else object)
    return result


def newest_scorings(conn: Connection, participant_ids: list[int]) -> list[tuple]:
    """scoring_id, recording_id, participant_id, start_epoch of each recording's newest scoring, in the order
    that decides overlaps (participant, recording start, recording id)."""
    return driver_tuples(conn,
        select(newest_scoring_id(), Recording.id, Recording.participant_id, Recording.start_epoch)
        .where(Recording.participant_id.in_(participant_ids))
        .order_by(Recording.participant_id, Recording.start_epoch, Recording.id))


def newest_episodes(conn: Connection, participant_ids: list[int]) -> list[tuple]:
    """scoring_id, label, start_s, end_s, windows, mean_confidence of the episodes of each recording's newest
    scoring, in newest_scorings' order, then by start (what a recording is, newest_scorings says once)."""
    return driver_tuples(conn,
        select(Episode.scoring_id, Episode.label, Episode.start_s, Episode.end_s, Episode.windows,
               Episode.mean_confidence)
        .join(Recording, Episode.scoring_id == newest_scoring_id())
        .where(Recording.participant_id.in_(participant_ids))
        .order_by(Recording.participant_id, Recording.start_epoch, Recording.id, Episode.start_s))


def episode_columns(conn: Connection, participant_ids: list[int]) -> dict[str, np.ndarray]:
    """newest_episodes as columns, each episode with its scoring's recording_id, participant_id, start_epoch."""
    episodes = columns(newest_episodes(conn, participant_ids),
                       ["scoring_id", "label", "start_s", "end_s", "windows", "mean_confidence"])
    scorings = columns(newest_scorings(conn, participant_ids),
                       ["scoring_id", "recording_id", "participant_id", "start_epoch"])
    order = np.argsort(scorings["scoring_id"])
    at = order[np.searchsorted(scorings["scoring_id"], episodes["scoring_id"], sorter=order)] if len(order) else \
        np.zeros(0, np.int64)
    return {**episodes, **{name: np.asarray(scorings[name])[at] for name in ("recording_id", "participant_id",
                                                                              "start_epoch")}}


def newest_labels(conn: Connection, participant_ids: list[int] | None = None) -> list:
    """(participant_id, labels) of each recording's newest scoring (of everyone when no ids are given), in
    participant and recording order."""
    query = select(Recording.participant_id, Scoring.labels).join(Scoring, Scoring.id == newest_scoring_id())
    if participant_ids is not None:
        query = query.where(Recording.participant_id.in_(participant_ids))
    return conn.execute(query.order_by(Recording.participant_id, Recording.start_epoch, Recording.id)).all()


def recordings_reaching(conn: Connection, participant_id: int, start: float, end: float) -> list:
    """The participant's recordings whose span or newest scoring's episodes reach [start, end] (either end
    included: a recording that ends where the days begin may carry a run on into them), in the order that
    decides overlaps (start, then id): id, start_epoch, end_epoch, scoring_id, covered_start, covered_end."""
    newest = newest_scoring_id()
    return conn.execute(
        select(Recording.id, Recording.start_epoch, Recording.end_epoch, Scoring.id.label("scoring_id"),
               Scoring.covered_start, Scoring.covered_end)
        .join(Scoring, Scoring.id == newest)
        .where(Recording.participant_id == participant_id,
               or_(and_(Scoring.covered_start <= end, Scoring.covered_end >= start),
                   and_(Recording.start_epoch <= end, Recording.end_epoch >= start)))
        .order_by(Recording.start_epoch, Recording.id)).all()


def episodes_of(conn: Connection, scoring_ids: list[int]) -> list[tuple]:
    """scoring_id, label, start_s, end_s of the scorings' episodes."""
    return driver_tuples(conn, select(Episode.scoring_id, Episode.label, Episode.start_s, Episode.end_s)
                         .where(Episode.scoring_id.in_(scoring_ids)))


def replace_summaries(conn: Connection, participant_id: int, first: str, last: str, rows: dict) -> None:
    """The participant's summary rows of local dates first..last (YYYY-MM-DD) replaced by `rows` {table: [row]}."""
    for table in SUMMARY_TABLES:
        conn.execute(delete(table).where(table.participant_id == participant_id, table.date >= first,
                                         table.date <= last))
    for table, values in rows.items():
        if values:
            conn.execute(insert(table), values)


def _summary_rows(conn: Connection, columns: list, table, participant_ids: list[int], first: str | None,
                  last: str | None, order: list) -> list[tuple]:
    query = select(*columns).where(table.participant_id.in_(participant_ids))
    if first is not None:
        query = query.where(table.date >= first)
    if last is not None:
        query = query.where(table.date <= last)
    return driver_tuples(conn, query.order_by(table.participant_id, *order))


def summary_days(conn: Connection, participant_ids: list[int], first: str | None = None, last: str | None = None):
    """participant_id, date, recordings, recorded_seconds, overlap_seconds, unestimated_seconds,
    no_interval_seconds, in date order."""
    t = SummaryDay
    return _summary_rows(conn, [t.participant_id, t.date, t.recordings, t.recorded_seconds, t.overlap_seconds,
                                t.unestimated_seconds, t.no_interval_seconds], t, participant_ids, first, last, [t.date])


def summary_day_labels(conn: Connection, participant_ids: list[int], first: str | None = None,
                       last: str | None = None):
    """participant_id, date, label, seconds, episodes, estimate_seconds, interval_seconds."""
    t = SummaryDayLabel
    return _summary_rows(conn, [t.participant_id, t.date, t.label, t.seconds, t.episodes, t.estimate_seconds,
                                t.interval_seconds], t, participant_ids, first, last, [t.date, t.label])


def summary_hours(conn: Connection, participant_ids: list[int], first: str | None = None, last: str | None = None):
    """participant_id, date, bin, hour, recorded_seconds, overlap_seconds, unestimated_seconds, no_interval_seconds,
    in time order."""
    t = SummaryHour
    return _summary_rows(conn, [t.participant_id, t.date, t.bin, t.hour, t.recorded_seconds, t.overlap_seconds,
                                t.unestimated_seconds, t.no_interval_seconds], t, participant_ids, first, last,
                         [t.date, t.bin])


def summary_hour_labels(conn: Connection, participant_ids: list[int], first: str | None = None,
                        last: str | None = None):
    """participant_id, date, bin, label, seconds, estimate_seconds, interval_seconds."""
    t = SummaryHourLabel
    return _summary_rows(conn, [t.participant_id, t.date, t.bin, t.label, t.seconds, t.estimate_seconds,
                                t.interval_seconds], t, participant_ids, first, last, [t.date, t.bin, t.label])


def day_counts(conn: Connection, min_worn_seconds: float) -> list:
    """Per participant with recorded time: first and last recorded date, dates with recorded time, and those of
    them with at least `min_worn_seconds` worn (recorded less not worn: the subtraction GET /days makes)."""
    not_worn = SummaryDayLabel
    worn = SummaryDay.recorded_seconds - func.coalesce(not_worn.seconds, 0.0)
    return conn.execute(
        select(SummaryDay.participant_id, func.min(SummaryDay.date), func.max(SummaryDay.date), func.count(),
               func.sum(case((worn >= min_worn_seconds, 1), else_=0)))
        .outerjoin(not_worn, and_(not_worn.participant_id == SummaryDay.participant_id,
                                  not_worn.date == SummaryDay.date, not_worn.label == NOT_WORN))
        .where(SummaryDay.recorded_seconds > 0).group_by(SummaryDay.participant_id)).all()


def participant_spans(conn: Connection) -> list:
    """Per participant with recordings: id, time zone, the earliest recording start and latest end, the earliest
    and latest instant any scoring's episodes cover (None without episodes)."""
    return conn.execute(
        select(Participant.id, Participant.timezone, func.min(Recording.start_epoch), func.max(Recording.end_epoch),
               func.min(Scoring.covered_start), func.max(Scoring.covered_end))
        .join(Recording, Recording.participant_id == Participant.id)
        .join(Scoring, Scoring.recording_id == Recording.id)
        .group_by(Participant.id, Participant.timezone)).all()


def recording_counts(conn: Connection) -> dict[int, int]:
    return dict(conn.execute(select(Recording.participant_id, func.count()).group_by(Recording.participant_id)).all())


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
               Scoring.personal, Scoring.scored_at,
               *([Scoring.answer, Scoring.minutes_basis, Scoring.interval_scale] if with_answer else [])]
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
    """Delete the participant's summaries, episodes, scorings, recordings and the participant; the counts of
    each but the summaries (derived rows)."""
    recording_ids = select(Recording.id).where(Recording.participant_id == participant_id)
    scoring_ids = select(Scoring.id).where(Scoring.recording_id.in_(recording_ids))
    for table in SUMMARY_TABLES:
        conn.execute(delete(table).where(table.participant_id == participant_id))
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
