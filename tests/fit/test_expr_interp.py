"""Coefficient expressions (safe parsing) and the factorised code-4 interpolation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_engine.fit.expr import ExpressionError, parse_expression
from sbi_engine.fit.interp import alpha_terms, code4_reference, log_factor

pytestmark = pytest.mark.usefixtures(
    "float64"
)  # the interpolation is called directly, not via a fit


def test_expression_values_match_python_math():
    e = parse_expression("mu - sqrt(mu) + 2*k**2/4 - -1", ["mu", "k"], where="process 'S'")
    assert e.names == ("k", "mu")
    assert float(e({"mu": 2.25, "k": 3.0}, np)) == pytest.approx(2.25 - 1.5 + 4.5 + 1)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('true')", "only the functions"),
        ("mu.real", "Attribute"),
        ("nu + 1", "unknown parameter 'nu'"),
        ("mu +", "cannot parse"),
        ("'a'", "not a number"),
        ("mu if mu else 1", "IfExp"),
    ],
)
def test_bad_expressions_name_the_process(text, fragment):
    with pytest.raises(ExpressionError) as exc:
        parse_expression(text, ["mu"], where="process 'SBI'")
    assert "process 'SBI'" in str(exc.value) and fragment in str(exc.value)


def test_code4_factorised_form_matches_definition_and_derivatives():
    rng = np.random.default_rng(0)
    ku = rng.uniform(0.7, 1.4, 50)
    kd = rng.uniform(0.7, 1.4, 50)
    for a in (-2.3, -1.0, -0.7, 0.0, 0.3, 1.0, 1.8):
        t = alpha_terms(jnp.full(1, a))
        h, dh, d2h = log_factor(jnp.asarray(ku)[:, None], jnp.asarray(kd)[:, None], t, order=2)
        ref = lambda x: jnp.log(code4_reference(x, jnp.asarray(ku), jnp.asarray(kd)))  # noqa: E731
        np.testing.assert_allclose(h[:, 0], ref(a), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(dh[:, 0], jax.jacfwd(ref)(a), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(d2h[:, 0], jax.jacfwd(jax.jacfwd(ref))(a), rtol=1e-9, atol=1e-11)


def test_code4_hits_the_variations_and_is_smooth_at_one():
    ku, kd = jnp.asarray([1.3]), jnp.asarray([0.8])
    g = lambda a: code4_reference(a, ku, kd)[0]  # noqa: E731
    assert (
        float(g(1.0)) == pytest.approx(1.3)
        and float(g(-1.0)) == pytest.approx(0.8)
        and float(g(0.0)) == 1.0
    )
    for x in (
        1.0,
        -1.0,
    ):  # value, slope and curvature continuous across the polynomial/exponential seam
        for f in (g, jax.grad(g), jax.grad(jax.grad(g))):
            assert float(f(x - 1e-7)) == pytest.approx(float(f(x + 1e-7)), rel=1e-5)
