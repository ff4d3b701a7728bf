"""Batched refit impacts (every nuisance's pre- and post-fit refits advanced together per pass
over the events) against one-at-a-time refits on the exact demo (10 NPs)."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.fit.impacts import refit_impacts
from sbi_engine.fit.impacts_batched import batched_refit_impacts

_KEYS = ("postfit_up", "postfit_down", "prefit_up", "prefit_down")


def _rel_devs(batched, single) -> list[float]:
    by = {(i.poi, i.nuisance): i for i in batched}
    out = []
    for one in single:
        b = by[(one.poi, one.nuisance)]
        ref = np.array([getattr(one, k) for k in _KEYS])
        got = np.array([getattr(b, k) for k in _KEYS])
        out.append(float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
    return out


@pytest.fixture(scope="module")
def names(demo_model):
    return list(demo_model.nuisance_names[:4])


@pytest.fixture(scope="module")
def one_at_a_time(demo_model, demo_fit, names):
    return refit_impacts(demo_model, demo_fit, names, edm_tol=1e-10)


@pytest.mark.parametrize("expansion, tol", [("exact", 1e-3), ("taylor", 0.02)])
def test_batched_impacts_equal_one_at_a_time(
    demo_model, demo_fit, names, one_at_a_time, expansion, tol
):
    # batch_size 6 < 16 refits: three batches, the last one padded (one compilation serves all)
    out = batched_refit_impacts(
        demo_model, demo_fit, names, batch_size=6, expansion=expansion, edm_tol=1e-10
    )
    assert out.refits == 4 * len(names) and out.batches == 3
    assert out.converged == out.refits and not out.fallback
    # each batch converged in a few passes (warm start on the linear-response profile)
    assert out.passes <= 3 * 8
    devs = _rel_devs(out.impacts, one_at_a_time)
    assert max(devs) < tol, devs


def test_batched_impacts_postfit_only(demo_model, demo_fit, names, one_at_a_time):
    out = batched_refit_impacts(demo_model, demo_fit, names[:3], prefit=False, edm_tol=1e-10)
    assert out.refits == 6 and [i.nuisance for i in out.impacts] == names[:3]
    assert all(np.isnan(i.prefit_up) for i in out.impacts)
    ref = {i.nuisance: i for i in one_at_a_time}
    for i in out.impacts:
        r = ref[i.nuisance]
        scale = max(abs(r.postfit_up), abs(r.postfit_down))
        assert abs(i.postfit_up - r.postfit_up) < 0.02 * scale
        assert abs(i.postfit_down - r.postfit_down) < 0.02 * scale
