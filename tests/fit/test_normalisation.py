"""The shape normalisation n_c(alpha) and the ratio normalisation on the normalisation sample,
against a plain NumPy transcription of docs/workspace.md and against the demo's exact densities."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from sbi_engine.fit import Model, Workspace, WorkspaceError
from sbi_engine.fit.interp import code4_reference

pytestmark = pytest.mark.usefixtures(
    "float64"
)  # the NumPy references call code4_reference directly


def _g(alpha, up, down):
    return np.asarray(
        code4_reference(alpha, jnp.asarray(up, jnp.float64), jnp.asarray(down, jnp.float64))
    )


def plain_q(ws: Workspace, theta, v=None) -> float:
    """q(theta) written from the formulas of docs/workspace.md, one process at a time (NumPy).

    ``v``: the normalisation sample's weights (None: no normalisation term, ratios as given)."""
    vals = dict(zip(ws.parameter_names, theta))
    free = {p.name: vals[p.name] for p in ws.free_parameters}
    w = np.asarray(ws.data.weights, dtype=np.float64)
    q = 0.0
    s = np.zeros_like(w)
    for p in ws.processes:
        A = float(p.coefficient(free, np)) * p.yield_
        delta = np.ones_like(w)
        has_shape = False
        for k in ws.nuisances:
            e = k.effects.get(p.name)
            if e is None:
                continue
            if e.norm is not None:
                A *= float(_g(vals[k.name], e.norm[0], e.norm[1]))
            if e.shape is not None:
                delta *= _g(vals[k.name], e.shape[0], e.shape[1])
                has_shape = True
        r = np.asarray(p.ratio, dtype=np.float64)
        n_c = 1.0
        if v is not None:
            r = r * v.sum() / np.dot(v, r)  # ratios normalised on the normalisation sample
            if has_shape:
                n_c = np.dot(v, r * delta) / v.sum()
        q += 2.0 * A * n_c
        s += A * r * delta
    live = w != 0
    q -= 2.0 * np.dot(w[live], np.log(s[live]))
    alpha = np.array([vals[k.name] for k in ws.nuisances])
    return q + float(np.sum((alpha - np.array([k.aux for k in ws.nuisances])) ** 2))


def plain_intensity(ws: Workspace, theta) -> np.ndarray:
    """s_i(theta) = sum_c A_c r_c delta_c with the ratios as given (NumPy)."""
    vals = dict(zip(ws.parameter_names, theta))
    free = {p.name: vals[p.name] for p in ws.free_parameters}
    s = np.zeros(ws.n_events)
    for p in ws.processes:
        A = float(p.coefficient(free, np)) * p.yield_
        d = np.ones(ws.n_events)
        for k in ws.nuisances:
            e = k.effects.get(p.name)
            if e is not None and e.norm is not None:
                A *= float(_g(vals[k.name], *e.norm))
            if e is not None and e.shape is not None:
                d *= _g(vals[k.name], *e.shape)
        s += A * np.asarray(p.ratio) * d
    return s


GEN = {"mu": 1.3, "a1": 0.4}  # where the Asimov-like rows are made (other NPs at their aux)


def _ws(n_data=300, n_norm=1200, seed=0, observed=True, **kw):
    """3 processes, 3 NPs with shape (and some norm) effects; data rows (weight 1) followed by
    normalisation-only rows (weight 0, v > 0) when ``observed``; else weighted Asimov rows made
    at GEN (weights v_i s_i(GEN) for a random v: the events represent p_ref s(x; GEN))."""
    rng = np.random.default_rng(seed)
    n = n_data + n_norm if observed else n_data
    ratio = lambda: (lambda u: u / u.mean())(rng.uniform(0.5, 2.0, n))  # noqa: E731  (E_ref[r] = 1)
    procs = {
        c: {"yield": y, "coefficient": e, "ratio": ratio()}
        for c, y, e in (
            ("S", 40.0, "mu - sqrt(mu)"),
            ("SBI", 300.0, "sqrt(mu)"),
            ("B", 280.0, "1 - sqrt(mu)"),
        )
    }
    nps = [
        {
            "name": f"a{i}",
            "aux": 0.2 * i - 0.1,
            "effects": {
                c: {
                    "norm": (1.04, 0.97) if i != 1 else None,
                    "shape": (rng.uniform(0.75, 1.3, n), rng.uniform(0.75, 1.3, n)),
                }
                for c in ("S", "SBI", "B")[: i + 1]
            },
        }
        for i in range(3)
    ]
    if observed:
        weights = np.r_[np.ones(n_data), np.zeros(n_norm)]
        norm = np.r_[np.zeros(n_data), rng.uniform(0.5, 1.5, n_norm)]
        spec = dict(weights=weights, norm_weights=norm, data_kind="observed")
    else:
        spec = dict(weights=np.ones(n), data_kind="observed")
    spec.update(kw)
    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}}, processes=procs, nuisances=nps, **spec
    )
    if observed:
        return ws
    gen = np.r_[GEN["mu"], [GEN.get(k.name, k.aux) for k in ws.nuisances]]
    return ws.with_data(
        rng.uniform(0.5, 1.5, n) * plain_intensity(ws, gen), kind="asimov", generated_at=GEN
    )


