"""A readable text summary of a fit (what `nsbi fit` prints)."""

from __future__ import annotations

from collections.abc import Sequence

from .impacts import Impact
from .results import FitResult

__all__ = ["format_summary"]


def format_summary(
    result: FitResult,
    pois: Sequence[str],
    pulls: dict | None = None,
    impacts: Sequence[Impact] | None = None,
    breakdown: dict | None = None,
    scans: Sequence | None = None,
    top: int = 15,
) -> str:
    lines = []
    status = "converged" if result.converged else "NOT CONVERGED"
    lines.append(
        f"Fit {status}: {result.message}; EDM={result.edm:.2e}, q_min={result.q_min:.6f}, "
        f"{result.n_iter} iterations ({result.method}, {result.time_s:.2f} s)"
    )
    lines.append("")
    lines.append("Parameters of interest:")
    for p in pois:
        v, e = result.values[p], result.errors[p]
        extra = ""
        if breakdown and p in breakdown:
            b = breakdown[p]
            extra = f"   (stat {b['stat']:.4g}, syst {b['syst']:.4g})"
        lines.append(f"  {p:>20s} = {v:.6g} +- {e:.4g}{extra}")
    if scans:
        for s in scans:
            i68, i95 = s.intervals["68"], s.intervals["95"]
            fmt = lambda x: "open" if x is None else f"{x:.4g}"  # noqa: E731
            lines.append(
                f"  {s.poi:>20s} profile 68% [{fmt(i68[0])}, {fmt(i68[1])}], 95% [{fmt(i95[0])}, {fmt(i95[1])}]"
            )
    if pulls:
        lines.append("")
        lines.append("Nuisance parameters (pull = alpha-hat - aux, constraint = post-fit sigma):")
        for name, d in pulls.items():
            lines.append(f"  {name:>28s}  pull {d['pull']:+.3f}  constraint {d['constraint']:.3f}")
    if impacts:
        lines.append("")
        lines.append(
            f"Impact ranking (top {min(top, len(impacts))}, post-fit +1 / -1 sigma, pre-fit +1 / -1):"
        )
        for imp in list(impacts)[:top]:
            lines.append(
                f"  {imp.nuisance:>28s} on {imp.poi}: {imp.postfit_up:+.4g} / {imp.postfit_down:+.4g}   "
                f"pre-fit {imp.prefit_up:+.4g} / {imp.prefit_down:+.4g}  [{imp.method}]"
            )
    return "\n".join(lines)
