"""The study store's tables, declared once (SQLAlchemy 2 declarative). Migrations: store/migrations/.

A participant has recordings (unique by the content hash of the raw pair); a recording has
scorings (unique by the model's sha256); a scoring has its timeline as episodes: runs of windows
with one label, [start_s, end_s) in seconds after the recording's start, exactly as the answer
gives them. Episodes, not per-window rows or per-minute shares: episode bounds are the windows'
own (non-overlapping) spans, so splitting them at any midnight or hour is exact, and an hour of
recording is tens of rows instead of 1,800 (docs/study.md).
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