THETAS = (
    {"mu": 1.2, "a0": 0.3, "a1": -0.6, "a2": 0.9},  # inside the polynomial region
    {"mu": 0.8, "a0": 1.0, "a1": -1.7, "a2": 2.4},
)  # on the edge and outside (exponential)


@pytest.mark.parametrize("theta", THETAS)
def test_q_with_normalisation_only_rows_matches_the_plain_formula(theta):
    ws = _ws()
    m = Model(ws, chunk_size=512, storage_dtype=jnp.float64)  # 3 chunks, the last one shifted back
    assert m.has_norm and m.norm_source == "norm_weights"
    t = m.theta(theta)
    assert m.nll(t) == pytest.approx(plain_q(ws, t, np.asarray(ws.data.norm_weights)), rel=1e-12)
    # without the normalisation term (the old likelihood) q differs by O(1): the test can fail
    assert abs(m.nll(t) - plain_q(ws, t, None)) > 0.1


@pytest.mark.parametrize("theta", THETAS)
def test_asimov_data_are_their_own_normalisation_sample(theta):
    ws = _ws(observed=False)
    m = Model(ws, chunk_size=128, storage_dtype=jnp.float64)
    assert m.has_norm and m.norm_source == "asimov"
    # v_i = w_i / s_i(theta_gen) with the ratios as given (generated_at: mu = 1.3, a1 = 0.4, others at aux)
    gen = m.theta(GEN, base=np.r_[1.0, [k.aux for k in ws.nuisances]])
    v = np.asarray(ws.data.weights) / plain_intensity(ws, gen)
    np.testing.assert_allclose(np.asarray(m.data["v"]), v, rtol=1e-13)
    t = m.theta(theta)
    assert m.nll(t) == pytest.approx(plain_q(ws, t, v), rel=1e-12)


def test_normalisation_is_one_at_nominal_and_the_old_model_without_a_sample():
    ws = _ws()
    m = Model(ws, storage_dtype=jnp.float64)
    np.testing.assert_allclose(
        m.normalisation(m.theta({"a0": 0.0, "a1": 0.0, "a2": 0.0})), 1.0, rtol=0, atol=1e-14
    )
    n = m.normalisation(m.theta({"a0": 0.0, "a1": 0.0, "a2": 2.5}))
    assert np.all(np.abs(n - 1.0) > 1e-3)  # code-4 extrapolation is not normalised
    # observed data without norm_weights: no normalisation term, ratios as given (documented old behaviour)
    old = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
        processes={
            p.name: {"yield": p.yield_, "coefficient": p.coefficient.text, "ratio": p.ratio}
            for p in ws.processes
        },
        nuisances=[
            {
                "name": k.name,
                "aux": k.aux,
                "effects": {c: {"norm": e.norm, "shape": e.shape} for c, e in k.effects.items()},
            }
            for k in ws.nuisances
        ],
        weights=np.ones(ws.n_events),
        data_kind="observed",
    )
    mo = Model(old, storage_dtype=jnp.float64)
    assert not mo.has_norm and mo.norm_source == "none"
    t = mo.theta(THETAS[1])
    assert mo.nll(t) == pytest.approx(plain_q(old, t, None), rel=1e-12)


def test_toy_layout_gives_the_same_q_gradient_and_hessian():
    """Events in the main arrays and the normalisation sample in data["norm"] (what toys do)
    give the single-pass numbers (which test_hessian.py checks against jax.hessian)."""
    ws = _ws(n_data=200, n_norm=900)
    m = Model(ws, chunk_size=256, storage_dtype=jnp.float64)
    th = m.theta(THETAS[1])
    q1, g1, H1 = m.value_grad_hessian(th)
    ev = {k: m.data[k] for k in ("w", "r", "up", "down")}
    split = {**ev, "norm": {k: m.data[k] for k in ("v", "vscale", "r", "up", "down")}}
    m.norm_chunk_size = 300  # 3 chunks + shifted tail in the separate pass
    q2, g2, H2 = m.value_grad_hessian(th, data=split)
    assert q2 == pytest.approx(q1, rel=1e-13)
    np.testing.assert_allclose(g2, g1, rtol=1e-10, atol=1e-10 * np.abs(g1).max())
    np.testing.assert_allclose(H2, H1, rtol=1e-10, atol=1e-10 * np.abs(H1).max())
    assert float(m.q_unchunked(jnp.asarray(th), split, jnp.asarray(m.aux))) == pytest.approx(
        q1, rel=1e-12
    )


