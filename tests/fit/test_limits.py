"""One-sided test statistics, discovery and CLs upper limits (issue 14), against closed forms.

One-bin counting problem: n ~ Poisson(mu s + b), q(mu) = 2 (mu s + b) - 2 n ln(mu s + b), with
mu-hat = (n - b) / s. As an unbinned workspace: one event row of weight n and constant ratios
(the extended likelihood of identical events is the Poisson one up to a constant)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm, poisson

from sbi_engine.fit import Model, Workspace
from sbi_engine.fit.limits import (
    BANDS,
    UpperLimit,
    cls_asymptotic,
    discovery,
    expected_cls,
    q_tilde_mu,
    test_statistic,
    toy_cls,
    upper_limit,
)
from sbi_engine.fit.toys import asimov_weights, expected_fit

S, B = 5.0, 5.0


def counting(lower: float = 0.0) -> Model:
    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (lower, 20.0)}},
        processes={
            "S": {"yield": S, "coefficient": "mu", "ratio": np.ones(1)},
            "B": {"yield": B, "coefficient": "1", "ratio": np.ones(1)},
        },
        weights=np.array([S + B]),  # the expectation at generated_at: what toys resample
        data_kind="asimov",
        generated_at={"mu": 1.0},
    )
    return Model(ws, storage_dtype=np.float64)


def q_count(mu: float, n: float) -> float:
    lam = mu * S + B
    return 2.0 * lam - 2.0 * n * math.log(lam)


@pytest.mark.parametrize("n", [3.0, 8.0, 15.0])
@pytest.mark.parametrize("mu", [0.5, 1.0, 2.5])
def test_q_mu_and_q_tilde_match_the_counting_formula(n, mu):
    """Eq. 14 and 16 of arXiv:1007.1727 on fits with mu free below 0 (mu-hat = -0.4 for n = 3)."""
    mu_hat = (n - B) / S
    q_mu = 0.0 if mu_hat > mu else q_count(mu, n) - q_count(mu_hat, n)
    q_t = 0.0 if mu_hat > mu else q_count(mu, n) - q_count(max(mu_hat, 0.0), n)
    t = test_statistic(counting(lower=-0.9), mu, weights=np.array([n]))
    assert t.converged and t.mu_hat == pytest.approx(mu_hat, abs=1e-5)
    assert t.q_mu == pytest.approx(q_mu, abs=1e-7)
    assert t.q_tilde_mu == pytest.approx(q_t, abs=1e-7)
    # with the POI bounded at 0 the bounded free fit gives q~ directly
    tb = test_statistic(counting(), mu, weights=np.array([n]))
    assert tb.q_tilde_mu == pytest.approx(q_t, abs=1e-7)


def test_q_tilde_function_branches():
    assert q_tilde_mu(10.0, 1.0, 4.0, 1.0, -0.5) == 6.0  # mu-hat < 0: against the fit at 0
    assert q_tilde_mu(10.0, 1.0, 4.0, 1.0, 0.5) == 9.0
    assert q_tilde_mu(10.0, 1.0, 4.0, 1.0, 1.5) == 0.0  # mu-hat > mu: 0


def test_discovery_significance_matches_the_counting_formula():
    n = 15.0
    z = math.sqrt(2.0 * (n * math.log(n / B) - (n - B)))  # arXiv:1007.1727 eq. 97
    d = discovery(counting(), weights=np.array([n]))
    assert d.converged and d.significance == pytest.approx(z, rel=1e-6)
    assert d.p0 == pytest.approx(norm.sf(z), rel=1e-5)
    assert discovery(counting(), weights=np.array([3.0])).q0 == 0.0  # mu-hat at the bound


def test_asymptotic_limits_match_the_closed_form_on_b_only_asimov():
    """n = b: q~_obs = q_A = 2 (mu s - b ln(1 + mu s / b)); CLs from the formulas solved here."""

    def qa(mu):
        return 2.0 * (mu * S - B * math.log1p(mu * S / B))

    def exp_limit(n):
        return brentq(lambda m: norm.cdf(n - math.sqrt(qa(m))) / norm.cdf(n) - 0.05, 1e-6, 20.0)

    ul = upper_limit(counting(), weights=np.array([B]))
    assert ul.method == "asymptotic" and ul.extra["at_bound"] == ["mu"]
    for n in BANDS:
        assert ul.expected[n] == pytest.approx(exp_limit(n), rel=1e-3), n
    obs = brentq(lambda m: cls_asymptotic(qa(m), qa(m))[0] - 0.05, 1e-6, 20.0)
    assert ul.observed == pytest.approx(obs, rel=1e-3)
    assert ul.observed == pytest.approx(ul.expected[0], rel=1e-3)  # Asimov data: the median
    assert list(ul.band) == sorted(ul.band)
    d = ul.to_dict()
    assert set(d["expected"]) == {"-2", "-1", "0", "1", "2"} and d["cl"] == 0.95


def test_cls_formulas():
    assert expected_cls(0.0, 0) == pytest.approx(1.0)
    # constant sigma: median expected CLs limit at sqrt(q_A) = Phi^-1(1 - alpha / 2) = 1.96
    assert expected_cls(1.959963984540054**2, 0) == pytest.approx(0.05)
    cls, clsb, clb = cls_asymptotic(4.0, 1.0)  # q > q_A: the second branch of eq. 66
    assert clsb == pytest.approx(norm.sf(2.5)) and clb == pytest.approx(norm.sf(1.5))


def test_toy_cls_matches_the_exact_poisson_probabilities():
    """With n_obs = b = 5 at mu = 1 (lambda = 10): q~ falls with n below mu s + b, so
    CLs+b = P(n <= 5 | 10) and CLb = P(n <= 5 | 5) exactly; 2000 toys, 4 binomial errors."""
    T = 2000
    r = toy_cls(counting(), 1.0, T, seed=5, weights=np.array([B]))
    for key, lam in (("clsb", S + B), ("clb", B)):
        p = poisson.cdf(5, lam)
        assert abs(r[key] - p) < 4.0 * math.sqrt(p * (1 - p) / T), (key, r[key], p)


def test_toy_limit_on_counting_agrees_with_asymptotic_roughly():
    """b = 5 events is far from asymptotic; measured 1.24 (toys) vs 1.15 (asymptotic)."""
    m = counting()
    asym = upper_limit(m, weights=np.array([B]))
    toys = upper_limit(m, weights=np.array([B]), toys=2000, seed=1)
    assert toys.method == "toys" and toys.n_toys == 2000
    assert abs(toys.observed / asym.observed - 1.0) < 0.15
    assert len(toys.scan) >= 3


# --------------------------------------------------------------------- the exact demo workspace


def test_demo_b_only_asimov_limit_band(demo_model):
    """Background-only Asimov on the exact demo workspace: mu-hat flagged at the bound, no
    sub-resolution errors, an ordered expected band whose median is the observed limit."""
    fit0 = expected_fit(demo_model, {"mu": 0.0})
    assert fit0.at_bound == ("mu",) and fit0.below_resolution == ()
    ul = upper_limit(demo_model, weights=asimov_weights(demo_model, {"mu": 0.0}))
    assert ul.extra["converged"] and ul.extra["at_bound"] == ["mu"]
    assert 0.0 <= ul.mu_hat < 1e-8  # on the bound within mu's resolution
    band = ul.band
    assert all(a < b for a, b in zip(band, band[1:])), band
    assert ul.observed == pytest.approx(ul.expected[0], rel=1e-3)
    assert 0.5 < ul.observed < 1.5  # measured 0.895


def test_cli_upper_limit_prints_and_writes_json(tmp_path, capsys):
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415

    from backend.commands import fit as fit_cmd  # noqa: PLC0415

    path = counting().workspace.save(tmp_path / "ws.json")
    for extra in ([], ["--toys", "300"]):
        out = tmp_path / "out.json"
        p = argparse.ArgumentParser()
        fit_cmd.add_arguments(p)
        argv = [str(path), "--upper-limit", "--cl", "0.95", "--json", str(out), *extra]
        assert fit_cmd.run(p.parse_args(argv)) == 0
        text = capsys.readouterr().out
        assert "95% CL upper limit on mu" in text and "observed" in text and "+2 sigma" in text
        d = json.loads(out.read_text())["upper_limit"]
        assert d["method"] == ("toys" if extra else "asymptotic")
        assert 0.5 < d["observed"] < 5.0 and d["expected"]["0"] > 0
        assert "toys" not in json.loads(out.read_text())  # --toys serves the limit here


def test_linear_model_has_no_yield_turning_point_and_no_warning():
    from backend.commands.fit import format_limit  # noqa: PLC0415
    from sbi_engine.fit.limits import yield_turning_points  # noqa: PLC0415

    ul = upper_limit(counting().workspace)
    assert yield_turning_points(counting().workspace, "mu", 0.0, 20.0) == []
    assert ul.extra["yield_turning_points"] == [] and "asymptotic_warning" not in ul.extra
    assert "WARNING" not in format_limit(ul)


@pytest.fixture(scope="module")
def demo2_model():
    """The exact demo workspace with 2 nuisances (toy fits of 11 parameters are ~4x slower)."""
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit.exact import exact_demo_workspace  # noqa: PLC0415

    ws = exact_demo_workspace(20000, n_nuisances=2, seed=1, luminosity=1.0)
    return Model(ws, chunk_size=8192, storage_dtype=jnp.float64)


def _toy_vs_asymptotic(model, n_toys, seed=3, **kw):
    w0 = asimov_weights(model, {"mu": 0.0})
    asym = upper_limit(model, weights=w0)
    toys = upper_limit(model, weights=w0, toys=n_toys, seed=seed, **kw)
    return asym, toys


@pytest.mark.study
def test_demo_toy_limit_agrees_with_asymptotic_fast(demo2_model):
    """150 toys per hypothesis and point, 4 points: a smoke-level agreement (25 %). About 2-3 min
    on 2 CPU cores, so outside CI: CI's toy-limit checks are the counting ones (against exact
    Poisson probabilities) and the fit job's toy limit on a counting workspace."""
    asym, toys = _toy_vs_asymptotic(demo2_model, 150, bands=False, max_points=4)
    assert toys.method == "toys" and len(toys.scan) <= 4
    assert abs(toys.observed / asym.observed - 1.0) < 0.25, (toys.observed, asym.observed)


