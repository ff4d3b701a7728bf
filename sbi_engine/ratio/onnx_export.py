"""Export an ``Ensemble`` to ONNX, for analysis code that runs networks with ONNX Runtime.

The graph takes the raw features, as float32 ``[N, F]`` in ``Ensemble.feature_names`` order, and
does everything ``Ensemble.log_ratio`` does: the periodic (cos x, sin x) encoding, the
standardisation, every member's MLP (all members at once, as batched MatMuls) and the
aggregation. Outputs (all float32):

- ``member_log_ratios`` ``[N, M]``: each member's log r-hat (its logit);
- ``log_ratio`` ``[N]``: the aggregated log r-hat (``mean_ratio`` by default: the log of the
  mean member ratio, a log-sum-exp computed in float64 inside the graph);
- ``log_ratio_spread`` ``[N]``: the standard deviation of the member log ratios (ddof=1; 0 for
  one member), as ``Ensemble.log_ratio`` returns it.

The model's ``metadata_props`` carry ``nsbi.format``, ``nsbi.feature_names`` (JSON list),
``nsbi.aggregate``, ``nsbi.members``, ``nsbi.outputs`` and the ensemble's whole metadata
(``nsbi.metadata``, JSON: architecture, standardisation, training configuration, split).

``onnx`` (and ``onnxruntime`` for ``verify``) are imported on first use, not with the engine:
install them with the ``onnx`` extra (``pip install 'nsbi-workbench[onnx]'``).
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .ensemble import AGGREGATES

if TYPE_CHECKING:
    import onnx

    from .ensemble import Ensemble

__all__ = [
    "ONNX_FORMAT",
    "OUTPUTS",
    "OnnxUnavailable",
    "export_onnx",
    "save_onnx",
    "synthetic_events",
    "verify",
]

ONNX_FORMAT = "nsbi-ratio-ensemble-onnx/1"
INPUT = "features"
OUTPUTS = ("member_log_ratios", "log_ratio", "log_ratio_spread")
DEFAULT_OPSET = 17
# protobuf refuses messages over 2 GiB; larger models keep their weights in a side file
_EXTERNAL_DATA_BYTES = 1 << 30


class OnnxUnavailable(ImportError):
    """``onnx`` or ``onnxruntime`` is not installed."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise OnnxUnavailable(
            "ONNX export needs the `onnx` package: pip install 'nsbi-workbench[onnx]'"
        ) from exc
    return onnx


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxUnavailable(
            "running an exported model needs `onnxruntime`: pip install 'nsbi-workbench[onnx]'"
        ) from exc
    return onnxruntime


