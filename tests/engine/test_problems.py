"""The benchmark problems (sbi_engine/problems) against independent numerics.

* Samplers vs densities: weighted histograms of one feature against bin probabilities from
  composite Gauss-Legendre quadrature of the density (independent of the sampler), as a
  chi-square with the per-bin variance sum(w^2), for each of the two features (correlated5:
  x1 and x5 against their exact Gaussian marginals). 30 bins of ~1/30 of 200k simulated
  (100k pseudo-data) events: the statistic is ~chi2(29) for a correct sampler, so the bound
  29 + 6 sqrt(2 x 29) ~ 75 (p ~ 1e-7; seeds are fixed, so the test is deterministic). A sampler
  off by a 3 % slope (e.g. a 0.3 sigma nuisance shift) or with negative weights mis-scaled by
  10 % gives chi2 ~ 80-180 and fails.
* Yields: quadrature of p_c over the support is 1 to 1e-6 at alpha = 0 and +-1 (so nu_c, which
  p_c = f_c / nu_c divides by, is the integral of f_c), weights sum to nu_c exactly.
* Ratios: log_ratio = log p_c - log p_ref; E_ref[r_c] = 1 and E_c[shape ratio] = 1 within MC error.
* The fit convention: the independent NumPy model reproduces the true intensity at alpha = +-1
  with the exact shape and yield ratios; the project's exact-ratio fit agrees with the
  NumPy + iminuit fit (mu-hat within 1e-4 sigma, Hesse errors within 1 %).
* `nsbi problems list / generate`, and the generated analysis.yaml validates.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import ndtr

from sbi_engine.problems import (
    NumpyNLL,
    exact_reference_fit,
    get_problem,
    list_problems,
    read_parquet,
)
from sbi_engine.problems.reference import code4

PROBLEMS = list_problems()
N_BINS = 30
CHI2_MAX = (N_BINS - 1) + 6.0 * math.sqrt(2.0 * (N_BINS - 1))


def composite_gl(lo: float, hi: float, edges=None, nodes: int = 8, panels: int = 40):
    """Nodes and weights of composite Gauss-Legendre on [lo, hi]; with `edges`, panels are split
    at them and also the panel index (bin) of each node is returned."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    cuts = np.unique(
        np.concatenate([[lo, hi], edges if edges is not None else np.linspace(lo, hi, panels + 1)])
    )
    xs, ws, idx = [], [], []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        sub = np.linspace(a, b, 3)  # every panel itself in 2 sub-panels
        for s0, s1 in zip(sub[:-1], sub[1:]):
            xs.append(0.5 * (s1 - s0) * t + 0.5 * (s1 + s0))
            ws.append(0.5 * (s1 - s0) * w)
            idx.append(np.full(nodes, i))
    return np.concatenate(xs), np.concatenate(ws), np.concatenate(idx), cuts


def bin_probabilities_2d(problem, process_logpdf, edges, axis: int):
    """P(x_axis in each panel between lo, edges..., hi) by quadrature over the 2-D support."""
    other = 1 - axis
    (lo0, hi0), (lo1, hi1) = problem.bounds[axis], problem.bounds[other]
    x0, w0, idx, cuts = composite_gl(lo0, hi0, edges)
    x1, w1, _, _ = composite_gl(lo1, hi1)
    grid = np.stack(np.meshgrid(x0, x1, indexing="ij"), axis=-1).reshape(-1, 2)
    if axis == 1:
        grid = grid[:, ::-1]
    dens = (
        np.exp(process_logpdf(grid)).reshape(len(x0), len(x1)) @ w1
    )  # marginal of x_axis at the nodes
    probs = np.bincount(idx, weights=dens * w0, minlength=len(cuts) - 1)
    return probs, cuts


def chi2(values: np.ndarray, weights: np.ndarray, cuts: np.ndarray, expected: np.ndarray) -> float:
    b = np.clip(np.searchsorted(cuts, values, side="right") - 1, 0, len(cuts) - 2)
    obs = np.bincount(b, weights=weights, minlength=len(cuts) - 1)
    var = np.bincount(b, weights=weights * weights, minlength=len(cuts) - 1)
    live = var > 0
    assert np.all(expected[~live] < 1e-3 * expected.sum()), (
        "a bin with sizeable expectation got no events"
    )
    return float(np.sum((obs[live] - expected[live]) ** 2 / var[live]))


