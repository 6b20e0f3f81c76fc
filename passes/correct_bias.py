"""Bias correction for weight quantization (Nagel et al. 2019, section 4.2).

Quantizing weights ``W -> W_q`` shifts the expected output of a linear layer by
``E[(W_q - W) x] = (W_q - W) E[x]`` per output channel. This pass runs on the *float* model before
quantization, simulates the weight quantization with the same :mod:`edgec.quant.scheme` functions
the quantize pass uses, and subtracts that expected error from the bias, so the quantized model's
outputs are unbiased again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edgec.errors import CalibrationError, EdgecError
from edgec.ir import Model, Node, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import constant_value

from .fuse_batchnorm import ConstTracker, RankOracle

__all__ = ["CorrectBias", "BiasLayer", "find_layers", "simulate_weight_quantization"]

REPORT = "bias-correction"


def simulate_weight_quantization(w: np.ndarray, axis: Optional[int], dtype: str = "int8", *,
                                 reduce_range: bool = False, name: str = "weight") -> np.ndarray:
    """``dequantize(quantize(w))`` with the quantize pass's symmetric weight scheme (per channel
    along ``axis``, per tensor for None)."""
    from edgec.quant.scheme import dequantize_array, quantize_array, weight_params

    scale, zp = weight_params(w, axis, dtype, True, name=name, reduce_range=reduce_range)
    q = quantize_array(w, scale, zp, dtype, axis)
    return dequantize_array(q, scale, zp, axis).astype(w.dtype)


@dataclass
class BiasLayer:
    """A layer whose bias can be corrected; weights as stored (``w``) plus how to read them."""

    node: Node
    kind: str  # "conv", "gemm" or "matmul"
    w: np.ndarray
    bias: Optional[np.ndarray]
    w_axis: int  # output-channel axis of the stored weight (the per-channel quantization axis)
    x_axis: int  # channel axis of the layer input (for the per-channel mean)
    bias_add: Optional[Node] = None  # MatMul: a following Add holding the bias

    @property
    def x(self) -> Value:
        v = self.node.input(0)
        assert v is not None
        return v

    def out_channels(self) -> int:
        return self.w.shape[self.w_axis]

    # --- the linear map, for expected values ------------------------------------------------------
    def error_from_channel_mean(self, dw: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """``E[dW x]`` per output channel from the per-channel input mean ``mu``."""
        dw = dw.astype(np.float64)
        mu = np.asarray(mu, np.float64).reshape(-1)
        if self.kind == "conv":
            g = int(self.node.attr("group", 1))
            co, ci = dw.shape[0], dw.shape[1]
            per_in = dw.reshape(g, co // g, ci, -1).sum(axis=3)  # group, out, in (summed kernel)
            return np.einsum("goc,gc->go", per_in, mu.reshape(g, ci)).reshape(-1)
        if self.kind == "gemm":
            b = dw.T if self.node.attr("transB", 0) else dw
            return float(self.node.attr("alpha", 1.0)) * (mu @ b)
        return mu @ dw

    def mean_output(self, w: np.ndarray, mean_x: np.ndarray, opset: int) -> np.ndarray:
        """Expected pre-activation, bias-free output per channel given the batch-mean input."""
        w = w.astype(np.float64)
        if self.kind == "conv":
            from edgec.ops import evaluate

            attrs = {k: a for k, a in self.node.attrs.items() if k not in ("activation", "activation_params")}
            conv = Node("Conv", [Value("x"), Value("w")], 1, attrs)
            (y,) = evaluate(conv, [mean_x.astype(np.float64), w], opset)
            return np.asarray(y, np.float64).reshape(y.shape[0], y.shape[1], -1).mean(axis=(0, 2))
        if self.kind == "gemm":
            a = mean_x.T if self.node.attr("transA", 0) else mean_x
            b = w.T if self.node.attr("transB", 0) else w
            return float(self.node.attr("alpha", 1.0)) * (a.reshape(-1, b.shape[0]) @ b).mean(axis=0)
        return mean_x.reshape(-1, w.shape[0]).mean(axis=0) @ w


def _matmul_bias_add(node: Node) -> Optional[Node]:
    """The Add after a MatMul that adds a constant bias of size 1 or N along the last axis."""
    v = node.output(0)
    if v is None or v.is_graph_output() or len(v.uses()) != 1:
        return None
    add, idx = v.uses()[0]
    if add.domain != "" or add.op_type != "Add":
        return None
    c = constant_value(add.input(1 - idx))
    if c is None or not np.issubdtype(c.dtype, np.floating) or c.ndim > 1 and any(d != 1 for d in c.shape[:-1]):
        return None
    return add


def find_layers(model: Model) -> List[BiasLayer]:
    """Conv/FusedConv, Gemm/FusedGemm and 2-D-weight MatMul/FusedMatMul nodes of the main graph with
    constant float weights (and constant or absent bias), in graph order."""
    ranks = RankOracle(model)
    out: List[BiasLayer] = []
    for node in model.graph:
        key = (node.domain, node.op_type)
        if key in (("", "Conv"), ("edgec", "FusedConv")):
            kind = "conv"
        elif key in (("", "Gemm"), ("edgec", "FusedGemm")):
            kind = "gemm"
        elif key in (("", "MatMul"), ("edgec", "FusedMatMul")):
            kind = "matmul"
        else:
            continue
        w = constant_value(node.input(1))
        if w is None or not np.issubdtype(w.dtype, np.floating) or node.input(0) is None:
            continue
        bias_v = node.input(2)
        bias = constant_value(bias_v) if bias_v is not None else None
        if bias_v is not None and bias is None:
            continue
        if kind == "conv":
            if w.ndim < 3:
                continue
            out.append(BiasLayer(node, kind, w, bias, 0, 1))
        elif kind == "gemm":
            if w.ndim != 2:
                continue
            out.append(BiasLayer(node, kind, w, bias, 0 if node.attr("transB", 0) else 1,
                                 0 if node.attr("transA", 0) else 1))
        else:
            rank = ranks.rank(node.input(0))
            if w.ndim != 2 or rank is None or rank < 1:
                continue
            add = _matmul_bias_add(node) if node.domain == "" else None
            if add is not None:
                bias = constant_value(add.input(1) if add.input(0) is node.output(0) else add.input(0))
            out.append(BiasLayer(node, kind, w, bias, 1, rank - 1, add))
    return out


# --- running the model ----------------------------------------------------------------------------
@contextlib.contextmanager
def _exposed(model: Model, names: Sequence[str]) -> Iterator[None]:
    """Temporarily make outputs of edgec-domain nodes among ``names`` graph outputs, so that their
    names survive the lowering to standard ONNX that running the model needs."""
    g = model.graph
    added = []
    for v in g.values():
        if v.name in names and v.producer is not None and v.producer.domain == "edgec" and not v.is_graph_output():
            g.add_output(v)
            added.append(v)
    try:
        yield
    finally:
        for v in reversed(added):
            g.remove_output(list(g.outputs).index(v))


def _batch_means(model: Model, data: Any, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Mean over the batch axis (0) of each named tensor, keeping the other axes, over all batches."""
    from edgec.quant.collect import ModelRunner

    sums: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    with _exposed(model, names):
        runner = ModelRunner(model, list(names), threads=0)
    try:
        for feeds in data.batches():
            got = runner.run(feeds)
            for name in names:
                a = np.asarray(got[name], np.float64)
                a = a.reshape(1) if a.ndim == 0 else a
                s = a.sum(axis=0, keepdims=True)
                sums[name] = s if name not in sums else sums[name] + s
                counts[name] = counts.get(name, 0) + a.shape[0]
    finally:
        runner.close()
    if not counts or not all(counts.values()):
        raise CalibrationError("correct-bias: the calibration data has no samples")
    return {n: sums[n] / counts[n] for n in names}


