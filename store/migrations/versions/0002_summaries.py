"""Days and hours kept at ingest: the summary tables (store/tables.py) and each scoring's covered span, filled
for the rows already stored (the summaries by revision 0003).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SUMMARY = {"sqlite_with_rowid": False}  # rows in key order: a participant's days are one contiguous range


def participant_key():
    return sa.Column("participant_id", sa.Integer, sa.ForeignKey("participants.id", ondelete="CASCADE"),
                     primary_key=True)


def date_key():
    return sa.Column("date", sa.String(10), primary_key=True)


def upgrade() -> None:
    with op.batch_alter_table("scorings") as batch:
        batch.add_column(sa.Column("covered_start", sa.Float))
        batch.add_column(sa.Column("covered_end", sa.Float))
    op.create_table(
        "summary_days", participant_key(), date_key(),
        sa.Column("recordings", sa.Integer, nullable=False),
        sa.Column("recorded_seconds", sa.Float, nullable=False),
        sa.Column("overlap_seconds", sa.Float, nullable=False), **SUMMARY)
    op.create_table(
        "summary_day_labels", participant_key(), date_key(),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("episodes", sa.Integer, nullable=False), **SUMMARY)
    op.create_table(
        "summary_hours", participant_key(), date_key(),
        sa.Column("bin", sa.Integer, primary_key=True),
        sa.Column("hour", sa.Integer, nullable=False),
        sa.Column("recorded_seconds", sa.Float, nullable=False),
        sa.Column("overlap_seconds", sa.Float, nullable=False), **SUMMARY)
    op.create_table(
        "summary_hour_labels", participant_key(), date_key(),
        sa.Column("bin", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("seconds", sa.Float, nullable=False), **SUMMARY)
    # The rows already stored: each scoring's span from its episodes here; every participant's days are computed
    # by revision 0003, which adds the columns today's summary code writes (one implementation of the arithmetic,
    # run once, by the newest revision that changes these tables).
    op.execute("UPDATE scorings SET "
               "covered_start = (SELECT MIN(r.start_epoch + e.start_s) FROM episodes e JOIN recordings r "
               "ON r.id = scorings.recording_id WHERE e.scoring_id = scorings.id), "
               "covered_end = (SELECT MAX(r.start_epoch + e.end_s) FROM episodes e JOIN recordings r "
               "ON r.id = scorings.recording_id WHERE e.scoring_id = scorings.id)")


def downgrade() -> None:
    for table in ("summary_hour_labels", "summary_hours", "summary_day_labels", "summary_days"):
        op.drop_table(table)
    with op.batch_alter_table("scorings") as batch:
        batch.drop_column("covered_end")
        batch.drop_column("covered_start")
