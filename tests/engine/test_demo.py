"""The demo simulator against independent numerics: Gauss-Legendre quadrature of its densities,
chi-square tests of its samples, and the physics identities it promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sbi_engine.data import Sample
from sbi_engine.demo import (
    BOUNDS,
    OBSERVABLES,
    PROCESSES,
    DemoProblem,
    Nuisance,
    default_problem,
    poi_coefficients,
)


def gl_grid(nodes: tuple[int, ...], bounds=BOUNDS) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Legendre points (n, 4) and weights over the box (an independent integrator)."""
    axes, wts = [], []
    for k, (lo, hi) in zip(nodes, bounds):
        t, w = np.polynomial.legendre.leggauss(k)
        axes.append(0.5 * (hi - lo) * t + 0.5 * (hi + lo))
        wts.append(0.5 * (hi - lo) * w)
    pts = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
    w = np.prod(np.stack([a.ravel() for a in np.meshgrid(*wts, indexing="ij")], axis=1), axis=1)
    return pts, w


@pytest.fixture(scope="module")
def grid():
    return gl_grid((40, 16, 16, 16))


@pytest.fixture(scope="module")
def problem12():
    return DemoProblem(n_nuisances=12)


def random_box_points(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo = np.array([b[0] for b in BOUNDS])
    hi = np.array([b[1] for b in BOUNDS])
    return lo + (hi - lo) * rng.random((n, 4))


# ----------------------------------------------------------------------------- densities


@pytest.mark.parametrize("process", PROCESSES)
def test_densities_integrate_to_one(grid, process):
    pts, w = grid
    p = default_problem()
    assert np.sum(w * np.exp(p.log_density(process, pts))) == pytest.approx(1.0, abs=1e-9)


def test_yields_match_quadrature_of_the_unnormalised_mixture(grid):
    """nu(mu) = mu nu_S + sqrt(mu) nu_I + nu_B, checked by integrating nu_c p_c combinations."""
    pts, w = grid
    p = default_problem()
    dens = {c: p.yield_(c) * np.exp(p.log_density(c, pts)) for c in PROCESSES}
    nu_i = np.sum(w * (dens["SBI"] - dens["S"] - dens["B"]))
    assert nu_i == pytest.approx(p.interference_yield(), rel=1e-9)
    assert nu_i < -0.5 * p.yield_("S"), "interference should be destructive and sizeable"
    for mu in (0.0, 0.5, 1.0, 2.0, 5.0):
        assert np.sum(
            w * p.total_yield(mu) * np.exp(p.mixture_log_density(mu, pts))
        ) == pytest.approx(p.total_yield(mu), rel=1e-9)
        coeff = poi_coefficients(mu)
        assert p.total_yield(mu) == pytest.approx(
            sum(coeff[c] * p.yield_(c) for c in PROCESSES), rel=1e-12
        )


def test_alpha_variations_are_normalised_and_yields_consistent(problem12):
    """At alpha_k = +-1 (and a continuous value) every density integrates to 1, i.e. the
    closed-form yield equals the integral of the unnormalised distribution."""
    pts, w = gl_grid((32, 10, 10, 24))
    for name in problem12.nuisance_names:
        for a in (-1.0, 1.0, 0.37):
            for c in PROCESSES:
                total = np.sum(w * np.exp(problem12.log_density(c, pts, {name: a})))
                assert total == pytest.approx(1.0, abs=1e-8), (name, a, c)


def test_densities_non_negative_and_sbi_bounded_below():
    """f_SBI >= (1 - max|cos delta|) (f_S + f_B) = 0.4 (f_S + f_B) (proof in the module
    docstring), on random points and on a grid including the box edges, at alpha = 0 and +-1."""
    p = DemoProblem(n_nuisances=12)
    axes = [np.linspace(lo, hi, 9) for lo, hi in BOUNDS]
    edge = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
    x = np.concatenate([random_box_points(20000, 7), edge])
    for alpha in [None] + [{n: d} for n in p.nuisance_names for d in (-1.0, 1.0)]:
        f = {c: p.yield_(c, alpha) * np.exp(p.log_density(c, x, alpha)) for c in PROCESSES}
        for c in PROCESSES:
            assert np.all(np.isfinite(f[c])) and np.all(f[c] > 0)
        assert np.all(f["SBI"] >= 0.4 * (f["S"] + f["B"]) * (1 - 1e-12))
        assert np.all(f["SBI"] <= f["S"] + f["B"])  # destructive everywhere
        for mu in (0.0, 0.25, 1.0, 4.0, 100.0):
            assert np.all(np.isfinite(p.mixture_log_density(mu, x, alpha)))


def test_outside_the_box_has_zero_density():
    p = default_problem()
    x = np.array([[219.0, 0, 0, 0], [500.0, 1.01, 0, 0], [500.0, 0, 0, 3.2]])
    for c in PROCESSES:
        assert np.all(p.log_density(c, x) == -np.inf)


def test_ratios_stay_moderate():
    """No region where a ratio between S, SBI and B exceeds 1e3 (ensembles must be able to match)."""
    p = DemoProblem(n_nuisances=5)
    axes = [np.linspace(lo, hi, 17) for lo, hi in BOUNDS]
    x = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
    for alpha in [None] + [{n: d} for n in p.nuisance_names for d in (-1.0, 1.0)]:
        for num, den in (("S", "B"), ("SBI", "B"), ("S", "SBI")):
            lr = p.log_ratio(num, den, x, alpha, alpha)
            assert np.max(np.abs(lr)) < math.log(1e3), (num, den, alpha)
    # ... but distinguishable: S vs B differ by more than a factor 10 somewhere
    assert np.max(np.abs(p.log_ratio("S", "B", x))) > math.log(10)
    assert np.max(np.abs(p.log_ratio("SBI", "B", x))) > math.log(2)


def test_mixture_identities():
    p = DemoProblem(n_nuisances=3)
    x = random_box_points(2000, 3)
    np.testing.assert_allclose(p.mixture_log_density(1.0, x), p.log_density("SBI", x), rtol=1e-12)
    np.testing.assert_allclose(p.mixture_log_density(0.0, x), p.log_density("B", x), rtol=1e-12)
    alpha = {"bkg_norm": 1.0, "m4l_scale": -1.0}
    np.testing.assert_allclose(
        p.mixture_log_density(1.0, x, alpha), p.log_density("SBI", x, alpha), rtol=1e-12
    )
    for mu in (0.3, 2.7):
        coeff = poi_coefficients(mu)
        lhs = p.total_yield(mu) * np.exp(p.mixture_log_density(mu, x))
        rhs = sum(coeff[c] * p.yield_(c) * np.exp(p.log_density(c, x)) for c in PROCESSES)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-9)