def _study_2000_toys(model, label: str) -> tuple[UpperLimit, UpperLimit]:
    """Toy (2000 per hypothesis and tested point, 6 points) and asymptotic 95 % CLs limits on
    b-only Asimov data, printed with each point's CLs and binomial error (NSBI_TOY_SEED picks
    the toys' seed, default 3)."""
    seed = int(os.environ.get("NSBI_TOY_SEED", "3"))
    asym, toys = _toy_vs_asymptotic(model, 2000, seed=seed, bands=False, max_points=6)
    print(
        f"{label}, 95% CL upper limit (toy seed {seed}): toys {toys.observed:.5g}, "
        f"asymptotic {asym.observed:.5g}, ratio {toys.observed / asym.observed:.4f}"
    )
    for r in toys.scan:  # each tested point's CLs with its binomial error
        e_sb = math.sqrt(r["clsb"] * (1 - r["clsb"]) / r["n_sb"])
        e_b = math.sqrt(r["clb"] * (1 - r["clb"]) / r["n_b"])
        e = r["cls"] * math.hypot(e_sb / max(r["clsb"], 1e-12), e_b / max(r["clb"], 1e-12))
        print(
            f"  mu {r['mu']:.5g}: CLs+b {r['clsb']:.4f} CLb {r['clb']:.4f} CLs {r['cls']:.4f} +- {e:.4f}"
        )
    assert all(r["n_sb"] >= 1900 and r["n_b"] >= 1900 for r in toys.scan), toys.scan
    return toys, asym


