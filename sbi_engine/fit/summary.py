"""A readable text summary of a fit (what `nsbi fit` prints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    for s in scans or ():
        lines += _scan_lines(s)
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


def _end(x: float | None, at_bound: bool) -> str:
    if x is None:
        return "open"
    return f"{x:.4g} (bound)" if at_bound else f"{x:.4g}"


def _scan_lines(s: Any) -> list[str]:
    """A scan's intervals (root-found where available) with its asymmetric 68 % errors and flags."""
    prof = getattr(s, "profile", None) or {}
    ends = {}
    for cl in ("68", "95"):
        lo, hi = s.intervals[cl]
        p = prof.get(cl)
        ends[cl] = (
            _end(lo, p is not None and p.lo_at_bound),
            _end(hi, p is not None and p.hi_at_bound),
        )
    how = "root finding" if prof else "scan grid"
    lines = [
        f"  {s.poi:>20s} profile 68% [{ends['68'][0]}, {ends['68'][1]}], "
        f"95% [{ends['95'][0]}, {ends['95'][1]}] ({how})"
    ]
    p68 = prof.get("68")
    if p68 is not None and p68.err_lo is not None and p68.err_hi is not None:
        lines.append(
            f"  {s.poi:>20s} = {p68.best:.6g} +{p68.err_hi:.4g} -{-p68.err_lo:.4g} "
            f"(profile likelihood, 68% CL; {p68.n_fits} conditional fits)"
        )
    flags = sorted({*getattr(s, "flags", ()), *(f for p in prof.values() for f in p.flags)})
    if flags:
        lines.append(f"  {'':>20s} flags: {', '.join(flags)}")
    return lines