def test_log_ratio_and_shape_ratio():
    p = DemoProblem(n_nuisances=4)
    x = random_box_points(100, 5)
    np.testing.assert_allclose(
        p.log_ratio("S", "B", x), p.log_density("S", x) - p.log_density("B", x)
    )
    up = p.shape_log_ratio("B", "bkg_norm", x, +1)
    np.testing.assert_allclose(up, p.log_density("B", x, {"bkg_norm": 1}) - p.log_density("B", x))
    assert np.max(np.abs(up)) > 1e-3
    # lumi is a pure normalisation: no shape change, yields scale by 1.025^alpha
    assert np.all(p.shape_log_ratio("SBI", "lumi", x, -1) == pytest.approx(0.0, abs=1e-12))
    for c in PROCESSES:
        assert p.yield_ratio(c, "lumi", 1) == pytest.approx(1.025, rel=1e-12)
        assert p.yield_ratio(c, "lumi", -1) == pytest.approx(1 / 1.025, rel=1e-12)
    assert p.yield_ratio("B", "bkg_norm", 1) == pytest.approx(1.10, rel=1e-12)
    assert p.yield_ratio("S", "bkg_norm", 1) == 1.0
    # a Sample is accepted wherever x is
    s = Sample(x, np.ones(len(x)), OBSERVABLES, "t")
    np.testing.assert_allclose(
        p.log_density("S", s), p.log_density("S", x.astype(np.float32)), rtol=1e-12
    )


# ----------------------------------------------------------------------------- nuisances


def test_default_nuisances_have_shape_and_norm_effects():
    p = default_problem()
    assert p.n_nuisances == 3 and len(p.nuisances) == 3
    assert all(isinstance(n, Nuisance) for n in p.nuisances)
    assert sum(n.has_shape for n in p.nuisances) >= 3
    assert sum(bool(set(n.norm_processes) & {"S", "B"}) for n in p.nuisances) >= 2
    for n in p.nuisances:
        assert set(n.processes) == set(n.shape_processes) | set(n.norm_processes)
        for c in n.norm_processes:
            assert p.yield_ratio(c, n.name, 1) != pytest.approx(1.0, abs=1e-9)
    # an energy-scale-like effect: m4l spectra get harder for alpha = +1
    x = random_box_points(5000, 1)
    lr = p.shape_log_ratio("B", "m4l_scale", x, +1)
    assert np.corrcoef(x[:, 0], lr)[0, 1] > 0.99