def _channel_means(model: Model, data: Any, axes: Dict[str, int]) -> Dict[str, np.ndarray]:
    """Per-channel means of the named tensors over the calibration data (one run)."""
    from edgec.quant.collect import collect_statistics

    with _exposed(model, list(axes)):
        stats = collect_statistics(model, data, list(axes), per_channel_axis=axes, progress=False)
    out = {}
    for name in axes:
        mean = stats[name].channel_mean
        if mean is None:
            raise CalibrationError(f"correct-bias: no per-channel mean collected for '{name}'")
        out[name] = np.asarray(mean, np.float64).reshape(-1)
    return out


def _depths(model: Model, layers: Iterable[BiasLayer]) -> Dict[int, int]:
    """Per layer node id: how many target layers lie on the longest path into its input."""
    targets = {id(l.node) for l in layers}
    level: Dict[int, int] = {}  # value id -> level
    depth: Dict[int, int] = {}
    for node in model.graph:
        lv = max((level.get(id(v), 0) for v in node.inputs if v is not None), default=0)
        if id(node) in targets:
            depth[id(node)] = level.get(id(node.input(0)), 0)
        for o in node.outputs:
            if o is not None:
                level[id(o)] = lv + (1 if id(node) in targets else 0)
    return depth


# --- writing the corrected bias ------------------------------------------------------------------
def _bias_slot(layer: BiasLayer) -> Tuple[Node, int]:
    """(node, input index) holding the layer's bias."""
    add = layer.bias_add
    if add is not None:
        return add, (1 if add.input(0) is layer.node.output(0) else 0)
    return layer.node, 2


