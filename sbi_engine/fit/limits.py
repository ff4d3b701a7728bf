"""One-sided test statistics, discovery significance and CLs upper limits (asymptotic and toys).

Conventions of Cowan, Cranmer, Gross, Vitells, "Asymptotic formulae for likelihood-based tests
of new physics", arXiv:1007.1727 (CCGV), with q = -2 ln L as everywhere in this package:

* ``q_mu`` (CCGV eq. 14): q(mu, theta-hat-hat) - q(mu-hat, theta-hat) if mu-hat <= mu, else 0;
* ``q~_mu`` (eq. 16): as q_mu, but for mu-hat < 0 the free fit is replaced by the conditional
  fit at mu = 0. With the POI bounded below at 0 (as every sqrt(mu) model here) the bounded
  free fit *is* that fit, so the fits give q~_mu directly;
* ``q_0`` (eq. 12): q(0, theta-hat-hat) - q(mu-hat, theta-hat) if mu-hat >= 0, else 0, with the
  discovery significance Z_0 = sqrt(q_0) (eq. 53) and p_0 = 1 - Phi(Z_0).

CLs = p_mu / (1 - p_b) with p_mu = P(q >= q_obs | mu) and 1 - p_b = P(q >= q_obs | 0). The upper
limit at confidence level CL is the mu where CLs(mu) = 1 - CL (root finding).

Asymptotic (CCGV section 3.8 and eqs. 65-66): with q_A(mu) the statistic on the Asimov data set
of mu' = 0 (sigma_A^2 = mu^2 / q_A), for q~ and q <= q_A
CLs+b = Phi(-sqrt q), CLb = Phi(sqrt q_A - sqrt q); for q > q_A
CLs+b = 1 - Phi((q + q_A) / (2 sqrt q_A)), CLb = 1 - Phi((q - q_A) / (2 sqrt q_A)).
The expected limits (median and the +-1, +-2 sigma bands, mu-hat = N sigma under b-only) solve
CLs_N(mu) = Phi(N - sqrt q_A(mu)) / Phi(N) = 1 - CL (the same for q_mu and q~_mu); with
a constant sigma they are sigma (N + Phi^-1(1 - alpha Phi(N))), eq. 89 for CLs.

Toys: at each tested mu, toys under s+b (mu, nuisances at their conditional fit to the data at
mu) and under b-only (0, nuisances at their conditional fit at 0), auxiliary measurements
resampled around those nuisance values (``toys.generate_toys``), each toy fitted free and at
mu (``toys.fit_toys``, vectorised) for its q~_mu.

The asymptotic q_A(mu) is parametrisation-invariant (a likelihood ratio): a sqrt(mu) model is
Gaussian in sqrt(mu) near 0 rather than in mu, and the formulas in terms of q and q_A still hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from ..precision import enable_float64
from .api import fit
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .toys import (
    ToyFits,
    ToySet,
    _padded_size,
    asimov_weights,
    conditional_start,
    fit_toys,
    generate_toys,
)
from .workspace import Workspace

__all__ = [
    "q_mu",
    "q_tilde_mu",
    "q_zero",
    "cls_asymptotic",
    "expected_cls",
    "TestStatistic",
    "test_statistic",
    "Discovery",
    "discovery",
    "UpperLimit",
    "upper_limit",
    "toy_cls",
    "yield_turning_points",
    "BANDS",
]

BANDS = (-2, -1, 0, 1, 2)  # expected-limit bands, in sigma of mu-hat under b-only


# ----------------------------------------------------------------------------- the statistics


def q_mu(q_cond: Any, q_free: Any, mu: float, mu_hat: Any) -> np.ndarray:
    """CCGV eq. 14: q(mu) - q_min if mu-hat <= mu, else 0 (clipped at 0 against rounding)."""
    t = np.clip(np.asarray(q_cond, float) - np.asarray(q_free, float), 0.0, None)
    return np.where(np.asarray(mu_hat, float) > mu, 0.0, t)


def q_tilde_mu(q_cond: Any, q_free: Any, q_zero_cond: Any, mu: float, mu_hat: Any) -> np.ndarray:
    """CCGV eq. 16: for mu-hat < 0 the reference is the fit at mu = 0 (``q_zero_cond``)."""
    mu_hat = np.asarray(mu_hat, float)
    ref = np.where(mu_hat < 0.0, np.asarray(q_zero_cond, float), np.asarray(q_free, float))
    t = np.clip(np.asarray(q_cond, float) - ref, 0.0, None)
    return np.where(mu_hat > mu, 0.0, t)


def q_zero(q_zero_cond: Any, q_free: Any, mu_hat: Any) -> np.ndarray:
    """CCGV eq. 12: q(0) - q_min if mu-hat >= 0, else 0."""
    t = np.clip(np.asarray(q_zero_cond, float) - np.asarray(q_free, float), 0.0, None)
    return np.where(np.asarray(mu_hat, float) < 0.0, 0.0, t)


def cls_asymptotic(q: float, q_asimov: float, tilde: bool = True) -> tuple[float, float, float]:
    """(CLs, CLs+b, CLb) of an observed q_mu (``tilde=False``) or q~_mu from q_A (CCGV eqs.
    59 and 66 with sqrt(q_A) = mu / sigma)."""
    q, qa = max(float(q), 0.0), max(float(q_asimov), 0.0)
    sq, sqa = math.sqrt(q), math.sqrt(qa)
    if not tilde or q <= qa or sqa == 0.0:
        clsb, clb = float(norm.sf(sq)), float(norm.cdf(sqa - sq))
    else:
        clsb = float(norm.sf((q + qa) / (2.0 * sqa)))
        clb = float(norm.sf((q - qa) / (2.0 * sqa)))
    return (clsb / clb if clb > 0 else float("nan")), clsb, clb


def expected_cls(q_asimov: float, n_sigma: float) -> float:
    """Expected CLs at mu-hat = N sigma under b-only: Phi(N - sqrt q_A) / Phi(N)."""
    sqa = math.sqrt(max(float(q_asimov), 0.0))
    return float(norm.cdf(n_sigma - sqa) / norm.cdf(n_sigma))


# ----------------------------------------------------------------------------- data sets and fits


def _model(target: Workspace | Model) -> Model:
    enable_float64()
    return target if isinstance(target, Model) else model_for(target)


@dataclass(frozen=True, eq=False)
class _Data:
    """A data set to fit: event weights (None: the model's data) and auxiliary values."""

    weights: Any
    aux: np.ndarray

    def fit(self, model: Model, **kw: Any) -> FitResult:
        return fit(model, weights=self.weights, aux=self.aux, **kw)


class _Profile:
    """Free fit and cached conditional fits q(mu, theta-hat-hat) on one data set."""

    def __init__(self, model: Model, data: _Data, poi: str, free: FitResult | None = None):
        self.model, self.data, self.poi = model, data, poi
        self.free = free if free is not None else data.fit(model)
        self._cond: dict[float, FitResult] = {}

    @property
    def mu_hat(self) -> float:
        return self.free.values[self.poi]

    def cond(self, mu: float) -> FitResult:
        mu = float(mu)
        if mu not in self._cond:
            start = self.free.theta.copy()
            if self._cond:  # the nearest fitted point is the better start
                near = min(self._cond, key=lambda m: abs(m - mu))
                start = self._cond[near].theta.copy()
            start[self.model.index[self.poi]] = mu
            r = self.data.fit(self.model, fixed={self.poi: mu}, init=start)
            if not r.converged:
                r2 = self.data.fit(self.model, fixed={self.poi: mu})
                r = r2 if r2.converged or r2.q_min < r.q_min else r
            self._cond[mu] = r
        return self._cond[mu]

    def q_tilde(self, mu: float) -> float:
        """q~_mu of this data set (the conditional fit at 0 when mu-hat < 0)."""
        q0 = self.cond(0.0).q_min if self.mu_hat < 0.0 else self.free.q_min
        return float(q_tilde_mu(self.cond(mu).q_min, self.free.q_min, q0, mu, self.mu_hat))

    def q_plain(self, mu: float) -> float:
        return float(q_mu(self.cond(mu).q_min, self.free.q_min, mu, self.mu_hat))


@dataclass(frozen=True)
class TestStatistic:
    """q_mu and q~_mu at one mu on one data set, with the fits' inputs."""

    mu: float
    mu_hat: float
    q_mu: float
    q_tilde_mu: float
    q_cond: float
    q_free: float
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


def _observed(model: Model, weights: Any, aux: Any) -> _Data:
    a = np.asarray(model.aux if aux is None else aux, dtype=np.float64)
    return _Data(weights, a)


def test_statistic(
    target: Workspace | Model,
    mu: float,
    *,
    poi: str | None = None,
    weights: Any = None,
    aux: Any = None,
) -> TestStatistic:
    """q_mu (eq. 14) and q~_mu (eq. 16) at ``mu`` on the data (or ``weights`` / ``aux``).

    With the POI bounded below at 0 the free fit cannot go below 0 and the two coincide except
    for mu-hat at the bound; give the POI a negative lower bound for the unbounded q_mu."""
    model = _model(target)
    poi = poi or model.poi_names[0]
    prof = _Profile(model, _observed(model, weights, aux), poi)
    ok = prof.free.converged and prof.cond(mu).converged
    return TestStatistic(
        float(mu),
        prof.mu_hat,
        prof.q_plain(mu),
        prof.q_tilde(mu),
        prof.cond(mu).q_min,
        prof.free.q_min,
        ok,
    )


test_statistic.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
TestStatistic.__test__ = False  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Discovery:
    """q_0 (eq. 12), Z_0 = sqrt(q_0) and p_0 = 1 - Phi(Z_0) (asymptotic)."""

    poi: str
    mu_hat: float
    q0: float
    significance: float
    p0: float
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self.__dict__)


