"""The fit workspace: parameters, processes, nuisances, control regions and data.

A workspace is plain data. In memory it holds NumPy (or JAX) arrays; on disk it is one JSON
file validated by ``sbi_engine.fit.workspace_model`` (its JSON schema is shipped as
``sbi_engine/schemas/workspace.schema.json``) plus ``.npy`` files (or
``.npz`` members) that the JSON references relative to its own location. See
``docs/workspace.md`` for the format and an example.

Per-event arrays (one value per data event):
  * ``ratio`` of each process: r_c(x_i) = p_c(x_i) / p_ref(x_i), up to a common p_ref;
  * ``shape`` up/down of a nuisance on a process: p_c(x_i | alpha=+-1) / p_c(x_i | 0);
  * data ``weights``: 1 for observed events, simulation weights for (weighted) Asimov data;
  * optional data ``norm_weights`` v_i: a weighted sample of p_ref (sum_i v_i f(x_i) ~ the
    integral of p_ref f) from which the model normalises the per-event shape factors (see
    ``docs/workspace.md``); rows with weight 0 and v_i > 0 are normalisation-only events.
A nuisance that does not touch a process stores nothing for it.

>>> import numpy as np
>>> n = 4
>>> ws = Workspace.from_arrays(
...     pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
...     processes={"S": {"yield": 10.0, "coefficient": "mu", "ratio": np.full(n, 0.5)},
...                "B": {"yield": 90.0, "coefficient": "1", "ratio": np.ones(n)}},
...     weights=np.ones(n),
...     nuisances=[{"name": "lumi", "effects": {"S": {"norm": (1.02, 0.98)}, "B": {"norm": (1.02, 0.98)}}}],
... )
>>> ws.parameter_names
('mu', 'lumi')
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbi_engine.config_model import dotted, validate

from .expr import Expression, ExpressionError, parse_expression

__all__ = [
    "WorkspaceError",
    "FreeParameter",
    "Process",
    "Effect",
    "Nuisance",
    "ControlSample",
    "ControlRegion",
    "Data",
    "Workspace",
]

DEFAULT_NP_BOUNDS = (-5.0, 5.0)


class WorkspaceError(ValueError):
    """An invalid workspace; the message names the file and the JSON key (or argument)."""


@dataclass(frozen=True)
class FreeParameter:
    """A POI or a free normalisation factor (unconstrained, bounded)."""

    name: str
    init: float = 1.0
    bounds: tuple[float, float] = (-math.inf, math.inf)
    is_poi: bool = True


@dataclass(frozen=True, eq=False)
class Process:
    """An unbinned process: yield nu_c, coefficient m_c(theta), per-event ratio r_c(x_i)."""

    name: str
    yield_: float
    coefficient: Expression
    ratio: Any  # (n,) array


@dataclass(frozen=True, eq=False)
class Effect:
    """What one nuisance does to one process: yield ratios and/or per-event shape ratios."""

    norm: tuple[float, float] | None = None  # (up, down) yield ratios
    shape: tuple[Any, Any] | None = None  # (up (n,), down (n,)) per-event density ratios


@dataclass(frozen=True, eq=False)
class Nuisance:
    """A Gaussian-constrained nuisance parameter: (alpha - aux)^2 enters q."""

    name: str
    aux: float = 0.0
    init: float = 0.0
    bounds: tuple[float, float] = DEFAULT_NP_BOUNDS
    effects: Mapping[str, Effect] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ControlSample:
    """A process in a binned control region: per-bin yields, coefficient, per-bin norm effects."""

    name: str
    yields: np.ndarray
    coefficient: Expression
    norm: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ControlRegion:
    """A binned Poisson control region."""

    name: str
    observed: np.ndarray
    samples: tuple[ControlSample, ...]


@dataclass(frozen=True, eq=False)
class Data:
    """Event weights (1 for observed data) and, for weighted Asimov data, where they were made.

    ``norm_weights`` (optional, (n,)): weights v_i of the same rows as a sample of p_ref, used to
    normalise the shape factors; absent means "derive from the weights" for Asimov data and "no
    normalisation term" (shapes treated as normalised) for observed data.
    """

    weights: Any  # (n,)
    kind: str = "observed"  # "observed" | "asimov"
    generated_at: Mapping[str, float] | None = None
    norm_weights: Any = None  # (n,) or None


def _err(where: str, msg: str) -> WorkspaceError:
    return WorkspaceError(f"{where}: {msg}")


def array_path(base: Path, name: str, where: str) -> Path:
    """The array file ``name`` of a workspace document, relative to its folder ``base``.
    Refuses an absolute path, a '..' part and a drive or backslash form, so a workspace file
    only reads arrays from its own folder and below (it may come from someone else)."""
    parts = name.replace("\\", "/").split("/")
    drive = len(name) > 1 and name[1] == ":" and name[0].isalpha()
    if name.startswith(("/", "\\")) or drive or ".." in parts:
        raise _err(
            where,
            f"array file {name!r} must be a path relative to the workspace's folder {base} "
            "without '..' (e.g. 'ws.arrays/ratio_S.npy'); absolute paths and '..' are refused",
        )
    return base / name


def _check_coefficient(expr: Expression, free: Sequence[FreeParameter], where: str) -> None:
    """A coefficient must be a finite number at the initial values and at the middle of each
    POI's (finite) range: `mu/0` or `mu**9**9**9` is a located error at load, not a traceback
    from inside the fit."""
    base = {p.name: np.float64(p.init) for p in free}
    points = [base] + [
        {**base, p.name: np.float64(0.5 * (p.bounds[0] + p.bounds[1]))}
        for p in free
        if p.is_poi and all(math.isfinite(b) for b in p.bounds)
    ]
    for values in points:
        at = ", ".join(f"{k} = {float(v):g}" for k, v in values.items())
        try:
            with np.errstate(all="ignore"):
                value = float(np.real_if_close(expr(values, np)))
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise _err(where, f"{expr.text!r} cannot be evaluated at {at}: {exc}") from None
        if not math.isfinite(value):
            raise _err(where, f"{expr.text!r} is not finite at {at}")


def _bounds(value: Any, where: str, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise _err(where, f"bounds must be two numbers (low, high), got {value!r}") from None
    if not lo < hi:
        raise _err(where, f"bounds low {lo} must be below high {hi}")
    return lo, hi


def _vector(arr: Any, n: int | None, where: str) -> Any:
    """Check a per-event array: 1-D, length n, finite. JAX arrays are kept as they are."""
    if not hasattr(arr, "shape"):
        arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 1:
        raise _err(where, f"must be a 1-D per-event array, got shape {tuple(arr.shape)}")
    if n is not None and arr.shape[0] != n:
        raise _err(where, f"has {arr.shape[0]} rows but the data has {n} events")
    return arr


_CHECK_BLOCK = 1 << 22


def _positive_finite(arr: Any, where: str, allow_zero: bool = False) -> None:
    filename = getattr(arr, "filename", None) if isinstance(arr, np.memmap) else None
    if filename and arr.ndim == 1 and arr.size > _CHECK_BLOCK:
        # Check a mapped array block by block with file reads, so validation does not pull the
        # whole file into this process's resident set (streamed workspaces are larger than RAM).
        for start in range(0, arr.size, _CHECK_BLOCK):
            count = min(_CHECK_BLOCK, arr.size - start)
            block = np.fromfile(
                filename, dtype=arr.dtype, count=count, offset=arr.offset + start * arr.itemsize
            )
            try:
                _positive_finite(block, where, allow_zero)
            except WorkspaceError as exc:
                raise WorkspaceError(f"{exc}; rows counted from row {start}") from None
        return
    a = np.asarray(arr)
    bad = ~np.isfinite(a) | ((a < 0) if allow_zero else (a <= 0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        need = "finite and >= 0" if allow_zero else "finite and > 0"
        raise _err(
            where,
            f"{int(bad.sum())} of {a.size} values are not {need} (first at row {first}: {a.reshape(-1)[first]})",
        )


@dataclass(frozen=True, eq=False)
class Workspace:
    """Everything the fit needs. Build with :meth:`from_arrays` or :meth:`load`."""

    pois: tuple[FreeParameter, ...]
    norm_factors: tuple[FreeParameter, ...]
    processes: tuple[Process, ...]
    nuisances: tuple[Nuisance, ...]
    control_regions: tuple[ControlRegion, ...]
    data: Data
    metadata: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ names
    @property
    def free_parameters(self) -> tuple[FreeParameter, ...]:
        return self.pois + self.norm_factors

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Order of the parameter vector theta: POIs, norm factors, nuisances."""
        return tuple(p.name for p in self.free_parameters) + tuple(k.name for k in self.nuisances)

    @property
    def poi_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pois)

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.nuisances)

    @property
    def n_events(self) -> int:
        return int(self.data.weights.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-event arrays (data weights, ratios, shape arrays)."""
        total = int(self.data.weights.nbytes) + sum(int(p.ratio.nbytes) for p in self.processes)
        if self.data.norm_weights is not None:
            total += int(self.data.norm_weights.nbytes)
        for k in self.nuisances:
            for eff in k.effects.values():
                if eff.shape is not None:
                    total += int(eff.shape[0].nbytes) + int(eff.shape[1].nbytes)
        return total

    def with_data(
        self, weights: Any, kind: str = "asimov", generated_at: Mapping[str, float] | None = None
    ) -> Workspace:
        """The same model with other event weights (e.g. Asimov weights at other parameters).

        The normalisation weights (``data.norm_weights``) are part of the model and are kept.
        """
        w = _vector(weights, self.n_events, "weights")
        return Workspace(
            self.pois,
            self.norm_factors,
            self.processes,
            self.nuisances,
            self.control_regions,
            Data(w, kind, dict(generated_at) if generated_at else None, self.data.norm_weights),
            self.metadata,
        )

    def with_aux(self, aux: Mapping[str, float]) -> Workspace:
        """The same workspace with other auxiliary values a_k for the named nuisances."""
        unknown = sorted(set(aux) - set(self.nuisance_names))
        if unknown:
            raise WorkspaceError(f"with_aux: unknown nuisance(s) {unknown}")
        nps = tuple(
            Nuisance(k.name, float(aux.get(k.name, k.aux)), k.init, k.bounds, k.effects)
            for k in self.nuisances
        )
        return Workspace(
            self.pois,
            self.norm_factors,
            self.processes,
            nps,
            self.control_regions,
            self.data,
            self.metadata,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        pois: Mapping[str, Mapping[str, Any]],
        processes: Mapping[str, Mapping[str, Any]],
        weights: Any,
        nuisances: Sequence[Mapping[str, Any]] = (),
        norm_factors: Mapping[str, Mapping[str, Any]] | None = None,
        control_regions: Sequence[Mapping[str, Any]] = (),
        data_kind: str | None = None,
        generated_at: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        validate_values: bool = True,
        norm_weights: Any = None,
    ) -> Workspace:
        """Build and validate a workspace from in-memory arrays.

        pois / norm_factors: ``{name: {"init": x, "bounds": (lo, hi)}}``.
        processes: ``{name: {"yield": nu, "coefficient": "mu - sqrt(mu)", "ratio": r (n,)}}``.
        nuisances: ``[{"name", "aux"=0, "init"=0, "bounds"=(-5, 5),
        "effects": {process: {"norm": (up, down), "shape": (up (n,), down (n,))}}}]``.
        control_regions: ``[{"name", "observed": [...], "samples": {name: {"yields": [...],
        "coefficient": "...", "norm": {nuisance: (up[...], down[...])}}}}]``.
        weights: (n,) event weights; ``data_kind`` defaults to "observed" if all are 1.
        norm_weights: optional (n,) weights v_i of the same rows as a sample of p_ref, for the
        normalisation of the shape factors (default: derived for Asimov data, none for observed).
        Arrays are kept as given (NumPy or JAX), so large inputs are not copied here.
        """
        w = _vector(weights, None, "weights")
        n = int(w.shape[0])
        if validate_values:
            a = np.asarray(w)
            if not np.isfinite(a).all():
                raise _err(
                    "weights", f"{int((~np.isfinite(a)).sum())} of {n} weights are not finite"
                )
        free: list[FreeParameter] = []
        for group, is_poi in ((pois, True), (norm_factors or {}, False)):
            for name, spec in group.items():
                where = f"{'pois' if is_poi else 'norm_factors'}.{name}"
                spec = dict(spec or {})
                unknown = set(spec) - {"init", "bounds"}
                if unknown:
                    raise _err(where, f"unknown key(s) {sorted(unknown)}")
                free.append(
                    FreeParameter(
                        str(name),
                        float(spec.get("init", 1.0)),
                        _bounds(spec.get("bounds"), where + ".bounds", (-math.inf, math.inf)),
                        is_poi,
                    )
                )
        if not any(p.is_poi for p in free):
            raise _err("pois", "at least one parameter of interest is required")
        free_names = [p.name for p in free]
        if not processes:
            raise _err("processes", "at least one process is required")
        procs = []
        for name, spec in processes.items():
            where = f"processes.{name}"
            for key in ("yield", "coefficient", "ratio"):
                if key not in spec:
                    raise _err(where, f"missing key {key!r}")
            expr = parse_expression(spec["coefficient"], free_names, where=f"process {name!r}")
            _check_coefficient(expr, free, where + ".coefficient")
            ratio = _vector(spec["ratio"], n, where + ".ratio")
            if validate_values:
                _positive_finite(ratio, where + ".ratio")
            y = float(spec["yield"])
            if not math.isfinite(y):
                raise _err(where + ".yield", f"must be finite, got {y}")
            procs.append(Process(str(name), y, expr, ratio))
        proc_names = [p.name for p in procs]
        nps = []
        for i, spec in enumerate(nuisances):
            spec = dict(spec)
            np_name = spec.get("name")
            if not isinstance(np_name, str):
                raise _err(f"nuisances[{i}]", "missing 'name'")
            where = f"nuisances.{np_name}"
            unknown = set(spec) - {"name", "aux", "init", "bounds", "effects"}
            if unknown:
                raise _err(where, f"unknown key(s) {sorted(unknown)}")
            effects = {}
            for proc, eff in dict(spec.get("effects", {})).items():
                ew = f"{where}.effects.{proc}"
                if proc not in proc_names:
                    raise _err(ew, f"unknown process {proc!r} (known: {proc_names})")
                eff = dict(eff)
                unknown = set(eff) - {"norm", "shape"}
                if unknown:
                    raise _err(ew, f"unknown key(s) {sorted(unknown)}")
                norm = None
                if eff.get("norm") is not None:
                    try:
                        up, down = (float(v) for v in eff["norm"])
                    except (TypeError, ValueError):
                        raise _err(
                            ew + ".norm", f"must be (up, down) yield ratios, got {eff['norm']!r}"
                        ) from None
                    if not (up > 0 and down > 0 and math.isfinite(up) and math.isfinite(down)):
                        raise _err(
                            ew + ".norm", f"yield ratios must be finite and > 0, got ({up}, {down})"
                        )
                    norm = (up, down)
                shape = None
                if eff.get("shape") is not None:
                    try:
                        su, sd = eff["shape"]
                    except (TypeError, ValueError):
                        raise _err(ew + ".shape", "must be (up array, down array)") from None
                    su = _vector(su, n, ew + ".shape.up")
                    sd = _vector(sd, n, ew + ".shape.down")
                    if validate_values:
                        _positive_finite(su, ew + ".shape.up")
                        _positive_finite(sd, ew + ".shape.down")
                    shape = (su, sd)
                if norm is not None or shape is not None:
                    effects[str(proc)] = Effect(norm, shape)
            nps.append(
                Nuisance(
                    np_name,
                    float(spec.get("aux", 0.0)),
                    float(spec.get("init", spec.get("aux", 0.0))),
                    _bounds(spec.get("bounds"), where + ".bounds", DEFAULT_NP_BOUNDS),
                    effects,
                )
            )
        np_names = [k.name for k in nps]
        all_names = free_names + np_names
        dup = sorted({x for x in all_names if all_names.count(x) > 1})
        if dup:
            raise _err("parameters", f"duplicate parameter name(s) {dup}")
        crs = []
        for i, spec in enumerate(control_regions):
            spec = dict(spec)
            cname = spec.get("name", f"#{i}")
            where = f"control_regions.{cname}"
            obs = np.asarray(spec.get("observed"), dtype=np.float64).reshape(-1)
            if obs.size == 0 or (obs < 0).any() or not np.isfinite(obs).all():
                raise _err(where + ".observed", "must be a non-empty list of finite counts >= 0")
            samples = []
            for sname, s in dict(spec.get("samples", {})).items():
                sw = f"{where}.samples.{sname}"
                yields = np.asarray(s.get("yields"), dtype=np.float64).reshape(-1)
                if yields.shape != obs.shape:
                    raise _err(
                        sw + ".yields", f"has {yields.size} bins but observed has {obs.size}"
                    )
                expr = parse_expression(
                    s.get("coefficient", "1"),
                    free_names,
                    where=f"control region {cname!r} sample {sname!r}",
                )
                cr_norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
                for npn, (up_in, down_in) in dict(s.get("norm", {})).items():
                    if npn not in np_names:
                        raise _err(f"{sw}.norm.{npn}", f"unknown nuisance (known: {np_names})")
                    up_arr = np.asarray(up_in, dtype=np.float64).reshape(-1)
                    down_arr = np.asarray(down_in, dtype=np.float64).reshape(-1)
                    if up_arr.size == 1:
                        up_arr = np.full(obs.size, up_arr[0])
                    if down_arr.size == 1:
                        down_arr = np.full(obs.size, down_arr[0])
                    if up_arr.shape != obs.shape or down_arr.shape != obs.shape:
                        raise _err(f"{sw}.norm.{npn}", f"up/down need {obs.size} bins")
                    _positive_finite(up_arr, f"{sw}.norm.{npn}.up")
                    _positive_finite(down_arr, f"{sw}.norm.{npn}.down")
                    cr_norm[npn] = (up_arr, down_arr)
                samples.append(ControlSample(str(sname), yields, expr, cr_norm))
            if not samples:
                raise _err(where + ".samples", "at least one sample is required")
            crs.append(ControlRegion(str(cname), obs, tuple(samples)))
        kind = data_kind or ("observed" if bool(np.all(np.asarray(w) == 1.0)) else "asimov")
        if kind not in ("observed", "asimov"):
            raise _err("data.kind", f"must be 'observed' or 'asimov', got {kind!r}")
        if generated_at:
            unknown_at = sorted(set(generated_at) - set(all_names))
            if unknown_at:
                raise _err("data.generated_at", f"unknown parameter(s) {unknown_at}")
        v = None
        if norm_weights is not None:
            v = _vector(norm_weights, n, "data.norm_weights")
            if validate_values:
                bad = ~np.isfinite(np.asarray(v))
                if bad.any():
                    first = int(np.flatnonzero(bad)[0])
                    raise _err(
                        "data.norm_weights",
                        f"{int(bad.sum())} of {n} values are not finite (first at row {first})",
                    )
        data = Data(
            w, kind, {k: float(v) for k, v in generated_at.items()} if generated_at else None, v
        )
        pois_t = tuple(p for p in free if p.is_poi)
        nfs_t = tuple(p for p in free if not p.is_poi)
        return cls(pois_t, nfs_t, tuple(procs), tuple(nps), tuple(crs), data, dict(metadata or {}))

    # ------------------------------------------------------------------ files
    def to_json_dict(self, array_ref) -> dict[str, Any]:
        """The JSON document; ``array_ref(key, array) -> {"file": ...}`` stores each array."""

        def free(p: FreeParameter) -> dict[str, Any]:
            d: dict[str, Any] = {"name": p.name, "init": p.init}
            if math.isfinite(p.bounds[0]) or math.isfinite(p.bounds[1]):
                d["bounds"] = [p.bounds[0], p.bounds[1]]
            return d

        doc: dict[str, Any] = {
            "format": "nsbi-workspace",
            "version": 1,
            "parameters": {"pois": [free(p) for p in self.pois]},
            "processes": [
                {
                    "name": p.name,
                    "yield": p.yield_,
                    "coefficient": p.coefficient.text,
                    "ratio": array_ref(f"ratio_{p.name}", p.ratio),
                }
                for p in self.processes
            ],
        }
        if self.metadata:
            doc["metadata"] = dict(self.metadata)
        if self.norm_factors:
            doc["parameters"]["norm_factors"] = [free(p) for p in self.norm_factors]
        if self.nuisances:
            nps = []
            for k in self.nuisances:
                effs = []
                for proc, e in k.effects.items():
                    d: dict[str, Any] = {"process": proc}
                    if e.norm is not None:
                        d["norm"] = {"up": e.norm[0], "down": e.norm[1]}
                    if e.shape is not None:
                        d["shape"] = {
                            "up": array_ref(f"shape_{k.name}_{proc}_up", e.shape[0]),
                            "down": array_ref(f"shape_{k.name}_{proc}_down", e.shape[1]),
                        }
                    effs.append(d)
                nps.append(
                    {
                        "name": k.name,
                        "constraint": {"type": "gaussian", "aux": k.aux},
                        "init": k.init,
                        "bounds": list(k.bounds),
                        "effects": effs,
                    }
                )
            doc["nuisances"] = nps
        if self.control_regions:
            doc["control_regions"] = [
                {
                    "name": cr.name,
                    "observed": cr.observed.tolist(),
                    "samples": [
                        {
                            "name": s.name,
                            "yields": s.yields.tolist(),
                            "coefficient": s.coefficient.text,
                            "norm": [
                                {"nuisance": k, "up": u.tolist(), "down": d.tolist()}
                                for k, (u, d) in s.norm.items()
                            ],
                        }
                        for s in cr.samples
                    ],
                }
                for cr in self.control_regions
            ]
        data: dict[str, Any] = {
            "kind": self.data.kind,
            "weights": array_ref("weights", self.data.weights),
            "n_events": self.n_events,
        }
        if self.data.generated_at:
            data["generated_at"] = dict(self.data.generated_at)
        if self.data.norm_weights is not None:
            data["norm_weights"] = array_ref("norm_weights", self.data.norm_weights)
        doc["data"] = data
        return doc

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (JSON) and one ``.npy`` per array in ``<stem>.arrays/`` next to it."""
        path = Path(path)
        folder = path.parent / f"{path.stem}.arrays"
        folder.mkdir(parents=True, exist_ok=True)

        def ref(key: str, arr: Any) -> dict[str, str]:
            np.save(folder / f"{key}.npy", np.asarray(arr))
            return {"file": f"{folder.name}/{key}.npy"}

        doc = self.to_json_dict(ref)
        path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> Workspace:
        """Read and validate a workspace JSON file and the arrays it references.

        ``mmap=True`` maps ``.npy`` files instead of reading them (for streaming large data).
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise WorkspaceError(f"{path}: no such workspace file") from None
        except json.JSONDecodeError as exc:
            raise WorkspaceError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_json_dict(doc, base=path.parent, source=str(path), mmap=mmap)

    @classmethod
    def from_json_dict(
        cls,
        doc: Mapping[str, Any],
        base: str | Path = ".",
        source: str = "<workspace>",
        mmap: bool = False,
    ) -> Workspace:
        """Validate ``doc`` (`workspace_model.WorkspaceDocument`), load its arrays (relative to
        ``base``), build."""
        doc = validate_document(doc, source)
        base = Path(base)
        cache: dict[str, Any] = {}

        def load_array(ref: Mapping[str, str], key_path: str) -> np.ndarray:
            where = f"{source}: {key_path}"
            file = array_path(base, ref["file"], where)
            try:
                if file.suffix == ".npz":
                    if str(file) not in cache:
                        cache[str(file)] = np.load(file)
                    z = cache[str(file)]
                    key = ref.get("key")
                    if key is None:
                        raise WorkspaceError(
                            f"{where}: .npz reference needs a 'key' (members: {sorted(z.files)})"
                        )
                    if key not in z.files:
                        raise WorkspaceError(
                            f"{where}: {file} has no member {key!r} (members: {sorted(z.files)})"
                        )
                    return z[key]
                return np.load(file, mmap_mode="r" if mmap else None)
            except (FileNotFoundError, OSError, ValueError) as exc:
                if isinstance(exc, WorkspaceError):
                    raise
                raise WorkspaceError(f"{where}: cannot read array file {file}: {exc}") from None

        params = doc["parameters"]

        def free(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {
                p["name"]: {"init": p.get("init", 1.0), "bounds": p.get("bounds")} for p in items
            }

        processes = {
            p["name"]: {
                "yield": p["yield"],
                "coefficient": p["coefficient"],
                "ratio": load_array(p["ratio"], f"processes.{p['name']}.ratio"),
            }
            for p in doc["processes"]
        }
        nuisances = []
        for k in doc.get("nuisances", []):
            effects = {}
            for e in k.get("effects", []):
                kp = f"nuisances.{k['name']}.effects.{e['process']}"
                d: dict[str, Any] = {}
                if "norm" in e:
                    d["norm"] = (e["norm"]["up"], e["norm"]["down"])
                if "shape" in e:
                    d["shape"] = (
                        load_array(e["shape"]["up"], kp + ".shape.up"),
                        load_array(e["shape"]["down"], kp + ".shape.down"),
                    )
                effects[e["process"]] = d
            constraint = k.get("constraint", {})
            spec = {"name": k["name"], "aux": constraint.get("aux", 0.0), "effects": effects}
            if "init" in k:
                spec["init"] = k["init"]
            if "bounds" in k:
                spec["bounds"] = k["bounds"]
            nuisances.append(spec)
        crs = [
            {
                "name": cr["name"],
                "observed": cr["observed"],
                "samples": {
                    s["name"]: {
                        "yields": s["yields"],
                        "coefficient": s["coefficient"],
                        "norm": {m["nuisance"]: (m["up"], m["down"]) for m in s.get("norm", [])},
                    }
                    for s in cr["samples"]
                },
            }
            for cr in doc.get("control_regions", [])
        ]
        data = doc["data"]
        weights = load_array(data["weights"], "data.weights")
        if "n_events" in data and int(data["n_events"]) != int(np.shape(weights)[0]):
            raise WorkspaceError(
                f"{source}: data.n_events says {data['n_events']} but data.weights has {np.shape(weights)[0]} rows"
            )
        norm_weights = (
            load_array(data["norm_weights"], "data.norm_weights")
            if "norm_weights" in data
            else None
        )
        try:
            return cls.from_arrays(
                pois=free(params["pois"]),
                norm_factors=free(params.get("norm_factors", [])),
                processes=processes,
                weights=weights,
                nuisances=nuisances,
                control_regions=crs,
                data_kind=data["kind"],
                generated_at=data.get("generated_at"),
                metadata=doc.get("metadata"),
                norm_weights=norm_weights,
            )
        except (WorkspaceError, ExpressionError) as exc:
            raise WorkspaceError(f"{source}: {exc}") from None


def validate_document(doc: Any, source: str = "<workspace>") -> dict[str, Any]:
    """The document with its shape checked by `WorkspaceDocument` (explicit nulls read as
    absent keys); raises :class:`WorkspaceError` naming the JSON key of every problem."""
    from .workspace_model import WorkspaceDocument  # noqa: PLC0415 - only for file workspaces

    checked, found = validate(WorkspaceDocument, doc)
    if found:
        first = "; ".join(f"{dotted(path)}: {msg}" for path, msg in found[:3])
        more = f" (and {len(found) - 3} more problem(s))" if len(found) > 3 else ""
        raise WorkspaceError(f"{source}: {first}{more}")
    return checked.model_dump(by_alias=True, exclude_none=True)