def _check_sampler(problem, logpdf, sample_x, weights, total, marginals=None):
    """Chi-square of each feature's weighted histogram (2-D problems: both features, expected bin
    contents by quadrature; correlated5: the given Gaussian-mixture marginals {feature: [(frac, mean, sd)]})."""
    axes = marginals if marginals is not None else {0: None, 1: None}
    for j, marginal in axes.items():
        values = sample_x[:, j].astype(np.float64)
        inner = np.quantile(values, np.linspace(0.01, 0.99, N_BINS - 1))
        if marginal is None:
            probs, cuts = bin_probabilities_2d(problem, logpdf, inner, j)
            exp = total * probs
        else:
            cuts = np.concatenate([[-np.inf], inner, [np.inf]])
            cdf = sum(frac * ndtr((cuts - m) / s) for frac, m, s in marginal)
            exp = total * np.diff(cdf)
        stat = chi2(values, weights, cuts, exp)
        assert stat < CHI2_MAX, (
            f"feature {problem.feature_names[j]}: chi2 {stat:.1f} for {len(cuts) - 1} bins"
        )


# --------------------------------------------------------------------------- registry


def test_registry_has_the_required_problems():
    assert {
        "interference",
        "correlated5",
        "subnoise_syst",
        "negative_weights",
        "low_stats",
        "high_stats",
    } <= set(PROBLEMS)
    with pytest.raises(ValueError, match="unknown benchmark problem"):
        get_problem("demo")
    for name in PROBLEMS:
        p = get_problem(name)
        assert p.name == name and p.description and p.reference in p.processes
        assert set(p.coefficients) == set(p.processes) and p.nuisances
        assert set(p.shape_processes) == set(p.nuisances)


# --------------------------------------------------------------------------- samplers vs densities


def _cases(problem):
    """(process, alpha) pairs: every nominal process and every systematic sample at +1."""
    out = [(c, None) for c in problem.processes]
    for k in problem.nuisances:
        out += [(c, {k: 1.0}) for c in problem.shape_processes[k]]
    return out


@pytest.mark.parametrize("name", PROBLEMS)
def test_simulation_matches_density(name):
    p = get_problem(name)
    for i, (c, alpha) in enumerate(_cases(p)):
        s = p.sample(c, 200_000, seed=100 + i, alpha=alpha)
        assert s.total_weight == pytest.approx(p.yield_(c, alpha), rel=1e-12)
        marginals = None
        if name == "correlated5":
            marginals = {j: [(1.0, *p.marginal(c, j, alpha))] for j in (0, 4)}
        _check_sampler(
            p,
            lambda x, c=c, alpha=alpha: p.log_density(c, x, alpha),
            s.features,
            s.weights,
            s.total_weight,
            marginals,
        )


@pytest.mark.parametrize("name", PROBLEMS)
def test_pseudo_data_follow_the_mixture(name):
    p = get_problem(name)
    mus = (
        (1.0, 0.25, 4.0) if name == "interference" else (1.0,)
    )  # negative S / B coefficients off mu = 1
    for mu in mus:
        rng = np.random.default_rng(7)
        x = p.draw_mixture(mu, 100_000, rng)
        nu = p.expected_events(mu)
        marginals = None
        if name == "correlated5":
            marginals = {
                j: [
                    (p.coefficient(c, mu) * p.yield_(c) / nu, *p.marginal(c, j))
                    for c in p.processes
                ]
                for j in (0, 4)
            }
        _check_sampler(
            p,
            lambda z, mu=mu, nu=nu: p.mixture_log_intensity(mu, z) - math.log(nu),
            x,
            np.ones(len(x)),
            len(x),
            marginals,
        )
    d = p.pseudo_data(1.0, seed=3)
    assert np.all(d.weights == 1.0)
    assert abs(len(d) - p.expected_events(1.0)) < 5 * math.sqrt(p.expected_events(1.0))


