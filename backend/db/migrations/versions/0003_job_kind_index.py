"""Index (campaign_id, kind, status) on job: per-kind progress counts read the index only.

Job rows carry their spec JSON, so counting them through the table reads every row; this
covering index keeps the campaign page's counts cheap at 10,000+ jobs.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_job_campaign_id_kind_status", "job", ["campaign_id", "kind", "status"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_job_campaign_id_kind_status", table_name="job")
