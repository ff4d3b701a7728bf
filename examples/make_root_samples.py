"""Write the demo simulator's samples as ROOT files with jagged branches, for analysis-root.yaml.

    .venv/bin/python examples/make_root_samples.py                 # -> examples/root-samples/
    .venv/bin/python examples/make_root_samples.py OUTDIR --events 20000

Why: a real analysis reads ntuples of per-event object collections, not ready-made features.
Each event of the built-in off-shell demo (m4l, cos_theta1, cos_theta2, phi and a weight) is
written as a TTree "events" with

- ``lep_E, lep_px, lep_py, lep_pz`` (jagged, counter ``nlep``): four massless leptons, two
  back-to-back pairs in the four-lepton rest frame boosted to the lab, so that m4l is their
  invariant mass; about 15 % of the events carry a fifth, soft lepton after the four;
- ``lep_sf`` (jagged, simulation only): per-lepton efficiency scale factors;
- ``z_cos_theta`` (jagged, counter ``nz``): the decay angle of each Z candidate;
- ``phi`` (flat): the angle between the decay planes; ``gen_weight`` (flat): the simulation
  weight divided by the product of the four leptons' scale factors;
- plus about 10 % extra events with only three leptons and one Z candidate, which the
  analysis removes with the selection ``num(lep_E) >= 4`` (their features cannot be built).

So the analysis file's expressions give back exactly the simulator's features and weights:
``mass(sum(lep_E[:, :4]), ...)``, ``z_cos_theta[:, 0]``, ``gen_weight * ak.prod(lep_sf[:, :4], axis=1)``.
data.root holds pseudo-data drawn from p(x | mu = 1) (weight 1 each, no weight branches).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

# file stem -> (demo process, seed, nuisance values); data is the mixture at mu = 1
SAMPLES: dict[str, tuple[str, int, dict[str, float]]] = {
    "S": ("S", 1, {}),
    "SBI": ("SBI", 2, {}),
    "B": ("B", 3, {}),
    "B_m4l_up": ("B", 4, {"m4l_scale": 1.0}),
    "B_m4l_down": ("B", 5, {"m4l_scale": -1.0}),
}
DATA_MU, DATA_SEED = 1.0, 6
EXTRA_LEPTON_FRACTION, JUNK_FRACTION = 0.15, 0.10
DEFAULT_DIR = Path(__file__).resolve().parent / "root-samples"


def _unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    cos = rng.uniform(-1.0, 1.0, n)
    ang = rng.uniform(-np.pi, np.pi, n)
    sin = np.sqrt(1.0 - cos**2)
    return np.stack([sin * np.cos(ang), sin * np.sin(ang), cos], axis=1)


def _boost(e: np.ndarray, p: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lorentz boost of four-vectors (e: (n,), p: (n, 3)) by velocity beta (n, 3); |beta| < 1."""
    b2 = np.sum(beta**2, axis=1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p, axis=1)
    safe = np.where(b2 > 0, b2, 1.0)
    coef = np.where(b2 > 0, (gamma - 1.0) * bp / safe, 0.0) + gamma * e
    return gamma * (e + bp), p + coef[:, None] * beta


