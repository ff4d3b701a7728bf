r"""A toy off-shell H*->ZZ->4l simulator whose densities and yields are known in closed form.

Why: every piece of the workbench (ratio ensembles, calibration, the unbinned fit) needs a
truth to be tested against. This module is that truth.

Model
-----
Observables x = (m4l, cos_theta1, cos_theta2, phi) on the box
[220, 1000] GeV x [-1, 1] x [-1, 1] x [-pi, pi].

Signal and background are described by real, factorised amplitudes

    A_c(x) = sqrt(N_c) * a_c^m(m4l) * a_c^1(cos_theta1) * a_c^2(cos_theta2) * a_c^phi(phi),  c in {S, B}

with (t = m4l - 220 GeV, L = 780 GeV)

    a^m(t)      = exp(-t / (2 tau)) / sqrt(Z_m)                  (falling spectrum, slope 1/tau)
    a^i(c)      = (p0 + p1 c + p2 c^2) / sqrt(Z_i)               (angles: polynomial amplitudes)
    a^phi(phi)  = (q0 + q1 cos phi + q2 cos 2 phi) / sqrt(Z_phi)

each factor normalised so that |a|^2 integrates to 1, hence N_c is the yield of |A_c|^2.
With a relative strong phase delta(m4l), cos delta(t) = d0 + d1 t / L (negative: destructive
interference that grows with mass, as in the real off-shell case), the unnormalised
distributions are

    f_S = A_S^2,   f_B = A_B^2,   f_I = 2 cos(delta) A_S A_B,   f_SBI = f_S + f_B + f_I,
    f(x | mu) = mu f_S + sqrt(mu) f_I + f_B
              = (mu - sqrt mu) f_S + sqrt(mu) f_SBI + (1 - sqrt mu) f_B.

Non-negativity (proof). For any real a, b and |cos delta| <= k < 1,
a^2 + b^2 + 2 cos(delta) a b >= a^2 + b^2 - k (a^2 + b^2) = (1 - k)(a^2 + b^2) >= 0, using
2|ab| <= a^2 + b^2. With a = sqrt(mu) A_S, b = A_B this gives f(x|mu) >= (1-k)(mu f_S + f_B)
for every mu >= 0, in particular f_SBI = f(x|1) >= (1-k)(f_S + f_B) > 0. f_S and f_B are
squares. Here k = max |cos delta| = 0.6, so p_SBI never drops below 40 % of the S+B mixture and
its ratios to p_S, p_B stay moderate. Because the amplitudes are strictly positive on the box
(checked on construction) and cos delta < 0, f_I < 0 everywhere: f_SBI <= f_S + f_B, which is
what makes exact accept/reject sampling of SBI (and of f(x|mu)) from the S+B mixture possible.

Every integral is closed form: the mass factors are truncated exponentials (also times the
linear cos delta), the angular ones polynomial moments int c^k dc = 2/(k+1) (k even) and
Fourier orthogonality for phi. So the yields nu_S = N_S, nu_B = N_B,
nu_I = 2 sqrt(N_S N_B) int cos(delta) a_S a_B dx and nu_SBI = nu_S + nu_B + nu_I are exact.

Nuisance parameters
-------------------
Each nuisance alpha_k acts on amplitude parameters of S and/or B: multiplicatively
(param * (1 + size)^alpha; used for the yields N_c and the mass slopes tau_c) or additively
(param + size * alpha; polynomial / Fourier coefficients, i.e. tilts of the angles). This is
exact at alpha = +-1 by construction and defines a smooth truth for continuous alpha. Because
SBI is built from the S and B amplitudes, a change of S or B also moves the SBI yield and,
unless it is a common rescaling, the SBI shape. `Nuisance.shape_processes` and
`Nuisance.norm_processes` say exactly which processes change shape / yield.

Base nuisances (the first n_nuisances are used; beyond five, small extra ones are generated
deterministically, named npKKK_<S|B>_<param>[_c<i>][_norm]: a 2-4 % shift of one angular
amplitude coefficient, a mass slope or a yield, every third one also with a 2-3.5 % yield
effect, sizes shrinking like 1/sqrt(1 + (k-5)/16) so hundreds of them stay valid in toys):

1. m4l_scale  energy-scale-like: tau_S and tau_B x 1.06^alpha (shape of S, B, SBI; SBI yield).
2. bkg_norm   B yield x 1.10^alpha and a +0.06 alpha tilt of the B cos_theta1 amplitude.
3. gg_scale   S and B yields x 1.08^alpha (a common rescaling, so SBI x 1.08 too) and a
              +0.08 alpha cos phi term in the S amplitude (shape of S and SBI).
4. lumi       all yields x 1.025^alpha (pure normalisation).
5. sig_shape  tau_S x 0.92^alpha and +0.05 alpha c^2 term of the S cos_theta2 amplitude.

Sampling
--------
S and B are drawn exactly (inverse CDF in m4l, accept/reject in each angle); SBI and the
mixture f(x|mu) by accept/reject from the S+B mixture (acceptance f / (mu f_S + f_B) <= 1).
Weighted samples draw the same process from a broadened model (damped angular modulations,
slower mass fall-off) whose density is also closed form, so the importance weights are exact,
positive and within a factor ~3 of each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sbi_engine.sample import Sample
from sbi_engine.sampling import accept_reject_1d

__all__ = [
    "OBSERVABLES",
    "PROCESSES",
    "M_LOW",
    "M_HIGH",
    "BOUNDS",
    "Nuisance",
    "DemoProblem",
    "default_problem",
    "poi_coefficients",
]

OBSERVABLES: tuple[str, ...] = ("m4l", "cos_theta1", "cos_theta2", "phi")
PROCESSES: tuple[str, ...] = ("S", "SBI", "B")
M_LOW, M_HIGH = 220.0, 1000.0
_L = M_HIGH - M_LOW
BOUNDS: tuple[tuple[float, float], ...] = (
    (M_LOW, M_HIGH),
    (-1.0, 1.0),
    (-1.0, 1.0),
    (-math.pi, math.pi),
)

# Strong phase: cos delta(t) = _COS_D0 + _COS_D1 * t / L, from -0.3 at 220 GeV to -0.6 at 1 TeV.
_COS_D0, _COS_D1 = -0.3, -0.3
_MIN_AMPLITUDE = 0.15  # angular amplitude factors must stay above this on their interval
_MAX_NUISANCES = 500
# Importance-sampling proposal: angular modulations damped, mass spectrum falling more slowly.
_PROPOSAL_DAMPING, _PROPOSAL_TAU_FACTOR = 0.7, 1.1


def poi_coefficients(mu: float) -> dict[str, float]:
    """m_c(mu) with nu(mu) p(x|mu) = sum_c m_c(mu) nu_c p_c(x): S, SBI, B -> mu-sqrt(mu), sqrt(mu), 1-sqrt(mu)."""
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    s = math.sqrt(mu)
    return {"S": mu - s, "SBI": s, "B": 1.0 - s}


# --------------------------------------------------------------------------- amplitude maths


@dataclass(frozen=True)
class _Amplitude:
    """Parameters of one real amplitude (S or B)."""

    norm: float  # yield of |A|^2
    tau: float  # GeV; |a^m|^2 ~ exp(-t / tau)
    cos1: tuple[float, float, float]  # polynomial coefficients p0 + p1 c + p2 c^2
    cos2: tuple[float, float, float]
    phi: tuple[float, float, float]  # Fourier cos coefficients q0 + q1 cos phi + q2 cos 2phi


_BASE = {
    "S": _Amplitude(
        norm=100.0, tau=250.0, cos1=(1.0, 0.0, -0.35), cos2=(1.0, 0.0, -0.35), phi=(1.0, 0.25, 0.0)
    ),
    "B": _Amplitude(
        norm=400.0, tau=130.0, cos1=(1.0, 0.2, 0.2), cos2=(1.0, -0.2, 0.2), phi=(1.0, -0.15, 0.1)
    ),
}


def _exp_moments(k: float) -> tuple[float, float]:
    """(int_0^L e^{-k t} dt, int_0^L t e^{-k t} dt) for k > 0."""
    e = math.exp(-k * _L)
    i0 = -math.expm1(-k * _L) / k
    i1 = (1.0 - e * (1.0 + k * _L)) / (k * k)
    return i0, i1


def _poly_overlap(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    """int_{-1}^{1} P(c) Q(c) dc for polynomial coefficient tuples (lowest order first)."""
    prod = np.polynomial.polynomial.polymul(p, q)
    return float(sum(c * 2.0 / (j + 1) for j, c in enumerate(prod) if j % 2 == 0))


def _fourier_overlap(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    """int_{-pi}^{pi} (sum p_k cos k phi)(sum q_k cos k phi) dphi (orthogonality)."""
    return 2.0 * math.pi * p[0] * q[0] + math.pi * sum(a * b for a, b in zip(p[1:], q[1:]))


def _poly_extrema(coeffs: tuple[float, ...]) -> tuple[float, float]:
    """Exact (min, max) of a polynomial on [-1, 1]: endpoints and real critical points."""
    pts = [-1.0, 1.0]
    deriv = np.polynomial.polynomial.polyder(coeffs)
    if np.any(deriv != 0):
        for r in np.polynomial.polynomial.polyroots(deriv):
            if abs(r.imag) < 1e-12 and -1.0 <= r.real <= 1.0:
                pts.append(float(r.real))
    vals = np.polynomial.polynomial.polyval(np.array(pts), coeffs)
    return float(vals.min()), float(vals.max())


def _phi_as_poly(q: tuple[float, ...]) -> tuple[float, ...]:
    """q0 + q1 cos phi + q2 cos 2phi as a polynomial in u = cos phi (Chebyshev series)."""
    return tuple(np.polynomial.chebyshev.cheb2poly(q))


@dataclass(frozen=True)
class _Model:
    """Amplitudes of S and B at one nuisance point, with their closed-form normalisations."""

    S: _Amplitude
    B: _Amplitude

    def amp(self, c: str) -> _Amplitude:
        return self.S if c == "S" else self.B

    def z(self, c: str) -> tuple[float, float, float, float]:
        """Integrals of the squared unnormalised factors (mass, cos1, cos2, phi)."""
        a = self.amp(c)
        return (
            _exp_moments(1.0 / a.tau)[0],
            _poly_overlap(a.cos1, a.cos1),
            _poly_overlap(a.cos2, a.cos2),
            _fourier_overlap(a.phi, a.phi),
        )

    def interference_yield(self) -> float:
        s, b = self.S, self.B
        zs, zb = self.z("S"), self.z("B")
        i0, i1 = _exp_moments(0.5 / s.tau + 0.5 / b.tau)
        mass = (_COS_D0 * i0 + _COS_D1 * i1 / _L) / math.sqrt(zs[0] * zb[0])
        ang = (
            _poly_overlap(s.cos1, b.cos1)
            / math.sqrt(zs[1] * zb[1])
            * _poly_overlap(s.cos2, b.cos2)
            / math.sqrt(zs[2] * zb[2])
            * _fourier_overlap(s.phi, b.phi)
            / math.sqrt(zs[3] * zb[3])
        )
        return 2.0 * math.sqrt(s.norm * b.norm) * mass * ang

    def amplitude(self, c: str, x: np.ndarray, cos_phi: np.ndarray | None = None) -> np.ndarray:
        """A_c(x) (> 0 on the box); x is float64 (n, 4) inside the box. cos_phi may be passed
        precomputed (it is shared by S and B)."""
        a = self.amp(c)
        z = self.z(c)
        pv = np.polynomial.polynomial.polyval
        u = np.cos(x[:, 3]) if cos_phi is None else cos_phi
        const = math.sqrt(a.norm / (z[0] * z[1] * z[2] * z[3]))
        val = np.exp(-(x[:, 0] - M_LOW) / (2.0 * a.tau))
        val *= pv(x[:, 1], a.cos1)
        val *= pv(x[:, 2], a.cos2)
        val *= pv(
            u, _phi_as_poly(a.phi)
        )  # q0 + q1 cos phi + q2 cos 2phi as a polynomial in cos phi
        val *= const
        return val

    def check(self, where: str) -> None:
        for c in ("S", "B"):
            a = self.amp(c)
            if not (a.norm > 0 and a.tau > 0):
                raise ValueError(
                    f"{where}: {c} yield {a.norm:.4g} and slope tau {a.tau:.4g} must be > 0"
                )
            for label, poly in (
                ("cos_theta1", a.cos1),
                ("cos_theta2", a.cos2),
                ("phi", _phi_as_poly(a.phi)),
            ):
                lo, _ = _poly_extrema(poly)
                if lo < _MIN_AMPLITUDE:
                    raise ValueError(
                        f"{where}: the {c} amplitude in {label} falls to {lo:.3f} (< {_MIN_AMPLITUDE}); "
                        "the nuisance values are too far from 0 for this toy model"
                    )


# --------------------------------------------------------------------------- nuisances


@dataclass(frozen=True)
class _Effect:
    component: str  # "S" or "B"
    param: str  # "norm", "tau", "cos1", "cos2", "phi"
    index: int  # coefficient index for the polynomial / Fourier params
    size: float
    mode: str  # "mul": param * (1 + size)^alpha ; "add": param + size * alpha


@dataclass(frozen=True)
class Nuisance:
    """A nuisance parameter of the demo problem.

    processes: processes whose yield or shape changes; has_shape / has_norm: whether any
    process changes shape / yield; shape_processes / norm_processes: exactly which.
    """

    name: str
    processes: tuple[str, ...]
    has_shape: bool
    has_norm: bool
    shape_processes: tuple[str, ...] = ()
    norm_processes: tuple[str, ...] = ()


_BASE_NUISANCES: tuple[tuple[str, tuple[_Effect, ...]], ...] = (
    ("m4l_scale", (_Effect("S", "tau", 0, 0.06, "mul"), _Effect("B", "tau", 0, 0.06, "mul"))),
    ("bkg_norm", (_Effect("B", "norm", 0, 0.10, "mul"), _Effect("B", "cos1", 1, 0.06, "add"))),
    (
        "gg_scale",
        (
            _Effect("S", "norm", 0, 0.08, "mul"),
            _Effect("B", "norm", 0, 0.08, "mul"),
            _Effect("S", "phi", 1, 0.08, "add"),
        ),
    ),
    ("lumi", (_Effect("S", "norm", 0, 0.025, "mul"), _Effect("B", "norm", 0, 0.025, "mul"))),
    ("sig_shape", (_Effect("S", "tau", 0, -0.08, "mul"), _Effect("S", "cos2", 2, 0.05, "add"))),
)

_EXTRA_SLOTS = (
    ("cos1", 1),
    ("cos2", 1),
    ("phi", 1),
    ("tau", 0),
    ("cos1", 2),
    ("cos2", 2),
    ("phi", 2),
    ("norm", 0),
)


def _extra_nuisance(k: int) -> tuple[str, tuple[_Effect, ...]]:
    """Deterministic small extra nuisance number k (k >= len(_BASE_NUISANCES)).

    They cycle over S/B and eight amplitude parameters; sizes shrink like 1/sqrt(1 + i/16) so
    that even hundreds of them drawn at once (toys) keep every amplitude safely positive. The
    effect of nuisance k depends on k only, not on how many nuisances the problem has.
    """
    i = k - len(_BASE_NUISANCES)
    comp = "SB"[i % 2]
    param, index = _EXTRA_SLOTS[(i // 2) % len(_EXTRA_SLOTS)]
    sign = 1.0 if (i // 3) % 2 == 0 else -1.0
    shrink = 1.0 / math.sqrt(1.0 + i / 16.0)
    size = sign * (0.02 + 0.01 * (i % 3)) * shrink
    mode = "mul" if param in ("tau", "norm") else "add"
    if param == "norm":
        size = abs(size)
    effects = [_Effect(comp, param, index, size, mode)]
    name = f"np{k:03d}_{comp}_{param}" + (f"_c{index}" if param not in ("tau", "norm") else "")
    if i % 3 == 0 and param != "norm":
        effects.append(_Effect(comp, "norm", 0, (0.02 + 0.005 * (i % 4)) * shrink, "mul"))
        name += "_norm"
    return name, tuple(effects)


def _shift(value: float, eff: _Effect, a: float) -> float:
    return value * (1.0 + eff.size) ** a if eff.mode == "mul" else value + eff.size * a


def _apply(amp: _Amplitude, effects: list[tuple[_Effect, float]]) -> _Amplitude:
    """The amplitude parameters with every (effect, alpha) applied in turn."""
    scalars = {"norm": amp.norm, "tau": amp.tau}
    coeffs = {"cos1": list(amp.cos1), "cos2": list(amp.cos2), "phi": list(amp.phi)}
    for eff, a in effects:
        if eff.param in scalars:
            scalars[eff.param] = _shift(scalars[eff.param], eff, a)
        else:
            coeffs[eff.param][eff.index] = _shift(coeffs[eff.param][eff.index], eff, a)

    def three(c: list[float]) -> tuple[float, float, float]:
        return c[0], c[1], c[2]  # each list was copied from a 3-tuple and only edited in place

    return _Amplitude(
        scalars["norm"],
        scalars["tau"],
        three(coeffs["cos1"]),
        three(coeffs["cos2"]),
        three(coeffs["phi"]),
    )


# --------------------------------------------------------------------------- the problem


def _as_x(x: np.ndarray | Sample) -> np.ndarray:
    arr = x.features if isinstance(x, Sample) else x
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(OBSERVABLES):
        raise ValueError(
            f"x must have shape (n, {len(OBSERVABLES)}) for {OBSERVABLES}, got {arr.shape}"
        )
    return arr


def _inside(x: np.ndarray) -> np.ndarray:
    ok = np.ones(x.shape[0], dtype=bool)
    for j, (lo, hi) in enumerate(BOUNDS):
        ok &= (x[:, j] >= lo) & (x[:, j] <= hi)
    return ok


@dataclass(frozen=True)
class DemoProblem:
    """The demo simulator: S, SBI, B with exact densities, yields and nuisance effects.

    n_nuisances: how many nuisance parameters (5 named base ones, then generated small ones).
    luminosity: multiplies every yield (a handle to make fits more or less sensitive).
    alpha arguments are mappings {nuisance name: value}; missing names mean 0. Values +-1 are
    the +-1 sigma variations; any moderate continuous value is an exact (smooth) truth too.
    """

    n_nuisances: int = 3
    luminosity: float = 1.0

    def __post_init__(self) -> None:
        if (
            not (0 <= int(self.n_nuisances) <= _MAX_NUISANCES)
            or int(self.n_nuisances) != self.n_nuisances
        ):
            raise ValueError(
                f"n_nuisances must be an integer in [0, {_MAX_NUISANCES}], got {self.n_nuisances}"
            )
        if not self.luminosity > 0:
            raise ValueError(f"luminosity must be > 0, got {self.luminosity}")

    # ------------------------------------------------------------------ nuisances

    @cached_property
    def _nuisance_effects(self) -> dict[str, tuple[_Effect, ...]]:
        out: dict[str, tuple[_Effect, ...]] = {}
        for k in range(self.n_nuisances):
            name, effects = _BASE_NUISANCES[k] if k < len(_BASE_NUISANCES) else _extra_nuisance(k)
            out[name] = effects
        return out

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        return tuple(self._nuisance_effects)

    @cached_property
    def nuisances(self) -> tuple[Nuisance, ...]:
        """Nuisances with their effects classified from the exact yields and densities."""
        probe = self._probe_points
        out = []
        for name in self.nuisance_names:
            shape, norm = [], []
            for c in PROCESSES:
                y0 = self.yield_(c)
                lp0 = self.log_density(c, probe)
                for d in (-1.0, 1.0):
                    if abs(self.yield_(c, {name: d}) / y0 - 1.0) > 1e-12 and c not in norm:
                        norm.append(c)
                    if (
                        np.max(np.abs(self.log_density(c, probe, {name: d}) - lp0)) > 1e-9
                        and c not in shape
                    ):
                        shape.append(c)
            procs = tuple(c for c in PROCESSES if c in shape or c in norm)
            out.append(Nuisance(name, procs, bool(shape), bool(norm), tuple(shape), tuple(norm)))
        return tuple(out)

    @cached_property
    def _probe_points(self) -> np.ndarray:
        rng = np.random.default_rng(12345)
        lo = np.array([b[0] for b in BOUNDS])
        hi = np.array([b[1] for b in BOUNDS])
        return lo + (hi - lo) * rng.random((64, len(OBSERVABLES)))

    def nuisance(self, name: str) -> Nuisance:
        for n in self.nuisances:
            if n.name == name:
                return n
        raise KeyError(f"unknown nuisance {name!r}; this problem has {list(self.nuisance_names)}")

    def _model(self, alpha: Mapping[str, float] | None) -> _Model:
        alpha = dict(alpha or {})
        unknown = sorted(set(alpha) - set(self._nuisance_effects))
        if unknown:
            raise ValueError(
                f"unknown nuisance(s) {unknown}; this problem has {list(self.nuisance_names)}"
            )
        key = tuple(sorted((k, float(v)) for k, v in alpha.items() if float(v) != 0.0))
        return self._model_cached(key)

    def _model_cached(self, key: tuple[tuple[str, float], ...]) -> _Model:
        cache = self.__dict__.setdefault("_model_cache", {})
        if key not in cache:
            per_comp: dict[str, list[tuple[_Effect, float]]] = {"S": [], "B": []}
            for name, a in key:
                if not math.isfinite(a):
                    raise ValueError(f"nuisance {name} = {a} is not finite")
                for eff in self._nuisance_effects[name]:
                    per_comp[eff.component].append((eff, a))
            lumi = self.luminosity
            s = _apply(_BASE["S"], per_comp["S"])
            b = _apply(_BASE["B"], per_comp["B"])
            s = _Amplitude(s.norm * lumi, s.tau, s.cos1, s.cos2, s.phi)
            b = _Amplitude(b.norm * lumi, b.tau, b.cos1, b.cos2, b.phi)
            model = _Model(s, b)
            try:
                model.check("nuisance values")
            except ValueError as exc:
                big = sorted(key, key=lambda kv: -abs(kv[1]))[:5]
                more = f" and {len(key) - 5} more" if len(key) > 5 else ""
                raise ValueError(f"{exc} (largest: {dict(big)}{more})") from None
            if len(cache) > 4096:
                cache.clear()
            cache[key] = model
        return cache[key]

    def to_dict(self) -> dict:
        """JSON-able summary: settings, nominal yields and every nuisance's exact +-1 yield ratios."""
        return {
            "n_nuisances": self.n_nuisances,
            "luminosity": self.luminosity,
            "observables": list(OBSERVABLES),
            "bounds": [list(b) for b in BOUNDS],
            "yields": {c: self.yield_(c) for c in PROCESSES},
            "interference_yield": self.interference_yield(),
            "nuisances": [
                {
                    "name": n.name,
                    "shape_processes": list(n.shape_processes),
                    "norm_processes": list(n.norm_processes),
                    "yield_ratios": {
                        c: [self.yield_ratio(c, n.name, -1.0), self.yield_ratio(c, n.name, 1.0)]
                        for c in PROCESSES
                    },
                }
                for n in self.nuisances
            ],
        }

    # ------------------------------------------------------------------ yields

    def yield_(self, process: str, alpha: Mapping[str, float] | None = None) -> float:
        """Expected yield nu_c(alpha), exact (closed form)."""
        _check_process(process)
        m = self._model(alpha)
        if process == "S":
            return m.S.norm
        if process == "B":
            return m.B.norm
        return m.S.norm + m.B.norm + m.interference_yield()

    def interference_yield(self, alpha: Mapping[str, float] | None = None) -> float:
        """nu_I = nu_SBI - nu_S - nu_B (negative: destructive interference)."""
        return self._model(alpha).interference_yield()

    def total_yield(self, mu: float, alpha: Mapping[str, float] | None = None) -> float:
        """nu(mu) = mu nu_S + sqrt(mu) nu_I + nu_B."""
        m = self._model(alpha)
        _check_mu(mu)
        return mu * m.S.norm + math.sqrt(mu) * m.interference_yield() + m.B.norm

    def yield_ratio(self, process: str, nuisance: str, direction: float) -> float:
        """nu_c(alpha_k = direction) / nu_c(0), e.g. the +-1 sigma normalisation factors."""
        return self.yield_(process, {nuisance: direction}) / self.yield_(process)

    # ------------------------------------------------------------------ densities

    def _unnormalised(
        self, process: str, x: np.ndarray, model: _Model, mu: float = 1.0
    ) -> np.ndarray:
        """f_c(x) (or f(x|mu) for process 'mix'); zero outside the box."""
        inside = _inside(x)
        all_inside = bool(inside.all())
        xi = x if all_inside else x[inside]
        if process in ("S", "B"):
            val = model.amplitude(process, xi) ** 2
        else:
            u = np.cos(xi[:, 3])
            a_s = model.amplitude("S", xi, u)
            a_b = model.amplitude("B", xi, u)
            if process == "mix":
                a_s *= math.sqrt(mu)
            cos_d = _COS_D0 + _COS_D1 * (xi[:, 0] - M_LOW) / _L
            val = a_s * a_s + a_b * a_b + 2.0 * cos_d * a_s * a_b
        if all_inside:
            return val
        out = np.zeros(x.shape[0])
        out[inside] = val
        return out

    def log_density(
        self, process: str, x: np.ndarray | Sample, alpha: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Normalised log p_c(x | alpha), float64 (n,); -inf outside the box."""
        _check_process(process)
        x = _as_x(x)
        f = self._unnormalised(process, x, self._model(alpha))
        with np.errstate(divide="ignore"):
            return np.log(f) - math.log(self.yield_(process, alpha))

    def log_ratio(
        self,
        num: str,
        den: str,
        x: np.ndarray | Sample,
        alpha_num: Mapping[str, float] | None = None,
        alpha_den: Mapping[str, float] | None = None,
    ) -> np.ndarray:
        """log p_num(x | alpha_num) - log p_den(x | alpha_den)."""
        return self.log_density(num, x, alpha_num) - self.log_density(den, x, alpha_den)

    def shape_log_ratio(
        self, process: str, nuisance: str, x: np.ndarray | Sample, direction: float
    ) -> np.ndarray:
        """log p_c(x | alpha_k = direction) - log p_c(x | 0): the per-event shape variation."""
        return self.log_ratio(process, process, x, {nuisance: direction}, None)

    def mixture_log_density(
        self, mu: float, x: np.ndarray | Sample, alpha: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """log p(x | mu) with nu(mu) p(x|mu) = mu f_S + sqrt(mu) f_I + f_B (normalised)."""
        _check_mu(mu)
        x = _as_x(x)
        f = self._unnormalised("mix", x, self._model(alpha), mu)
        with np.errstate(divide="ignore"):
            return np.log(f) - math.log(self.total_yield(mu, alpha))

    # ------------------------------------------------------------------ expected precision

    def fisher_information(
        self,
        mu: float = 1.0,
        nuisances: bool | tuple[str, ...] = False,
        nodes: tuple[int, int, int, int] = (48, 16, 16, 24),
    ) -> tuple[tuple[str, ...], np.ndarray]:
        """Expected Fisher information of the extended unbinned likelihood at (mu, alpha = 0).

        I_ij = int d_i f d_j f / f dx with f(x) = nu(mu, alpha) p(x | mu, alpha), plus the unit
        Gaussian constraint on each nuisance. Integrated by tensor Gauss-Legendre quadrature
        (relative accuracy ~1e-8); alpha derivatives are central differences (h = 1e-4) of
        the continuous truth. sqrt((I^-1)_{mu,mu}) is the ideal (profiled) sigma(mu) an Asimov
        fit with exact ratios should reproduce. A fit whose systematics interpolation differs
        from this truth between the +-1 points can differ slightly in the nuisance block.
        Returns (parameter names, matrix).
        """
        _check_mu(mu)
        if mu <= 0:
            raise ValueError("fisher_information needs mu > 0 (d/dmu of sqrt(mu) diverges at 0)")
        names = ("mu",) + (self.nuisance_names if nuisances is True else tuple(nuisances or ()))
        x, w = _gauss_legendre_grid(nodes)
        model0 = self._model(None)
        f0 = self._unnormalised("mix", x, model0, mu)
        u = np.cos(x[:, 3])
        a_s, a_b = model0.amplitude("S", x, u), model0.amplitude("B", x, u)
        cos_d = _COS_D0 + _COS_D1 * (x[:, 0] - M_LOW) / _L
        grads = [a_s * a_s + cos_d * a_s * a_b / math.sqrt(mu)]  # d f / d mu
        h = 1e-4
        for name in names[1:]:
            up = self._unnormalised("mix", x, self._model({name: h}), mu)
            down = self._unnormalised("mix", x, self._model({name: -h}), mu)
            grads.append((up - down) / (2 * h))
        g = np.stack(grads)
        info = (g * (w / f0)) @ g.T
        info[1:, 1:] += np.eye(len(names) - 1)
        return names, info

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        process: str,
        n: int,
        seed: int,
        alpha: Mapping[str, float] | None = None,
        weighted: bool = True,
    ) -> Sample:
        """n events of process c with weights summing to (an estimate of) nu_c(alpha).

        weighted=True: importance sampling from the same process in a broadened model (angular
        modulations damped, slower mass fall-off); weights nu_c p_c / (n q) are positive,
        unbiased and within a factor ~3 of each other. weighted=False: exact draws from p_c,
        every weight nu_c / n.
        """
        _check_process(process)
        n = _check_n(n)
        rng = np.random.default_rng(seed)
        model = self._model(alpha)
        nu = self.yield_(process, alpha)
        if not weighted:
            x = self._draw_exact(process, model, n, rng)
            w = np.full(n, nu / n)
            tag = "unweighted"
        else:
            # The proposal is the same process in a broadened model: drawn exactly, and its
            # density q = f_c^prop / nu_c^prop is closed form, so the weights are unbiased.
            prop = _Model(_broaden(model.S), _broaden(model.B))
            x = self._draw_exact(process, prop, n, rng)
            nu_prop = (
                prop.amp(process).norm
                if process in ("S", "B")
                else (prop.S.norm + prop.B.norm + prop.interference_yield())
            )
            q = self._unnormalised(process, x, prop) / nu_prop
            w = self._unnormalised(process, x, model) / (n * q)
            tag = "weighted"
        alpha_txt = f", alpha={dict(alpha)}" if alpha else ""
        return Sample(x, w, OBSERVABLES, f"demo:{process}(n={n}, seed={seed}{alpha_txt}, {tag})")

    def sample_mixture(
        self,
        mu: float,
        n: int | None,
        seed: int,
        *,
        poisson: bool = False,
        alpha: Mapping[str, float] | None = None,
    ) -> Sample:
        """Observed-like events drawn exactly from p(x | mu, alpha), each with weight 1.

        The count is n (or round(nu(mu)) when n is None); with poisson=True it is drawn from
        Poisson(n or nu(mu)) instead.
        """
        _check_mu(mu)
        rng = np.random.default_rng(seed)
        model = self._model(alpha)
        mean = self.total_yield(mu, alpha) if n is None else float(_check_n(n, allow_zero=True))
        count = int(rng.poisson(mean)) if poisson else int(round(mean))
        x = self._draw_exact("mix", model, count, rng, mu)
        return Sample(x, np.ones(count), OBSERVABLES, f"demo:data(mu={mu}, n={count}, seed={seed})")

    def _draw_exact(
        self, process: str, model: _Model, n: int, rng: np.random.Generator, mu: float = 1.0
    ) -> np.ndarray:
        if process in ("S", "B"):
            return _draw_component(model.amp(process), n, rng)
        # SBI / mixture: accept/reject from mu f_S + f_B, acceptance f / (mu f_S + f_B) <= 1
        # because the interference is destructive everywhere (see the module docstring).
        w_s = mu * model.S.norm
        p_s = w_s / (w_s + model.B.norm)
        chunks, have = [], 0
        while have < n:
            m = max(2 * (n - have), 256)
            n_s = rng.binomial(m, p_s)
            cand = np.concatenate(
                [_draw_component(model.S, n_s, rng), _draw_component(model.B, m - n_s, rng)]
            )
            env = mu * model.amplitude("S", cand) ** 2 + model.amplitude("B", cand) ** 2
            acc = rng.random(m) * env <= self._unnormalised("mix", cand, model, mu)
            keep = cand[acc]
            rng.shuffle(keep)
            chunks.append(keep)
            have += keep.shape[0]
        return np.concatenate(chunks)[:n] if chunks else np.empty((0, len(OBSERVABLES)))


def _gauss_legendre_grid(nodes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Legendre points (n, 4) and weights over the observable box."""
    axes, wts = [], []
    for k, (lo, hi) in zip(nodes, BOUNDS):
        t, wt = np.polynomial.legendre.leggauss(k)
        axes.append(0.5 * (hi - lo) * t + 0.5 * (hi + lo))
        wts.append(0.5 * (hi - lo) * wt)
    pts = np.stack([a.ravel() for a in np.meshgrid(*axes, indexing="ij")], axis=1)
    w = np.ones(1)
    for wt in wts:
        w = np.multiply.outer(w, wt)
    return pts, w.reshape(-1)


def _broaden(a: _Amplitude) -> _Amplitude:
    """The importance-sampling proposal: slower mass fall-off, halved angular modulations."""
    damp = lambda c: (c[0],) + tuple(_PROPOSAL_DAMPING * v for v in c[1:])  # noqa: E731
    return _Amplitude(a.norm, a.tau * _PROPOSAL_TAU_FACTOR, damp(a.cos1), damp(a.cos2), damp(a.phi))


def _draw_component(a: _Amplitude, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exact draws from |A|^2 / N: inverse CDF in mass, accept/reject in each angle."""
    x = np.empty((n, 4))
    u = rng.random(n)
    x[:, 0] = M_LOW - a.tau * np.log1p(u * np.expm1(-_L / a.tau))
    x[:, 1] = _draw_poly_squared(a.cos1, n, rng)
    x[:, 2] = _draw_poly_squared(a.cos2, n, rng)
    x[:, 3] = _draw_fourier_squared(a.phi, n, rng)
    return x


def _draw_poly_squared(coeffs: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _poly_extrema(coeffs)
    bound = max(lo * lo, hi * hi)
    return accept_reject_1d(
        lambda c: np.polynomial.polynomial.polyval(c, coeffs) ** 2, bound, -1.0, 1.0, n, rng
    )


def _draw_fourier_squared(q: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _poly_extrema(_phi_as_poly(q))
    bound = max(lo * lo, hi * hi)
    f = lambda p: (q[0] + q[1] * np.cos(p) + q[2] * np.cos(2.0 * p)) ** 2  # noqa: E731
    return accept_reject_1d(f, bound, -math.pi, math.pi, n, rng)


def _check_process(process: str) -> None:
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; the demo has {PROCESSES}")


def _check_mu(mu: float) -> None:
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be finite and >= 0, got {mu}")


def _check_n(n: int, allow_zero: bool = False) -> int:
    if int(n) != n or n < (0 if allow_zero else 1):
        raise ValueError(
            f"n must be a {'non-negative' if allow_zero else 'positive'} integer, got {n}"
        )
    return int(n)


def default_problem() -> DemoProblem:
    """The standard demo: 3 nuisance parameters, luminosity 1."""
    return DemoProblem()
