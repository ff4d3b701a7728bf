"""Column types that behave the same on SQLite and PostgreSQL.

`UTCDateTime` always hands back timezone-aware UTC datetimes (SQLite stores naive text, so
cost arithmetic like `ended_at - launched_at` would otherwise mix naive and aware values).
`JSONType` is JSONB on PostgreSQL and JSON text elsewhere.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored as UTC and always returned timezone-aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

# SQLite only aliases INTEGER PRIMARY KEY to the rowid; BIGINT there would not autoincrement.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
