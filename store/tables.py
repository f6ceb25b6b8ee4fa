"""The study store's tables, declared once (SQLAlchemy 2 declarative). Migrations: store/migrations/.

A participant has recordings (unique by the content hash of the raw pair); a recording has
scorings (unique by the model's sha256); a scoring has its timeline as episodes: runs of windows
with one label, [start_s, end_s) in seconds after the recording's start, exactly as the answer
gives them. Episodes, not per-window rows or per-minute shares: episode bounds are the windows'
own (non-overlapping) spans, so splitting them at any midnight or hour is exact, and an hour of
recording is tens of rows instead of 1,800 (docs/study.md).

Days and hours are read from summary rows, kept up to date at ingest (store/summaries.py): per
participant and local date, and per participant, local date and hour bin, the seconds of each label of
the timeline that results once overlapping recordings are resolved (each second once). Rows are keyed
(participant, date[, bin], label) with value columns: the timeline's seconds (the counted minutes) and, over
the same resolved seconds, the minutes estimate's sums and its interval's half-width (har/minutes.py; each
scoring keeps its per-window basis for that). A date or hour with nothing recorded has no row.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Participant(Base):
    __tablename__ = "participants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), unique=True)  # pseudonymous id (serve.contract.SUBJECT_PATTERN)
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name: days and hours are local to it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (UniqueConstraint("participant_id", "content_hash", name="uq_recording_content"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 over the raw pair (store.identity.content_hash)
    name: Mapped[str | None] = mapped_column(String(200))  # the recording id the answer gives (the upload's name)
    start_time: Mapped[str] = mapped_column(String(40))  # ISO wall-clock time of t == 0, with its UTC offset
    start_epoch: Mapped[float] = mapped_column(Float)  # the same instant, seconds since 1970 UTC
    end_epoch: Mapped[float] = mapped_column(Float)  # start + fused seconds
    fused_seconds: Mapped[float] = mapped_column(Float)
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)  # <blob_root>/<sha256>.parquet: the fused table
    quality: Mapped[dict] = mapped_column(JSON)  # the answer's `recording` entry: samples, segments, fusion report
    wear: Mapped[dict] = mapped_column(JSON)  # the answer's `wear` report, non-wear episodes included
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Scoring(Base):
    __tablename__ = "scorings"
    __table_args__ = (UniqueConstraint("recording_id", "model_sha256", name="uq_scoring_model"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # increasing: the newest scoring has the largest id
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    model_sha256: Mapped[str] = mapped_column(String(64))
    personal: Mapped[bool] = mapped_column(Boolean)
    labels: Mapped[list] = mapped_column(JSON)  # the model's activities (minutes_per_activity's keys)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answer: Mapped[bytes] = mapped_column(LargeBinary)  # the whole answer, zlib-compressed JSON
    # the span its episodes cover, seconds since 1970 UTC (None without episodes): which recordings reach a day
    covered_start: Mapped[float | None] = mapped_column(Float)
    covered_end: Mapped[float | None] = mapped_column(Float)
    # The answer's minutes basis (each worn window's span and share of each activity, store.queries.pack_basis),
    # kept apart from `answer`: what days and hours add up (None: scored before the minutes estimate, revision 0003)
    minutes_basis: Mapped[bytes | None] = mapped_column(LargeBinary)
    interval_scale: Mapped[float | None] = mapped_column(Float)  # the basis's q (None: no interval)


class Episode(Base):
    __tablename__ = "episodes"
    __table_args__ = (Index("ix_episodes_scoring", "scoring_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scoring_id: Mapped[int] = mapped_column(ForeignKey("scorings.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(64))  # an activity, `uncertain` or `not_worn` (har.timeline)
    start_s: Mapped[float] = mapped_column(Float)  # seconds after the recording's start
    end_s: Mapped[float] = mapped_column(Float)
    windows: Mapped[int] = mapped_column(Integer)
    mean_confidence: Mapped[float | None] = mapped_column(Float)


class Audit(Base):
    """What was done, never to whom: an erased subject appears as a hash only."""
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(40))
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    counts: Mapped[dict] = mapped_column(JSON)


# The summaries. SQLite keeps them WITHOUT ROWID: the rows are stored in key order, so a participant's days
# are one contiguous range and no second index doubles their size.
SUMMARY_TABLE_ARGS = {"sqlite_with_rowid": False}


def participant_key():
    return mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True)


class SummaryDay(Base):
    """A participant's local date that something touches."""
    __tablename__ = "summary_days"
    __table_args__ = SUMMARY_TABLE_ARGS
    participant_id: Mapped[int] = participant_key()
    date: Mapped[str] = mapped_column(String(10), primary_key=True)  # local calendar date, YYYY-MM-DD
    recordings: Mapped[int] = mapped_column(Integer)  # recordings touching the date
    recorded_seconds: Mapped[float] = mapped_column(Float)  # covered by a recording, overlaps once
    overlap_seconds: Mapped[float] = mapped_column(Float)  # covered by more than one recording
    unestimated_seconds: Mapped[float] = mapped_column(Float)  # worn, of a scoring without a minutes basis
    no_interval_seconds: Mapped[float] = mapped_column(Float)  # worn, of a scoring without an interval scale


class SummaryDayLabel(Base):
    """One label's time on a participant's local date (the sum of the date's SummaryHourLabel rows)."""
    __tablename__ = "summary_day_labels"
    __table_args__ = SUMMARY_TABLE_ARGS
    participant_id: Mapped[int] = participant_key()
    date: Mapped[str] = mapped_column(String(10), primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)  # an activity, `uncertain` or `not_worn`
    seconds: Mapped[float] = mapped_column(Float)  # the timeline's: the counted minutes
    episodes: Mapped[int] = mapped_column(Integer)  # runs of the label that start on the date
    estimate_seconds: Mapped[float] = mapped_column(Float)  # the minutes estimate's (har/minutes.py)
    interval_seconds: Mapped[float] = mapped_column(Float)  # its 90 % interval's half-width


class SummaryHour(Base):
    """One hour bin of a participant's local date: an hour of absolute time after local midnight."""
    __tablename__ = "summary_hours"
    __table_args__ = SUMMARY_TABLE_ARGS
    participant_id: Mapped[int] = participant_key()
    date: Mapped[str] = mapped_column(String(10), primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0.. within the date (24 on a 25-hour day)
    hour: Mapped[int] = mapped_column(Integer)  # the local hour the bin starts at
    recorded_seconds: Mapped[float] = mapped_column(Float)
    overlap_seconds: Mapped[float] = mapped_column(Float)
    unestimated_seconds: Mapped[float] = mapped_column(Float)
    no_interval_seconds: Mapped[float] = mapped_column(Float)


class SummaryHourLabel(Base):
    """One label's time in one hour bin of a participant's local date."""
    __tablename__ = "summary_hour_labels"
    __table_args__ = SUMMARY_TABLE_ARGS
    participant_id: Mapped[int] = participant_key()
    date: Mapped[str] = mapped_column(String(10), primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    seconds: Mapped[float] = mapped_column(Float)
    estimate_seconds: Mapped[float] = mapped_column(Float)
    interval_seconds: Mapped[float] = mapped_column(Float)


SUMMARY_TABLES = (SummaryDay, SummaryDayLabel, SummaryHour, SummaryHourLabel)