def four_leptons(m4l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 4, 4) massless lepton four-vectors (E, px, py, pz) whose invariant mass is m4l."""
    n = len(m4l)
    share = rng.uniform(0.35, 0.65, n)  # energy share of the first pair in the rest frame
    a, b = 0.5 * share * m4l, 0.5 * (1.0 - share) * m4l
    n1, n2 = _unit_vectors(n, rng), _unit_vectors(n, rng)
    rest = [
        (a, a[:, None] * n1),
        (a, -a[:, None] * n1),
        (b, b[:, None] * n2),
        (b, -b[:, None] * n2),
    ]
    beta = _unit_vectors(n, rng) * rng.uniform(0.0, 0.8, n)[:, None]
    out = np.empty((n, 4, 4))
    for k, (e, p) in enumerate(rest):
        e_lab, p_lab = _boost(e, p, beta)
        out[:, k, 0], out[:, k, 1:] = e_lab, p_lab
    return out


def event_columns(
    x: np.ndarray, weights: np.ndarray | None, rng: np.random.Generator
) -> dict[str, Any]:
    """The branches of the events in `x` (columns m4l, cos_theta1, cos_theta2, phi), with
    junk events mixed in at random positions."""
    import awkward as ak

    n = len(x)
    leptons = four_leptons(x[:, 0], rng)
    sf = rng.uniform(0.95, 1.02, (n, 4))
    lep, lep_sf = [list(ev) for ev in leptons], [list(s) for s in sf]
    for i in np.flatnonzero(rng.random(n) < EXTRA_LEPTON_FRACTION):  # a soft fifth lepton
        e = rng.uniform(5.0, 15.0)
        lep[i] = lep[i] + [np.concatenate([[e], e * _unit_vectors(1, rng)[0]])]
        lep_sf[i] = lep_sf[i] + [rng.uniform(0.95, 1.02)]
    z_cos = [[c1, c2] for c1, c2 in x[:, 1:3]]
    phi = list(x[:, 3])
    gen = None if weights is None else list(weights / np.prod(sf, axis=1))
    n_junk = int(round(JUNK_FRACTION * n))
    junk_at = np.sort(rng.choice(n + n_junk, n_junk, replace=False))
    for pos in junk_at:  # three leptons, one Z candidate: fails num(lep_E) >= 4
        m = rng.uniform(100.0, 400.0)
        lep.insert(pos, list(four_leptons(np.array([m]), rng)[0, :3]))
        lep_sf.insert(pos, list(rng.uniform(0.95, 1.02, 3)))
        z_cos.insert(pos, [rng.uniform(-1.0, 1.0)])
        phi.insert(pos, rng.uniform(-np.pi, np.pi))
        if gen is not None:
            gen.insert(pos, rng.uniform(0.001, 0.01))
    lep_arr = ak.Array([[list(v) for v in ev] for ev in lep])
    fields = {
        "E": lep_arr[:, :, 0],
        "px": lep_arr[:, :, 1],
        "py": lep_arr[:, :, 2],
        "pz": lep_arr[:, :, 3],
    }
    if gen is not None:  # simulation only: data carry no weights
        fields["sf"] = ak.Array(lep_sf)
    cols: dict[str, Any] = {
        "lep": ak.zip(fields),
        "z": ak.zip({"cos_theta": ak.Array(z_cos)}),
        "phi": np.asarray(phi, dtype=np.float64),
    }
    if gen is not None:
        cols["gen_weight"] = np.asarray(gen, dtype=np.float64)
    return cols


def write_tree(path: Path, cols: dict[str, Any]) -> None:
    import uproot

    with uproot.recreate(path) as f:
        f.mktree(
            "events",
            {k: (v.type if not isinstance(v, np.ndarray) else v.dtype) for k, v in cols.items()},
            title="demo off-shell H*->ZZ->4l events",
        )
        f["events"].extend(cols)


def write_samples(outdir: str | Path, events: int = 10_000) -> dict[str, Path]:
    """Write S, SBI, B, the m4l_scale up/down samples of B and pseudo-data; return the paths."""
    from sbi_engine.demo import default_problem

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    problem = default_problem()
    paths = {}
    for stem, (process, seed, alpha) in SAMPLES.items():
        s = problem.sample(process, events, seed, alpha=alpha or None)
        rng = np.random.default_rng(10_000 + seed)
        paths[stem] = out / f"{stem}.root"
        write_tree(paths[stem], event_columns(s.features.astype(np.float64), s.weights, rng))
    data = problem.sample_mixture(DATA_MU, None, DATA_SEED)
    paths["data"] = out / "data.root"
    write_tree(
        paths["data"],
        event_columns(
            data.features.astype(np.float64), None, np.random.default_rng(10_000 + DATA_SEED)
        ),
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "outdir",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        help=f"folder for the .root files (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--events", type=int, default=10_000, help="events per simulated sample (default 10000)"
    )
    args = parser.parse_args(argv)
    for stem, path in write_samples(args.outdir, args.events).items():
        print(f"{stem:>10}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
