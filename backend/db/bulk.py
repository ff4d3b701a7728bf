"""Many-row UPDATE and INSERT in one statement each, for the controller's bulk steps.

On PostgreSQL the rows travel as one array per column and are joined back with `unnest`,
which costs a fraction of one statement per row; elsewhere (SQLite) an executemany.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa


def bulk_update(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    guard: tuple[str, str] | None = None,
) -> int | None:
    """UPDATE `table` SET <the rows' other keys> WHERE id = row["_id"] (and, with `guard`
    (column, key), column = row[key]) for every row; all rows have the same keys. Returns how
    many rows changed (None where the driver cannot tell). On PostgreSQL one statement joins
    the table to the rows passed as arrays (unnest), which costs a fraction of one statement
    per row; elsewhere an executemany."""
    if not rows:
        return 0
    keys = [k for k in rows[0] if not k.startswith("_")]
    if conn.dialect.name != "postgresql":
        where = [table.c.id == sa.bindparam("_id")]
        if guard:
            where.append(table.c[guard[0]] == sa.bindparam(guard[1]))
        stmt = (
            sa.update(table)
            .where(*where)
            .values({k: sa.bindparam(k, type_=table.c[k].type) for k in keys})
        )
        result = conn.execute(stmt, list(rows))
        return result.rowcount if conn.dialect.supports_sane_multi_rowcount else None
    columns = {
        "_id": table.c.id,
        **({guard[1]: table.c[guard[0]]} if guard else {}),
        **{k: table.c[k] for k in keys},
    }
    v, params = _unnest(columns, rows, always="_id")
    where = [table.c.id == v["_id"]] + ([table.c[guard[0]] == v[guard[1]]] if guard else [])
    return conn.execute(
        sa.update(table).where(*where).values({k: v[k] for k in keys}), params
    ).rowcount


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (all with the same keys) into `table`: on PostgreSQL one INSERT ... SELECT
    from the rows passed as arrays, elsewhere an executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(table), list(rows))
        return
    keys = list(rows[0])
    v, params = _unnest({k: table.c[k] for k in keys}, rows, always=keys[0])
    conn.execute(sa.insert(table).from_select(keys, sa.select(*[v[k] for k in keys])), params)


def _unnest(
    columns: Mapping[str, sa.Column], rows: Sequence[Mapping[str, Any]], *, always: str
) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL: {key: column expression} of the rows as a derived table (one array per key
    whose values differ, and for `always`, which gives the row count; one plain parameter per
    key whose values are all the same, e.g. a JSON default or the pass's time), and the
    parameters to execute it with."""
    from sqlalchemy.dialects.postgresql import ARRAY

    varying: list[tuple[str, str, Any]] = []
    params: dict[str, Any] = {}
    exprs: dict[str, sa.ColumnElement[Any]] = {}
    for i, (key, col) in enumerate(columns.items()):
        values = [row[key] for row in rows]
        if key != always and all(x == values[0] and type(x) is type(values[0]) for x in values[1:]):
            exprs[key] = sa.bindparam(f"c{i}", type_=col.type)
            params[f"c{i}"] = values[0]
        else:
            varying.append((key, f"a{i}", ARRAY(col.type)))
            params[f"a{i}"] = values
    table = (
        sa.func.unnest(*[sa.bindparam(name, type_=t) for _, name, t in varying])
        .table_valued(*[key for key, _, _ in varying])
        .render_derived(name="v", with_types=False)
    )
    for key, _, _ in varying:
        exprs[key] = table.c[key]
    return exprs, params