@pytest.mark.parametrize("name", [n for n in PROBLEMS if n != "correlated5"])
def test_densities_integrate_to_one(name):
    p = get_problem(name)
    (lo0, hi0), (lo1, hi1) = p.bounds
    x0, w0, _, _ = composite_gl(lo0, hi0)
    x1, w1, _, _ = composite_gl(lo1, hi1)
    grid = np.stack(np.meshgrid(x0, x1, indexing="ij"), axis=-1).reshape(-1, 2)
    wt = np.outer(w0, w1).reshape(-1)
    for c in p.processes:
        for alpha in [None] + [{k: d} for k in p.nuisances for d in (1.0, -1.0)]:
            assert float(wt @ np.exp(p.log_density(c, grid, alpha))) == pytest.approx(
                1.0, abs=1e-6
            ), (c, alpha)


def test_correlated5_normalisation_and_correlations():
    p = get_problem("correlated5")
    b = p.sample("B", 200_000, seed=1)
    r = np.exp(p.log_ratio("S", b))
    assert abs(np.mean(r) - 1.0) < 4 * np.std(r) / math.sqrt(len(r))
    s = p.sample("S", 200_000, seed=2)
    corr = np.corrcoef(s.features.T)
    assert np.allclose(corr[np.triu_indices(5, 1)], 0.4, atol=0.01)
    assert np.corrcoef(b.features.T)[0, 1] == pytest.approx(0.6, abs=0.01)


def test_yields_and_expected_events():
    p = get_problem("interference")
    # nu_SBI = N_S + N_B + nu_I by quadrature of the unnormalised f_SBI = nu_SBI p_SBI over the box
    # is covered by test_densities_integrate_to_one; here the mu dependence and the norm-only factors.
    for mu in (0.0, 0.5, 1.0, 3.0):
        want = sum(p.coefficient(c, mu) * p.yield_(c) for c in p.processes)
        assert p.expected_events(mu) == pytest.approx(want)
    assert p.expected_events(1.0) == pytest.approx(p.yield_("SBI"))
    assert p.yield_("B", {"lumi": 1.0}) == pytest.approx(1.02 * p.yield_("B"))
    assert p.yield_("B", {"lumi": -2.0}) == pytest.approx(0.98**2 * p.yield_("B"))
    assert p.interference_yield() < 0
    low, high = get_problem("low_stats"), get_problem("high_stats")
    assert 200 <= low.expected_events(1.0) <= 500 and 80_000 <= high.expected_events(1.0) <= 150_000


# --------------------------------------------------------------------------- ratios


@pytest.mark.parametrize("name", PROBLEMS)
def test_log_ratios_are_consistent(name):
    p = get_problem(name)
    ref = p.sample(p.reference, 50_000, seed=11)
    for c in p.processes:
        lr = p.log_ratio(c, ref)
        assert np.allclose(lr, p.log_density(c, ref) - p.log_density(p.reference, ref), atol=1e-12)
        w = ref.weights
        r = np.exp(lr)
        mean = float(np.sum(w * r) / np.sum(w))
        assert abs(mean - 1.0) < 5 * np.std(r) / math.sqrt(len(r)) + 1e-12, (c, mean)
    for k in p.nuisances:
        for c in p.processes:
            if not p.affects_shape(k, c):
                assert np.all(p.shape_log_ratio(c, k, ref, 1.0) == 0)
                continue
            s = p.sample(c, 50_000, seed=12)
            for d in (1.0, -1.0):
                r = np.exp(p.shape_log_ratio(c, k, s, d))
                assert np.allclose(
                    np.log(r), p.log_density(c, s, {k: d}) - p.log_density(c, s), atol=1e-12
                )
                mean = float(np.sum(s.weights * r) / np.sum(s.weights))
                spread = math.sqrt(np.sum(s.weights**2 * (r - mean) ** 2)) / abs(np.sum(s.weights))
                assert abs(mean - 1.0) < 5 * spread + 1e-12, (k, c, d, mean)


def test_interference_sbi_ratio_is_within_a_few_per_cent():
    p = get_problem("interference")
    b = p.sample("B", 50_000, seed=1)
    q = np.quantile(np.exp(p.log_ratio("SBI", b)), [0.01, 0.99])
    assert 0.9 < q[0] < 1.0 < q[1] < 1.05
    # f_SBI < f_S + f_B everywhere (destructive interference)
    x = b.features
    f_sbi = p.yield_("SBI") * np.exp(p.log_density("SBI", x))
    assert np.all(
        f_sbi
        < p.yield_("S") * np.exp(p.log_density("S", x))
        + p.yield_("B") * np.exp(p.log_density("B", x))
    )


