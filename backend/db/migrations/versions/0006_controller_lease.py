"""controller_lease (one controller per database) and attempt.launched_from.

`controller_lease` holds the leader lease of `backend.leader`: holder, fencing token (+1 per
takeover) and expiry on the database's clock. Its one row is inserted by the first controller
that looks for it. `attempt.launched_from` says where the launcher that owns an attempt's
instance keeps its records ("host:folder" for the local launcher); existing attempts read None
(any controller observes them, as before). The types are spelled out here so this revision
stays frozen while the models evolve.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "controller_lease",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("renewed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_controller_lease")),
    )
    op.add_column("attempt", sa.Column("launched_from", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempt") as batch:
        batch.drop_column("launched_from")
    op.drop_table("controller_lease")
