"""campaign.result_status: the result's checks ("checks passed" / "needs review" + failed checks).

A nullable JSON column added in place: existing campaigns keep every value and read None
(no status computed yet) until they next settle; `backend.result_status` computes it then.
The type is spelled out here so this revision stays frozen while the models evolve.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "campaign",
        sa.Column(
            "result_status",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("result_status")