def discovery(
    target: Workspace | Model, *, poi: str | None = None, weights: Any = None, aux: Any = None
) -> Discovery:
    """Discovery test of mu = 0 on the data (or ``weights`` / ``aux``)."""
    model = _model(target)
    poi = poi or model.poi_names[0]
    prof = _Profile(model, _observed(model, weights, aux), poi)
    c0 = prof.cond(0.0)
    q0 = float(q_zero(c0.q_min, prof.free.q_min, prof.mu_hat))
    z = math.sqrt(q0)
    return Discovery(
        poi, prof.mu_hat, q0, z, float(norm.sf(z)), prof.free.converged and c0.converged
    )


# ----------------------------------------------------------------------------- regularity


def yield_turning_points(
    target: Workspace | Model, poi: str, lo: float, hi: float, n: int = 401
) -> list[float]:
    """Where the expected unbinned event count turns as ``poi`` runs over [lo, hi] (other
    parameters at their initial values, nuisances at their auxiliary values), on a grid of ``n``.

    Interference makes the count fall, then rise (mu S + sqrt(mu) I + B with I < 0): distinct POI
    values predict the same count, the likelihood is not regular in the POI there, and the
    asymptotic formulas (Wald's approximation, CCGV section 3) can be off: on the exact demo the
    count turns at mu = 0.41 and toys put the 95 % CLs limit 11 +- 2 % above the asymptotic one
    (docs/validation.md). Linear or monotonic models have none."""
    model = _model(target)
    base = model.init.copy()
    base[model.n_free :] = model.aux
    grid = np.linspace(float(lo), float(hi), int(n))
    thetas = np.stack([model.theta({poi: float(m)}, base=base) for m in grid])
    nu = np.asarray(jax.vmap(lambda t: jnp.sum(model.amplitudes(t)))(jnp.asarray(thetas)))
    step = np.diff(nu)
    sign = np.where(np.abs(step) > 1e-9 * np.max(np.abs(nu)), np.sign(step), 0.0)
    nonzero = np.flatnonzero(sign)
    return [
        float(grid[j]) for i, j in zip(nonzero[:-1], nonzero[1:], strict=True) if sign[i] != sign[j]
    ]


