"""The demo analysis glue: Asimov data, exact-ratio fit, and the ratio normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.demo import default_problem
from sbi_engine.pipeline import (
    asimov_sample,
    demo_ratio_tasks,
    exact_log_ratios,
    fit_demo_asimov,
    normalised,
)


def test_ratio_tasks_use_distinct_seeds_against_the_reference():
    tasks = demo_ratio_tasks(1000, seed=3)
    assert [t.name for t in tasks] == ["S_vs_B", "SBI_vs_B"]
    seeds = {t.numerator["demo"]["seed"] for t in tasks} | {tasks[0].denominator["demo"]["seed"]}
    assert len(seeds) == 3


def test_asimov_weights_sum_to_expected_yield():
    p = default_problem()
    for mu in (1.0, 2.25):
        data = asimov_sample(p, mu, 20_000, seed=5)
        # importance weights: relative precision ~ spread / sqrt(n) per process, a few per mille
        assert data.weights.sum() == pytest.approx(p.total_yield(mu), rel=0.02)


def test_exact_ratio_fit_recovers_mu_with_fisher_error():
    p = default_problem()
    report = fit_demo_asimov(
        exact_log_ratios(p), mu_true=1.0, n_per_process=20_000, seed=11, problem=p
    )
    assert report.converged
    # Asimov data: the only deviation from mu=1 is the simulation's finite-sample noise in the weights.
    assert abs(report.mu_hat - 1.0) < 0.1 * report.sigma + 0.02
    # sigma(mu) without nuisances from the demo's own Fisher information (0.257 for 371.8 events)
    assert report.sigma == pytest.approx(0.257, rel=0.05)


def test_normalisation_removes_a_constant_miscalibration():
    p = default_problem()
    ref = p.sample("B", 20_000, seed=2)
    exact = exact_log_ratios(p)
    biased = {k: (lambda x, f=f: f(x) + 0.2) for k, f in exact.items()}
    fixed = normalised(biased, ref)
    x = p.sample("SBI", 1000, seed=9).features
    for k in exact:
        np.testing.assert_allclose(
            fixed[k](x),
            exact[k](x)
            - np.log(np.sum(ref.weights * np.exp(exact[k](ref.features))) / ref.weights.sum()),
            rtol=0,
            atol=1e-9,
        )
        mean_ratio = np.sum(ref.weights * np.exp(fixed[k](ref.features))) / ref.weights.sum()
        assert mean_ratio == pytest.approx(1.0, abs=1e-12)