def test_subnoise_systematic_is_below_the_noise_floor():
    p = get_problem("subnoise_syst")
    b = p.sample("B", 100_000, seed=1)
    for d in (1.0, -1.0):
        assert 0.003 <= np.std(p.shape_log_ratio("B", "tiny_slope", b, d)) <= 0.005
        assert np.std(p.shape_log_ratio("B", "bkg_width", b, d)) > 0.05


def test_negative_weights():
    p = get_problem("negative_weights")
    s = p.sample("S", 10_000, seed=1)
    frac = float(np.mean(s.weights < 0))
    assert 0.10 < frac < 0.20
    assert s.total_weight == pytest.approx(p.yield_("S"), rel=1e-12)
    (lo0, hi0), (lo1, hi1) = p.bounds
    x0, _, _, _ = composite_gl(lo0, hi0)
    grid = np.stack(np.meshgrid(x0[::10], np.linspace(lo1, hi1, 200), indexing="ij"), -1).reshape(
        -1, 2
    )
    assert np.all(np.isfinite(p.log_density("S", grid)))  # the true density stays positive
    cfg = p.analysis_config("/tmp/x", observed="data.parquet")
    assert cfg["samples"]["S"]["allow_negative_weights"] is True


# --------------------------------------------------------------------------- fit convention


