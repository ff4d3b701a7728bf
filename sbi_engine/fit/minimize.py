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
import numpy as np
from jax import lax

from .compile import CompileClock, Compiled

__all__ = [
    "NewtonState",
    "newton_minimize",
    "newton_minimize_host",
    "STATUS_MESSAGES",
    "free_mask",
    "edm_of",
]

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


def _initial_state(theta0: jnp.ndarray) -> NewtonState:
    f64 = jnp.float64
    P = theta0.shape[0]
    # Iteration 0 evaluates the start point (accepted unconditionally), so a compiled loop holds
    # a single copy of the expensive vgh.
    return NewtonState(
        theta0,
        jnp.asarray(jnp.inf, f64),
        jnp.zeros(P, f64),
        jnp.eye(P, dtype=f64),
        jnp.asarray(1e-3, f64),
        jnp.asarray(0),
        jnp.asarray(0),
        jnp.asarray(jnp.inf, f64),
        jnp.asarray(False),
        jnp.asarray(0),
    )


def _keep_going(s: NewtonState, edm_tol, max_iter, max_reject) -> jnp.ndarray:
    done = (s.edm < edm_tol) & s.pd
    started_ok = (s.it == 0) | jnp.isfinite(s.q)
    return started_ok & ~done & (s.it < max_iter) & (s.n_reject < max_reject)


_MAX_DAMPING_RAISES = 16


def _damped_cholesky(
    Hf: jnp.ndarray, d: jnp.ndarray, lam: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Cholesky factor of ``Hf + lam diag(d)``, raising ``lam`` tenfold until it exists.

    Far from the minimum H can be indefinite; finding a workable damping here costs a few
    (P x P) factorisations instead of one wasted pass over the events per rejected step.
    """

    def factor(lam_):
        return jnp.linalg.cholesky(Hf + jnp.diag(lam_ * d))

    def failed(c):
        return ~jnp.all(jnp.isfinite(c[1])) & (c[2] < _MAX_DAMPING_RAISES)

    def raise_damping(c):
        lam_ = jnp.maximum(c[0] * 10.0, 1e-4)
        return lam_, factor(lam_), c[2] + 1

    lam, L, _ = lax.while_loop(failed, raise_damping, (lam, factor(lam), jnp.asarray(0)))
    return lam, L


def _propose(
    s: NewtonState, fixed, lower, upper
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The damped Newton trial point: (trial theta, predicted decrease, Cholesky succeeded,
    damping used)."""
    first = s.it == 0
    free = free_mask(s.theta, s.g, fixed, lower, upper)
    Hf, gf = _masked(s.H, s.g, free)
    d = jnp.where(free, jnp.maximum(jnp.abs(jnp.diag(Hf)), 1e-12), 0.0)
    lam, L = _damped_cholesky(Hf, d, s.lam)
    chol_ok = jnp.all(jnp.isfinite(L))
    step = -jax.scipy.linalg.cho_solve((L, True), gf)
    step = jnp.where(chol_ok & ~first, step, 0.0)
    trial = jnp.where(fixed | first, s.theta, jnp.clip(s.theta + step, lower, upper))
    real_step = trial - s.theta
    pred = -(jnp.dot(s.g, real_step) + 0.5 * real_step @ s.H @ real_step)
    return trial, pred, chol_ok, lam


def _accept(
    s: NewtonState, trial, pred, chol_ok, lam, qt, gt, Ht, fixed, lower, upper
) -> NewtonState:
    """Accept or reject the evaluated trial point and adapt the damping ``lam`` the proposal
    used (trust-region rule)."""
    s = s._replace(lam=lam)  # the proposal may have raised it to factorise
    first = s.it == 0
    # A fixed parameter's derivatives never enter a step; they may be infinite (d sqrt(mu)/dmu
    # at a POI fixed to 0 in a scan or a Neyman toy), so they must not make the point unusable.
    gt = jnp.where(fixed & ~jnp.isfinite(gt), 0.0, gt)
    Ht = jnp.where((fixed[:, None] | fixed[None, :]) & ~jnp.isfinite(Ht), 0.0, Ht)
    finite = jnp.isfinite(qt) & jnp.all(jnp.isfinite(gt)) & jnp.all(jnp.isfinite(Ht))
    actual = s.q - qt
    tiny = 1e-12 * jnp.maximum(1.0, jnp.abs(s.q))
    accept = first | (chol_ok & finite & (actual >= -tiny) & jnp.any(trial != s.theta))
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
    edm, pd = edm_of(g, H, free_mask(theta, g, fixed, lower, upper))
    q = jnp.where(first & ~finite, jnp.nan, q)
    return NewtonState(
        theta,
        q,
        g,
        H,
        lam_new,
        s.it + 1,
        jnp.where(accept, 0, s.n_reject + 1),
        edm,
        pd,
        s.n_eval + 1,
    )


def _status(final: NewtonState, edm_tol, max_reject) -> jnp.ndarray:
    converged = (final.edm < edm_tol) & final.pd
    return jnp.where(
        ~jnp.isfinite(final.q),
        3,
        jnp.where(
            converged,
            0,
            jnp.where(
                ~final.pd & (final.edm < edm_tol), 4, jnp.where(final.n_reject >= max_reject, 2, 1)
            ),
        ),
    )


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

    def body(s: NewtonState) -> NewtonState:
        trial, pred, chol_ok, lam = _propose(s, fixed, lower, upper)
        return _accept(s, trial, pred, chol_ok, lam, *vgh(trial), fixed, lower, upper)

    final = lax.while_loop(
        lambda s: _keep_going(s, edm_tol, max_iter, max_reject),
        body,
        _initial_state(jnp.clip(theta0, lower, upper)),
    )
    return final, _status(final, edm_tol, max_reject)


def _host_steps(clock: CompileClock | None) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted step functions, compiled once per clock (so compile time is booked there)."""
    clock = clock if clock is not None else _DEFAULT_CLOCK
    steps = clock.__dict__.get("_newton_host_steps")
    if steps is None:
        steps = (
            Compiled(_propose, "newton_propose", clock),
            Compiled(_accept, "newton_accept", clock),
        )
        clock.__dict__["_newton_host_steps"] = steps
    return steps


_DEFAULT_CLOCK = CompileClock()


def newton_minimize_host(
    vgh: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
    theta0: Any,
    fixed: Any,
    lower: Any,
    upper: Any,
    edm_tol: float = 1e-9,
    max_iter: int = 60,
    max_reject: int = 25,
    progress: Callable[[NewtonState], None] | None = None,
    clock: CompileClock | None = None,
) -> tuple[NewtonState, int]:
    """The same algorithm with the loop in Python, for a ``vgh`` that cannot be traced (events
    streamed from disk chunk by chunk); the step logic is the jitted code of the traced loop."""
    propose, accept = _host_steps(clock)
    fixed, lower, upper = (jnp.asarray(a) for a in (fixed, lower, upper))
    s = _initial_state(jnp.clip(jnp.asarray(theta0, jnp.float64), lower, upper))
    while bool(_keep_going(s, edm_tol, max_iter, max_reject)):
        trial, pred, chol_ok, lam = propose(s, fixed, lower, upper)
        qt, gt, Ht = vgh(np.asarray(trial))
        s = accept(
            s,
            trial,
            pred,
            chol_ok,
            lam,
            jnp.asarray(qt, jnp.float64),
            jnp.asarray(gt, jnp.float64),
            jnp.asarray(Ht, jnp.float64),
            fixed,
            lower,
            upper,
        )
        if progress is not None:
            progress(s)
    return s, int(_status(s, edm_tol, max_reject))