def _asymptotic_caveat(model: Model, poi: str, lo: float, limits: list[float]) -> dict[str, Any]:
    """``extra`` entries of an asymptotic limit: the yield's turning points below the largest
    limit and, where there are any, a warning that names them and the remedy (toys)."""
    finite = [x for x in limits if math.isfinite(x)]
    if not finite:
        return {}
    top = max(finite)
    turns = yield_turning_points(model, poi, lo, top)
    out: dict[str, Any] = {"yield_turning_points": turns}
    if turns:
        where = ", ".join(f"{t:.3g}" for t in turns)
        out["asymptotic_warning"] = (
            f"the expected event count is not monotonic in {poi} on [{lo:g}, {top:.3g}] (it "
            f"turns at {poi} = {where}): the likelihood is not regular there and the asymptotic "
            "CLs formulas can misplace the limit (on the exact demo by 11 %); compute it with "
            "toys (compute.limits.method: toys, or nsbi fit --upper-limit --toys N)"
        )
    return out


# ----------------------------------------------------------------------------- upper limits


@dataclass(frozen=True)
class UpperLimit:
    """A CLs upper limit on ``poi`` at confidence level ``cl``.

    observed: the limit on the data; expected: {N: limit} for mu-hat = N sigma under b-only
    (N = 0 the median; -2, -1, +1, +2 the bands; ordered expected[-2] <= ... <= expected[2]);
    method: "asymptotic" or "toys"; for toys, ``n_toys`` per hypothesis and tested point and the
    scanned points ``scan`` [{mu, cls, clsb, clb, q_obs}] (expected bands: toys' quantiles of
    q~ under b-only at each point). ``extra`` holds method details (sigma_A at the limit,
    evaluations, seeds)."""

    poi: str
    cl: float
    method: str
    observed: float
    expected: Mapping[int, float]
    mu_hat: float
    n_toys: int = 0
    scan: tuple[Mapping[str, float], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def band(self) -> tuple[float, ...]:
        """(-2, -1, median, +1, +2) expected limits."""
        return tuple(self.expected[n] for n in BANDS)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "poi": self.poi,
                "cl": self.cl,
                "method": self.method,
                "observed": self.observed,
                "expected": {str(k): v for k, v in self.expected.items()},
                "mu_hat": self.mu_hat,
                "n_toys": self.n_toys,
                "scan": list(self.scan),
                **({"extra": dict(self.extra)} if self.extra else {}),
            }
        )