def test_code4_matches_the_project_reference():
    from sbi_engine.fit.interp import code4_reference
    from sbi_engine.precision import enable_float64

    enable_float64()  # the fit's internals are called directly, not through a fit
    up, down = np.array([1.3, 0.8, 1.02]), np.array([0.75, 1.1, 0.99])
    for a in (-2.0, -1.0, -0.6, 0.0, 0.3, 1.0, 1.7):
        assert np.allclose(
            code4(a, up, down), np.asarray(code4_reference(a, up, down)), rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("name", ["interference", "subnoise_syst"])
def test_numpy_model_reproduces_the_truth_at_plus_minus_one(name):
    """With exact shape and yield ratios the model's intensity sum_c A_c r_c delta_c equals the true
    nu(mu, alpha) p(x | mu, alpha) / p_ref(x) at alpha_k = +-1 (where code 4 is exact), and the
    shape normalisation n_c(+-1) is 1 within the normalisation sample's MC error."""
    p = get_problem(name)
    data = p.pseudo_data(1.0, seed=5)
    norm = p.sample(p.reference, 50_000, seed=6)
    nll = NumpyNLL(p, data, norm)
    assert np.all(np.abs(nll.k - 1.0) < 0.02)
    nll.k = np.ones_like(nll.k)
    for mu in (0.5, 1.0, 2.0):
        for k in p.parameter_names:
            for d in (1.0, -1.0):
                theta = np.zeros(len(nll.names))
                theta[0] = mu
                theta[nll.names.index(k)] = d
                truth = np.exp(
                    p.mixture_log_intensity(mu, data, {k: d}) - p.log_density(p.reference, data)
                )
                assert np.allclose(nll.event_intensity(theta), truth, rtol=1e-9), (mu, k, d)
                assert np.allclose(nll.normalisation(theta), 1.0, atol=0.01)


@pytest.mark.parametrize("name", ["low_stats", "negative_weights"])
def test_project_fit_matches_numpy_minuit(name):
    p = get_problem(name)
    data = p.pseudo_data(1.0, seed=21)
    norm = p.sample(p.reference, 20_000, seed=22)
    out = exact_reference_fit(p, data, norm)
    assert out["project"]["converged"] and out["numpy_minuit"]["converged"]
    agree = out["agreement"]
    assert abs(agree["mu_hat_diff_over_sigma"]) < 1e-4
    assert abs(agree["sigma_rel_diff"]) < 0.01
    assert agree["max_value_diff_over_error"] < 1e-3 and agree["max_error_rel_diff"] < 0.01
    assert abs(out["mu_hat"] - 1.0) < 4 * out["sigma"]


# --------------------------------------------------------------------------- CLI


def test_cli_list(capsys):
    from backend.cli import main

    assert main(["problems", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == PROBLEMS
    assert main(["problems", "list"]) == 0
    assert "interference" in capsys.readouterr().out


def test_cli_generate_writes_an_analysis_that_validates(tmp_path, capsys, monkeypatch):
    from backend.analysis import validate_analysis
    from backend.cli import main

    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    out = tmp_path / "bench"
    # --no-truth: the reference fit itself is tested above (test_project_fit_matches_numpy_minuit)
    # and costs a JAX compilation; `nsbi problems generate` runs it by default.
    assert (
        main(
            [
                "problems",
                "generate",
                "correlated5",
                str(out),
                "--events-scale",
                "0.05",
                "--seed",
                "3",
                "--no-truth",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert str(out) in printed and "analysis validate" in printed
    p = get_problem("correlated5")
    for key in p.sample_names():
        assert (out / f"{key}.parquet").exists()
    assert (out / "data.parquet").exists()
    assert validate_analysis(out / "analysis.yaml") == []
    truth = json.loads((out / "truth.json").read_text())
    assert truth["problem"] == "correlated5" and truth["yields"] == {"S": 200.0, "B": 5000.0}
    assert truth["n_data_events"] == len(
        read_parquet(out / "data.parquet", p.feature_names, weight=False)
    )
    assert read_parquet(out / "S.parquet", p.feature_names).total_weight == pytest.approx(200.0)
    assert main(["problems", "generate", "nope", str(out)]) == 2


@pytest.mark.parametrize("name", list_problems())
def test_the_exact_ratios_pass_every_ensemble_check(name):
    """Every check with the true ratio on fresh evaluation-size events: a failure here would be
    a false alarm on every analysis of the problem (`benchmarks/check_null.py` measures the
    rate over seeds). Before the overconfidence reading of saturation, the exact S/B ratio of
    negative_weights failed it (3.3 % of events beyond |log r| 13.8) and the tiny_slope AUC
    fell below 0.5 by noise."""
    from sbi_engine.problems.null_checks import truth_checks

    failed = [
        r.short()
        for recs in truth_checks(get_problem(name), seed=0).values()
        for r in recs
        if not r.passed
    ]
    assert failed == []


def test_a_ratio_too_flat_fails_the_checks():
    """The way networks err (a learned log ratio flatter than the truth): at slope 0.8 on
    correlated5's S/B the calibration and closure checks fail."""
    from sbi_engine.problems.null_checks import truth_checks

    recs = {
        r.name: r for r in truth_checks(get_problem("correlated5"), seed=0, slope=0.8)["S_vs_B"]
    }
    assert not recs["calibration"].passed and recs["calibration"].value > 6
    assert not recs["closure_chi2_ndf"].passed


@pytest.mark.parametrize("name", ["low_stats", "negative_weights"])
def test_the_calibration_effect_of_the_exact_ratio_is_nil_and_of_a_flat_one_is_seen(name):
    """The exact ratio recalibrated on fresh evaluation-size events moves mu by the method's own
    noise only: every task within 0.1 sigma with that noise (what excuses a failed calibration);
    made 20 % too flat, the signal ratio's effect (0.28-0.34 sigma, measured) fails the check.
    negative_weights: 14 % negative weights in S, and log r-hat down to -35 where S vanishes."""
    from sbi_engine.problems.null_checks import truth_calibration_effects

    problem = get_problem(name)
    for rec in truth_calibration_effects(problem, 0):
        assert rec["passed"] and rec["value"] + rec["error"] <= 0.1, rec["message"]
    flat = {r["task"]: r for r in truth_calibration_effects(problem, 0, slope=0.8)}
    signal = flat[f"S_vs_{problem.reference}"]
    assert not signal["passed"] and signal["value"] > 0.2, signal["message"]


def test_the_calibration_effect_study_runs_and_writes_its_json(tmp_path, capsys):
    """`python -m benchmarks.calibration_effect_null` on one problem and seed: every exact-ratio
    task passes and the JSON holds a row per task with its shift and noise."""
    from benchmarks.calibration_effect_null import main

    out = tmp_path / "null.json"
    assert main(["--problems", "low_stats", "--seeds", "1", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["tasks"] == 3 and got["failed"] == 0 and len(got["rows"]) == 3
    assert all(r["value"] < 0.1 and r["error"] > 0 for r in got["rows"])
    assert json.loads(capsys.readouterr().out)["tasks"] == 3  # the summary, without rows