def _corrected(layer: BiasLayer, delta: np.ndarray) -> Optional[np.ndarray]:
    """The bias minus ``delta`` (per output channel), or None for a Gemm with beta 0."""
    if layer.kind == "gemm":
        beta = float(layer.node.attr("beta", 1.0))
        if beta == 0.0:
            return None
        c = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(1)
        return (c - delta / beta).astype(layer.w.dtype)
    if layer.bias_add is not None:
        return (layer.bias.astype(np.float64) - delta).astype(layer.w.dtype)
    b = layer.bias.astype(np.float64).reshape(-1) if layer.bias is not None else np.zeros(layer.out_channels())
    return (b - delta).astype(layer.w.dtype)


def _set_input(node: Node, i: int, value: Optional[Value]) -> None:
    """Set input ``i`` (appending omitted inputs as needed; trailing omitted inputs are dropped)."""
    while len(node.inputs) <= i:
        node.append_input(None)
    node.set_input(i, value)
    ins = list(node.inputs)
    if ins and ins[-1] is None:
        while ins and ins[-1] is None:
            ins.pop()
        node.set_inputs(ins)


def _insert_bias_add(layer: BiasLayer) -> None:
    """Give a bias-less plain MatMul a following ``Add(y, zeros)`` that holds its bias."""
    node = layer.node
    g = node.graph
    assert g is not None
    y = node.output(0)
    uses = y.uses()
    zeros = np.zeros(layer.out_channels(), layer.w.dtype)
    add = Node("Add", [y, g.add_constant(zeros, "b_bc")], [Value(g.new_name(y.name + "_bc"), y.type)])
    g.insert_after(node, add)
    out = add.output(0)
    for user, i in uses:
        user.set_input(i, out)
    for graph in y._graph_outputs():
        for i, o in enumerate(graph.outputs):
            if o is y:
                y.name, out.name = out.name, y.name
                graph.set_output(i, out)
    layer.bias_add, layer.bias = add, zeros


