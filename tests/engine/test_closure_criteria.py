"""The closure criteria and coverage arithmetic of `nsbi closure` (sbi_engine.closure)."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.closure import Z95, coverage, passes


def test_criteria_in_units_of_the_exact_sigma():
    ok = {
        "mu_hat_in_sigma": 0.19,
        "sigma_ratio": 1.14,
        "interval_low_in_sigma": -0.19,
        "interval_high_in_sigma": None,
        "valid": True,
    }
    assert passes(ok) == {"mu_hat": True, "sigma": True, "interval": True}
    bad = dict(ok, mu_hat_in_sigma=-0.21, sigma_ratio=0.84, interval_high_in_sigma=0.2)
    assert passes(bad) == {"mu_hat": False, "sigma": False, "interval": False}


def test_a_fit_at_the_bound_is_no_comparison():
    at_bound = {"mu_hat_in_sigma": 0.0, "sigma_ratio": 1.0, "valid": False}
    assert passes(at_bound) == {"valid": False, "mu_hat": False, "sigma": False, "interval": False}


def test_coverage_counts_intervals_and_gives_binomial_errors():
    rng = np.random.default_rng(3)
    n = 4000
    sigma = np.full(n, 0.2)
    mu_hat = 1.0 + sigma * rng.standard_normal(n)
    c = coverage(mu_hat, sigma, 1.0)
    assert c.n == n
    # normal pulls: 68.27 % and 95 % within 4 binomial errors
    assert abs(c.cover68 - 0.6827) < 4 * np.sqrt(
        0.6827 * 0.3173 / n
    ) and c.cover68_err == pytest.approx(np.sqrt(c.cover68 * (1 - c.cover68) / n))
    assert abs(c.cover95 - 0.95) < 4 * np.sqrt(0.95 * 0.05 / n)
    assert abs(c.mean_pull) < 4 / np.sqrt(n) and abs(c.pull_width - 1) < 4 / np.sqrt(2 * n)
    # failed fits (NaN) are left out, not counted as misses
    mu_hat[:10] = np.nan
    assert coverage(mu_hat, sigma, 1.0).n == n - 10
    assert Z95 == pytest.approx(1.959964, abs=1e-6)