def _root(f: Callable[[float], float], start: float, lo: float, hi: float, rtol: float) -> float:
    """The mu in (lo, hi] where the decreasing f crosses 0, bracketing from ``start``."""
    a, b = lo, min(max(start, 1e-6 * (hi - lo)), hi)
    fb = f(b)
    while fb > 0.0:
        if b >= hi:
            return float("inf")  # not excluded inside the POI's range
        a, b = b, min(2.0 * b, hi)
        fb = f(b)
    while a == lo and b > lo:
        m = lo + 0.5 * (b - lo)
        if m - lo < 1e-9 * max(1.0, hi - lo):
            return float(b)
        if f(m) > 0.0:
            a = m
        else:
            b = m
    return float(brentq(f, a, b, rtol=rtol, xtol=1e-9 * max(1.0, hi - lo)))


def _b_only_asimov(model: Model, obs: _Profile) -> _Data:
    """Asimov data of mu' = 0 with the nuisances at their conditional fit to the data at 0."""
    t0 = obs.cond(0.0).theta
    params = dict(zip(model.names, t0))
    return _Data(asimov_weights(model, params), np.asarray(t0[model.n_free :], dtype=np.float64))


def upper_limit(
    target: Workspace | Model,
    *,
    cl: float = 0.95,
    poi: str | None = None,
    weights: Any = None,
    aux: Any = None,
    toys: int = 0,
    seed: int = 0,
    rtol: float = 1e-4,
    batch: int = 100,
    max_points: int = 8,
    bands: bool = True,
) -> UpperLimit:
    """The CLs upper limit on ``poi`` (default the first POI) at ``cl``, with q~_mu.

    Asymptotic (``toys=0``): observed and expected (+-1, +-2 sigma) limits from q~_mu and q_A
    of the b-only Asimov data (one conditional fit per tested mu and data set; brentq to
    relative ``rtol``). ``toys > 0``: CLs from ``toys`` pseudo-experiments per hypothesis at each
    tested mu (see :func:`toy_cls`), the observed root by bisection/secant in log CLs on at most
    ``max_points`` tested points, started from the asymptotic limit; with ``bands`` two more
    points (at the asymptotic -2 / +2 sigma limits) and the expected limits interpolated from
    the b-only toys' q~ quantiles at the tested points (NaN where not bracketed).
    """
    model = _model(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]
    lo, hi = float(model.lower[p]), float(model.upper[p])
    alpha = 1.0 - float(cl)
    obs = _Profile(model, _observed(model, weights, aux), poi)
    asimov = _Profile(model, _b_only_asimov(model, obs), poi)

    def q_a(mu: float) -> float:
        return asimov.q_tilde(mu)

    start = max(obs.mu_hat, 0.0) + 1.0
    sig = obs.free.errors.get(poi, float("nan"))
    if math.isfinite(sig) and sig > 0:
        start = max(obs.mu_hat, 0.0) + 2.0 * sig
    observed = _root(
        lambda m: cls_asymptotic(obs.q_tilde(m), q_a(m))[0] - alpha, start, lo, hi, rtol
    )

    def exp_f(n: int) -> Callable[[float], float]:
        return lambda m: expected_cls(q_a(m), n) - alpha

    expected = {n: _root(exp_f(n), start, lo, hi, rtol) for n in BANDS}
    m_ref = expected[0]
    extra = {
        "sigma_A_at_median": m_ref / math.sqrt(q_a(m_ref)) if q_a(m_ref) > 0 else float("nan"),
        "n_conditional_fits": len(obs._cond) + len(asimov._cond),
        "converged": bool(
            obs.free.converged
            and all(r.converged for r in obs._cond.values())
            and all(r.converged for r in asimov._cond.values())
        ),
        "at_bound": list(obs.free.at_bound),
        **_asymptotic_caveat(model, poi, lo, [observed, *expected.values()]),
    }
    asym = UpperLimit(poi, float(cl), "asymptotic", observed, expected, obs.mu_hat, extra=extra)
    if toys <= 0:
        return asym
    return _toy_limit(model, obs, asym, toys, seed, alpha, lo, hi, batch, max_points, bands)


