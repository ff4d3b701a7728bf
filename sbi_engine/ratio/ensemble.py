"""A trained ensemble: chunked inference, aggregation, and a one-file export.

The file is a plain ``.npz``: one array per parameter with a leading member axis
(``params/hidden_0/kernel`` has shape (M, d, width)) and a ``metadata.json`` entry holding the
architecture, the feature names, the standardisation, the training configuration, the split
record and per-member seeds. A physicist can use it with NumPy alone::

    z = np.load("ensemble.npz")
    meta = json.loads(z["metadata.json"].tobytes())
    # columns listed in meta["scaler"]["periodic"] are replaced by (cos x, sin x), then
    # x_std = (x_enc - meta["scaler"]["mean"]) / meta["scaler"]["scale"]
    # member m: h = act(h @ kernel[m] + bias[m]) per hidden layer; log r_m = h @ out_kernel[m] + out_bias[m]

or simply ``Ensemble.load(path).log_ratio(x)``.
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..precision import enable_float64
from .model import build_model
from .prepare import Standardizer

FORMAT = "nsbi-ratio-ensemble/1"
AGGREGATES = ("mean_ratio", "median_score", "mean_log_ratio")
_ACTIVATION_BUDGET = 512 << 20  # bytes of hidden activations allowed per evaluated chunk


def _flatten(params: dict, prefix: str = "params") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in params.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = np.asarray(value)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        parts = name.split("/")[1:]
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return tree


class Ensemble:
    """M member classifiers sharing one architecture; parameters stacked on axis 0."""

    def __init__(self, params: dict, metadata: dict[str, Any]) -> None:
        self.params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
        self.metadata = dict(metadata)
        model_meta = self.metadata["model"]
        self.model = build_model(
            model_meta["hidden_layers"],
            model_meta["width"],
            model_meta["activation"],
            model_meta.get("dtype", "float32"),
        )
        self.scaler = Standardizer.from_dict(self.metadata["scaler"])
        self._device_params = None

    # ---- basic facts -------------------------------------------------------------------
    @property
    def members(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["feature_names"])

    def __repr__(self) -> str:
        m = self.metadata["model"]
        return (
            f"Ensemble(members={self.members}, mlp={m['hidden_layers']}x{m['width']} {m['activation']}, "
            f"features={list(self.feature_names)})"
        )

    def member(self, index: int) -> Ensemble:
        """A one-member ensemble (for per-member diagnostics)."""
        params = jax.tree.map(lambda a: a[index : index + 1], self.params)
        return Ensemble(params, self.metadata)

    # ---- inference ---------------------------------------------------------------------
    def _features(self, x: Any) -> np.ndarray:
        names = getattr(x, "names", None)
        if names is not None:
            if tuple(names) != self.feature_names:
                raise ValueError(
                    f"Ensemble expects features {list(self.feature_names)}, "
                    f"sample {getattr(x, 'source', '?')} has {list(names)}"
                )
            x = x.features
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"Ensemble expects an (n, {len(self.feature_names)}) array of "
                f"{list(self.feature_names)}, got shape {x.shape}"
            )
        return x

    def _member_batch(self, chunk: int) -> int:
        width = self.metadata["model"]["width"]
        return max(1, min(self.members, _ACTIVATION_BUDGET // max(1, 2 * 4 * chunk * width)))

    def _logits_fn(self, chunk: int):
        m = self.metadata["model"]
        batch = self._member_batch(chunk)
        return _logits_program(
            m["hidden_layers"],
            m["width"],
            m["activation"],
            m.get("dtype", "float32"),
            batch if batch < self.members else 0,
        )

    def _chunks(
        self, x: np.ndarray, chunk_size: int, progress: bool, what: str
    ) -> Iterator[tuple[int, np.ndarray]]:
        n = len(x)
        chunk = int(min(chunk_size, 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))))
        if self._device_params is None:
            self._device_params = jax.device_put(self.params)
        fn = self._logits_fn(chunk)
        starts = range(0, n, chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=what, unit="chunk", total=len(starts))
        for start in starts:
            block = self.scaler.transform(x[start : start + chunk])
            m = len(block)
            if m < chunk:
                block = np.concatenate([block, np.zeros((chunk - m, block.shape[1]), np.float32)])
            yield m, fn(self._device_params, jnp.asarray(block))

    def member_log_ratios(
        self, x: Any, *, chunk_size: int = 65536, progress: bool = False
    ) -> np.ndarray:
        """(M, n) float32 per-member log r-hat (the classifier logits)."""
        x = self._features(x)
        out = np.empty((self.members, len(x)), np.float32)
        pos = 0
        for m, logits in self._chunks(x, chunk_size, progress, "members"):
            out[:, pos : pos + m] = np.asarray(logits)[:, :m]
            pos += m
        return out

    def log_ratio(
        self,
        x: Any,
        *,
        chunk_size: int = 65536,
        aggregate: str = "mean_ratio",
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble log r-hat and its per-event spread, both float64 of shape (n,).

        ``aggregate``: ``mean_ratio`` = log of the mean of member ratios (default);
        ``median_score`` = logit of the median member score s = sigmoid(log r);
        ``mean_log_ratio`` = mean of member log ratios. The spread is the standard deviation
        of the member log ratios (ddof=1; 0 for a single member). Only one chunk of events
        is ever held on the device.
        """
        if aggregate not in AGGREGATES:
            raise ValueError(f"log_ratio: aggregate {aggregate!r} not in {AGGREGATES}")
        enable_float64()  # the members' logits are aggregated in float64
        x = self._features(x)
        log_r = np.empty(len(x), np.float64)
        spread = np.empty(len(x), np.float64)
        agg = _aggregator(aggregate, self.members)
        pos = 0
        for m, logits in self._chunks(x, chunk_size, progress, "inference"):
            lr, sp = agg(logits)
            log_r[pos : pos + m] = np.asarray(lr)[:m]
            spread[pos : pos + m] = np.asarray(sp)[:m]
            pos += m
        return log_r, spread

    def ratio(self, x: Any, **kwargs: Any) -> np.ndarray:
        """r-hat = exp(log r-hat) with the chosen aggregate."""
        return np.exp(self.log_ratio(x, **kwargs)[0])

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write one self-describing ``.npz`` (parameters + ``metadata.json``)."""
        arrays = _flatten(self.params)
        meta = json.dumps(self.metadata, sort_keys=True).encode()
        arrays["metadata.json"] = np.frombuffer(meta, np.uint8)
        buf = io.BytesIO()
        # The ignore: mypy matches **arrays against numpy>=2.1's `allow_pickle: bool` keyword;
        # the keys are array names (numpy 1.26, still supported, has no such keyword).
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)

    def to_bytes(self) -> bytes:
        """The same content as ``save`` writes, as bytes (for an artifact store)."""
        arrays = _flatten(self.params)
        arrays["metadata.json"] = np.frombuffer(
            json.dumps(self.metadata, sort_keys=True).encode(), np.uint8
        )
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # keys are array names; see save()
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Ensemble:
        return cls._from_npz(np.load(io.BytesIO(data), allow_pickle=False), source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ensemble:
        """Read a file written by ``save``; errors name the file and what is wrong."""
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{os.fspath(path)}: not a readable ensemble file ({exc})") from exc
        with npz:
            return cls._from_npz(npz, os.fspath(path))

    @classmethod
    def _from_npz(cls, npz: Any, source: str) -> Ensemble:
        if "metadata.json" not in npz.files:
            raise ValueError(f"{source}: no metadata.json entry; not an nsbi ensemble file")
        meta = json.loads(npz["metadata.json"].tobytes())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{source}: format {meta.get('format')!r}, expected {FORMAT!r}")
        flat = {k: npz[k] for k in npz.files if k.startswith("params/")}
        return cls(_unflatten(flat), meta)


@functools.lru_cache(maxsize=32)
def _logits_program(hidden_layers: int, width: int, activation: str, dtype: str, member_batch: int):
    """Jitted (stacked params, x) -> (M, n) logits; ``member_batch`` > 0 evaluates members
    sequentially in groups of that size to bound activation memory. Shared by all ensembles
    of one architecture, so loading or slicing an ensemble does not recompile."""
    model = build_model(hidden_layers, width, activation, dtype)

    def logits(params, x):
        apply = lambda p: model.apply({"params": p}, x)  # noqa: E731
        if member_batch == 0:
            return jax.vmap(apply)(params)
        return jax.lax.map(apply, params, batch_size=member_batch)

    return jax.jit(logits)


@functools.lru_cache(maxsize=32)
def _aggregator(aggregate: str, members: int):
    def agg(logits):
        z = logits.astype(jnp.float64)
        spread = jnp.std(z, axis=0, ddof=1) if members > 1 else jnp.zeros(z.shape[1], jnp.float64)
        if aggregate == "mean_ratio":
            lr = jax.scipy.special.logsumexp(z, axis=0) - jnp.log(members)
        elif aggregate == "mean_log_ratio":
            lr = jnp.mean(z, axis=0)
        else:
            s = jnp.median(jax.nn.sigmoid(z), axis=0)
            s = jnp.clip(s, 1e-300, 1 - 1e-16)
            lr = jnp.log(s) - jnp.log1p(-s)
        return lr, spread

    return jax.jit(agg)
