"""metric_point.level: trailing zero bits of step (generated), indexed for curve thinning.

"Every 2**k-th step" becomes `level >= k`, an index range, so the dashboard's curves of a
long training read only the points they show instead of the whole series.

SQLite can only add a VIRTUAL generated column to an existing table (the index stores the
values); PostgreSQL adds a STORED one. The expression is spelled out here so this revision
stays frozen while the models evolve.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEVEL = (
    "CASE " + " ".join(f"WHEN step % {2**k} = 0 THEN {k}" for k in range(16, 0, -1)) + " ELSE 0 END"
)


def upgrade() -> None:
    stored = op.get_bind().dialect.name != "sqlite"
    op.add_column(
        "metric_point", sa.Column("level", sa.SmallInteger(), sa.Computed(_LEVEL, persisted=stored))
    )
    op.create_index(
        "ix_metric_point_job_id_name_member_level",
        "metric_point",
        ["job_id", "name", "member", "level"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_metric_point_job_id_name_member_level", table_name="metric_point")
    with op.batch_alter_table("metric_point") as batch:
        batch.drop_column("level")