# ----------------------------------------------------------------------------- toys


def _pad(toys: ToySet, n: int) -> ToySet:
    """``toys`` with their gathered arrays padded (weight 0) to ``n`` columns."""
    extra = n - toys.index.shape[1]
    if extra <= 0:
        return toys
    pad = ((0, 0), (0, extra))
    return ToySet(toys.theta_true, np.pad(toys.index, pad), np.pad(toys.counts, pad), toys.aux)


class _ToyCLs:
    """CLs(mu) from toys, with the b-only toys (and their free fits) shared by all tested mu."""

    def __init__(self, model: Model, obs: _Profile, n_toys: int, seed: int, batch: int):
        self.model, self.obs, self.n, self.seed, self.batch = model, obs, n_toys, seed, batch
        self.poi = obs.poi
        self.p = model.index[obs.poi]
        b_params = dict(zip(model.names, obs.cond(0.0).theta))
        self.b_toys = generate_toys(model, n_toys, seed + 1, b_params)
        # one gathered shape for every tested mu: one compiled toy fit (a compilation costs more
        # than a thousand fits); s+b toy sets larger than this get their own
        self.pad = _padded_size(int(math.ceil(1.25 * self.b_toys.index.shape[1])))
        self.b_toys = _pad(self.b_toys, self.pad)
        self.b_free = self._free(self.b_toys)
        self.points: dict[float, dict[str, Any]] = {}

    def _free(self, toys: ToySet) -> ToyFits:
        return fit_toys(self.model, toys, batch=self.batch)

    def _q_tilde(self, toys: ToySet, free: ToyFits, mu: float) -> tuple[np.ndarray, np.ndarray]:
        """q~_mu per toy and its validity (both fits converged)."""
        cond = fit_toys(
            self.model,
            toys,
            fixed={self.poi: mu},
            batch=self.batch,
            init=conditional_start(self.model, free, self.poi, mu),
        )
        q_free = free.q_min.copy()
        # a free fit that lies above the conditional one missed its minimum: refit from there
        missed = cond.converged & (cond.q_min < q_free - 1e-6)
        if missed.any():
            sel = np.flatnonzero(missed)
            # padded to a whole batch: fit_toys compiles one fit per batch size
            rows = np.resize(sel, max(sel.size, min(self.batch, len(q_free))))
            sub = ToySet(toys.theta_true, toys.index[rows], toys.counts[rows], toys.aux[rows])
            again = fit_toys(self.model, sub, batch=self.batch, init=cond.theta[rows])
            q2 = np.where(again.converged, again.q_min, np.inf)[: sel.size]
            q_free[sel] = np.minimum(q_free[sel], q2)
        mu_hat = free.theta[:, self.p]
        t = q_mu(cond.q_min, q_free, mu, mu_hat)  # the bounded free fit: q~ (POI >= 0)
        return t, free.converged & cond.converged

    def __call__(self, mu: float) -> dict[str, Any]:
        mu = float(mu)
        if mu in self.points:
            return self.points[mu]
        params = dict(zip(self.model.names, self.obs.cond(mu).theta))
        sb_toys = generate_toys(self.model, self.n, self.seed, params, pad_to=self.pad)
        sb_free = self._free(sb_toys)
        q_sb, ok_sb = self._q_tilde(sb_toys, sb_free, mu)
        q_b, ok_b = self._q_tilde(self.b_toys, self.b_free, mu)
        q_obs = self.obs.q_tilde(mu)
        q_sb, q_b = q_sb[ok_sb], q_b[ok_b]
        clsb = float(np.mean(q_sb >= q_obs)) if q_sb.size else float("nan")
        clb = float(np.mean(q_b >= q_obs)) if q_b.size else float("nan")
        row = {
            "mu": mu,
            "q_obs": q_obs,
            "clsb": clsb,
            "clb": clb,
            "cls": clsb / clb if clb > 0 else float("nan"),
            "n_sb": int(q_sb.size),
            "n_b": int(q_b.size),
            "_q_sb": q_sb,
            "_q_b": q_b,
        }
        self.points[mu] = row
        return row

    def expected_cls(self, mu: float, n_sigma: int) -> float:
        """CLs at the b-only toys' q~ quantile for mu-hat = N sigma (q~ falls as mu-hat rises)."""
        row = self(mu)
        q_b, q_sb = row["_q_b"], row["_q_sb"]
        if not q_b.size or not q_sb.size:
            return float("nan")
        qn = float(np.quantile(q_b, norm.sf(n_sigma)))
        clb = float(np.mean(q_b >= qn))
        return float(np.mean(q_sb >= qn)) / clb if clb > 0 else float("nan")