def test_many_nuisances_deterministic(problem12):
    again = DemoProblem(n_nuisances=12)
    assert problem12.nuisances == again.nuisances
    names = problem12.nuisance_names
    assert len(set(names)) == 12
    assert names[:3] == default_problem().nuisance_names
    assert all(n.has_shape or n.has_norm for n in problem12.nuisances)
    assert sum(n.has_norm for n in problem12.nuisances) >= 5
    x = random_box_points(50, 2)
    assert all(
        np.max(np.abs(problem12.shape_log_ratio(c, n.name, x, 1))) > 1e-4
        for n in problem12.nuisances
        for c in n.shape_processes
    )
    big = DemoProblem(n_nuisances=120)
    assert len(big.nuisances) == 120
    assert big.nuisance_names[:12] == names  # nuisance k does not depend on how many there are
    # toys: all 120 nuisances drawn from N(0, 1) at once stay inside the valid model
    for seed in range(5):
        draw = np.random.default_rng(seed).normal(size=120)
        alpha = dict(zip(big.nuisance_names, draw))
        assert big.yield_("SBI", alpha) > 0
        assert np.all(np.isfinite(big.log_density("SBI", x, alpha)))


def test_continuous_alpha_is_smooth_and_interpolates():
    p = default_problem()
    ys = [p.yield_("B", {"bkg_norm": a}) for a in np.linspace(-1, 1, 21)]
    assert np.all(np.diff(ys) > 0)
    assert ys[0] == pytest.approx(400 / 1.1) and ys[-1] == pytest.approx(440.0)


