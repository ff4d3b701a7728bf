"""Index (campaign_id, id) on job: the dashboard pages through one campaign's jobs in id order.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_campaign_id_id", "job", ["campaign_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_campaign_id_id", table_name="job")