def toy_cls(
    target: Workspace | Model,
    mu: float,
    n_toys: int,
    *,
    seed: int = 0,
    poi: str | None = None,
    weights: Any = None,
    aux: Any = None,
    batch: int = 100,
) -> dict[str, float]:
    """CLs, CLs+b and CLb of q~_mu at ``mu`` from ``n_toys`` toys per hypothesis."""
    model = _model(target)
    poi = poi or model.poi_names[0]
    obs = _Profile(model, _observed(model, weights, aux), poi)
    row = _ToyCLs(model, obs, n_toys, seed, batch)(mu)
    return to_jsonable({k: v for k, v in row.items() if not k.startswith("_")})


def _log_root(
    f: Callable[[float], float], x0: float, lo: float, hi: float, n_max: int, rtol: float = 0.01
) -> float:
    """Crossing of log(CLs(mu) / alpha) = 0 from noisy evaluations: bracket from ``x0`` (steps of
    20 %), then secant steps in log CLs inside the bracket to a bracket of relative width
    ``rtol``; at most ``n_max`` evaluations."""
    pts: dict[float, float] = {}

    def g(x: float) -> float:
        if x not in pts:
            pts[x] = f(x)
        return pts[x]

    a = b = min(max(x0, lo + 1e-6 * (hi - lo)), hi)
    ga = gb = g(a)
    while gb > 0 and len(pts) < n_max and b < hi:
        a, ga = b, gb
        b = min(b * 1.2, hi)
        gb = g(b)
    while ga <= 0 and len(pts) < n_max and a > lo:
        b, gb = a, ga
        a = max(a / 1.2, lo)
        ga = g(a)
    if not (ga > 0 >= gb):
        return float("nan")
    while len(pts) < n_max and b - a > rtol * b:  # finer is below the toys' resolution
        x = a + (b - a) * ga / (ga - gb)
        x = min(max(x, a + 0.1 * (b - a)), b - 0.1 * (b - a))
        gx = g(x)
        if gx > 0:
            a, ga = x, gx
        else:
            b, gb = x, gx
    return float(a + (b - a) * ga / (ga - gb))