@pytest.mark.study
@pytest.mark.timeout(5400)  # about 45 min on 2 idle cores: past the suite's 600 s default
def test_demo_toy_limit_agrees_with_asymptotic_2000_toys(demo2_model):
    """Done-when of issue 14: background-only Asimov on the exact demo workspace, the 95 % CL
    CLs limit from toys (2000 per hypothesis and tested point, nuisances from the conditional
    fit, auxiliary measurements resampled) within 10 % of the asymptotic one. Measured: +10.4 %
    (seed 3) and +12.0 % (seed 4, NSBI_TOY_SEED=4), each +-2 %: missed (docs/validation.md)."""
    toys, asym = _study_2000_toys(demo2_model, "demo")
    assert abs(toys.observed / asym.observed - 1.0) < 0.10, (toys.observed, asym.observed)


@pytest.mark.study
@pytest.mark.timeout(5400)  # 34 min on 2 idle cores
def test_demo_at_10x_luminosity_toy_limit_agrees_with_asymptotic_2000_toys():
    """The interference demo where the asymptotic_limit check passes: at 10x luminosity the
    limit (0.017) lies below the count's turning point (0.41). Measured: toys 3.7 % below the
    asymptotic limit (seed 3, about +-4 % from the toys; docs/validation.md)."""
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit.exact import exact_demo_workspace  # noqa: PLC0415

    ws = exact_demo_workspace(20000, n_nuisances=2, seed=1, luminosity=10.0)
    model = Model(ws, chunk_size=8192, storage_dtype=jnp.float64)
    toys, asym = _study_2000_toys(model, "demo at 10x luminosity")
    assert (
        "asymptotic_warning"
        not in upper_limit(model, weights=asimov_weights(model, {"mu": 0.0})).extra
    )
    assert abs(toys.observed / asym.observed - 1.0) < 0.10, (toys.observed, asym.observed)


