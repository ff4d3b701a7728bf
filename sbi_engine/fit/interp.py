"""HistFactory code-4 interpolation, factorised for per-event use.

For an up/down ratio pair (k_up, k_down) the factor is ``k_up**alpha`` above +1,
``k_down**(-alpha)`` below -1 and, inside, the degree-6 polynomial ``1 + sum_i a_i alpha**i``
matching value, slope and curvature of the exponentials at +-1. The coefficients are linear in
``b = [k_up-1, k_down-1, k_up ln k_up, -k_down ln k_down, k_up ln^2 k_up, k_down ln^2 k_down]``,
so ``1 + sum_i a_i alpha**i = 1 + b . c(alpha)`` with ``c`` depending on alpha only. This lets
the per-event work (millions of events, O(100) NPs) be one short dot product per element and
gives the derivatives in alpha exactly, without per-element polynomial solves.

Everything is written in log form, ``h = ln g``, because the model multiplies the factors of
all NPs: ``ln delta_c(x; alpha) = sum_k h_k``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["AlphaTerms", "alpha_terms", "log_factor", "code4_reference"]

# Rows: p(1)-1, p(-1)-1, p'(1), p'(-1), p''(1), p''(-1) for p = 1 + sum_{i=1..6} a_i alpha^i.
_POW = np.arange(1, 7)
_M = np.array(
    [
        np.ones(6),
        (-1.0) ** _POW,
        _POW * 1.0,
        _POW * (-1.0) ** (_POW - 1),
        _POW * (_POW - 1) * 1.0,
        _POW * (_POW - 1) * (-1.0) ** (_POW - 2),
    ]
)
_MINV = np.linalg.inv(_M)  # a = _MINV @ b


class AlphaTerms(NamedTuple):
    """Per-NP quantities (leading axis K) that the element-wise formula needs."""

    c: jnp.ndarray  # (K, 6) polynomial basis, zero outside |alpha| <= 1
    dc: jnp.ndarray  # (K, 6)
    d2c: jnp.ndarray  # (K, 6)
    bup: jnp.ndarray  # (K,) exponent of k_up (alpha above +1, else 0)
    bdn: jnp.ndarray  # (K,) exponent of k_down (-alpha below -1, else 0)
    dbup: jnp.ndarray  # (K,) d bup / d alpha
    dbdn: jnp.ndarray  # (K,)


def alpha_terms(alpha: jnp.ndarray) -> AlphaTerms:
    """Per-NP interpolation terms for the parameter values ``alpha`` (K,)."""
    alpha = jnp.asarray(alpha)
    minv = jnp.asarray(_MINV, dtype=alpha.dtype)
    inside = (jnp.abs(alpha) <= 1.0)[:, None]
    one = jnp.ones_like(alpha)
    zero = jnp.zeros_like(alpha)
    pw = [one, alpha]  # alpha^0 .. alpha^6 by products (no float powers of negative numbers)
    for _ in range(5):
        pw.append(pw[-1] * alpha)
    powers = jnp.stack(pw[1:7], axis=-1)
    dpow = jnp.stack([i * pw[i - 1] for i in range(1, 7)], axis=-1)
    d2pow = jnp.stack([zero] + [i * (i - 1) * pw[i - 2] for i in range(2, 7)], axis=-1)
    c = jnp.where(inside, powers @ minv, 0.0)
    dc = jnp.where(inside, dpow @ minv, 0.0)
    d2c = jnp.where(inside, d2pow @ minv, 0.0)
    up = alpha > 1.0
    dn = alpha < -1.0
    return AlphaTerms(
        c=c,
        dc=dc,
        d2c=d2c,
        bup=jnp.where(up, alpha, 0.0),
        bdn=jnp.where(dn, -alpha, 0.0),
        dbup=jnp.where(up, one, 0.0),
        dbdn=jnp.where(dn, -one, 0.0),
    )


def log_factor(k_up, k_down, t: AlphaTerms, order: int = 0, floor: float = 1e-12):
    """``h = ln g`` element-wise for ratio arrays (..., K) and, for order >= 1 / 2, dh, d2h.

    The interpolation terms ``t`` broadcast along the last axis. The polynomial is floored at
    ``floor`` so that pathological ratios (a polynomial dipping below zero) give a large
    penalty rather than NaN.
    """
    lu = jnp.log(k_up)
    ld = jnp.log(k_down)
    b = (k_up - 1.0, k_down - 1.0, k_up * lu, -k_down * ld, k_up * lu * lu, k_down * ld * ld)
    poly = 1.0 + sum(b[j] * t.c[:, j] for j in range(6))
    poly = jnp.maximum(poly, floor)
    h = jnp.log(poly) + t.bup * lu + t.bdn * ld
    if order == 0:
        return h
    dpoly = sum(b[j] * t.dc[:, j] for j in range(6))
    ratio1 = dpoly / poly
    dh = ratio1 + t.dbup * lu + t.dbdn * ld
    if order == 1:
        return h, dh
    d2poly = sum(b[j] * t.d2c[:, j] for j in range(6))
    d2h = d2poly / poly - ratio1 * ratio1
    return h, dh, d2h


def code4_reference(alpha, k_up, k_down):
    """Plain code-4 factor g (not logged), written straight from the definition; for tests."""
    alpha = jnp.asarray(alpha)
    lu, ld = jnp.log(k_up), jnp.log(k_down)
    b = jnp.stack(
        [k_up - 1.0, k_down - 1.0, k_up * lu, -k_down * ld, k_up * lu**2, k_down * ld**2], -1
    )
    a = b @ jnp.asarray(_MINV.T, dtype=b.dtype)
    poly = 1.0 + sum(a[..., i] * alpha ** (i + 1) for i in range(6))  # integer powers
    return jnp.where(alpha > 1.0, k_up**alpha, jnp.where(alpha < -1.0, k_down ** (-alpha), poly))
