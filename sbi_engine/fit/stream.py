"""Streaming the events from disk: the same likelihood when the per-event arrays do not fit in memory.

At 10 M events x 100 shape-affected NPs x 3 processes the per-event arrays take 24 GB in
float32, more than this machine's RAM. ``StreamingModel`` keeps them as memory-mapped ``.npy``
files (``Workspace.load(path, mmap=True)``) and evaluates q, its gradient and its exact Hessian
with a Python loop over chunks: a background thread reads chunk j+1 from disk while the
compiled chunk kernel (the very kernel of :class:`~sbi_engine.fit.model.Model`, compiled once
for the chunk shape) works on chunk j, and the partial sums accumulate in float64. Memory is
O(chunk), whatever the number of events.

Because a pass cannot run inside one compiled program, fits of a streaming model use the
host-loop Newton (:func:`~sbi_engine.fit.minimize.newton_minimize_host`): the same algorithm
and step code as the compiled minimiser, one streamed Hessian pass per iteration.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .compile import Compiled
from .model import _EVENT_KEYS, Model
from .workspace import Workspace

__all__ = ["StreamingModel", "DEFAULT_STREAM_CHUNK"]

DEFAULT_STREAM_CHUNK = (
    8192  # kernel temporaries ~ chunk x NPs x 8 B each; larger chunks cost RSS, not speed
)
_PAD = {"w": 0.0, "v": 0.0}  # padded rows carry no weight; ratios pad with 1 (finite logs)


class StreamingModel(Model):
    """A :class:`Model` whose per-event arrays stay on disk and are streamed chunk by chunk.

    Args:
        ws: a workspace, ideally loaded with ``Workspace.load(path, mmap=True)`` so that its
            arrays are memory maps (in-memory arrays work too, they are simply not copied).
        chunk_size: events per streamed chunk (host memory O(chunk x arrays)).
        progress: optional callback ``(done_events, total_events)`` called after each chunk.

    ``data`` holds the host arrays; passing ``data=`` other than the model's own (toys) is not
    supported: toys and Asimov reweighting need the in-memory :class:`Model`.
    """

    streaming = True

    def __init__(
        self,
        ws: Workspace,
        chunk_size: int = DEFAULT_STREAM_CHUNK,
        progress: Callable[[int, int], None] | None = None,
        **kwargs: Any,
    ):
        self.progress = progress
        super().__init__(ws, chunk_size=chunk_size, **kwargs)

    # ------------------------------------------------------------------ data stays on the host
    def _as_storage(self, arr: Any) -> Any:
        return arr if isinstance(arr, np.ndarray) else np.asarray(arr)

    def weights_array(self, weights: Any) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n_events,):
            from .workspace import WorkspaceError  # noqa: PLC0415

            raise WorkspaceError(f"weights: need shape ({self.n_events},), got {tuple(w.shape)}")
        return w

    def _norm_weights(self, ws: Workspace) -> np.ndarray | None:
        if ws.data.norm_weights is None and ws.data.kind == "asimov" and self._shape_procs.any():
            # Deriving v_i = w_i / s_i(theta_gen) needs a pass of its own; do it streamed.
            s = self.event_intensity_streamed(self.reference_theta())
            w = np.asarray(self.data["w"])
            live = w != 0
            self.norm_source = "asimov"
            return np.where(live, w / np.where(live, s, 1.0), 0.0)
        return super()._norm_weights(ws)

    @property
    def data_nbytes(self) -> int:
        return int(
            sum(
                int(np.asarray(x).nbytes) if not isinstance(x, np.memmap) else int(x.nbytes)
                for x in jax.tree_util.tree_leaves(self.data)
            )
        )

    def _chunks(self, sample: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(start, chunk pytree on the device), read ahead by one chunk in a background thread."""
        n = int(np.shape(sample["r"][0])[0])
        m = self.chunk_size
        fixed = {k: v for k, v in sample.items() if k not in _EVENT_KEYS}  # per-model constants
        rows = {k: v for k, v in sample.items() if k in _EVENT_KEYS}

        def read(start: int) -> dict[str, Any]:
            stop = min(start + m, n)

            def piece(key: str, a: Any) -> np.ndarray:
                x = _read_rows(a, start, stop)
                if stop - start < m:  # pad the last chunk so one compiled kernel serves all
                    x = np.concatenate(
                        [x, np.full(m - (stop - start), _PAD.get(key, 1.0), dtype=x.dtype)]
                    )
                return x

            out = {
                k: (
                    piece(k, v)
                    if not isinstance(v, tuple)
                    else tuple(
                        tuple(piece(k, a) for a in t) if isinstance(t, tuple) else piece(k, t)
                        for t in v
                    )
                )
                for k, v in rows.items()
            }
            return jax.device_put({**out, **fixed})

        q: queue.Queue = queue.Queue(maxsize=2)
        starts = list(range(0, n, m))

        def producer() -> None:
            try:
                for s in starts:
                    q.put((s, read(s)))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                q.put((None, exc))

        threading.Thread(target=producer, daemon=True, name="nsbi-stream-reader").start()
        for _ in starts:
            start, chunk = q.get()
            if start is None:
                raise chunk
            yield start, chunk

    def _stream_sums(self, theta: np.ndarray, order: int) -> tuple[np.ndarray, ...]:
        """Event sums (L, dL, d2L up to ``order``) over all chunks, accumulated in float64."""
        cache = self.__dict__.setdefault("_stream_cache", {})
        key = ("sums", order)
        if key not in cache:
            method = "structured" if order == 0 else self.hessian_method
            cache[key] = Compiled(
                lambda t, d: self._event_sums(t, d, order, method),
                f"stream_sums{order}",
                self.clock,
            )
        fn = cache[key]
        t = jnp.asarray(theta, jnp.float64)
        total: list[np.ndarray] | None = None
        pending = None
        n = self.n_events
        for start, chunk in self._chunks(self.data):
            out = fn(t, chunk)  # dispatched asynchronously; the reader thread keeps going
            if pending is not None:
                total = _add(total, pending)
            pending = out
            if self.progress is not None:
                self.progress(min(start + self.chunk_size, n), n)
        total = _add(total, pending)
        return tuple(total)  # type: ignore[arg-type]

    def _extra(self, order: int):
        cache = self.__dict__.setdefault("_stream_cache", {})
        key = ("extra", order)
        if key not in cache:
            f = self._extra_fn(self.data)
            if order == 0:
                g = f
            elif order == 1:
                g = jax.value_and_grad(f)
            else:
                g = lambda t, a: (*jax.value_and_grad(f)(t, a), jax.hessian(f)(t, a))  # noqa: E731
            cache[key] = Compiled(g, f"stream_extra{order}", self.clock)
        return cache[key]

    def _check_data(self, data: Any) -> None:
        if data is not None and data is not self.data:
            raise NotImplementedError(
                "a StreamingModel evaluates its own events only (toys and Asimov "
                "reweighting need the in-memory Model)"
            )

    def _aux(self, aux: Any) -> jnp.ndarray:
        return jnp.asarray(self.aux if aux is None else aux, jnp.float64)

    def nll(self, theta, data=None, aux=None) -> float:
        self._check_data(data)
        (ll,) = self._stream_sums(theta, 0)
        return float(self._extra(0)(jnp.asarray(theta, jnp.float64), self._aux(aux))) - 2.0 * float(
            ll
        )

    def value_and_grad(self, theta, data=None, aux=None) -> tuple[float, np.ndarray]:
        self._check_data(data)
        ll, gl = self._stream_sums(theta, 1)
        v, g = self._extra(1)(jnp.asarray(theta, jnp.float64), self._aux(aux))
        return float(v) - 2.0 * float(ll), np.asarray(g) - 2.0 * gl

    def value_grad_hessian(
        self, theta, data=None, aux=None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        self._check_data(data)
        ll, gl, Hl = self._stream_sums(theta, 2)
        v, g, H = self._extra(2)(jnp.asarray(theta, jnp.float64), self._aux(aux))
        return float(v) - 2.0 * float(ll), np.asarray(g) - 2.0 * gl, np.asarray(H) - 2.0 * Hl

    def hvp(self, theta, v, data=None, aux=None) -> np.ndarray:
        return self.value_grad_hessian(theta, data, aux)[2] @ np.asarray(v, dtype=np.float64)

    def event_intensity_streamed(self, theta) -> np.ndarray:
        """s_i(theta) for every event, streamed (float64, (n,))."""
        cache = self.__dict__.setdefault("_stream_cache", {})
        if "intensity" not in cache:

            def s_of(t, chunk):
                R, _, _ = self._per_event_R(chunk, self._proc_terms(t), 0)
                return R @ self.amplitudes(t)

            cache["intensity"] = Compiled(s_of, "stream_intensity", self.clock)
        n = self.n_events
        out = np.empty(n, dtype=np.float64)
        t = jnp.asarray(theta, jnp.float64)
        sample = {k: self.data[k] for k in ("w", "r", "up", "down")}
        for start, chunk in self._chunks(sample):
            stop = min(start + self.chunk_size, n)
            out[start:stop] = np.asarray(cache["intensity"](t, chunk))[: stop - start]
        return out


def _read_rows(a: Any, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an array; memory maps are read with plain file I/O, so the pages
    land in the page cache rather than in this process's resident set (a pass over 24 GB of
    maps would otherwise show up as 24 GB of RSS)."""
    filename = getattr(a, "filename", None) if isinstance(a, np.memmap) else None
    if filename and a.ndim == 1 and a.flags.c_contiguous:
        return np.fromfile(
            filename, dtype=a.dtype, count=stop - start, offset=a.offset + start * a.itemsize
        )
    return np.asarray(a[start:stop])


def _add(total: list[np.ndarray] | None, part: tuple[Any, ...] | None) -> list[np.ndarray] | None:
    if part is None:
        return total
    arrs = [np.asarray(p, dtype=np.float64) for p in part]
    return arrs if total is None else [a + b for a, b in zip(total, arrs)]
