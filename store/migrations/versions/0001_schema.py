"""The schema: participants, recordings, scorings, episodes, audit (store/tables.py).

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject", sa.String(64), nullable=False, unique=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("created_at", WHEN, nullable=False))
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("participant_id", sa.Integer, sa.ForeignKey("participants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("start_time", sa.String(40), nullable=False),
        sa.Column("start_epoch", sa.Float, nullable=False),
        sa.Column("end_epoch", sa.Float, nullable=False),
        sa.Column("fused_seconds", sa.Float, nullable=False),
        sa.Column("blob_sha256", sa.String(64), nullable=False),
        sa.Column("quality", sa.JSON, nullable=False),
        sa.Column("wear", sa.JSON, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.UniqueConstraint("participant_id", "content_hash", name="uq_recording_content"))
    op.create_index("ix_recordings_participant_id", "recordings", ["participant_id"])
    op.create_index("ix_recordings_blob_sha256", "recordings", ["blob_sha256"])
    op.create_table(
        "scorings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("recording_id", sa.Integer, sa.ForeignKey("recordings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_name", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("personal", sa.Boolean, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("scored_at", WHEN, nullable=False),
        sa.Column("answer", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("recording_id", "model_sha256", name="uq_scoring_model"))
    op.create_index("ix_scorings_recording_id", "scorings", ["recording_id"])
    op.create_table(
        "episodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("scoring_id", sa.Integer, sa.ForeignKey("scorings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("mean_confidence", sa.Float))
    op.create_index("ix_episodes_scoring", "episodes", ["scoring_id"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("subject_hash", sa.String(64)),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("counts", sa.JSON, nullable=False))


def downgrade() -> None:
    for table in ("audit", "episodes", "scorings", "recordings", "participants"):
        op.drop_table(table)
