"""Minutes per activity as an estimate (issue 37): each scoring's minutes basis (its worn windows' spans and
shares, and the interval scale), and the summaries' estimate and interval columns; the summaries filled again.

Scorings stored before this revision have no basis: their days keep the counted minutes as the estimate for
their time, say so (`unestimated_seconds`) and give no interval until `python -m store rescore` scores them
again with the per-window shares (store/rescore.py).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ZERO = sa.text("0")


def upgrade() -> None:
    with op.batch_alter_table("scorings") as batch:
        batch.add_column(sa.Column("minutes_basis", sa.LargeBinary))
        batch.add_column(sa.Column("interval_scale", sa.Float))
    for table in ("summary_days", "summary_hours"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("unestimated_seconds", sa.Float, nullable=False, server_default=ZERO))
            batch.add_column(sa.Column("no_interval_seconds", sa.Float, nullable=False, server_default=ZERO))
    for table in ("summary_day_labels", "summary_hour_labels"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("estimate_seconds", sa.Float, nullable=False, server_default=ZERO))
            batch.add_column(sa.Column("interval_seconds", sa.Float, nullable=False, server_default=ZERO))
    # Every participant's days again, by the code ingest uses: the counted minutes stand in for the estimate of
    # the scorings without a basis, and their worn time is counted as unestimated.
    from store.summaries import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    for table in ("summary_day_labels", "summary_hour_labels"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("interval_seconds")
            batch.drop_column("estimate_seconds")
    for table in ("summary_days", "summary_hours"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("no_interval_seconds")
            batch.drop_column("unestimated_seconds")
    with op.batch_alter_table("scorings") as batch:
        batch.drop_column("interval_scale")
        batch.drop_column("minutes_basis")