@register_pass
class CorrectBias(Pass):
    """Bias correction: subtract the expected output error of simulated weight quantization from the bias.

    Needs ``ctx.resources['calibration']`` (a CalibrationData). Layers: Conv/edgec.FusedConv,
    Gemm/FusedGemm and MatMul/FusedMatMul with a 2-D weight, weights constant and float. For each,
    ``W_q = dequantize(quantize(W))`` with :func:`edgec.quant.scheme.weight_params` exactly as the
    quantize pass does (symmetric, ``bits`` 8 or 4, ``reduce-range``, per output channel unless
    ``per-channel=false`` or opset < 13; use the same options as for ``quantize``), and the bias (created when
    absent; a MatMul's following ``Add(const)`` counts as its bias, else an Add is inserted) becomes
    ``b - E[(W_q - W) x]``:

    - analytic (default): ``(W_q - W) . mean_c(x)`` with the per-channel input mean from
      ``collect_statistics`` on the float model (one calibration run; ignores conv borders);
    - ``empirical=true``: ``E[y_float] - E[y_q]`` of the pre-activation output, from the batch-mean
      input of the float model and of the model with already-corrected quantized weights upstream
      (one run per layer depth; exact for the linear part, includes upstream error).

    ``exclude``: names of layers left alone (as the quantize pass's ``exclude``: layers kept float
    must keep their bias). Weights stay float (the quantize pass quantizes them the same way). Report
    ``ctx.reports['bias-correction']``: ``{'layers': {node: max |correction|}, 'empirical': bool}``.
    """

    name = "correct-bias"
    opt_level = 3
    idempotent = False
    empirical: bool = False
    bits: int = 8
    per_channel: bool = True
    reduce_range: bool = False
    exclude: List[str] = []

    def run(self, model: Model, ctx: PassContext) -> bool:
        data = ctx.resources.get("calibration")
        if data is None:
            raise CalibrationError("pass 'correct-bias' needs calibration data (--calibration FILE or "
                                   "ctx.resources['calibration'])")
        if self.bits not in (8, 4):
            raise EdgecError(f"correct-bias: bits={self.bits} is not supported (8 or 4)")
        skip = set(self.exclude)
        layers = [l for l in find_layers(model) if l.node.name not in skip]
        if not layers:
            return False
        per_channel = self.per_channel and (model.opset("") or 0) >= 13  # as the quantize pass
        wq = {id(l.node): self._quantized(l, per_channel) for l in layers}
        for l in layers:
            if l.kind == "matmul" and l.node.domain == "" and l.bias_add is None:
                _insert_bias_add(l)
        if self.empirical:
            deltas = self._empirical(model, data, layers, wq)
        else:
            axes = {l.x.name: l.x_axis for l in layers}
            mu = _channel_means(model, data, axes)
            deltas = {id(l.node): l.error_from_channel_mean(wq[id(l.node)] - l.w, mu[l.x.name]) for l in layers}
        consts = ConstTracker()
        report: Dict[str, float] = {}
        for l in layers:
            delta = deltas[id(l.node)]
            if not np.all(np.isfinite(delta)):
                ctx.warn(f"correct-bias: non-finite correction for '{l.node.name}'; left unchanged")
                continue
            new = _corrected(l, delta)
            if new is None:
                ctx.warn(f"correct-bias: '{l.node.name}' is a Gemm with beta=0; cannot add a bias")
                continue
            holder, idx = _bias_slot(l)
            consts.note(holder.input(idx))
            _set_input(holder, idx, model.graph.add_constant(new, "b_bc"))
            report[l.node.name] = float(np.max(np.abs(delta))) if delta.size else 0.0
        consts.sweep()
        ctx.stat("layers", len(report))
        ctx.reports[REPORT] = {"layers": report, "empirical": self.empirical}
        return bool(report)

    def _quantized(self, layer: BiasLayer, per_channel: bool) -> np.ndarray:
        axis = layer.w_axis if per_channel else None
        return simulate_weight_quantization(layer.w, axis, "int8" if self.bits == 8 else "int4",
                                            reduce_range=self.reduce_range, name=layer.node.name)

    def _empirical(self, model: Model, data: Any, layers: List[BiasLayer],
                   wq: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
        """Corrections from measured mean outputs, depth by depth, upstream layers quantized."""
        opset = model.opset("") or 21
        names = list(dict.fromkeys(l.x.name for l in layers))
        float_means = _batch_means(model, data, names)
        depth = _depths(model, layers)
        deltas: Dict[int, np.ndarray] = {}
        saved: List[Tuple[Node, int, Optional[Value]]] = []  # (node, input, original value) to restore
        g = model.graph
        try:
            for d in sorted(set(depth.values())):
                level = [l for l in layers if depth[id(l.node)] == d]
                if saved:
                    q_means = _batch_means(model, data, list(dict.fromkeys(l.x.name for l in level)))
                else:
                    q_means = float_means
                for l in level:
                    key = id(l.node)
                    y_f = l.mean_output(l.w, float_means[l.x.name], opset)
                    y_q = l.mean_output(wq[key], q_means[l.x.name], opset)
                    deltas[key] = y_q - y_f
                # install the quantized weights and corrected biases of this level for the next one
                for l in level:
                    node = l.node
                    saved.append((node, 1, node.input(1)))
                    _set_input(node, 1, g.add_constant(wq[id(node)], "wq_tmp"))
                    new = _corrected(l, deltas[id(node)])
                    if new is not None:
                        holder, idx = _bias_slot(l)
                        saved.append((holder, idx, holder.input(idx)))
                        _set_input(holder, idx, g.add_constant(new, "bq_tmp"))
        finally:
            tmp = ConstTracker()
            for node, idx, val in reversed(saved):
                tmp.note(node.input(idx))
                _set_input(node, idx, val)
            tmp.sweep()
        return deltas
