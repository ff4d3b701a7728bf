r"""`interference`: a broad signal interfering destructively with a falling background.

Observables x = (m, c) on [0, 1] x [-1, 1]. Real amplitudes

    A_X(x) = sqrt(N_X) e^{-m / (2 tau_X)} P_X(c) / sqrt(Z_m(tau_X) Z_c(P_X)),   X in {S, B}

with Z_m(tau) = tau (1 - e^{-1/tau}) and Z_c(P) = int_{-1}^{1} P^2 dc, so |A_X|^2 integrates to
N_X. The interference term is f_I = 2 k A_S A_B with a constant strong phase cos(delta) = k =
-0.5, and

    f(x | mu) = mu f_S + sqrt(mu) f_I + f_B = (mu - sqrt mu) f_S + sqrt(mu) f_SBI + (1 - sqrt mu) f_B,

f_SBI = f_S + f_B + f_I >= (1 - |k|)(f_S + f_B) > 0 (2|ab| <= a^2 + b^2). The signal is broad
(tau_S = 1.5 over a unit range, P_S = 1 + 0.5 c^2), the background falls (tau_B = 0.3,
P_B = 1 + 0.3 c) and is 20 000 events against N_S = 60, so A_S / A_B ~ 0.05 in the bulk and
p_SBI / p_B differs from 1 by only a few per cent: between 0.93 and 1.02 for 98 % of the
background events (median 1.006).

Yields are closed form: nu_S = N_S, nu_B = N_B, nu_I = 2 k sqrt(N_S N_B) I_m I_c with
I_m = int_0^1 e^{-m (1/tau_S + 1/tau_B) / 2} dm / sqrt(Z_m(tau_S) Z_m(tau_B)) and
I_c = int P_S P_B dc / sqrt(Z_c(P_S) Z_c(P_B)); nu_SBI = N_S + N_B + nu_I.

Nuisances: `bkg_slope` (shape): tau_B x 1.05^alpha. It changes the background amplitude, so
the shapes of B and of SBI (and the SBI yield through nu_I) move together. `lumi` (norm only):
every yield x 1.02^alpha / 0.98^-alpha.

Sampling: m by inverse CDF, c by accept/reject in P^2; SBI by accept/reject from the S + B
mixture (f_SBI <= f_S + f_B because f_I < 0 everywhere).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from sbi_engine.sampling import accept_reject_1d

from .base import BenchmarkProblem

_K = -0.5  # cos(delta)
_N_S, _N_B = 60.0, 20_000.0
_TAU_S, _TAU_B = 1.5, 0.3
_P_S, _P_B = (1.0, 0.0, 0.5), (1.0, 0.3, 0.0)
_SLOPE_SIZE = 0.05


def _z_m(tau: float) -> float:
    return tau * -math.expm1(-1.0 / tau)


def _poly_overlap(p, q) -> float:
    prod = np.polynomial.polynomial.polymul(p, q)
    return float(sum(c * 2.0 / (j + 1) for j, c in enumerate(prod) if j % 2 == 0))


def _poly_max_sq(p) -> float:
    pts = [-1.0, 1.0]
    d = np.polynomial.polynomial.polyder(p)
    if np.any(d != 0):
        pts += [
            float(r.real)
            for r in np.polynomial.polynomial.polyroots(d)
            if abs(r.imag) < 1e-12 and abs(r.real) <= 1
        ]
    return float(np.max(np.polynomial.polynomial.polyval(np.array(pts), p) ** 2))


@dataclass(frozen=True)
class _Amp:
    norm: float
    tau: float
    poly: tuple[float, ...]

    def log_amp(self, x: np.ndarray) -> np.ndarray:
        """log A(x) (A > 0 on the box)."""
        pv = np.polynomial.polynomial.polyval(x[:, 1], self.poly)
        const = 0.5 * math.log(self.norm / (_z_m(self.tau) * _poly_overlap(self.poly, self.poly)))
        return const - x[:, 0] / (2.0 * self.tau) + np.log(pv)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x = np.empty((n, 2))
        u = rng.random(n)
        x[:, 0] = np.clip(-self.tau * np.log1p(u * math.expm1(-1.0 / self.tau)), 0.0, 1.0)
        x[:, 1] = accept_reject_1d(
            lambda c: np.polynomial.polynomial.polyval(c, self.poly) ** 2,
            _poly_max_sq(self.poly),
            -1.0,
            1.0,
            n,
            rng,
        )
        return x


class InterferenceProblem(BenchmarkProblem):
    name = "interference"
    description = (
        "S, SBI, B with destructive interference: broad signal over a falling background in (m, c); "
        "p_SBI/p_B within a few per cent of 1; one shape systematic on the background, one norm-only"
    )
    processes = ("S", "SBI", "B")
    reference = "B"
    coefficients = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
    feature_names = ("m", "c")
    nuisances = ("bkg_slope",)
    shape_processes = {"bkg_slope": ("SBI", "B")}
    norm_only = {"lumi": {"S": (1.02, 0.98), "SBI": (1.02, 0.98), "B": (1.02, 0.98)}}
    bounds = ((0.0, 1.0), (-1.0, 1.0))
    n_events = 500_000  # 26x the ~19k observed events: the SBI/B effect (sd 0.02) needs it

    def _amps(self, alpha: Mapping[str, float]) -> tuple[_Amp, _Amp]:
        tau_b = _TAU_B * (1.0 + _SLOPE_SIZE) ** alpha.get("bkg_slope", 0.0)
        return _Amp(_N_S, _TAU_S, _P_S), _Amp(_N_B, tau_b, _P_B)

    def interference_yield(self, alpha: Mapping[str, float] | None = None) -> float:
        s, b = self._amps(self._alpha(alpha))
        rate = 0.5 / s.tau + 0.5 / b.tau
        i_m = -math.expm1(-rate) / rate / math.sqrt(_z_m(s.tau) * _z_m(b.tau))
        i_c = _poly_overlap(s.poly, b.poly) / math.sqrt(
            _poly_overlap(s.poly, s.poly) * _poly_overlap(b.poly, b.poly)
        )
        return 2.0 * _K * math.sqrt(s.norm * b.norm) * i_m * i_c

    def _yield(self, process: str, alpha: Mapping[str, float]) -> float:
        if process == "S":
            return _N_S
        if process == "B":
            return _N_B
        return _N_S + _N_B + self.interference_yield(alpha)

    def _log_density(self, process: str, x: np.ndarray, alpha: Mapping[str, float]) -> np.ndarray:
        s, b = self._amps(alpha)
        inside = (x[:, 0] >= 0) & (x[:, 0] <= 1) & (x[:, 1] >= -1) & (x[:, 1] <= 1)
        xs = np.where(inside[:, None], x, 0.0)
        if process in ("S", "B"):
            amp = s if process == "S" else b
            out = 2.0 * amp.log_amp(xs) - math.log(amp.norm)
        else:
            ls, lb = s.log_amp(xs), b.log_amp(xs)
            # f_SBI = A_S^2 + A_B^2 + 2k A_S A_B, written relative to A_B^2 for stability
            t = np.exp(ls - lb)
            out = (
                2.0 * lb + np.log(1.0 + t * t + 2.0 * _K * t) - math.log(self._yield("SBI", alpha))
            )
        return np.where(inside, out, -np.inf)

    def _draw(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> np.ndarray:
        s, b = self._amps(alpha)
        if process in ("S", "B"):
            return (s if process == "S" else b).draw(n, rng)
        p_s = s.norm / (s.norm + b.norm)
        chunks, have = [], 0
        while have < n:
            m = max(int(1.2 * (n - have)) + 64, 256)
            k = rng.binomial(m, p_s)
            cand = np.concatenate([s.draw(k, rng), b.draw(m - k, rng)])
            t = np.exp(s.log_amp(cand) - b.log_amp(cand))
            acc = (1.0 + t * t + 2.0 * _K * t) / (1.0 + t * t)  # f_SBI / (f_S + f_B) in (0, 1]
            keep = cand[rng.random(m) <= acc]
            rng.shuffle(keep)
            chunks.append(keep)
            have += keep.shape[0]
        return np.concatenate(chunks)[:n]


class InterferenceReweightedProblem(InterferenceProblem):
    """`interference` with SBI simulated the way generators offer it for interference: the B
    events reweighted by the matrix-element ratio |A_S + A_B|^2 / |A_B|^2 (exact p_SBI / p_B
    here), instead of an independent SBI simulation. The SBI/B networks then see each event
    with both weights (paired training, `sbi_engine.ratio.prepare`) and learn the ratio from
    the weights rather than from the fluctuations of two independent samples."""

    name = "interference_reweighted"
    description = (
        "interference with SBI simulated by reweighting the B events (matrix-element weights): "
        "the same model, the SBI/B ratio learned from paired events"
    )
    reweighted_from = {"SBI": "B"}