@pytest.fixture(scope="module")
def linear_demo_model():
    """The demo's signal and background without interference (mu S + B, exact ratios): the
    regular control for the toy-against-asymptotic comparison."""
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit.exact import exact_demo_workspace  # noqa: PLC0415

    ws = exact_demo_workspace(20000, n_nuisances=2, seed=1, luminosity=1.0, linear=True)
    return Model(ws, chunk_size=8192, storage_dtype=jnp.float64)


def test_linear_demo_is_a_regular_model(linear_demo_model):
    """mu S + B: yield 400 + 100 mu (no turning point), an Asimov fit returns its mu, and the
    asymptotic limit carries no warning."""
    from sbi_engine.fit import fit  # noqa: PLC0415
    from sbi_engine.fit.limits import yield_turning_points  # noqa: PLC0415

    m = linear_demo_model
    for mu in (0.0, 1.0, 2.5):
        assert asimov_weights(m, {"mu": mu}).sum() == pytest.approx(400.0 + 100.0 * mu, rel=1e-9)
    assert fit(m, weights=asimov_weights(m, {"mu": 1.0})).values["mu"] == pytest.approx(
        1.0, abs=1e-4
    )
    assert yield_turning_points(m, "mu", 0.0, 2.0) == []
    ul = upper_limit(m, weights=asimov_weights(m, {"mu": 0.0}))
    assert "asymptotic_warning" not in ul.extra and ul.extra["at_bound"] == ["mu"]
    assert 0.2 < ul.observed < 0.45, ul.observed  # about 2 sigma_A = 2 x 0.16
    from sbi_engine.fit.exact import exact_demo_workspace  # noqa: PLC0415

    with pytest.raises(ValueError, match="linear=True makes weighted B events only"):
        exact_demo_workspace(100, n_nuisances=2, linear=True, observed=True)


@pytest.mark.study
@pytest.mark.timeout(5400)  # 6.3 min on 2 idle cores
def test_linear_demo_toy_limit_agrees_with_asymptotic_2000_toys(linear_demo_model):
    """The control of the 2000-toy study above on a regular model: the same demo signal and
    background without interference, the same 2000 toys per hypothesis and point. Where the
    yield is monotonic in mu the asymptotic limit holds within 10 % (measured: +1.3 % with
    seed 3, +0.4 % with seed 4; docs/validation.md)."""
    toys, asym = _study_2000_toys(linear_demo_model, "linear demo")
    assert abs(toys.observed / asym.observed - 1.0) < 0.10, (toys.observed, asym.observed)


def test_interference_yield_turns_and_the_asymptotic_limit_warns(demo2_model):
    """The demo's count mu S + sqrt(mu) (SBI - S - B) + B with S = 100, SBI = 372, B = 400 turns
    where d/d sqrt(mu) vanishes: sqrt(mu) = 128 / 200, mu = 0.4096 (analytic). The grid finds it
    to within one step; the asymptotic limit (0.814, above it) carries the warning, which the
    CLI prints (toys put this limit 11 +- 2 % higher: the 2000-toy study above)."""
    from backend.commands.fit import format_limit  # noqa: PLC0415
    from sbi_engine.fit.limits import yield_turning_points  # noqa: PLC0415

    (turn,) = yield_turning_points(demo2_model, "mu", 0.0, 2.0, n=401)
    assert abs(turn - 0.4096) <= 2.0 / 400, turn
    assert yield_turning_points(demo2_model, "mu", 0.5, 2.0) == []  # rising all the way
    ul = upper_limit(demo2_model, weights=asimov_weights(demo2_model, {"mu": 0.0}))
    assert ul.observed == pytest.approx(0.8142, abs=2e-3)
    (turn,) = ul.extra["yield_turning_points"]
    assert abs(turn - 0.4096) <= ul.expected[2] / 400
    assert "not monotonic in mu" in ul.extra["asymptotic_warning"]
    assert "toys" in ul.extra["asymptotic_warning"]
    assert "WARNING: the expected event count is not monotonic" in format_limit(ul)