def test_bad_arguments_are_named():
    p = default_problem()
    with pytest.raises(ValueError, match="nope"):
        p.yield_("S", {"nope": 1.0})
    with pytest.raises(ValueError, match="unknown process 'X'"):
        p.log_density("X", np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        p.log_density("S", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="n_nuisances"):
        DemoProblem(n_nuisances=-1)
    with pytest.raises(ValueError, match="mu"):
        p.total_yield(-1.0)
    with pytest.raises(ValueError, match="too far"):
        p.yield_("S", {"gg_scale": 20.0})


def test_to_dict_is_json_and_consistent():
    import json

    p = DemoProblem(n_nuisances=4)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["yields"]["SBI"] == pytest.approx(
        d["yields"]["S"] + d["yields"]["B"] + d["interference_yield"]
    )
    lumi = next(n for n in d["nuisances"] if n["name"] == "lumi")
    assert lumi["shape_processes"] == [] and lumi["yield_ratios"]["B"] == pytest.approx(
        [1 / 1.025, 1.025]
    )


def test_luminosity_scales_yields_not_shapes():
    p1, p3 = DemoProblem(), DemoProblem(luminosity=3.0)
    x = random_box_points(10, 4)
    for c in PROCESSES:
        assert p3.yield_(c) == pytest.approx(3 * p1.yield_(c), rel=1e-12)
        np.testing.assert_allclose(p3.log_density(c, x), p1.log_density(c, x), rtol=1e-12)


# ----------------------------------------------------------------------------- Fisher information


def test_fisher_information_matches_nll_curvature_and_analytic_lumi_block():
    p = DemoProblem(n_nuisances=4)
    names, info = p.fisher_information(1.0, nuisances=True)
    assert names == ("mu", "m4l_scale", "bkg_norm", "gg_scale", "lumi")
    np.testing.assert_allclose(info, info.T, rtol=1e-10)
    assert np.all(np.linalg.eigvalsh(info) > 0)
    # lumi is a pure normalisation: d f / d alpha = ln(1.025) f, so both entries are closed form
    k = math.log(1.025)
    nu, nu_s, nu_i = p.total_yield(1.0), p.yield_("S"), p.interference_yield()
    assert info[4, 4] == pytest.approx(1.0 + nu * k * k, rel=1e-6)
    assert info[0, 4] == pytest.approx(k * (nu_s + 0.5 * nu_i), rel=1e-6)
    # POI entry against the curvature of the expected NLL estimated from exact mu = 1 data (MC)
    data = p.sample_mixture(1.0, 200_000, seed=17)
    scale = nu / len(data)

    def nll(mu):
        return p.total_yield(mu) - scale * np.sum(
            math.log(p.total_yield(mu)) + p.mixture_log_density(mu, data)
        )

    h = 0.02
    curvature = (nll(1 + h) - 2 * nll(1.0) + nll(1 - h)) / h**2
    assert curvature == pytest.approx(info[0, 0], rel=0.03)
    sigma_profiled = math.sqrt(np.linalg.inv(info)[0, 0])
    assert sigma_profiled > 1 / math.sqrt(info[0, 0])


# ----------------------------------------------------------------------------- sampling


def marginal_bin_probs(p: DemoProblem, log_density, j: int, edges: np.ndarray) -> np.ndarray:
    """Probability of each bin of observable j, by Gauss-Legendre quadrature (independent)."""
    probs = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        bounds = list(BOUNDS)
        bounds[j] = (lo, hi)
        nodes = [14, 10, 10, 10]
        nodes[j] = 6
        pts, w = gl_grid(tuple(nodes), bounds)
        probs.append(np.sum(w * np.exp(log_density(pts))))
    return np.array(probs)


def chi2_pvalue(counts: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> float:
    chi2 = float(np.sum((counts - expected) ** 2 / variance))
    return float(stats.chi2.sf(chi2, df=len(counts)))


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("weighted", [True, False])
def test_sample_histograms_match_densities(process, weighted):
    p = default_problem()
    n = 20000
    s = p.sample(process, n, seed=11, weighted=weighted)
    assert s.features.shape == (n, 4) and s.features.dtype == np.float32
    assert s.weights.dtype == np.float64 and np.all(s.weights > 0)
    assert s.names == OBSERVABLES
    nu = p.yield_(process)
    x = s.features.astype(np.float64)
    for j, (lo, hi) in enumerate(BOUNDS):
        assert x[:, j].min() >= lo and x[:, j].max() <= hi
        edges = np.linspace(lo, hi, 11)
        expected = nu * marginal_bin_probs(p, lambda z: p.log_density(process, z), j, edges)
        idx = np.clip(np.digitize(x[:, j], edges) - 1, 0, 9)
        sumw = np.bincount(idx, weights=s.weights, minlength=10)
        var = (
            np.bincount(idx, weights=s.weights**2, minlength=10) if weighted else expected * nu / n
        )
        assert chi2_pvalue(sumw, expected, var) > 1e-3, (process, OBSERVABLES[j])


def test_sbi_joint_structure_matches_quadrature():
    """The interference couples m4l and the angles; a joint statistic checks it:
    E_SBI[log p_S/p_B] from exact samples vs quadrature."""
    p = default_problem()
    pts, w = gl_grid((40, 16, 16, 16))
    g = lambda z: p.log_ratio("S", "B", z)  # noqa: E731
    truth = np.sum(w * np.exp(p.log_density("SBI", pts)) * g(pts))
    s = p.sample("SBI", 40000, seed=5, weighted=False)
    vals = g(s.features)
    assert abs(vals.mean() - truth) < 4 * vals.std() / math.sqrt(len(vals))
    sw = p.sample("SBI", 40000, seed=6)
    est = np.sum(sw.weights * g(sw.features)) / p.yield_("SBI")
    err = math.sqrt(np.sum(sw.weights**2 * (g(sw.features) - truth) ** 2)) / p.yield_("SBI")
    assert abs(est - truth) < 4 * err


@pytest.mark.parametrize("process", PROCESSES)
def test_weights_estimate_the_yield_with_moderate_spread(process):
    p = DemoProblem(n_nuisances=3)
    for alpha in (None, {"bkg_norm": 1.0}, {"m4l_scale": -1.0}):
        s = p.sample(process, 20000, seed=3, alpha=alpha)
        nu = p.yield_(process, alpha)
        stderr = math.sqrt(len(s)) * s.weights.std()
        assert abs(s.weights.sum() - nu) < 4 * stderr
        assert stderr < 0.01 * nu
        spread = s.weights.max() / s.weights.min()
        assert spread < 4.0
        u = p.sample(process, 100, seed=3, alpha=alpha, weighted=False)
        np.testing.assert_allclose(u.weights, nu / 100)


def test_sampling_is_seeded():
    p = default_problem()
    a, b, c = (
        p.sample("SBI", 500, seed=1),
        p.sample("SBI", 500, seed=1),
        p.sample("SBI", 500, seed=2),
    )
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)
    assert "SBI" in a.source and "seed=1" in a.source


def test_sample_mixture_counts_and_shape():
    p = default_problem()
    d = p.sample_mixture(2.0, 3000, seed=4)
    assert len(d) == 3000 and np.all(d.weights == 1.0)
    dn = p.sample_mixture(2.0, None, seed=4)
    assert len(dn) == round(p.total_yield(2.0))
    counts = [len(p.sample_mixture(1.0, None, seed=s, poisson=True)) for s in range(30)]
    nu = p.total_yield(1.0)
    assert abs(np.mean(counts) - nu) < 4 * math.sqrt(nu / 30)
    assert np.std(counts) > 0
    # m4l histogram of mu = 2 data against the mixture density
    big = p.sample_mixture(2.0, 20000, seed=9)
    edges = np.linspace(*BOUNDS[0], 11)
    expected = 20000 * marginal_bin_probs(p, lambda z: p.mixture_log_density(2.0, z), 0, edges)
    counts = np.histogram(big.features[:, 0], edges)[0]
    assert chi2_pvalue(counts, expected, expected) > 1e-3