def test_normalisation_estimates_the_expectation_of_the_shape_factor():
    """n_c(alpha) from the demo's weighted Asimov events against E_{p_c}[delta_c] estimated on an
    independent, exactly drawn sample of each process (exact shape ratios from the densities)."""
    from sbi_engine.demo import DemoProblem
    from sbi_engine.fit.exact import exact_demo_workspace

    ws = exact_demo_workspace(20000, n_nuisances=5, seed=3)
    m = Model(ws, storage_dtype=jnp.float64)
    assert m.norm_source == "asimov"
    np.testing.assert_allclose(m.norm_integrals, 1.0, atol=0.02)  # E_v[r_c] ~ 1 before normalising
    alpha = {"m4l_scale": 2.5, "bkg_norm": -2.0, "gg_scale": 1.5, "lumi": 0.0, "sig_shape": -1.6}
    n_model = m.normalisation(m.theta(alpha))
    prob = DemoProblem(n_nuisances=5)
    for c, name in enumerate(m.process_names):
        smp = prob.sample(name, 100_000, seed=77, weighted=False)
        x = smp.features.astype(np.float64)
        logp = prob.log_density(name, x)
        delta = np.ones(len(x))
        for k in ws.nuisances:
            e = k.effects.get(name)
            if e is None or e.shape is None:
                continue
            up, dn = (np.exp(prob.log_density(name, x, {k.name: d}) - logp) for d in (1.0, -1.0))
            delta *= _g(alpha[k.name], up, dn)
        est, err = delta.mean(), delta.std() / np.sqrt(len(delta))
        assert abs(n_model[c] - 1.0) > 10 * err  # a real, measurable effect
        assert n_model[c] == pytest.approx(est, abs=5 * err + 5e-3), (
            name
        )  # + the Asimov sample's own precision


def test_bad_normalisation_samples_are_named():
    with pytest.raises(
        WorkspaceError, match=r"data\.norm_weights: has 10 rows but the data has 1500 events"
    ):
        _ws(norm_weights=np.ones(10))
    v = np.ones(1500)
    v[4] = np.nan
    with pytest.raises(
        WorkspaceError,
        match=r"data\.norm_weights: 1 of 1500 values are not finite \(first at row 4\)",
    ):
        _ws(norm_weights=v)
    with pytest.raises(
        WorkspaceError, match=r"data\.norm_weights: the normalisation weights sum to 0\.0"
    ):
        Model(_ws(norm_weights=np.zeros(1500)))
    v = np.r_[np.ones(750), np.full(750, -0.4)]  # sums to 450 > 0, but S lives on the negative rows
    with pytest.raises(
        WorkspaceError,
        match=r"data\.norm_weights: .*sum_i v_i r_S\(x_i\) = .* is not > 0.*process 'S'",
    ):
        ws = _ws(norm_weights=v)
        Model(
            Workspace.from_arrays(
                pois={"mu": {}},
                processes={
                    "S": {
                        "yield": 1.0,
                        "coefficient": "mu",
                        "ratio": np.r_[np.full(750, 1e-9), np.ones(750)],
                    },
                    "B": {"yield": 1.0, "coefficient": "1", "ratio": np.ones(1500)},
                },
                nuisances=[
                    {"name": "a", "effects": {"S": {"shape": ws.nuisances[0].effects["S"].shape}}}
                ],
                weights=np.ones(1500),
                norm_weights=v,
                data_kind="observed",
            )
        )


def test_a_wrong_generation_point_is_flagged():
    """The demo's Asimov events are made at mu = 1; declared at mu = 2 the derived normalisation
    sample no longer averages the ratios to 1, and the model says so (at mu = 1 it does not)."""
    import warnings

    from sbi_engine.fit.exact import exact_demo_workspace

    ws = exact_demo_workspace(4000, n_nuisances=3, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Model(ws)
    bad = ws.with_data(ws.data.weights, kind="asimov", generated_at={"mu": 2.0})
    with pytest.warns(
        UserWarning, match=r"ratios average to \(.*\) on the normalisation sample.*generated_at"
    ):
        Model(bad)
