"""Member ratios of learned tasks: noise against signal, and shape effects below the noise floor.

Ensembles here are exact linear functions of m4l (a ReLU pair per member), so the member
spread and the log-ratio spread are known in closed form: member j has log r = s_j (m4l - 400) / 200.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.fit_jobs import build_learned_fit
from sbi_engine.learned_ratios import task_ratios
from sbi_engine.learned_uncertainty import ratio_checks
from sbi_engine.ratio import Ensemble
from sbi_engine.ratio.ensemble import FORMAT
from sbi_engine.ratio.prepare import Standardizer

FEATURES = ["m4l", "cos_theta1", "cos_theta2", "phi"]


def linear_ensemble(path, slopes, best_steps=None, budget=None, paired=None) -> str:
    """Members with log r_j = slopes[j] * (m4l - 400) / 200; ``best_steps`` and ``budget``
    record a training (each member's best-validation step, the step budget) as train.py does;
    ``paired`` its ``split.paired``."""
    m = len(slopes)
    k = np.zeros((m, 4, 2), np.float32)
    k[:, 0] = [1.0, -1.0]
    out = np.stack([[[s], [-s]] for s in slopes]).astype(np.float32)
    params = {
        "hidden_0": {"kernel": k, "bias": np.zeros((m, 2), np.float32)},
        "output": {"kernel": out, "bias": np.zeros((m, 1), np.float32)},
    }
    scaler = Standardizer(
        np.array([400.0, 0, 0, 0], np.float32), np.array([200.0, 1, 1, 1], np.float32)
    )
    meta = {
        "format": FORMAT,
        "model": {"hidden_layers": 1, "width": 2, "activation": "relu", "dtype": "float32"},
        "feature_names": FEATURES,
        "scaler": scaler.to_dict(),
        "config": {"bootstrap": True},
    }
    if paired is not None:
        meta["split"] = {"paired": paired}
    if best_steps is not None:
        meta["config"]["max_steps"] = budget
        meta["training"] = {
            "steps_run": budget * len(slopes),
            "complete": True,
            "members": [
                {"member": j, "best_step": s, "best_val_loss": 0.69}
                for j, s in enumerate(best_steps)
            ],
        }
    Ensemble(params, meta).save(path)
    return str(path)


def test_noise_and_signal_match_the_closed_form(tmp_path):
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.uniform(200, 600, 20_000), np.zeros((20_000, 3))]).astype(np.float32)
    slopes = [0.28, 0.30, 0.32, 0.30]
    tr = task_ratios("t", [linear_ensemble(tmp_path / "e.npz", slopes)], x, x, np.ones(len(x)))
    u = (x[:, 0].astype(np.float64) - 400) / 200
    expected = np.array(
        [s * u - np.log(np.mean(np.exp(s * u))) for s in slopes]
    )  # each member normalised
    assert tr.noise() == pytest.approx(np.sqrt(np.mean(np.var(expected, axis=0, ddof=1))), rel=1e-3)
    # the nominal is log mean exp of the members, normalised: close to slope 0.3 times u
    assert tr.signal() == pytest.approx(0.3 * np.std(u), rel=0.01)
    np.testing.assert_allclose(
        np.mean(np.exp(tr.members), axis=1), 1.0, rtol=1e-6
    )  # E_den[r_j] = 1 per member


def test_signal_counts_only_what_the_nuisance_shapes_cannot_mimic():
    """nominal = 2 c + 0.5 z with c a nuisance direction and z independent: the whole spread is
    sqrt(4 + 0.25), the part the fit cannot absorb into the nuisance is 0.5 (least squares on
    [1, c]; weights honoured)."""
    from sbi_engine.learned_ratios import TaskRatios

    rng = np.random.default_rng(4)
    c, z = rng.normal(size=(2, 200_000))
    nominal = 2.0 * c + 0.5 * z + 3.0
    tr = TaskRatios("t", np.vstack([nominal, nominal]), nominal)
    assert tr.signal() == pytest.approx(np.sqrt(4.25), rel=0.01)
    assert tr.signal(confounders=c[:, None]) == pytest.approx(0.5, rel=0.01)
    w = rng.uniform(0.5, 2.0, c.size)
    assert tr.signal(weights=w, confounders=c[:, None]) == pytest.approx(0.5, rel=0.01)
    assert tr.signal(confounders=np.empty((c.size, 0))) == pytest.approx(tr.signal())


def _spec(up_slopes, dn_slopes):
    def demo(proc, seed, **kw):
        return {"demo": {"process": proc, "n": 3000, "seed": seed, "n_nuisances": 3, **kw}}

    return {
        "name": "fit",
        "campaign": "c",
        "kind": "fit",
        "params": {
            "reference": "B",
            "mu_true": 1.0,
            "data": "asimov",
            "processes": {"S": demo("S", 1), "SBI": demo("SBI", 2), "B": demo("B", 3)},
            "tasks": {
                "S_vs_B": {"kind": "process", "process": "S"},
                "SBI_vs_B": {"kind": "process", "process": "SBI"},
                "m_up": {
                    "kind": "systematic",
                    "systematic": "m4l_scale",
                    "process": "B",
                    "direction": "up",
                },
                "m_dn": {
                    "kind": "systematic",
                    "systematic": "m4l_scale",
                    "process": "B",
                    "direction": "down",
                },
            },
            "systematics": [
                {
                    "name": "m4l_scale",
                    "process": "B",
                    "up": demo("B", 4, alpha={"m4l_scale": 1.0}),
                    "down": demo("B", 5, alpha={"m4l_scale": -1.0}),
                }
            ],
        },
    }


@pytest.mark.parametrize("effect, action", [(0.002, "dropped shape (yield kept)"), (0.3, "kept")])
def test_a_shape_effect_below_the_noise_floor_is_dropped(tmp_path, effect, action):
    noise = [-0.02, 0.0, 0.02, 0.0]
    ens = {
        "S_vs_B": [linear_ensemble(tmp_path / "s.npz", [0.5, 0.52, 0.48, 0.5])],
        "SBI_vs_B": [linear_ensemble(tmp_path / "i.npz", [0.1, 0.13, 0.07, 0.1])],
        "m_up": [linear_ensemble(tmp_path / "u.npz", [effect + n for n in noise])],
        "m_dn": [linear_ensemble(tmp_path / "d.npz", [-effect + n for n in noise])],
    }
    lf = build_learned_fit(_spec(None, None), ens)
    (d,) = lf.shape_decisions
    assert d.action == action
    ws = lf.workspace
    shape = [e for n in ws.nuisances if n.name == "m4l_scale" for e in n.effects.values()]
    assert (
        all(e.shape is None for e in shape)
        if action.startswith("dropped")
        else any(e.shape is not None for e in shape)
    )
    checks = {c["task"]: c for c in ratio_checks(lf)}
    if action.startswith("dropped"):
        # no shape left to mimic the ratios: SBI/B's member spread 0.025 in slope against a
        # 0.1 slope is noise/signal ~0.25 > 0.2 -> flagged; S/B (0.02 against 0.5) passes
        assert not checks["SBI_vs_B"]["passed"]
        assert checks["SBI_vs_B"]["value"] == pytest.approx(0.25, rel=0.1)
        assert checks["S_vs_B"]["passed"] and checks["S_vs_B"]["value"] < 0.05
    else:
        # the kept m4l_scale shape is linear in the same feature as both ratios: the nuisance
        # can mimic all of their variation, so whatever noise they have reads as information
        for task in ("SBI_vs_B", "S_vs_B"):
            assert not checks[task]["passed"] and checks[task]["value"] > 10, checks[task]
            assert "cannot mimic" in checks[task]["message"]


def test_error_components_vanish_for_identical_members_and_not_otherwise(tmp_path):
    from sbi_engine.fit import fit
    from sbi_engine.learned_uncertainty import components

    def ens(spread):
        return {
            "S_vs_B": [
                linear_ensemble(tmp_path / f"s{spread}.npz", [0.5 - spread, 0.5, 0.5 + spread, 0.5])
            ],
            "SBI_vs_B": [
                linear_ensemble(tmp_path / f"i{spread}.npz", [0.1 - spread, 0.1, 0.1 + spread, 0.1])
            ],
            "m_up": [linear_ensemble(tmp_path / f"u{spread}.npz", [0.3] * 4)],
            "m_dn": [linear_ensemble(tmp_path / f"d{spread}.npz", [-0.3] * 4)],
        }

    spec = _spec(None, None)
    spec["params"]["data"] = {"demo": {"mu": 1.0, "seed": 8, "poisson": True, "n_nuisances": 3}}
    same = build_learned_fit(spec, ens(0.0))
    c0 = components(same, fit(same.workspace), n_sim=10)
    assert c0.nn == pytest.approx(0.0, abs=1e-9)
    assert c0.sim > 0 and c0.total == pytest.approx(np.hypot(c0.hesse, c0.sim))
    varied = build_learned_fit(spec, ens(0.05))
    c1 = components(varied, fit(varied.workspace), n_sim=0, include=("nn",))
    assert c1.nn > 1e-3 and c1.sim is None and c1.total == pytest.approx(np.hypot(c1.hesse, c1.nn))


def test_the_asimov_closure_check_fits_the_primary_poi_whatever_its_name():
    """closure_check on a POI called mu_ggF (issue 14: analysis files name their POIs): a model
    with the right signal yield closes at every point; one whose yield is 30 % high (what wrong
    ratios do to the normalisation) returns mu_ggF-hat = mu / 1.3 and fails."""
    from types import SimpleNamespace

    from sbi_engine.fit import Workspace
    from sbi_engine.fit_jobs import SimulatedAsimov
    from sbi_engine.learned_uncertainty import closure_check
    from sbi_engine.sample import Sample

    n_s, n_b, s_yield, b_yield = 50, 50, 400.0, 100.0
    events = Sample(
        np.zeros((n_s + n_b, 1)),
        np.concatenate([np.full(n_s, s_yield / n_s), np.full(n_b, b_yield / n_b)]),
        ["x"],
        "counting",
    )
    sim = SimulatedAsimov(
        events,
        {"S": slice(0, n_s), "B": slice(n_s, n_s + n_b)},
        {"S": "mu_ggF", "B": "1"},
        {"mu_ggF": 1.0},
    )

    def build(signal_scale: float):
        def workspace(data: Sample) -> SimpleNamespace:
            ones = np.ones(n_s + n_b)
            return SimpleNamespace(
                workspace=Workspace.from_arrays(
                    pois={"mu_ggF": {"init": 1.0, "bounds": (0.0, 10.0)}},
                    processes={
                        "S": {
                            "yield": s_yield * signal_scale,
                            "coefficient": "mu_ggF",
                            "ratio": ones,
                        },
                        "B": {"yield": b_yield, "coefficient": "1", "ratio": ones},
                    },
                    weights=np.asarray(data.weights),
                )
            )

        return workspace

    good = closure_check(sim, build(1.0), 1.0, None, poi="mu_ggF")
    assert good["passed"] and good["value"] < 1e-3, good
    assert "mu_ggF=2: 2 +-" in good["message"]
    bad = closure_check(sim, build(1.3), 1.0, None, poi="mu_ggF")
    assert not bad["passed"] and bad["value"] > 3.0, bad
    assert "mu_ggF=2: 1.538" in bad["message"], bad["message"]


def test_noise_shrinkage_is_opt_in_and_reaches_the_fit(tmp_path):
    """shrink_noise off (default): the fit uses the raw ratios. On: every process ratio task is
    shrunk by its lambda (members too), the workspace holds the shrunk ratio, and the
    noise_to_signal check still judges the raw ratio (it reads the same with or without)."""
    ens = {
        "S_vs_B": [linear_ensemble(tmp_path / "s.npz", [0.5, 0.52, 0.48, 0.5])],
        "SBI_vs_B": [linear_ensemble(tmp_path / "i.npz", [0.1, 0.13, 0.07, 0.1])],
        "m_up": [linear_ensemble(tmp_path / "u.npz", [0.3, 0.31, 0.29, 0.3])],
        "m_dn": [linear_ensemble(tmp_path / "d.npz", [-0.3, -0.31, -0.29, -0.3])],
    }
    spec = _spec(None, None)
    spec["params"]["data"] = {"demo": {"mu": 1.0, "seed": 8, "poisson": True, "n_nuisances": 3}}
    off = build_learned_fit(spec, ens)
    assert off.shrinkage == () and off.unshrunk == {}
    spec["params"]["options"] = {"shrink_noise": True}
    on = build_learned_fit(spec, ens)
    assert {s.task for s in on.shrinkage} == {"S_vs_B", "SBI_vs_B"}
    for s in on.shrinkage:
        # the ratios are linear in m4l like the shape direction: nothing is left beyond it,
        # so lambda is 0 (noise against a residual of float32 rounding size), and the members keep
        # their differences along the direction
        assert s.factor == 0.0 and s.directions == 1 and s.residual < 0.02 * s.noise
        assert on.ratios[s.task].noise() > 0
    proc = {p.name: p for p in on.workspace.processes}
    np.testing.assert_allclose(proc["SBI"].ratio, np.exp(on.ratios["SBI_vs_B"].nominal))
    raw = {c["task"]: c["value"] for c in ratio_checks(off) if c["name"] == "noise_to_signal"}
    judged = {c["task"]: c["value"] for c in ratio_checks(on) if c["name"] == "noise_to_signal"}
    assert judged == pytest.approx(raw, rel=1e-9, nan_ok=True)


@pytest.mark.parametrize(
    "best_steps, stopped",
    [([3_100, 6_000, 4_400, 5_200], True), ([3_100, 6_000, 54_000, 5_200], False)],
)
def test_a_noisy_ratio_whose_training_stopped_early_says_so(tmp_path, best_steps, stopped):
    """The members' best steps and the budget come from the ensemble files; a noisy task whose
    members all stopped before half the budget is told to raise patience (session 12: more events
    did not help interference because early stopping never let the training use them)."""
    noise = [-0.02, 0.0, 0.02, 0.0]
    ens = {
        "S_vs_B": [linear_ensemble(tmp_path / "s.npz", [0.5, 0.52, 0.48, 0.5])],
        "SBI_vs_B": [
            linear_ensemble(tmp_path / "i.npz", [0.1, 0.13, 0.07, 0.1], best_steps, 54_700)
        ],
        "m_up": [linear_ensemble(tmp_path / "u.npz", [0.002 + n for n in noise])],
        "m_dn": [linear_ensemble(tmp_path / "d.npz", [-0.002 + n for n in noise])],
    }
    lf = build_learned_fit(_spec(None, None), ens)
    checks = {c["task"]: c for c in ratio_checks(lf)}
    sbi = checks["SBI_vs_B"]
    assert not sbi["passed"]
    assert ("early stopping ended it" in sbi["message"]) is stopped
    if stopped:
        assert "3100-6000 of a 54700-step budget" in sbi["message"]
    # S/B records no training: no claim either way, and it passes
    assert checks["S_vs_B"]["passed"] and "early stopping" not in checks["S_vs_B"]["message"]


@pytest.mark.parametrize("paired, suggested", [(False, True), (True, False), (None, False)])
def test_a_noisy_ratio_from_two_simulations_is_told_about_paired_training(
    tmp_path, paired, suggested
):
    """A noisy task trained on two independent simulations (split.paired False) is pointed to
    reweighting the reference's events; a paired one, or one that does not record it, is not."""
    noise = [-0.02, 0.0, 0.02, 0.0]
    ens = {
        "S_vs_B": [linear_ensemble(tmp_path / "s.npz", [0.5, 0.52, 0.48, 0.5])],
        "SBI_vs_B": [linear_ensemble(tmp_path / "i.npz", [0.1, 0.13, 0.07, 0.1], paired=paired)],
        "m_up": [linear_ensemble(tmp_path / "u.npz", [0.002 + n for n in noise])],
        "m_dn": [linear_ensemble(tmp_path / "d.npz", [-0.002 + n for n in noise])],
    }
    lf = build_learned_fit(_spec(None, None), ens)
    assert lf.ratios["SBI_vs_B"].paired is paired
    sbi = {c["task"]: c for c in ratio_checks(lf)}["SBI_vs_B"]
    assert not sbi["passed"]
    assert ("paired training" in sbi["message"]) is suggested


def test_a_real_training_records_its_best_steps_and_budget(tmp_path):
    """What the check reads is what train.py writes: a weak ratio with patience 2 stops long
    before a 3000-step budget, and the loaded task knows it."""
    from sbi_engine.ratio.config import TrainConfig
    from sbi_engine.ratio.train import train_ensemble
    from sbi_engine.sample import Sample

    rng = np.random.default_rng(0)
    num = Sample(rng.normal(0.1, 1, (5000, 1)), np.ones(5000), ("x",), "num")
    den = Sample(rng.normal(0.0, 1, (5000, 1)), np.ones(5000), ("x",), "den")
    config = TrainConfig(
        members=2, max_steps=3000, eval_every=50, patience=2, hidden_layers=1, width=8
    )
    result = train_ensemble(num, den, config)
    path = tmp_path / "e.npz"
    result.ensemble.save(path)
    x = den.features.astype(np.float32)
    tr = task_ratios("t", [str(path)], x, x, np.ones(len(x)))
    assert tr.step_budget == 3000 and tr.paired is False  # two independent samples
    assert len(tr.best_steps) == 2 and max(tr.best_steps) < result.steps_run
    assert tr.stopped_early()
