"""Minimisers: a bounded, damped Newton (trust-region) method on the exact Hessian, fully
jittable so a whole fit is one compiled call (and vmaps over toys); L-BFGS-B as fallback;
iminuit MIGRAD + HESSE as an alternative backend.

Newton step: on the free parameters (not fixed, not held at a bound by the gradient) solve
``(H + lam D) step = -g`` with ``D = diag|H|`` (Levenberg-Marquardt damping), project the
trial point into the bounds, and accept it if q decreases; ``lam`` shrinks after good steps
and grows after rejected ones. Converged when ``EDM = g^T H^-1 g / 2 < edm_tol`` on the free
parameters with a positive-definite H.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["NewtonState", "newton_minimize", "STATUS_MESSAGES", "free_mask", "edm_of"]

STATUS_MESSAGES = {
    0: "converged",
    1: "maximum number of iterations reached",
    2: "no step decreased q (stuck); EDM above tolerance",
    3: "q is not finite at the starting point",
    4: "Hessian not positive definite at the minimum",
}


class NewtonState(NamedTuple):
    theta: jnp.ndarray
    q: jnp.ndarray
    g: jnp.ndarray
    H: jnp.ndarray
    lam: jnp.ndarray
    it: jnp.ndarray
    n_reject: jnp.ndarray
    edm: jnp.ndarray
    pd: jnp.ndarray
    n_eval: jnp.ndarray


def free_mask(theta, g, fixed, lower, upper):
    """Parameters the step may move: not fixed and not pushed against a bound."""
    at_lo = (theta <= lower) & (g > 0)
    at_hi = (theta >= upper) & (g < 0)
    return ~fixed & ~at_lo & ~at_hi


def _masked(H, g, free):
    Hf = jnp.where(free[:, None] & free[None, :], H, 0.0) + jnp.diag(jnp.where(free, 0.0, 1.0))
    return Hf, jnp.where(free, g, 0.0)


def edm_of(g, H, free):
    """(EDM, H positive definite) on the free parameters."""
    Hf, gf = _masked(H, g, free)
    L = jnp.linalg.cholesky(Hf)
    ok = jnp.all(jnp.isfinite(L))
    x = jax.scipy.linalg.cho_solve((L, True), gf)
    return jnp.where(ok, 0.5 * jnp.dot(gf, x), jnp.inf), ok


def newton_minimize(
    vgh: Callable[[jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]],
    theta0: jnp.ndarray,
    fixed: jnp.ndarray,
    lower: jnp.ndarray,
    upper: jnp.ndarray,
    edm_tol: float | jnp.ndarray = 1e-9,
    max_iter: int | jnp.ndarray = 60,
    max_reject: int = 25,
) -> tuple[NewtonState, jnp.ndarray]:
    """Minimise with bounds; traceable (``vgh`` must be), so it can be jitted and vmapped.

    Returns the final state and a status code (see :data:`STATUS_MESSAGES`).
    """
    theta0 = jnp.clip(theta0, lower, upper)
    f64 = jnp.float64
    P = theta0.shape[0]
    # Iteration 0 evaluates the start point inside the loop (accepted unconditionally), so the
    # compiled program holds a single copy of the expensive vgh.
    state = NewtonState(theta0, jnp.asarray(jnp.inf, f64), jnp.zeros(P, f64), jnp.eye(P, dtype=f64),
                        jnp.asarray(1e-3, f64), jnp.asarray(0), jnp.asarray(0), jnp.asarray(jnp.inf, f64),
                        jnp.asarray(False), jnp.asarray(0))

    def cond(s: NewtonState):
        done = (s.edm < edm_tol) & s.pd
        started_ok = (s.it == 0) | jnp.isfinite(s.q)
        return started_ok & ~done & (s.it < max_iter) & (s.n_reject < max_reject)

    def body(s: NewtonState):
        first = s.it == 0
        free = free_mask(s.theta, s.g, fixed, lower, upper)
        Hf, gf = _masked(s.H, s.g, free)
        d = jnp.where(free, jnp.maximum(jnp.abs(jnp.diag(Hf)), 1e-12), 0.0)
        Hd = Hf + jnp.diag(s.lam * d)
        L = jnp.linalg.cholesky(Hd)
        chol_ok = jnp.all(jnp.isfinite(L))
        step = -jax.scipy.linalg.cho_solve((L, True), gf)
        step = jnp.where(chol_ok & ~first, step, 0.0)
        trial = jnp.where(fixed | first, s.theta, jnp.clip(s.theta + step, lower, upper))
        real_step = trial - s.theta
        pred = -(jnp.dot(s.g, real_step) + 0.5 * real_step @ s.H @ real_step)
        qt, gt, Ht = vgh(trial)
        finite = jnp.isfinite(qt) & jnp.all(jnp.isfinite(gt)) & jnp.all(jnp.isfinite(Ht))
        actual = s.q - qt
        tiny = 1e-12 * jnp.maximum(1.0, jnp.abs(s.q))
        accept = first | (chol_ok & finite & (actual >= -tiny) & jnp.any(real_step != 0))
        rho = actual / jnp.maximum(pred, 1e-300)
        lam_new = jnp.where(
            accept,
            jnp.where(rho > 0.75, s.lam * 0.1, jnp.where(rho < 0.25, s.lam * 4.0, s.lam)),
            jnp.maximum(s.lam * 10.0, 1e-4),
        )
        lam_new = jnp.where(first, s.lam, jnp.clip(lam_new, 1e-12, 1e12))
        theta = jnp.where(accept, trial, s.theta)
        q = jnp.where(accept, qt, s.q)
        g = jnp.where(accept, gt, s.g)
        H = jnp.where(accept, Ht, s.H)
        free_n = free_mask(theta, g, fixed, lower, upper)
        edm, pd = edm_of(g, H, free_n)
        q = jnp.where(first & ~finite, jnp.nan, q)
        return NewtonState(theta, q, g, H, lam_new, s.it + 1, jnp.where(accept, 0, s.n_reject + 1), edm, pd,
                           s.n_eval + 1)

    final = lax.while_loop(cond, body, state)
    converged = (final.edm < edm_tol) & final.pd
    status = jnp.where(
        ~jnp.isfinite(final.q), 3,
        jnp.where(converged, 0,
                  jnp.where(~final.pd & (final.edm < edm_tol), 4,
                            jnp.where(final.n_reject >= max_reject, 2, 1))),
    )
    return final, status
