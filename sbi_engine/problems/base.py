"""The common machinery of the benchmark problems: exact densities, samplers, analysis files.

A benchmark problem defines, for every process c, a normalised density p_c(x | alpha) and a
yield nu_c(alpha) in closed form, and an exact sampler of p_c. Everything else is derived here:

* ratios: log r_c(x) = log p_c(x | 0) - log p_ref(x | 0); shape ratios
  log p_c(x | alpha_k = +-1) - log p_c(x | 0) (exact, normalised: E_{p_c}[ratio] = 1);
* the true mixture nu(mu, alpha) p(x | mu, alpha) = sum_c m_c(mu) nu_c(alpha) p_c(x | alpha), with
  m_c the coefficient expressions (only the few used here, evaluated without the fit's parser);
* pseudo-data: Poisson(nu(mu, alpha)) events drawn exactly from the mixture by accept/reject
  from the sum of its positive-coefficient components (exact whenever the mixture is >= 0);
* weighted simulation (`sample`): exact draws with weights nu_c / n unless a problem overrides
  `_simulate` (e.g. signed NLO-like weights); the weights always sum to nu_c(alpha) exactly;
* Parquet samples (`write_samples`) and the analysis file (`analysis_config`).

Nuisance conventions (the fit's): a *shape* nuisance k changes the shapes (and possibly the
yields) of the processes in ``shape_processes[k]``; it is specified at alpha_k = +-1 by the
densities there, and its yield ratios nu_c(+-1) / nu_c(0) are its norm effect. Between and
beyond +-1 the truth is whatever the problem's parametrisation says (the fit interpolates
with HistFactory code 4, exact at +-1). A *norm-only* nuisance multiplies nu_c by
up**alpha (alpha >= 0) or down**(-alpha) (alpha < 0), which code 4 reproduces at +-1 and
beyond.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sbi_engine.sample import Sample

__all__ = [
    "BenchmarkProblem",
    "COEFFICIENT_FUNCTIONS",
    "coefficient_value",
    "trunc_exp_logpdf",
    "trunc_exp_draw",
    "trunc_normal_logpdf",
    "trunc_normal_draw",
    "normal_logpdf",
]

# The coefficient expressions the problems use, as plain functions of mu (independent of the
# fit's expression parser, so the NumPy reference NLL shares no model code with the project).
COEFFICIENT_FUNCTIONS = {
    "mu": lambda mu: mu,
    "1": lambda mu: 1.0,
    "mu - sqrt(mu)": lambda mu: mu - math.sqrt(mu),
    "sqrt(mu)": lambda mu: math.sqrt(mu),
    "1 - sqrt(mu)": lambda mu: 1.0 - math.sqrt(mu),
}


def coefficient_value(expr: str, mu: float) -> float:
    try:
        return float(COEFFICIENT_FUNCTIONS[expr](float(mu)))
    except KeyError:
        raise ValueError(
            f"unknown coefficient expression {expr!r}; known: {sorted(COEFFICIENT_FUNCTIONS)}"
        ) from None


# --------------------------------------------------------------------------- 1-D building blocks

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_logpdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    z = (x - mean) / sd
    return -0.5 * z * z - math.log(sd) - _LOG_SQRT_2PI


def trunc_exp_logpdf(x: np.ndarray, lam: float, lo: float, hi: float) -> np.ndarray:
    """lam e^{-lam (x - lo)} / (1 - e^{-lam (hi - lo)}) on [lo, hi] (-inf outside)."""
    log_z = math.log(-math.expm1(-lam * (hi - lo)))
    out = math.log(lam) - lam * (x - lo) - log_z
    return np.where((x >= lo) & (x <= hi), out, -np.inf)


def trunc_exp_draw(
    rng: np.random.Generator, n: int, lam: float, lo: float, hi: float
) -> np.ndarray:
    u = rng.random(n)
    return np.clip(lo - np.log1p(u * math.expm1(-lam * (hi - lo))) / lam, lo, hi)


def trunc_normal_logpdf(x: np.ndarray, mean: float, sd: float, lo: float, hi: float) -> np.ndarray:
    from scipy.special import ndtr  # noqa: PLC0415

    z = float(ndtr((hi - mean) / sd) - ndtr((lo - mean) / sd))
    return np.where((x >= lo) & (x <= hi), normal_logpdf(x, mean, sd) - math.log(z), -np.inf)


def trunc_normal_draw(
    rng: np.random.Generator, n: int, mean: float, sd: float, lo: float, hi: float
) -> np.ndarray:
    from scipy.special import ndtr, ndtri  # noqa: PLC0415

    a, b = float(ndtr((lo - mean) / sd)), float(ndtr((hi - mean) / sd))
    u = a + (b - a) * rng.random(n)
    return np.clip(mean + sd * ndtri(u), lo, hi)


# --------------------------------------------------------------------------- the base class


class BenchmarkProblem(ABC):
    """A problem with exact likelihoods. Subclasses set the class attributes and implement the
    three abstract methods `_yield`, `_log_density` and `_draw` (and optionally `_simulate`)."""

    name: str = ""
    description: str = ""
    processes: tuple[str, ...] = ()
    reference: str = ""
    coefficients: dict[str, str] = {}
    feature_names: tuple[str, ...] = ()
    nuisances: tuple[str, ...] = ()  # shape (+ norm) systematics
    shape_processes: dict[str, tuple[str, ...]] = {}  # nuisance -> processes whose shape it changes
    norm_only: dict[str, dict[str, tuple[float, float]]] = {}
    bounds: tuple[tuple[float, float], ...] = ()  # support (or a box holding all but ~1e-12 of it)
    negative_weight_processes: tuple[
        str, ...
    ] = ()  # processes whose simulation has negative weights
    n_events: int = 100_000  # events per written sample at events_scale = 1
    # process -> process whose simulated events its files reuse, reweighted by the exact density
    # ratio (a generator's reweighting module); such problems number their events (`event`)
    reweighted_from: dict[str, str] = {}
    mu_bounds: tuple[float, float] = (0.0, 20.0)

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _yield(self, process: str, alpha: Mapping[str, float]) -> float:
        """nu_c(alpha) without the norm-only nuisances."""

    @abstractmethod
    def _log_density(self, process: str, x: np.ndarray, alpha: Mapping[str, float]) -> np.ndarray:
        """log p_c(x | alpha) for float64 x (n, d)."""

    @abstractmethod
    def _draw(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> np.ndarray:
        """n exact draws from p_c(x | alpha), float64 (n, d)."""

    def _simulate(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, w) of a weighted simulation of c with sum(w) = nu_c(alpha) exactly."""
        x = self._draw(process, n, rng, alpha)
        return x, np.full(n, self.yield_(process, alpha) / n)

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Every nuisance: shape ones, then norm-only ones."""
        return tuple(self.nuisances) + tuple(k for k in self.norm_only if k not in self.nuisances)

    def _alpha(self, alpha: Mapping[str, float] | None) -> dict[str, float]:
        out = {k: 0.0 for k in self.parameter_names}
        for k, v in dict(alpha or {}).items():
            if k not in out:
                raise ValueError(
                    f"{self.name}: unknown nuisance {k!r}; nuisances are {list(self.parameter_names)}"
                )
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{self.name}: nuisance {k!r} must be finite, got {v}")
            out[k] = v
        return out

    def _check_process(self, process: str) -> None:
        if process not in self.processes:
            raise ValueError(
                f"{self.name}: unknown process {process!r}; processes are {list(self.processes)}"
            )

    def _as_x(self, x: np.ndarray | Sample) -> np.ndarray:
        arr = np.asarray(x.features if isinstance(x, Sample) else x, dtype=np.float64)
        if arr.ndim == 1 and len(self.feature_names) == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{self.name}: x must have shape (n, {len(self.feature_names)}) for "
                f"{self.feature_names}, got {arr.shape}"
            )
        return arr

    def coefficient(self, process: str, mu: float) -> float:
        """m_c(mu)."""
        return coefficient_value(self.coefficients[process], mu)

    def affects_shape(self, nuisance: str, process: str) -> bool:
        return process in self.shape_processes.get(nuisance, ())

    # ------------------------------------------------------------------ the interface
    def yield_(self, process: str, alpha: Mapping[str, float] | None = None) -> float:
        """nu_c(alpha): the closed-form yield, norm-only nuisances included."""
        self._check_process(process)
        a = self._alpha(alpha)
        nu = float(self._yield(process, a))
        for k, effects in self.norm_only.items():
            if process in effects and a[k] != 0.0:
                up, down = effects[process]
                nu *= up ** a[k] if a[k] >= 0 else down ** (-a[k])
        return nu

    def log_density(
        self, process: str, x: np.ndarray | Sample, alpha: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """log p_c(x | alpha), normalised over the observables."""
        self._check_process(process)
        return np.asarray(
            self._log_density(process, self._as_x(x), self._alpha(alpha)), dtype=np.float64
        )

    def log_ratio(self, process: str, x: np.ndarray | Sample) -> np.ndarray:
        """log p_c(x) / p_ref(x) at alpha = 0 (0 for the reference)."""
        self._check_process(process)
        arr = self._as_x(x)
        if process == self.reference:
            return np.zeros(arr.shape[0])
        return self.log_density(process, arr) - self.log_density(self.reference, arr)

    def shape_log_ratio(
        self, process: str, nuisance: str, x: np.ndarray | Sample, direction: float
    ) -> np.ndarray:
        """log p_c(x | alpha_k = direction) / p_c(x | 0) (0 where k does not touch c's shape)."""
        self._check_process(process)
        if nuisance not in self.parameter_names:
            raise ValueError(
                f"{self.name}: unknown nuisance {nuisance!r}; nuisances are {list(self.parameter_names)}"
            )
        arr = self._as_x(x)
        if not self.affects_shape(nuisance, process):
            return np.zeros(arr.shape[0])
        return self.log_density(process, arr, {nuisance: float(direction)}) - self.log_density(
            process, arr
        )

    def expected_events(self, mu: float, alpha: Mapping[str, float] | None = None) -> float:
        """nu(mu, alpha) = sum_c m_c(mu) nu_c(alpha)."""
        _check_mu(mu)
        return float(sum(self.coefficient(c, mu) * self.yield_(c, alpha) for c in self.processes))

    def mixture_log_intensity(
        self, mu: float, x: np.ndarray | Sample, alpha: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """log [nu(mu, alpha) p(x | mu, alpha)] = log sum_c m_c(mu) nu_c(alpha) p_c(x | alpha)."""
        arr = self._as_x(x)
        total = np.zeros(arr.shape[0])
        for c in self.processes:
            m = self.coefficient(c, mu)
            if m != 0.0:
                total += m * self.yield_(c, alpha) * np.exp(self.log_density(c, arr, alpha))
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(total, 0.0))

    def sample(
        self, process: str, n: int, seed: int, alpha: Mapping[str, float] | None = None
    ) -> Sample:
        """n simulated events of c at alpha, weights summing to nu_c(alpha) (signed where the
        problem's simulation has negative weights)."""
        self._check_process(process)
        n = _check_n(n)
        a = self._alpha(alpha)
        x, w = self._simulate(process, n, np.random.default_rng(seed), a)
        tag = ", ".join(f"{k}={v:g}" for k, v in a.items() if v)
        return Sample(
            x,
            w,
            self.feature_names,
            f"{self.name}:{process}(n={n}, seed={seed}{', ' + tag if tag else ''})",
        )

    def draw_mixture(
        self, mu: float, n: int, rng: np.random.Generator, alpha: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """n exact draws from p(x | mu, alpha): accept/reject from the positive-coefficient part."""
        _check_mu(mu)
        a = self._alpha(alpha)
        pos = {c: self.coefficient(c, mu) * self.yield_(c, a) for c in self.processes}
        neg = {c: v for c, v in pos.items() if v < 0}
        pos = {c: v for c, v in pos.items() if v > 0}
        if not pos:
            raise ValueError(f"{self.name}: the mixture at mu={mu} has no positive component")
        names = list(pos)
        probs = np.array([pos[c] for c in names]) / sum(pos.values())
        chunks, have = [], 0
        while have < n:
            m = max(2 * (n - have), 256) if neg else n - have
            counts = rng.multinomial(m, probs)
            cand = (
                np.concatenate([self._draw(c, k, rng, a) for c, k in zip(names, counts)])
                if m
                else np.empty((0, len(self.feature_names)))
            )
            if neg and m:
                env = sum(pos[c] * np.exp(self._log_density(c, cand, a)) for c in names)
                f = env + sum(v * np.exp(self._log_density(c, cand, a)) for c, v in neg.items())
                cand = cand[rng.random(m) * env <= f]
            rng.shuffle(cand)
            chunks.append(cand)
            have += cand.shape[0]
        return np.concatenate(chunks)[:n]

    def pseudo_data(self, mu: float, seed: int, alpha: Mapping[str, float] | None = None) -> Sample:
        """Observed-like events: Poisson(nu(mu, alpha)) draws from the true mixture, weight 1."""
        rng = np.random.default_rng(seed)
        count = int(rng.poisson(self.expected_events(mu, alpha)))
        x = self.draw_mixture(mu, count, rng, alpha)
        return Sample(
            x,
            np.ones(count),
            self.feature_names,
            f"{self.name}:data(mu={mu:g}, n={count}, seed={seed})",
        )

    # ------------------------------------------------------------------ files
    def sample_names(self) -> dict[str, tuple[str, str, float]]:
        """{sample name: (process, nuisance or '', direction)} for every nominal and systematic sample."""
        out = {c: (c, "", 0.0) for c in self.processes}
        for k in self.nuisances:
            for c in self.shape_processes.get(k, ()):
                out[f"{c}_{k}_up"] = (c, k, 1.0)
                out[f"{c}_{k}_down"] = (c, k, -1.0)
        return out

    def events_per_sample(self, events_scale: float = 1.0) -> int:
        return max(int(round(self.n_events * float(events_scale))), 100)

    def reweighted_sample(self, process: str, source: Sample, alpha: Mapping[str, float]) -> Sample:
        """``source``'s events weighted to simulate ``process`` at alpha: w p_c / p_src, scaled
        so the weights sum to nu_c(alpha) exactly (as a reweighting module's output is)."""
        a = self._alpha(alpha)
        x = np.asarray(source.features, np.float64)
        src = self.reweighted_from[process]
        ratio = np.exp(self.log_density(process, x, a) - self.log_density(src, x, a))
        w = source.weights * ratio
        w = w * (self.yield_(process, a) / float(np.sum(w)))
        tag = ", ".join(f"{k}={v:g}" for k, v in a.items() if v)
        return Sample(
            source.features,
            w,
            self.feature_names,
            f"{self.name}:{process} reweighted from {source.source}{' at ' + tag if tag else ''}",
        )

    def simulate_samples(self, seed: int = 0, events_scale: float = 1.0) -> dict[str, Sample]:
        """Every nominal and systematic sample, as `write_samples` writes them. Processes in
        ``reweighted_from`` reuse their source process's events at the same alpha (same seed),
        so those samples hold the same events with other weights."""
        n = self.events_per_sample(events_scale)
        names = self.sample_names()
        seeds = {key: 1000 * seed + i + 1 for i, key in enumerate(names)}

        cache: dict[str, Sample] = {}  # a reweighting source is simulated once

        def simulated(key: str) -> Sample:
            if key not in cache:
                proc, nuis, direction = names[key]
                cache[key] = self.sample(
                    proc, n, seed=seeds[key], alpha={nuis: direction} if nuis else None
                )
            return cache[key]

        out = {}
        for key, (proc, nuis, direction) in names.items():
            if proc in self.reweighted_from:
                src = self.reweighted_from[proc]
                src_key = f"{src}_{nuis}_{'up' if direction > 0 else 'down'}" if nuis else src
                out[key] = self.reweighted_sample(
                    proc, simulated(src_key), {nuis: direction} if nuis else {}
                )
            else:
                out[key] = simulated(key)
        return out

    def write_samples(
        self, directory: str | Path, seed: int = 0, events_scale: float = 1.0
    ) -> dict[str, Path]:
        """Parquet files (feature columns + `weight`, and `event` where samples share events)
        for every nominal and systematic sample (`simulate_samples`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return {
            key: write_parquet(s, directory / f"{key}.parquet", event=bool(self.reweighted_from))
            for key, s in self.simulate_samples(seed, events_scale).items()
        }

    def write_pseudo_data(
        self, path: str | Path, mu: float, seed: int, alpha: Mapping[str, float] | None = None
    ) -> Path:
        return write_parquet(self.pseudo_data(mu, seed, alpha), Path(path), weight=False)

    def analysis_config(
        self,
        sample_dir: str | Path,
        mu_true: float = 1.0,
        observed: str | None = None,
        relative_to: str | Path | None = None,
    ) -> dict[str, Any]:
        """An analysis file (as a dict) over the Parquet samples `write_samples` writes in sample_dir.

        observed: file name (in sample_dir) of pseudo-data to fit; None fits Asimov data at
        mu_true. relative_to: the folder the analysis file will sit in (paths are written
        relative to it; default: absolute paths).
        """
        _check_mu(mu_true)
        sample_dir = Path(sample_dir)

        def where(fname: str) -> str:
            p = sample_dir / fname
            if relative_to is None:
                return str(p.resolve())
            try:
                return str(p.resolve().relative_to(Path(relative_to).resolve()))
            except ValueError:
                return str(p.resolve())

        samples: dict[str, Any] = {}
        for key, (proc, _, _) in self.sample_names().items():
            spec: dict[str, Any] = {"path": where(f"{key}.parquet")}
            if proc in self.negative_weight_processes:
                spec["allow_negative_weights"] = True
            if self.reweighted_from:
                # one split for the reweighted files and their source: the content hash would
                # differ with the weight, and a training event of one class could be an
                # evaluation event of the other
                spec["split_by"] = "event"
            samples[key] = spec
        if observed is not None:
            samples["data"] = {"path": where(observed), "weight": None}
        systematics: dict[str, Any] = {}
        for k in self.nuisances:
            systematics[k] = {
                "shape": {
                    c: {"up": f"{c}_{k}_up", "down": f"{c}_{k}_down"}
                    for c in self.shape_processes.get(k, ())
                }
            }
        for k, effects in self.norm_only.items():
            systematics.setdefault(k, {})["norm"] = {
                c: [float(u), float(d)] for c, (u, d) in effects.items()
            }
        return {
            "name": f"benchmark-{self.name}".replace("_", "-"),
            "description": f"Benchmark problem {self.name} (exact likelihood): {self.description}",
            "sample_defaults": {
                "format": "parquet",
                "features": list(self.feature_names),
                "weight": "weight",
            },
            "samples": samples,
            "processes": {
                c: {"sample": c, "coefficient": self.coefficients[c], "yield": self.yield_(c)}
                for c in self.processes
            },
            "reference": self.reference,
            "poi": {"init": 1.0, "bounds": [float(b) for b in self.mu_bounds]},
            "systematics": systematics,
            "training": {"seed": 0},
            "data": {"observed": "data"}
            if observed is not None
            else {"asimov": {"mu": float(mu_true)}},
            "compute": {"fit": True, "impacts": False, "scan": False, "toys": False},
            "backend": {"launcher": "local", "max_concurrency": 2},
            "report": {"title": f"Benchmark {self.name}"},
        }


def write_parquet(sample: Sample, path: Path, weight: bool = True, event: bool = False) -> Path:
    """Feature columns (float32) and, if `weight`, a float64 `weight` column; with `event`, an
    int64 `event` number column (0, 1, ...)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    cols = {name: pa.array(sample.features[:, j]) for j, name in enumerate(sample.names)}
    if weight:
        cols["weight"] = pa.array(sample.weights)
    if event:
        cols["event"] = pa.array(np.arange(len(sample.features), dtype=np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


def read_parquet(path: str | Path, names: tuple[str, ...], weight: bool = True) -> Sample:
    """Read a file `write_parquet` wrote (weight 1 per event where there is no weight column)."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    t = pq.read_table(path)
    x = np.stack([t.column(n).to_numpy() for n in names], axis=1)
    w = (
        t.column("weight").to_numpy()
        if weight and "weight" in t.column_names
        else np.ones(x.shape[0])
    )
    return Sample(x, w, names, str(path))


def _check_mu(mu: float) -> None:
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be finite and >= 0, got {mu}")


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return int(n)
