"""Several parameters of interest and free normalisation factors in analysis files:
validation and what reaches the fit jobs (the fit itself: tests/fit/test_contours.py)."""

from __future__ import annotations

from pathlib import Path

from backend.analysis.spec import load_analysis, validate_analysis
from backend.campaigns import _fit_model_checks

BASE = """\
name: two-pois
samples:
  S: {demo: {process: S, n: 2000, seed: 1}}
  B: {demo: {process: B, n: 2000, seed: 3}}
processes:
  S: {sample: S, coefficient: "mu_ggF"}
  B: {sample: B, coefficient: "COEF"}
reference: B
"""
POIS = (
    "pois: {mu_ggF: {init: 1.0, bounds: [0.0, 10.0]}, mu_VBF: {init: 1.0, bounds: [-2.0, 10.0]}}\n"
)
NF = "norm_factors: {k_B: {init: 1.0, bounds: [0.5, 2.0]}}\n"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "a.yaml"
    p.write_text(text)
    return p


def test_pois_and_norm_factors_reach_the_fit_stage(tmp_path):
    p = _write(tmp_path, BASE.replace("COEF", "k_B + 0 * mu_VBF") + POIS + NF)
    assert validate_analysis(p, check_data=False) == []
    fit = load_analysis(p, check_data=False).campaign_config()["fit"]
    assert "poi" not in fit
    assert list(fit["pois"]) == ["mu_ggF", "mu_VBF"]  # the first is the primary POI
    assert fit["norm_factors"] == {"k_B": {"init": 1.0, "bounds": [0.5, 2.0]}}
    assert _fit_model_checks(fit, ["S", "B"]) == []


def test_pois_are_checked(tmp_path):
    def problems(text: str) -> list[str]:
        return [
            f"{q.path}: {q.message}"
            for q in validate_analysis(_write(tmp_path, text), check_data=False)
        ]

    # an unknown name in a coefficient
    assert any("unknown parameter 'zz'" in m for m in problems(BASE.replace("COEF", "zz") + POIS))
    # both poi and pois
    text = BASE.replace("COEF", "1") + "poi: {init: 1.0}\n" + POIS
    assert any(m.startswith("pois: give either poi") for m in problems(text))
    # a coefficient not finite inside a norm factor's bounds
    bad = BASE.replace("COEF", "1 / (k_B - 2)") + POIS + NF
    assert any("k_B = 2" in m for m in problems(bad))
    # bounds in the wrong order; a name that is no expression variable
    text = BASE.replace("COEF", "1") + "pois: {mu_ggF: {init: 1.0, bounds: [5.0, 0.0]}}\n"
    assert any("pois.mu_ggF.bounds" in m for m in problems(text))
    text = BASE.replace("COEF", "1") + "pois: {mu-ggF: {init: 1.0}}\n"
    assert any("parameter name" in m for m in problems(text))
    # the campaign config checks the same rules
    fit = {"pois": {"a": {"init": 1.0, "bounds": [0.0, 2.0]}}, "coefficients": {"S": "1 / (a - 1)"}}
    assert any("a = 1" in e for e in _fit_model_checks(fit, ["S"]))


def test_round_ticks_contour_figure_and_report_table(tmp_path):
    import numpy as np

    from backend.analysis.fit_figures import contour_figure, nice_ticks
    from backend.analysis.report import impacts_figure, pois_markdown, write_report

    # impact axes: round ticks, never the pull axis's positions (+-0.0816 before)
    assert nice_ticks(0.0816 * 1.15) == ([-0.1, -0.05, 0.0, 0.05, 0.1], 0.1)
    ticks, reach = nice_ticks(1.3)
    assert (
        reach == 1.5
        and ticks[-1] == 1.5
        and all(abs(t / 0.5 - round(t / 0.5)) < 1e-9 for t in ticks)
    )
    fig = impacts_figure(
        [{"nuisance": "a", "postfit_up": 0.068, "postfit_down": -0.05, "size": 0.068}],
        {"a": {"pull": 0.1, "constraint": 0.9}},
    )
    assert list(fig.layout.xaxis2.tickvals) == [-0.1, -0.05, 0.0, 0.05, 0.1]
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    contour = {
        k: {
            "pois": ["mu_a", "mu_b"],
            "best": [1.0, 1.0],
            "x": list(1 + s * np.cos(t)),
            "y": list(1 + s * np.sin(t)),
            "flags": [[]] * 24,
            "area": np.pi * s * s,
            "correlation": -0.5,
        }
        for k, s in (("68", 0.3), ("95", 0.5))
    }
    assert len(contour_figure(contour).data) == 3  # two closed contours and the best fit
    fit = {
        "pois": {"mu_a": {"value": 1.0, "error": 0.3, "err_lo": -0.28, "err_hi": 0.33}},
        "correlations": {"mu_a": {"mu_a": 1.0}},
        "contours": contour,
    }
    text = "\n".join(pois_markdown(fit))
    assert "## Parameters of interest" in text and "−0.280 / +0.330" in text
    files = write_report(tmp_path / "rep", {"fit": fit}, static=False)
    assert "poi_contours" in files.plots