def _interp_root(xs: list[float], ys: list[float]) -> float:
    """First crossing from > 0 to <= 0 of the sampled ys(xs), linear between the samples."""
    for (a, ga), (b, gb) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if ga > 0 >= gb:
            return float(a + (b - a) * ga / (ga - gb))
    return float("nan")


def _toy_limit(
    model: Model,
    obs: _Profile,
    asym: UpperLimit,
    n_toys: int,
    seed: int,
    alpha: float,
    lo: float,
    hi: float,
    batch: int,
    max_points: int,
    bands: bool,
) -> UpperLimit:
    engine = _ToyCLs(model, obs, n_toys, seed, batch)

    def log_ratio(value: float) -> float:
        v = max(value, 1e-300) if math.isfinite(value) else 1e-300
        return math.log(v / alpha)

    observed = _log_root(lambda m: log_ratio(engine(m)["cls"]), asym.observed, lo, hi, max_points)
    expected: dict[int, float] = {}
    if bands:
        # the bands from the b-only toys' q~ quantiles, interpolated between tested points
        # (no root search of their own): test the asymptotic band's ends too
        for x in (0.9 * asym.expected[-2], 1.1 * asym.expected[2]):
            if math.isfinite(x) and lo < x <= hi:
                engine(x)
        xs = sorted(engine.points)
        for n in BANDS:
            expected[n] = _interp_root(xs, [log_ratio(engine.expected_cls(x, n)) for x in xs])
    scan = tuple(
        {k: v for k, v in row.items() if not k.startswith("_")}
        for _, row in sorted(engine.points.items())
    )
    extra = {
        "asymptotic_observed": asym.observed,
        "seed": seed,
        "n_points": len(scan),
        "yield_turning_points": asym.extra.get("yield_turning_points", []),
    }
    return UpperLimit(obs.poi, asym.cl, "toys", observed, expected, obs.mu_hat, n_toys, scan, extra)
