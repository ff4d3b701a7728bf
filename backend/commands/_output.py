"""Plain-text tables and CSV for the data-side commands (no third-party formatting)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 and v else f"{v:.4f}".rstrip("0").rstrip(".") or "0"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO | None = None
) -> None:
    """Left-aligned columns with a header; '(none)' for no rows."""
    out = out or sys.stdout
    if not rows:
        print("(none)", file=out)
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip(), file=out)


def write_csv(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO | None = None
) -> None:
    w = csv.writer(out or sys.stdout, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                ""
                if r.get(c) is None
                else (r[c].isoformat() if isinstance(r.get(c), datetime) else r[c])
                for c in columns
            ]
        )
