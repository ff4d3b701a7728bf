"""The report folder of an analysis run: result.json, plots (PNG + PDF, or HTML) and summary.md.

Why a folder of plain files: the result of an analysis has to outlive the database and the
dashboard -- it goes into a paper draft, a talk, a review. `result.json` holds every number
with its provenance (analysis file hash, code and engine versions, seeds, ensemble URIs,
cache keys, timings, and the result status under "result_status"); `summary.md` is the
one-page human view linking the plots, and it opens with the result status ("checks passed"
or "needs review" with the failed checks, value against threshold: `backend.result_status`).

Plots are small Plotly figures built here (the dashboard's figure module sits above the
backend and is not imported). Static export goes through kaleido and a system Chromium; where
none is found, or the export fails, the figures are written as self-contained HTML instead
and summary.md says so. Pure functions over plain data: `collect` (run.py) gathers the data.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.analysis.fit_figures import LIMIT_BAND_KEYS, contour_figure, nice_ticks

Q68, Q95 = 1.0, 3.841458820694124  # -2 Delta ln L at 68.27 % and 95 % CL (one parameter)
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote: the folder, result.json, summary.md, the plots by name
    (each a list of files), and why static export was skipped (None if it worked)."""

    folder: Path
    result: Path
    summary: Path
    plots: dict[str, list[Path]] = field(default_factory=dict)
    export_problem: str | None = None


# --------------------------------------------------------------------------- numbers