class _Graph:
    """A small builder: unique names, constants as initializers."""

    def __init__(self, onnx: Any, opset: int) -> None:
        self.onnx = onnx
        self.opset = opset
        self.helper = onnx.helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: Any, dtype: Any = np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(
            self.onnx.numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype)), name)
        )
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def reduce(self, op_type: str, x: str, axis: int, keepdims: bool) -> str:
        """``op_type`` (ReduceMax, ReduceSum, ...) over one axis: the axes are an input from
        opset 18 on (ReduceSum: 13), an attribute before."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.const("axes", [axis], np.int64), keepdims=int(keepdims))
        return self.op(op_type, x, axes=[axis], keepdims=int(keepdims))


def _activation(g: _Graph, kind: str, x: str, to_compute: Any) -> str:
    """``kind`` applied to ``x`` as in ``sbi_engine.ratio.model`` (Flax's definitions)."""
    if kind == "relu":
        return g.op("Relu", x)
    if kind == "tanh":
        return g.op("Tanh", x)
    if kind == "elu":
        return g.op("Elu", x, alpha=1.0)
    if kind == "softplus":
        return g.op("Softplus", x)
    if kind == "silu":  # x * sigmoid(x)
        return g.op("Mul", x, to_compute(g.op("Sigmoid", x)))
    if kind == "gelu":  # flax/jax default: the tanh approximation
        c = g.const("gelu_c", math.sqrt(2.0 / math.pi))
        k = g.const("gelu_k", 0.044715)
        half = g.const("half", 0.5)
        one = g.const("one", 1.0)
        x3 = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Mul", c, g.op("Add", x, g.op("Mul", k, x3)))
        cdf = g.op("Mul", half, g.op("Add", one, g.op("Tanh", inner)))
        return g.op("Mul", x, cdf)
    raise ValueError(f"ONNX export: activation {kind!r} is not supported")


def _aggregate(g: _Graph, z: str, aggregate: str, members: int) -> str:
    """float64 ``z`` [N, M] -> float64 aggregated log ratio [N] (as ``ensemble._aggregator``)."""
    if aggregate == "mean_ratio":  # logsumexp - log M, shifted by the row maximum
        zmax = g.reduce("ReduceMax", z, 1, keepdims=True)
        s = g.reduce("ReduceSum", g.op("Exp", g.op("Sub", z, zmax)), 1, keepdims=True)
        lse = g.op("Add", g.op("Log", s), zmax)
        lr = g.op("Sub", lse, g.const("log_m", math.log(members), np.float64))
        return g.op("Squeeze", lr, g.const("axes", [1], np.int64))
    if aggregate == "mean_log_ratio":
        return g.reduce("ReduceMean", z, 1, keepdims=False)
    if aggregate == "median_score":  # logit of the median member score sigmoid(z)
        ordered, indices = g.name("sorted"), g.name("order")
        g.nodes.append(
            g.helper.make_node(
                "TopK",
                [z, g.const("m", [members], np.int64)],
                [ordered, indices],
                axis=1,
                largest=1,
                sorted=1,
            )
        )
        mid = sorted({(members - 1) // 2, members // 2})
        picked = g.op("Gather", ordered, g.const("mid", mid, np.int64), axis=1)
        s = g.reduce("ReduceMean", g.op("Sigmoid", picked), 1, keepdims=False)
        s = g.op(
            "Clip",
            s,
            g.const("s_lo", 1e-300, np.float64),
            g.const("s_hi", 1 - 1e-16, np.float64),
        )
        one = g.const("one64", 1.0, np.float64)
        return g.op("Sub", g.op("Log", s), g.op("Log", g.op("Sub", one, s)))
    raise ValueError(f"ONNX export: aggregate {aggregate!r} not in {AGGREGATES}")


def _spread(g: _Graph, z: str, members: int) -> str:
    """float64 std of ``z`` [N, M] over members, ddof=1 (0 for one member)."""
    if members == 1:
        zero = g.op("Mul", z, g.const("zero64", 0.0, np.float64))
        return g.op("Squeeze", zero, g.const("axes", [1], np.int64))
    d = g.op("Sub", z, g.reduce("ReduceMean", z, 1, keepdims=True))
    ss = g.reduce("ReduceSum", g.op("Mul", d, d), 1, keepdims=False)
    return g.op("Sqrt", g.op("Div", ss, g.const("ddof", members - 1.0, np.float64)))


def export_onnx(
    ensemble: Ensemble, *, aggregate: str = "mean_ratio", opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """The ensemble as a checked ONNX model (see the module docstring for its interface)."""
    onnx = _onnx()
    helper = onnx.helper
    TP = onnx.TensorProto
    if aggregate not in AGGREGATES:
        raise ValueError(f"ONNX export: aggregate {aggregate!r} not in {AGGREGATES}")
    meta = ensemble.metadata
    model_meta = meta["model"]
    activation = model_meta["activation"]
    dtype = model_meta.get("dtype", "float32")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"ONNX export: model dtype {dtype!r} is not supported")
    names = list(ensemble.feature_names)
    n_features = len(names)
    members = ensemble.members
    scaler = ensemble.scaler
    g = _Graph(onnx, opset)

    def to_compute(x: str) -> str:
        # dtype="bfloat16" casts the matmul inputs and keeps the hidden activations in bfloat16:
        # emulated by rounding to bfloat16 and back wherever Flax holds a bfloat16 value
        if dtype == "float32":
            return x
        return g.op("Cast", g.op("Cast", x, to=TP.BFLOAT16), to=TP.FLOAT)

    def weight(hint: str, value: np.ndarray) -> str:
        value = np.asarray(value, np.float32)
        if dtype == "bfloat16":
            value = _round_bfloat16(value)
        return g.const(hint, value)

    # --- preprocessing: periodic columns -> (cos, sin), then (z - mean) / scale -----------
    x = INPUT
    periodic = tuple(scaler.periodic)
    if periodic:
        index, kind = [], []  # kind: 0 = as is, 1 = cos, 2 = sin
        for j in range(n_features):
            if j in periodic:
                index += [j, j]
                kind += [1, 2]
            else:
                index.append(j)
                kind.append(0)
        kinds = np.asarray(kind)
        xg = g.op("Gather", x, g.const("encode_index", index, np.int64), axis=1)
        enc = g.op(
            "Where",
            g.const("is_sin", kinds == 2, np.bool_),
            g.op("Sin", xg),
            g.op("Where", g.const("is_cos", kinds == 1, np.bool_), g.op("Cos", xg), xg),
        )
        x = enc
    x = g.op("Sub", x, g.const("scaler_mean", scaler.mean))
    x = g.op("Div", x, g.const("scaler_scale", scaler.scale), out="standardised")
    h = to_compute(x)

    # --- the members: [N, d] @ [M, d, w] broadcasts to [M, N, w] ---------------------------
    params = ensemble.params
    n_hidden = int(model_meta["hidden_layers"])
    for i in range(n_hidden):
        layer = params[f"hidden_{i}"]
        kernel = weight(f"hidden_{i}_kernel", layer["kernel"])  # [M, d, w]
        bias = weight(f"hidden_{i}_bias", np.asarray(layer["bias"])[:, None, :])  # [M, 1, w]
        h = to_compute(g.op("MatMul", h, kernel))
        h = to_compute(g.op("Add", h, bias))
        h = to_compute(_activation(g, activation, h, to_compute))
    out = params["output"]
    h = to_compute(g.op("MatMul", h, weight("output_kernel", out["kernel"])))  # [M, N, 1]
    h = to_compute(g.op("Add", h, weight("output_bias", np.asarray(out["bias"])[:, None, :])))
    h = g.op("Squeeze", h, g.const("axis2", [2], np.int64))  # [M, N]
    member = g.op("Transpose", h, perm=[1, 0], out=OUTPUTS[0])  # [N, M]

    # --- aggregation in float64, like Ensemble.log_ratio ----------------------------------
    z = g.op("Cast", member, to=TP.DOUBLE)
    g.op("Cast", _aggregate(g, z, aggregate, members), to=TP.FLOAT, out=OUTPUTS[1])
    g.op("Cast", _spread(g, z, members), to=TP.FLOAT, out=OUTPUTS[2])

    n = "N"
    graph = helper.make_graph(
        g.nodes,
        "nsbi_ratio_ensemble",
        [
            helper.make_tensor_value_info(
                INPUT, TP.FLOAT, [n, n_features], doc_string=f"raw features {names}"
            )
        ],
        [
            helper.make_tensor_value_info(
                OUTPUTS[0], TP.FLOAT, [n, members], doc_string="per-member log r-hat"
            ),
            helper.make_tensor_value_info(
                OUTPUTS[1], TP.FLOAT, [n], doc_string=f"ensemble log r-hat ({aggregate})"
            ),
            helper.make_tensor_value_info(
                OUTPUTS[2], TP.FLOAT, [n], doc_string="std of the member log r-hat (ddof=1)"
            ),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="nsbi-workbench",
        doc_string=(
            f"Density-ratio ensemble of {members} members "
            f"({model_meta['hidden_layers']}x{model_meta['width']} {activation}); "
            f"input `{INPUT}` float32 [N, {n_features}] = {names}; outputs "
            f"`{OUTPUTS[0]}` [N, {members}], `{OUTPUTS[1]}` [N] ({aggregate}), `{OUTPUTS[2]}` [N]."
        ),
    )
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases since 1.14
    props = {
        "nsbi.format": ONNX_FORMAT,
        "nsbi.feature_names": json.dumps(names),
        "nsbi.aggregate": aggregate,
        "nsbi.members": str(members),
        "nsbi.input": INPUT,
        "nsbi.outputs": json.dumps(list(OUTPUTS)),
        "nsbi.metadata": json.dumps(meta, sort_keys=True),
    }
    helper.set_model_props(model, props)
    if model.ByteSize() < _EXTERNAL_DATA_BYTES:
        onnx.checker.check_model(model)
    return model


def _round_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def save_onnx(
    ensemble: Ensemble,
    path: str | os.PathLike,
    *,
    aggregate: str = "mean_ratio",
    opset: int = DEFAULT_OPSET,
) -> list[str]:
    """Write the exported model to ``path``; returns the files written (``path``, and
    ``path + ".data"`` for models over 1 GiB, whose weights ONNX keeps in a side file)."""
    onnx = _onnx()
    model = export_onnx(ensemble, aggregate=aggregate, opset=opset)
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{path}: folder {parent} does not exist")
    tmp = f"{path}.tmp"
    files = [path]
    if model.ByteSize() >= _EXTERNAL_DATA_BYTES:
        data = f"{os.path.basename(path)}.data"
        if os.path.exists(os.path.join(parent, data)):
            os.remove(os.path.join(parent, data))  # save_model appends to an existing file
        onnx.save_model(
            model, tmp, save_as_external_data=True, all_tensors_to_one_file=True, location=data
        )
        files.append(os.path.join(parent, data))
    else:
        onnx.save_model(model, tmp)
    os.replace(tmp, path)
    return files


def synthetic_events(ensemble: Ensemble, n: int, seed: int = 0) -> np.ndarray:
    """float32 [n, F] events spread like the training features (per the standardisation):
    Gaussian around each feature's mean, periodic features uniform in [-pi, pi)."""
    rng = np.random.default_rng(seed)
    scaler = ensemble.scaler
    x = np.empty((n, len(ensemble.feature_names)), np.float32)
    col = 0
    for j in range(x.shape[1]):
        if j in scaler.periodic:
            x[:, j] = rng.uniform(-np.pi, np.pi, n)
            col += 2
        else:
            x[:, j] = scaler.mean[col] + scaler.scale[col] * rng.standard_normal(n)
            col += 1
    return x


def run_onnx(model: Any, x: np.ndarray, threads: int = 0) -> dict[str, np.ndarray]:
    """Evaluate an exported model (a path or a ``ModelProto``) with onnxruntime."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, str | os.PathLike) else model.SerializeToString()
    session = ort.InferenceSession(
        os.fspath(source) if isinstance(source, os.PathLike) else source,
        options,
        providers=["CPUExecutionProvider"],
    )
    values = session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(x, np.float32)})
    return dict(zip(OUTPUTS, values))


def verify(
    ensemble: Ensemble, model: Any, x: np.ndarray, *, aggregate: str | None = None
) -> dict[str, float]:
    """Largest absolute differences between onnxruntime and ``Ensemble`` on events ``x``:
    ``{"member_log_ratios", "log_ratio", "log_ratio_spread"}``."""
    if aggregate is None:
        if isinstance(model, str | os.PathLike):
            props = {
                p.key: p.value
                for p in _onnx()
                .load_model(os.fspath(model), load_external_data=False)
                .metadata_props
            }
        else:
            props = {p.key: p.value for p in model.metadata_props}
        aggregate = props.get("nsbi.aggregate", "mean_ratio")
    got = run_onnx(model, x)
    members = ensemble.member_log_ratios(x)  # [M, n]
    log_r, spread = ensemble.log_ratio(x, aggregate=aggregate)
    return {
        OUTPUTS[0]: float(np.max(np.abs(got[OUTPUTS[0]].T - members), initial=0.0)),
        OUTPUTS[1]: float(np.max(np.abs(got[OUTPUTS[1]] - log_r), initial=0.0)),
        OUTPUTS[2]: float(np.max(np.abs(got[OUTPUTS[2]] - spread), initial=0.0)),
    }