def merge_scans(scans: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One scan from the chunks of several scan jobs (each profiles its own POI values
    against the same nominal fit, so their q values share one minimum).

    Intervals: the root-found ones the scan jobs carry (``profile_intervals``: each job solves
    q = 1 and 3.84 on the same profile, so they agree), else where the merged points cross 1
    and 3.84 (``grid_intervals``, interpolated in sqrt(q)). Points whose profile fit did not
    converge stay out of the curve and the crossings but are listed (``not_converged``);
    ``non_monotonic``: converged points where q falls while moving away from the best fit;
    ``flags``: what the chunks and the merged curve flagged.
    """
    pts: dict[float, float] = {}
    bad: set[float] = set()
    flags: set[str] = set()
    profile: dict[str, Any] = {}
    poi, best = "mu", None
    for s in scans:
        poi = s.get("poi", poi)
        best = s.get("best", best)
        flags.update(s.get("flags") or [])
        for k, iv in (s.get("profile_intervals") or {}).items():
            profile.setdefault(k, dict(iv))
        for v, q, ok in zip(
            s.get("values") or [], s.get("dq") or [], s.get("converged") or [True] * 10**6
        ):
            if ok and q is not None and math.isfinite(float(q)):
                pts[float(v)] = float(q)
            else:
                bad.add(float(v))
    if not pts:
        return None
    xs = sorted(pts)
    qs = [pts[x] for x in xs]
    if best is None:
        best = xs[min(range(len(xs)), key=qs.__getitem__)]
    # the best fit is a point of the profile too (q = 0): a crossing between it and the
    # nearest scan point would otherwise be missed when the grid is coarse
    aug = dict(pts)
    aug.setdefault(float(best), 0.0)
    ax = sorted(aug)
    aq = [aug[x] for x in ax]
    grid = {
        "68": list(crossings(ax, aq, float(best), Q68)),
        "95": list(crossings(ax, aq, float(best), Q95)),
    }
    intervals = dict(grid)
    for k in grid:
        if k in profile and "lo" in profile[k]:
            intervals[k] = [profile[k].get("lo"), profile[k].get("hi")]
    falling = non_monotonic(xs, qs, float(best))
    if any(f and x < best for f, x in zip(falling, xs)):
        flags.add("non_monotonic_left")
    if any(f and x > best for f, x in zip(falling, xs)):
        flags.add("non_monotonic_right")
    if bad - set(pts):
        flags.add("not_converged")
    return {
        "poi": poi,
        "values": xs,
        "dq": qs,
        "best": float(best),
        "intervals": intervals,
        "grid_intervals": grid,
        "profile_intervals": profile,
        "non_monotonic": [x for f, x in zip(falling, xs) if f],
        "not_converged": sorted(bad - set(pts)),
        "flags": sorted(flags),
    }


def non_monotonic(
    xs: Sequence[float], qs: Sequence[float], best: float, tol: float = 1e-5
) -> list[bool]:
    """Per point: q lies more than ``tol`` below the highest q between it and ``best``."""
    out = [False] * len(xs)
    for side in (-1.0, 1.0):
        idx = sorted(
            (i for i, x in enumerate(xs) if side * (x - best) > 0), key=lambda i: abs(xs[i] - best)
        )
        top = 0.0
        for i in idx:
            if qs[i] < top - tol:
                out[i] = True
            top = max(top, qs[i])
    return out


def crossings(
    xs: Sequence[float], qs: Sequence[float], best: float, level: float
) -> tuple[float | None, float | None]:
    """Where q rises through `level` left and right of `best` (None where the scan stops short).

    Interpolates sqrt(q), which is linear in the POI for a parabolic profile: exact for a
    Gaussian likelihood however coarse the grid (linear interpolation of q itself would put
    the 68 % crossing 0.1 off on a grid two sigma wide).
    """
    rs = [math.sqrt(max(q, 0.0)) for q in qs]
    r = math.sqrt(level)
    lo = hi = None
    for i in range(len(xs) - 1, 0, -1):
        if xs[i] <= best and rs[i - 1] >= r > rs[i]:
            lo = xs[i - 1] + (r - rs[i - 1]) * (xs[i] - xs[i - 1]) / (rs[i] - rs[i - 1])
            break
    for i in range(len(xs) - 1):
        if xs[i] >= best and rs[i + 1] >= r > rs[i]:
            hi = xs[i] + (r - rs[i]) * (xs[i + 1] - xs[i]) / (rs[i + 1] - rs[i])
            break
    return lo, hi


def impact_ranking(
    refit: Sequence[Mapping[str, Any]], covariance: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Impacts on the POI, largest post-fit first: refit impacts where impacts jobs ran,
    covariance-based ones for the other nuisances."""
    by_name: dict[str, dict[str, Any]] = {}
    for item in covariance:
        by_name[item["nuisance"]] = dict(item)
    for item in refit:
        by_name[item["nuisance"]] = dict(item)
    out = list(by_name.values())
    for item in out:
        item["size"] = max(
            abs(float(item.get("postfit_up") or 0.0)), abs(float(item.get("postfit_down") or 0.0))
        )
    return sorted(out, key=lambda d: -d["size"])


# --------------------------------------------------------------------------- figures


def scan_figure(scan: Mapping[str, Any] | None):
    import plotly.graph_objects as go

    fig = go.Figure()
    if scan:
        fig.add_trace(
            go.Scatter(
                x=scan["values"],
                y=scan["dq"],
                mode="lines+markers",
                name="profile scan",
                line={"color": "black"},
            )
        )
        q_at = dict(zip(scan["values"], scan["dq"]))
        falling = [x for x in scan.get("non_monotonic") or [] if x in q_at]
        if falling:
            fig.add_trace(
                go.Scatter(
                    x=falling,
                    y=[q_at[x] for x in falling],
                    mode="markers",
                    name="q falls moving away from the minimum",
                    marker={"color": "#d95f02", "symbol": "diamond-open", "size": 11},
                )
            )
        if scan.get("not_converged"):
            fig.add_trace(
                go.Scatter(
                    x=scan["not_converged"],
                    y=[0.0] * len(scan["not_converged"]),
                    mode="markers",
                    name="profile fit not converged (left out)",
                    marker={"color": "#e7298a", "symbol": "x", "size": 10},
                )
            )
        prof = scan.get("profile_intervals") or {}
        for cl, colour in (("68", "#1b9e77"), ("95", "#d95f02")):  # root-found interval ends
            for key in ("lo", "hi"):
                end = (prof.get(cl) or {}).get(key)
                if end is not None:
                    fig.add_vline(x=end, line={"color": colour, "dash": "dot", "width": 1})
        for q, label, colour in ((Q68, "68 % CL", "#1b9e77"), (Q95, "95 % CL", "#d95f02")):
            fig.add_hline(y=q, line={"color": colour, "dash": "dash"}, annotation_text=label)
    else:
        fig.add_annotation(
            text="no scan in this analysis",
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
        )
    poi = (scan or {}).get("poi", "mu")
    fig.update_layout(
        title=f"Profile likelihood scan of {poi}",
        xaxis_title=poi,
        yaxis_title="−2 Δ ln L",
        template="plotly_white",
        width=900,
        height=520,
    )
    return fig


def impacts_figure(
    impacts: Sequence[Mapping[str, Any]], pulls: Mapping[str, Mapping[str, Any]], top: int = 20
):
    """Post-fit +-1 sigma impacts on the POI (bars, top axis) with pulls and constraints (points)."""
    import plotly.graph_objects as go

    rows = list(impacts)[:top][::-1]
    names = [r["nuisance"] for r in rows]
    fig = go.Figure()
    if rows:
        fig.add_trace(
            go.Bar(
                y=names,
                x=[r.get("postfit_up") for r in rows],
                orientation="h",
                xaxis="x2",
                name="post-fit +1σ impact",
                marker={"color": "#1f78b4"},
            )
        )
        fig.add_trace(
            go.Bar(
                y=names,
                x=[r.get("postfit_down") for r in rows],
                orientation="h",
                xaxis="x2",
                name="post-fit −1σ impact",
                marker={"color": "#33a02c"},
            )
        )
        fig.add_trace(
            go.Scatter(
                y=names,
                x=[(pulls.get(n) or {}).get("pull") for n in names],
                mode="markers",
                name="pull",
                marker={"color": "black", "size": 8},
                error_x={
                    "type": "data",
                    "array": [(pulls.get(n) or {}).get("constraint") for n in names],
                },
            )
        )
        reach = max((r["size"] for r in rows), default=1.0) * 1.2 or 1.0
        ticks, reach = nice_ticks(reach)  # round ticks (0.05, not 0.0816)
        fig.update_layout(
            barmode="overlay",
            xaxis={"title": "pull (θ̂ − θ₀)/Δθ", "range": [-2.5, 2.5]},
            xaxis2={
                "title": "Δμ",
                "overlaying": "x",
                "side": "top",
                "range": [-reach, reach],
                "tickmode": "array",
                "tickvals": ticks,
                "ticktext": [f"{t:g}" for t in ticks],
            },
        )
    else:
        fig.add_annotation(
            text="no nuisance parameters", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper"
        )
    fig.update_layout(
        title="Impacts and pulls",
        template="plotly_white",
        width=900,
        height=max(420, 160 + 28 * len(rows)),
        yaxis={"type": "category"},
    )
    return fig


def calibration_figure(calibration: Mapping[str, Sequence[Mapping[str, Any]]]):
    """Reliability of each ratio ensemble: observed class fraction against mean score per bin."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"color": "#888", "dash": "dot"}
        )
    )
    for task, curves in sorted(calibration.items()):
        for c in curves:
            if c.get("member") is not None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=c.get("mean_score"),
                    y=c.get("observed_fraction"),
                    mode="lines+markers",
                    name=task,
                    error_y={"type": "data", "array": c.get("observed_error")},
                )
            )
    fig.update_layout(
        title="Ensemble calibration (held-out events where available)",
        template="plotly_white",
        xaxis={"title": "mean classifier score s(x)", "range": [0, 1]},
        yaxis={"title": "observed numerator fraction", "range": [0, 1]},
        width=900,
        height=560,
    )
    return fig


def _browser() -> str | None:
    if os.environ.get("BROWSER_PATH"):
        return os.environ["BROWSER_PATH"]
    for name in BROWSERS:
        found = name if Path(name).is_absolute() and Path(name).exists() else shutil.which(name)
        if found:
            os.environ["BROWSER_PATH"] = found  # kaleido 1.x reads it; nothing is downloaded
            return found
    return None


def export_figures(
    figures: Mapping[str, Any], folder: Path, *, static: bool = True
) -> tuple[dict[str, list[Path]], str | None]:
    """Write each figure as PNG and PDF (one kaleido batch, then one retry per missing file),
    falling back to self-contained HTML for any figure that could not be exported.

    Returns (name -> files, problem): problem says why some or all plots are HTML (None: none).
    """
    folder.mkdir(parents=True, exist_ok=True)
    problem = None if static else "static export switched off"
    if problem is None and _browser() is None:
        problem = "no Chromium found for kaleido (install chromium or set BROWSER_PATH)"
    wanted = {name: [folder / f"{name}.{fmt}" for fmt in ("png", "pdf")] for name in figures}
    for p in (p for ps in wanted.values() for p in ps):
        p.unlink(missing_ok=True)  # a file left by an earlier report must not pass for this one
    if problem is None:
        import plotly.io as pio

        def missing() -> list[tuple[str, Path]]:
            return [
                (n, p)
                for n, ps in wanted.items()
                for p in ps
                if not p.is_file() or p.stat().st_size == 0
            ]

        try:
            pio.write_images(
                [figures[n] for n, ps in wanted.items() for _ in ps],
                [p for ps in wanted.values() for p in ps],
            )
        except Exception as exc:  # noqa: BLE001 - kaleido/Chromium fail in many ways; retried below
            problem = _why(exc)
        for name, path in missing():  # a browser hiccup under load: once more, one by one
            try:
                figures[name].write_image(path)
            except Exception as exc:  # noqa: BLE001
                problem = _why(exc)
        left = missing()
        if not left:
            return wanted, None
        problem = problem or f"kaleido wrote no {left[0][1].name}"
        problem = f"static export failed: {problem}"
    out: dict[str, list[Path]] = {}
    failed = {
        n for n, ps in wanted.items() if any(not p.is_file() or p.stat().st_size == 0 for p in ps)
    }
    for name, fig in figures.items():
        if name not in failed:
            out[name] = wanted[name]
            continue
        for p in wanted[name]:
            p.unlink(missing_ok=True)
        path = folder / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        out[name] = [path]
    return out, problem


def _why(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- files


def _fmt(x: Any, nd: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return f"{v:.{nd}f}" if math.isfinite(v) else "–"


def result_status_markdown(status: Mapping[str, Any] | None) -> list[str]:
    """The report's first lines: "checks passed" or "needs review" and the table of the failed
    checks, value against threshold (`backend.result_status`; the limits and why:
    `sbi_engine.result_checks`). Empty where no status was recorded."""
    if not status or not status.get("state"):
        return []
    n = int(status.get("n_checks") or 0)
    failed = list(status.get("failed") or [])
    if not failed:
        said = f"all {n} check{'s' if n != 1 else ''} passed" if n else "no checks recorded"
        return [f"**Result status: checks passed** ({said})", ""] + _excused_markdown(status)
    lines = [
        f"**Result status: NEEDS REVIEW** -- {len(failed)} of {n} checks failed; "
        "the numbers below rest on them.",
        "",
        "| check | task | value | threshold | message |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in failed:
        op = "≥" if r.get("direction") == "above" else "≤"
        message = str(r.get("message") or "").replace("|", "\\|")  # a literal | inside a table cell
        lines.append(
            f"| {r.get('name', '')} | {r.get('task') or '–'} | {_fmt(r.get('value'), 4)} "
            f"| {op} {_fmt(r.get('threshold'), 4)} | {message} |"
        )
    return lines + [""] + _excused_markdown(status)


def _excused_markdown(status: Mapping[str, Any]) -> list[str]:
    """Checks that passed although their value is beyond the threshold, and why (a significant
    miscalibration the fit was shown not to depend on: `sbi_engine.calibration_effect`)."""
    from sbi_engine.result_checks import CheckRecord

    records = [
        CheckRecord.from_dict(r) for r in status.get("checks") or [] if isinstance(r, Mapping)
    ]
    excused = [r for r in records if r.excused]
    if not excused:
        return []
    lines = [
        "Beyond their threshold, but the result was shown not to depend on them:",
        "",
        "| check | task | value | threshold | why it passes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in excused:
        message = r.message.replace("|", "\\|")
        lines.append(
            f"| {r.name} | {r.task or '–'} | {_fmt(r.value, 4)} | ≤ {_fmt(r.threshold, 4)} "
            f"| {message} |"
        )
    return lines + [""]


def uncertainty_markdown(u: Mapping[str, Any] | None) -> list[str]:
    """The learned model's error components of μ next to the Hesse error (see docs/validation.md)."""
    if not u:
        return []
    inc = set(u.get("included") or [])

    def row(name: str, key: str, how: str) -> str:
        return (
            f"| {name} | {_fmt(u.get(key))} ± {_fmt(u.get(key + '_se'))} | "
            f"{'yes' if key in inc else 'no (reported only)'} | {how} |"
        )

    lines = [
        "",
        "### Error components of μ",
        "",
        "| component | σ | in the total | method |",
        "| --- | --- | --- | --- |",
        f"| Hesse (data statistics + modelled systematics) | {_fmt(u.get('hesse'))} | yes | exact Hessian |",
        row(
            "NN training",
            "nn",
            f"spread of μ̂ over {u.get('nn_variants', 0)} one-member refits"
            + (
                ""
                if u.get("nn_bootstrap") is not False
                else " (members NOT bootstrapped: underestimate)"
            ),
        ),
        row("simulation statistics", "sim", "Poisson bootstrap of the normalisation sample"),
        f"| **total** | **{_fmt(u.get('total'))}** | | quadrature sum of the included components |",
        "",
    ]
    return lines


def _signed(x: Any, sign: str) -> str:
    text = _fmt(None if x is None else abs(float(x)))
    return text if text == "–" else sign + text


def fit_table_markdown(fit: Mapping[str, Any], scan: Mapping[str, Any] | None = None) -> list[str]:
    """μ̂ with its errors: Hesse (symmetric) and the asymmetric 68 % / 95 % profile-likelihood
    intervals found by root finding (the fit job's ``profile``, else the scan's). An end at the
    POI's bound is marked "(bound)"; the flags of each interval are listed with it."""
    mu, sig = fit.get("mu_hat"), fit.get("sigma")
    if mu is None:
        return []
    prof = dict(fit.get("profile") or (scan or {}).get("profile_intervals") or {})
    lines = [
        "",
        "| μ | −error | +error | interval | method |",
        "| --- | --- | --- | --- | --- |",
    ]
    if sig is not None:
        lines.append(
            f"| Hesse | {_signed(sig, '−')} | {_signed(sig, '+')} | "
            f"[{_fmt(mu - sig)}, {_fmt(mu + sig)}] | exact Hessian (symmetric) |"
        )
    for cl in ("68", "95"):
        p = prof.get(cl)
        if not isinstance(p, Mapping) or "lo" not in p:
            continue
        flags = list(p.get("flags") or [])
        ends = [
            _fmt(p.get(k)) + (" (bound)" if f"{k}_at_bound" in flags else "") for k in ("lo", "hi")
        ]
        how = f"profile likelihood, root finding ({p.get('n_fits', '?')} conditional fits)"
        if flags:
            how += "; flags: " + ", ".join(flags)
        lines.append(
            f"| profile {cl} % CL | {_signed(p.get('err_lo'), '−')} | {_signed(p.get('err_hi'), '+')} "
            f"| [{ends[0]}, {ends[1]}] | {how} |"
        )
    if prof.get("error"):
        lines.append(f"| profile | – | – | – | failed: {str(prof['error']).replace('|', '/')} |")
    return lines + [""]


def _discovery_text(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "–"
    if d.get("error"):
        return "failed: " + str(d["error"]).replace("|", "/")
    return (
        f"q₀ = {_fmt(d.get('q0'))}, Z = {_fmt(d.get('significance'), 2)} σ, "
        f"p₀ = {_fmt(d.get('p0'), 4)}"
    )


def limits_markdown(limits: Mapping[str, Any] | None) -> list[str]:
    """The CLs upper limit on μ: observed, and expected with the ±1σ / ±2σ band (in the
    order −2σ, −1σ, median, +1σ, +2σ), and the discovery significance on the data."""
    if not limits:
        return []
    cl = limits.get("cl")
    pct = f"{100 * float(cl):g} %" if cl is not None else "?"
    method = str(limits.get("method", ""))
    if method == "toys":
        method += f", {limits.get('n_toys')} toys per hypothesis and point"
    lines = ["", f"## Upper limit on μ ({pct} CL, CLs, q̃_μ, {method})", ""]
    if limits.get("error"):
        lines.append(f"The limit could not be computed: {str(limits['error']).replace('|', '/')}")
    else:
        exp = dict(limits.get("expected") or {})
        lines += [
            "| observed | expected −2σ | expected −1σ | expected median | expected +1σ "
            "| expected +2σ |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| **{_fmt(limits.get('observed'), 4)}** | "
            + " | ".join(_fmt(exp.get(k), 4) for k in LIMIT_BAND_KEYS)
            + " |",
        ]
        at_bound = (limits.get("extra") or {}).get("at_bound") or []
        if at_bound:
            lines.append("")
            lines.append(f"At a bound in the free fit: {', '.join(at_bound)}.")
        warning = (limits.get("extra") or {}).get("asymptotic_warning")
        if warning:
            lines += ["", f"**Warning:** {warning}."]
    lines += ["", f"Discovery test on the data: {_discovery_text(limits.get('discovery'))}", ""]
    return lines


def expected_markdown(expected: Mapping[str, Any] | None) -> list[str]:
    """The expected (blinded) result: the fit of the model's Asimov data at μ, with its
    Hesse and profile-likelihood errors, and the expected discovery significance."""
    if not expected:
        return []
    mu = expected.get("mu")
    lines = [
        "",
        f"## Expected result (Asimov data at μ = {_fmt(mu, 2)}, nuisances at nominal; "
        "the data are not read)",
        "",
    ]
    if expected.get("mu_hat") is None:
        return lines + [f"Not computed: {expected.get('error', 'no result')}", ""]
    lines += [
        "| expected μ̂ | Hesse | profile 68 % | profile 95 % interval | converged |",
        "| --- | --- | --- | --- | --- |",
    ]
    prof = dict(expected.get("profile") or {})
    p68, p95 = dict(prof.get("68") or {}), dict(prof.get("95") or {})
    lines.append(
        f"| **{_fmt(expected.get('mu_hat'), 4)}** | ±{_fmt(expected.get('sigma'))} "
        f"| {_signed(p68.get('err_hi'), '+')} {_signed(p68.get('err_lo'), '−')} "
        f"| [{_fmt(p95.get('lo'))}, {_fmt(p95.get('hi'))}] | {expected.get('converged')} |"
    )
    if prof.get("error"):
        lines += ["", f"Profile intervals failed: {str(prof['error']).replace('|', '/')}"]
    lines += [
        "",
        f"Expected discovery significance: {_discovery_text(expected.get('discovery'))}",
        "",
    ]
    return lines


def shape_decisions_markdown(decisions: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """What the fit did with each learned shape effect: kept, or dropped (yield kept) below the
    networks' noise floor, so a negligible systematic cannot constrain itself."""
    if not decisions:
        return []
    lines = [
        "",
        "### Shape systematics",
        "",
        "| systematic | process | learned shape spread | network noise | decision |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in decisions:
        lines.append(
            f"| {d.get('nuisance')} | {d.get('process')} | {_fmt(d.get('signal'), 4)} | {_fmt(d.get('noise'), 4)} "
            f"| {d.get('action')} |"
        )
    return lines + [""]


def noise_shrinkage_markdown(rows: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """How much of each process ratio's network noise the fit shrank away (lambda = 1 -
    noise^2 / var(residual); docs/validation.md, "Noise shrinkage")."""
    if not rows:
        return []
    lines = [
        "",
        "### Noise shrinkage of the learned ratios",
        "",
        "| ratio task | network noise | spread beyond the nuisance shapes | noise / spread | lambda |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.get('task')} | {_fmt(r.get('noise'), 4)} | {_fmt(r.get('residual'), 4)} "
            f"| {_fmt(r.get('noise_to_signal'), 2)} | {_fmt(r.get('lambda'), 3)} |"
        )
    return lines + [""]


def _eval_provenance(result: Mapping[str, Any]) -> str:
    """One line on the train / evaluation split (the fit, normalisation, Asimov data and the
    diagnostics use evaluation events only; docs/analysis.md, sample roles)."""
    methods = sorted(
        {
            (part or {}).get("method", "?")
            for split in (result.get("splits") or {}).values()
            for part in (split or {}).values()
        }
    )
    prov = result.get("data_provenance") or {}
    norm = prov.get("normalisation_sample") or {}
    text = f"split by {', '.join(methods) or 'n/a'}"
    if norm:
        text += f"; normalisation sample: {norm.get('events')} evaluation events of {norm.get('process')}"
    paired = result.get("paired_tasks") or []
    if paired:
        text += f"; trained paired (the same events with two weightings): {', '.join(paired)}"
    return text


def pois_markdown(fit: Mapping[str, Any]) -> list[str]:
    """Several POIs: each one's value, Hesse and profile errors, their correlations and the
    areas of the 2-D contours (empty for one POI)."""
    pois = fit.get("pois") or {}
    if not pois:
        return []
    names = list(pois)
    lines = [
        "",
        "## Parameters of interest",
        "",
        "| POI | value | Hesse error | profile 68 % (−/+) |",
        "| --- | --- | --- | --- |",
    ]
    for n, p in pois.items():
        lines.append(
            f"| {n} | {_fmt(p.get('value'))} | {_fmt(p.get('error'))} | "
            f"{_signed(p.get('err_lo'), '−')} / {_signed(p.get('err_hi'), '+')} |"
        )
    corr = fit.get("correlations") or {}
    if corr:
        lines += ["", "Correlations (Hesse):", "", "| | " + " | ".join(names) + " |"]
        lines.append("| --- " * (len(names) + 1) + "|")
        for a in names:
            row = corr.get(a) or {}
            lines.append(f"| {a} | " + " | ".join(_fmt(row.get(b), 3) for b in names) + " |")
    cons = fit.get("contours") or {}
    lines.append("")
    if cons.get("error"):
        lines.append(f"2-D contours failed: {cons['error']}")
    for k in ("68", "95"):
        c = cons.get(k) or {}
        if c.get("x"):
            flags = sorted({f for fl in c.get("flags") or [] for f in fl})
            lines.append(
                f"- {k} % CL contour of {' and '.join(c.get('pois') or [])}: {len(c['x'])} points "
                f"by root finding along rays (other parameters profiled), area {_fmt(c.get('area'), 4)}"
                + (f"; flags: {', '.join(flags)}" if flags else "")
            )
    return lines


def summary_markdown(
    result: Mapping[str, Any],
    plots: Mapping[str, Sequence[Path]],
    folder: Path,
    problem: str | None,
) -> str:
    """The one-page summary: result status (checks), result, top impacts, pulls, plots, provenance."""
    fit = result.get("fit") or {}
    a = result.get("analysis") or {}
    camp = result.get("campaign") or {}
    lines = [f"# Analysis {a.get('name', '')}: result", ""]
    lines += result_status_markdown(result.get("result_status"))
    data = fit.get("data", "asimov")
    if isinstance(data, Mapping):  # an observed sample spec: name its file
        data = (
            f"observed, {Path(str(data.get('path', data))).name}" if "path" in data else "observed"
        )
    lines.append(
        f"**μ̂ = {_fmt(fit.get('mu_hat'))} ± {_fmt(fit.get('sigma'))}** "
        f"(Hesse; data: {data}, μ_true for Asimov = {_fmt(fit.get('mu_true'), 2)}, "
        f"converged: {fit.get('converged')})"
    )
    p68 = (fit.get("profile") or {}).get("68") or {}
    if p68.get("err_lo") is not None and p68.get("err_hi") is not None:
        lines.append(
            f"- profile likelihood: **μ̂ = {_fmt(fit.get('mu_hat'))} "
            f"{_signed(p68['err_hi'], '+')} {_signed(p68['err_lo'], '−')}** (68 % CL, asymmetric)"
        )
    total = (result.get("uncertainty") or {}).get("total")
    if total is not None:
        lines.append(
            f"- **total error ± {_fmt(total)}** with the learned model's NN-training and simulation-statistics "
            "components (table below)"
        )
    iv = result.get("intervals") or {}
    for cl in ("68", "95"):
        if cl in iv:
            lo, hi = iv[cl]
            lines.append(f"- {cl} % CL interval from the profile scan: [{_fmt(lo)}, {_fmt(hi)}]")
    scan_flags = (result.get("scan") or {}).get("flags") or []
    if scan_flags:
        lines.append(f"- profile scan flags: {', '.join(scan_flags)}")
    bd = (result.get("breakdown") or {}).get("mu") or {}
    if bd:
        lines.append(
            f"- error breakdown: total {_fmt(bd.get('total'))}, stat {_fmt(bd.get('stat'))}, "
            f"syst {_fmt(bd.get('syst'))}"
        )
    lim = result.get("limits") or {}
    if lim.get("observed") is not None:
        band = dict(lim.get("expected") or {})
        lines.append(
            f"- **{100 * float(lim.get('cl') or 0.95):g} % CL upper limit: μ < "
            f"{_fmt(lim['observed'])}** (CLs, {lim.get('method')}; expected {_fmt(band.get('0'))}, "
            f"±1σ [{_fmt(band.get('-1'))}, {_fmt(band.get('1'))}], "
            f"±2σ [{_fmt(band.get('-2'))}, {_fmt(band.get('2'))}])"
        )
    exp = result.get("expected") or {}
    if exp.get("mu_hat") is not None:
        lines.append(
            f"- expected (Asimov μ = {_fmt(exp.get('mu'), 2)}): μ̂ = {_fmt(exp.get('mu_hat'))} "
            f"± {_fmt(exp.get('sigma'))} (Hesse)"
        )
    lines += fit_table_markdown(fit, result.get("scan"))
    lines += pois_markdown(fit)
    lines += uncertainty_markdown(result.get("uncertainty"))
    lines += shape_decisions_markdown(result.get("shape_decisions"))
    lines += noise_shrinkage_markdown(result.get("noise_shrinkage"))
    lines += limits_markdown(result.get("limits"))
    lines += expected_markdown(result.get("expected"))
    lines += [
        "",
        "## Top impacts on μ",
        "",
        "| nuisance | post-fit +1σ | post-fit −1σ | method |",
        "| --- | --- | --- | --- |",
    ]
    for item in (result.get("impacts") or [])[:10]:
        lines.append(
            f"| {item['nuisance']} | {_fmt(item.get('postfit_up'), 4)} | {_fmt(item.get('postfit_down'), 4)} "
            f"| {item.get('method', '')} |"
        )
    lines += ["", "## Pulls", "", "| nuisance | pull | constraint |", "| --- | --- | --- |"]
    for name, p in (result.get("pulls") or {}).items():
        lines.append(f"| {name} | {_fmt(p.get('pull'))} | {_fmt(p.get('constraint'))} |")
    lines += ["", "## Plots", ""]
    for name, files in plots.items():
        links = ", ".join(
            f"[{f.suffix[1:].upper()}]({f.relative_to(folder).as_posix()})" for f in files
        )
        lines.append(f"- {name.replace('_', ' ')}: {links}")
    if problem:
        lines += [
            "",
            f"Static PNG/PDF export was not possible ({problem}); the plots are interactive HTML.",
        ]
    jobs = result.get("jobs") or {}
    t = result.get("timings") or {}
    lines += [
        "",
        "## Provenance",
        "",
        f"- analysis file: `{a.get('path', '')}` (sha256 `{a.get('file_hash', '')}`)",
        f"- campaign {camp.get('id')} `{camp.get('name', '')}` ({camp.get('status', '')}, launcher "
        f"{camp.get('launcher', '')}); config sha256 `{camp.get('config_hash', '')}`",
        f"- code version `{result.get('code_version', '')}`, engine {result.get('engine_version', '')}",
        f"- jobs: {len(jobs.get('ran', []))} ran, {len(jobs.get('reused', []))} reused from earlier runs",
        f"- training seeds: {', '.join(str(s) for s in sorted(set((result.get('seeds') or {}).get('train', {}).values())))}",
        f"- wall time of this run: {_fmt(t.get('wall_s'), 1)} s",
        f"- events the networks never saw: {_eval_provenance(result)}",
        "- ensembles:",
    ]
    for task, uris in sorted((result.get("ensembles") or {}).items()):
        lines.append(f"  - {task}: " + ", ".join(f"`{u}`" for u in uris))
    if result.get("onnx"):
        lines.append("- ONNX exports in this folder (`nsbi export onnx`):")
        lines += [f"  - [{rel}]({rel})" for rel in result["onnx"]]
    lines += ["", "Every number above is in `result.json`."]
    return "\n".join(lines) + "\n"


def write_report(
    folder: str | Path, result: Mapping[str, Any], *, static: bool = True
) -> ReportFiles:
    """Write result.json, the plots and summary.md into `folder` (created; files replaced)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "likelihood_scan": scan_figure(result.get("scan")),
        "impacts_pulls": impacts_figure(result.get("impacts") or [], result.get("pulls") or {}),
        "calibration": calibration_figure(result.get("calibration") or {}),
    }
    contours = {
        k: c
        for k, c in ((result.get("fit") or {}).get("contours") or {}).items()
        if isinstance(c, Mapping) and c.get("x")
    }
    if contours:
        figures["poi_contours"] = contour_figure(contours)
    plots, problem = export_figures(figures, folder / "plots", static=static)
    doc = {
        **result,
        # ensembles exported into the report folder (`nsbi export onnx ENSEMBLE <folder>/x.onnx`)
        "onnx": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.onnx")),
        "plots": {k: [p.relative_to(folder).as_posix() for p in v] for k, v in plots.items()},
        "plot_export": problem or "png+pdf",
    }
    res = folder / "result.json"
    res.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    summ = folder / "summary.md"
    summ.write_text(summary_markdown(doc, plots, folder, problem))
    return ReportFiles(folder, res, summ, plots, problem)
