"""Static post-training quantization to int8 in QDQ form (onnxruntime runs it with integer kernels).

Layout emitted around a quantized Conv (Gemm, MatMul, their edgec Fused forms alike)::

    x_f32 -> Q(s_x, z_x) -> DQ ─┐
    W_i8 (per channel) -> DQ ───┼─> Conv [-> act] -> Q(s_y, z_y) -> DQ -> next
    B_i32 (s_x*s_w[c]) -> DQ ───┘

which onnxruntime fuses into QLinearConv / QLinearMatMul / QGemm (MatMulIntegerToFloat when the
MatMul output stays float).

The file stays small without losing those fusions (tests/quant/test_ort_fusion.py): Conv and
MatMul weight DequantizeLinears have no zero-point input (0 is the default; QGemm needs Gemm's),
a Relu feeding a QuantizeLinear whose zero point is the type's minimum is dropped (the
saturation does its work, exactly), int8 weights keep the float tensor's name and what the pass
adds has short names.

Which tensors get an 8-bit scale (demand-driven: a tensor is quantized because an integer kernel
reads it, never just because it could be):

1. Inputs of Conv/ConvTranspose/Gemm/MatMul (weights int8 per channel, activation x activation
   MatMuls: both inputs) are quantized.
2. Outputs: Conv/ConvTranspose always (QLinearConv produces int8); MatMul/Gemm only when an op that
   reads int8 consumes them (another quantized op, directly or through data movers), else they stay
   float (MatMulIntegerToFloat / QGemm with float output). In transformers this keeps the
   outlier-channel outputs (FFN down-projection: a few channels ~100x the median) and the attention
   scores out of 8 bits.
3. Data movers (Reshape, Transpose, Concat, MaxPool, Gather on activations, ...) share one
   (scale, zero point) between data inputs and outputs and join when one of their tensors is
   quantized.
4. Add/Mul/AveragePool/GlobalAveragePool run quantized (QLinearAdd, ...) only when every activation
   input is already quantized (e.g. ResNet residuals of Conv outputs); an input computed in float
   (bias Adds, residual Adds before LayerNorm, GELU products) keeps the op float: requantizing it
   adds error and no integer kernel.
5. A float-computed tensor is read through Q/DQ only by the ops of rules 1-4; its float readers
   (LayerNorm, residual Adds) keep reading the exact float value. Outputs of int8 ops are read
   through DQ by everyone (so onnxruntime can fuse the producer with its Q).
6. Attention-mask values (computed through elementwise/shape ops from a constant with
   ``|c| >= MASK_MAGNITUDE``, -inf or float min, e.g. ``(1 - mask) * -10000``) and the sums they
   enter are never quantized: one scale spanning the fill value erases the real scores.
7. ``keep-float`` ops (Softmax, LayerNormalization, NMS, TopK, ...) and ``exclude`` nodes stay float.
   With ``int8-softmax=true`` every Softmax on a float activation (not an attention-mask sum, not
   excluded) is quantized the TFLite way: its input gets a calibrated scale, its output the fixed
   ``(1/256, -128)`` (uint8 activations: ``(1/256, 0)``), shared with the data movers it joins.
8. Constant Gather tables (embeddings, >= ``GATHER_MIN_ELEMENTS`` elements, opset >= 13) become int8
   with one symmetric scale per column (last axis); the Gather reads int8 rows and a
   DequantizeLinear follows (a DequantizeLinear before the Gather would dequantize the whole table
   on every run: +40% latency on MiniLM). ``gather-tables=false`` keeps them float.
9. Cost: a group-1 Conv reading fewer than ``THIN_CONV_CHANNELS`` input channels (an image input)
   stays float when the output is for onnxruntime (``thin-convs=auto`` with the ONNX target, or
   ``thin-convs=float``): its int8 kernel is 2-3x slower than the float one there. The integer-only
   C target quantizes it (``auto`` without the ONNX target, or ``int8``).

Compact form (``compact``; ``auto``: for the ONNX target only, the integer reference and the C back
end read the plain form): data movers run on the integers (``Q -> MaxPool -> DQ`` instead of
``Q -> DQ -> MaxPool -> Q -> DQ``: the same values, and what onnxruntime makes of them anyway) and
a bias scale is ``Mul(s_w, s_in)`` of the initializers already there instead of a stored tensor
(bitwise the same; runtimes fold it at load). onnxruntime fuses the same integer kernels
(tests/quant/test_ort_fusion.py).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Literal, Optional, Set, Tuple

import numpy as np

from edgec.backends.onnx_export import ANONYMOUS
from edgec.errors import EdgecError
from edgec.ir import Model, Node, Value
from edgec.ir.dtypes import DType
from edgec.ir.types import QuantParams, Shape, TensorType
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.quant import scheme
from edgec.quant.qdq import (adopt_source_names, dequantize_node, insert_qdq, movers_on_integers, product_scale,
                             quantized_constant, quantized_weight, require_opset, short_name)
from edgec.rewrite import constant_value

__all__ = ["Quantize", "weight_axis", "MOVERS", "COMPUTE_OPS", "DEFAULT_OPS", "DEFAULT_KEEP_FLOAT",
           "initializer_bytes", "edgec_base_op", "STATS_CACHE", "NO_WEIGHT_ZERO_POINT"]

#: Ops with a weight (input 1) and optional bias (input 2): op -> base op.
COMPUTE_OPS = {"Conv": "Conv", "ConvTranspose": "ConvTranspose", "Gemm": "Gemm", "MatMul": "MatMul",
               "FusedConv": "Conv", "FusedConvTranspose": "ConvTranspose", "FusedGemm": "Gemm",
               "FusedMatMul": "MatMul"}
#: Ops with their own output parameters and quantized inputs.
ARITH_OPS = ("Add", "Mul", "AveragePool", "GlobalAveragePool")
#: Data movers: op -> indices of the data inputs that share the outputs' parameters (None = all).
MOVERS: Dict[str, Optional[Tuple[int, ...]]] = {
    "Reshape": (0,), "Transpose": (0,), "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "MaxPool": (0,), "Concat": None, "Slice": (0,), "Gather": (0,), "Pad": (0,), "Split": (0,),
    "Resize": (0,),
}
#: Base ops whose weight DequantizeLinear goes without its (all-zero) zero point: onnxruntime still
#: fuses them (QLinearConv, QLinearMatMul, MatMulIntegerToFloat), which it does not for Gemm (QGemm
#: needs the weight's zero point; ConvTranspose runs in float either way).
#: Checked per op by tests/quant/test_ort_fusion.py.
NO_WEIGHT_ZERO_POINT = {"Conv", "MatMul"}
#: ``ctx.resources`` key of a dict the quantize pass keeps calibration statistics in, by tensor
#: name. A driver that quantizes copies of one float model on one calibration set several times
#: (the --max-drop search and sensitivity: one candidate per excluded-layer set) passes the same
#: dict to every run, so the data goes through the model once. Only valid while the model the pass
#: sees is the same every time (not after correct-bias, whose corrections depend on the candidate).
STATS_CACHE = "quantize.statistics"
#: Constant Gather tables with fewer elements stay float (nothing to gain).
GATHER_MIN_ELEMENTS = 1024
#: A group-1 Conv reading fewer input channels than this is "thin" (an image input: 1-3 channels).
#: onnxruntime's int8 convolution (MLAS, x86 AVX2) runs those 2-3x slower than its float one
#: (1 thread, 16 output channels 3x3: 1 channel 8x8 batch 64 322 vs 144 us, 3 channels 32x32 batch 8
#: 654 vs 350 us, 3->32 channels 112x112 1171 vs 618 us; from 4 channels on int8 is as fast or
#: faster), so for onnxruntime targets they stay float (``thin-convs``).
THIN_CONV_CHANNELS = 4
DEFAULT_OPS = list(COMPUTE_OPS) + list(ARITH_OPS) + list(MOVERS)
DEFAULT_KEEP_FLOAT = ["Softmax", "LogSoftmax", "NonMaxSuppression", "TopK", "ArgMax", "ArgMin", "RoiAlign",
                      "LayerNormalization", "LayerNorm"]


def edgec_base_op(node: Node) -> Optional[str]:
    """The base op of a quantizable weighted node (``FusedConv`` -> ``Conv``), else None."""
    if node.domain not in ("", "edgec"):
        return None
    if node.domain == "edgec" and not node.op_type.startswith("Fused"):
        return None
    if node.domain == "" and node.op_type.startswith("Fused"):
        return None
    return COMPUTE_OPS.get(node.op_type)


def weight_axis(node: Node, w: np.ndarray) -> Optional[int]:
    """The output-channel axis of the weight of a Conv/ConvTranspose/Gemm/MatMul (fused forms too)."""
    base = edgec_base_op(node)
    if base == "Conv":
        return 0
    if base == "ConvTranspose":
        return 1  # (C_in, C_out/group, k...): per channel of each group, as ORT supports
    if base == "Gemm":
        if w.ndim != 2:
            return None
        return 0 if node.attr("transB", 0) else 1
    if base == "MatMul":
        return 1 if w.ndim == 2 else None
    return None


def initializer_bytes(model: Model) -> int:
    """Bytes of every initializer of the main graph (packed sub-byte types counted as such)."""
    return int(sum(v.const.nbytes for v in model.graph.initializers.values() if v.const is not None))


#: Ops whose output 0 has the element type of input 0 (used to type values shape inference left open).
_SAME_TYPE = set(COMPUTE_OPS) | set(ARITH_OPS) | set(MOVERS) | {
    "Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Softmax", "LogSoftmax",
    "Sub", "Div", "Identity", "LayerNorm", "LayerNormalization", "Attention", "BatchNormalization", "Neg", "Abs",
    "Sqrt", "Erf", "Exp", "ReduceMean", "ReduceMax", "ReduceSum", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
    "Upsample", "InstanceNormalization", "GroupNormalization", "Where"}


def _fill_float_types(model: Model) -> None:
    """Type as float32 the untyped outputs of ops that keep their float input's element type."""
    for n in model.graph:
        if n.op_type not in _SAME_TYPE or n.domain not in ("", "edgec"):
            continue
        src = n.input(1) if n.op_type == "Where" else n.input(0)
        out = n.output(0)
        if out is not None and out.dtype is None and src is not None and src.dtype == DType.FLOAT:
            shape = out.shape if out.shape is not None else None
            out.type = TensorType(DType.FLOAT, shape) if shape is not None else TensorType(DType.FLOAT)


def _is_f32(v: Optional[Value]) -> bool:
    return v is not None and v.dtype == DType.FLOAT


def _is_act(v: Optional[Value]) -> bool:
    return _is_f32(v) and not v.is_constant() and not (v.producer is not None and v.producer.op_type == "Constant")


class _Union:
    """Union-find over values (by identity)."""

    def __init__(self) -> None:
        self.parent: Dict[int, int] = {}
        self.values: Dict[int, Value] = {}

    def add(self, v: Value) -> None:
        if id(v) not in self.parent:
            self.parent[id(v)] = id(v)
            self.values[id(v)] = v

    def find(self, k: int) -> int:
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: Value, b: Value) -> None:
        self.add(a)
        self.add(b)
        ra, rb = self.find(id(a)), self.find(id(b))
        if ra != rb:
            self.parent[rb] = ra

    def groups(self) -> Dict[int, List[Value]]:
        out: Dict[int, List[Value]] = {}
        for k, v in self.values.items():
            out.setdefault(self.find(k), []).append(v)
        return out


class _Limited:
    """A view of calibration data that stops after ``n`` samples (``samples`` option)."""

    def __init__(self, data: Any, n: int) -> None:
        self.data, self.n = data, n
        self.num_samples = min(n, getattr(data, "num_samples", n))

    def counted_batches(self, batch_size: Optional[int] = None) -> Iterable[Tuple[int, Dict[str, np.ndarray]]]:
        left = self.num_samples
        for k, b in self.data.counted_batches(batch_size):
            if left <= 0:
                return
            if k > left:
                b = {name: a[:left] for name, a in b.items()}
                k = left
            yield k, b
            left -= k

    def batches(self, batch_size: Optional[int] = None) -> Iterable[Dict[str, np.ndarray]]:
        for _, b in self.counted_batches(batch_size):
            yield b

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)


def _absorbable(node: Node) -> bool:
    """Relu, or Clip with constant bounds: ORT folds it into the producer's output quantization."""
    if node.domain != "" or node.op_type not in ("Relu", "Clip"):
        return False
    return all(v is None or constant_value(v) is not None for v in node.inputs[1:])


def _through_activation(v: Value) -> Value:
    """The value to quantize for an op's output: past a sole Relu/Clip consumer (fused by ORT)."""
    users = v.consumers()
    if len(users) == 1 and not v.is_graph_output() and _absorbable(users[0]) and users[0].input(0) is v \
            and _is_f32(users[0].output(0)):
        return users[0].output(0)
    return v


def _int8_produced(v: Value, int8_ops: Set[int]) -> bool:
    """Whether ``v`` is the output of an op that runs in int8 (or of a Relu/Clip fused into one)."""
    p = v.producer
    if p is None:
        return False
    if id(p) in int8_ops:
        return True
    src = p.input(0) if _absorbable(p) else None
    return src is not None and src.producer is not None and id(src.producer) in int8_ops


#: Constants at least this large (or infinite) in magnitude are attention-mask fill values.
MASK_MAGNITUDE = 1e4
#: Ops through which a mask fill value propagates (elementwise arithmetic, casts, shape moves).
_MASK_OPS = {"Add", "Sub", "Mul", "Div", "Neg", "Cast", "Where", "Min", "Max", "Unsqueeze", "Squeeze", "Reshape",
             "Expand", "Transpose", "Concat", "Slice", "Tile", "Flatten", "Identity"}


def _mask_values(model: Model) -> Set[int]:
    """Ids of the values carrying an attention-mask fill (a constant with ``|c| >= MASK_MAGNITUDE``,
    -inf or float min) through elementwise/shape ops: their range is the fill value, so one 8-bit
    scale would wipe out the real values (attention scores) they are added to."""
    out: Set[int] = set()
    for n in model.graph:
        if n.domain not in ("", "edgec") or n.op_type not in _MASK_OPS:
            continue
        hit = False
        for v in n.inputs:
            if v is None:
                continue
            if id(v) in out:
                hit = True
                break
            c = constant_value(v)
            if c is not None and np.issubdtype(np.asarray(c).dtype, np.floating) and np.size(c) > 0 \
                    and float(np.max(np.abs(c))) >= MASK_MAGNITUDE:
                hit = True
                break
        if hit:
            out.update(id(o) for o in n.outputs if o is not None)
    return out


def _relu_before(pool: Node, int8_ops: Set[int]) -> Optional[Node]:
    """The float node whose Relu (plain, or fused: ``edgec.Fused*{activation=Relu}``) feeds only ``pool``."""
    x = pool.input(0)
    p = x.producer if x is not None else None
    if p is None or id(p) in int8_ops or x.is_graph_output() or len(x.uses()) != 1:
        return None
    if p.op_type == "Relu" and p.domain == "" and p.input(0) is not None:
        src = p.input(0).producer
        return p if src is None or id(src) not in int8_ops else None
    act = p.attr("activation", "") if p.domain == "edgec" and p.op_type.startswith("Fused") else ""
    return p if (act.decode() if isinstance(act, bytes) else act) == "Relu" else None


def _relus_after_float_pools(g: Any, plan: Dict[str, Any]) -> int:
    """``Relu -> MaxPool`` becomes ``MaxPool -> Relu`` where both run in float and the pool's output
    is quantized (exact: max commutes with Relu, which then runs on 4x fewer values). The Relu
    between the MaxPool and its QuantizeLinear is what keeps onnxruntime from propagating the Q
    backward through the MaxPool, which would make it a uint8 MaxPool outside the NHWC region:
    20x slower than the float one (digits CNN first pool: 306 vs 15 us). Returns how many moved."""
    done = 0
    for pool in list(g):
        if pool.op_type != "MaxPool" or pool.domain != "" or id(pool) in plan["int8_ops"] \
                or id(pool.output(0)) not in plan["uf"].parent or len(pool.outputs) > 1 and pool.output(1) is not None:
            continue
        act = _relu_before(pool, plan["int8_ops"])
        if act is None:
            continue
        if act.op_type == "Relu":
            pool.set_input(0, act.input(0))
            g.remove(act)
        else:
            act.attrs.pop("activation", None)
            act.attrs.pop("activation_params", None)
        y = pool.output(0)
        relu = Node("Relu", [None], 1, name=short_name(g, "Relu", node_name=True))
        relu.meta[ANONYMOUS] = True
        g.insert_after(pool, relu)
        r = relu.output(0)
        r.type = y.type
        y.replace_all_uses_with(r)  # a graph output moves to r under its public name
        relu.set_input(0, y)
        if not r.is_graph_output():
            r.name, y.name = y.name, r.name  # readers keep reading the pool's (source) name
        done += 1
    return done


def _drop_saturated_relus(g: Any, consts: Any) -> int:
    """Remove ``Relu -> QuantizeLinear`` Relus whose work the QuantizeLinear already does: with the
    zero point at the type's minimum every negative input saturates to it (exact; onnxruntime
    drops them at load too, so this only saves the node in the file)."""
    done = 0
    for q in list(g):
        if q.op_type != "QuantizeLinear" or q.domain != "" or len(q.inputs) < 3:
            continue
        x, zpv = q.input(0), q.input(2)
        p = x.producer if x is not None else None
        if p is None or x.is_graph_output() or len(x.uses()) != 1:
            continue
        plain = p.op_type == "Relu" and p.domain == "" and p.input(0) is not None
        if plain and p.input(0).producer is not None and p.input(0).producer.op_type == "MaxPool":
            continue  # it keeps onnxruntime from running the pool in uint8 (_relus_after_float_pools)
        act = p.attr("activation", "") if p.domain == "edgec" and p.op_type.startswith("Fused") else ""
        fused = (act.decode() if isinstance(act, bytes) else act) == "Relu"
        if not (plain or fused):
            continue
        zp = constant_value(zpv) if zpv is not None else None
        if zp is None or np.size(zp) != 1 or np.asarray(zp).dtype not in (np.uint8, np.int8):
            continue
        if int(np.asarray(zp).reshape(-1)[0]) != int(np.iinfo(np.asarray(zp).dtype).min):
            continue
        if plain:
            q.set_input(0, p.input(0))
            g.remove(p)
        else:  # FusedConv{activation=Relu}: the lowering would emit the Relu node
            p.attrs.pop("activation", None)
            p.attrs.pop("activation_params", None)
        done += 1
    return done


def _mover_ok(node: Node) -> bool:
    """A data mover we can keep in int8: float data, no extra semantics that break sharing."""
    if node.op_type == "MaxPool" and any(o is not None and o.has_uses() for o in node.outputs[1:]):
        return False
    if node.op_type == "Pad":
        mode = node.attr("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        cv = node.input(2)
        if mode != "constant":
            return False
        if cv is not None and (constant_value(cv) is None or not np.all(constant_value(cv) == 0)):
            return False
        if node.attr("value", 0.0) not in (0, 0.0):
            return False
    if node.op_type == "Resize":
        mode = node.attr("mode", "nearest")
        if (mode.decode() if isinstance(mode, bytes) else mode) != "nearest":
            return False
    return True


def _mover_data(node: Node) -> List[Value]:
    idx = MOVERS[node.op_type]
    ins = [v for v in node.inputs if v is not None] if idx is None else [node.input(i) for i in idx]
    return [v for v in ins if v is not None]


def _mover_outs(node: Node) -> List[Value]:
    outs = [node.output(0)] if node.op_type == "MaxPool" else [o for o in node.outputs if o is not None]
    return [o for o in outs if o is not None]


@register_pass
class Quantize(Pass):
    """Static int8 post-training quantization in QDQ form, calibrated on ctx.resources['calibration'].

    Weights int8 symmetric per output channel (Conv axis 0, ConvTranspose axis 1, Gemm axis 0 with
    transB=1 else 1, 2-D MatMul weight axis 1), biases int32 at ``s_in*s_w[c]`` (an overflowing
    bias enlarges its channel's weight scale), activations per tensor (asymmetric unless
    ``symmetric-activations``) with ranges from ``method``, chosen by the rules of the module
    docstring; ``gather-tables`` quantizes constant embedding tables. Leaves a report in
    ``ctx.reports['quantization']``. ``reduce-range`` quantizes weights to 7 bits: use it for x86 CPUs
    without VNNI, whose u8s8 kernels saturate int16 pair sums at full 8-bit range. ``thin-convs``:
    whether Convs with 1-3 input channels stay float (rule 9; ``auto``: float for the ONNX target).
    ``compact`` (``auto``: on for the ONNX target) writes the smaller equivalent form of the module
    docstring's last paragraph, which the integer reference and the C back end do not read.
    """

    name = "quantize"
    opt_level = 3
    idempotent = False

    bits: int = 8
    per_channel: bool = True
    activations: Literal["int8", "uint8"] = "uint8"
    symmetric_activations: bool = False
    method: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    percentile: float = 99.999
    ops: List[str] = DEFAULT_OPS
    exclude: List[str] = []
    keep_float: List[str] = DEFAULT_KEEP_FLOAT
    samples: int = 0
    reduce_range: bool = False
    gather_tables: bool = True
    int8_softmax: bool = False
    thin_convs: Literal["auto", "float", "int8"] = "auto"
    compact: Literal["auto", "on", "off"] = "auto"

    # --- driver --------------------------------------------------------------------------------
    def run(self, model: Model, ctx: PassContext) -> bool:
        data = ctx.resources.get("calibration")
        if data is None:
            raise EdgecError("quantize needs calibration data: pass --calibration FILE (or --calibration synthetic)")
        if self.bits not in (8, 4):
            raise EdgecError(f"quantize: bits={self.bits} is not supported (8, or 4 for weights only)")
        g = model.graph
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g):
            ctx.warn("quantize: the model already holds QuantizeLinear/DequantizeLinear; left unchanged")
            return False
        require_opset(model, 10, "quantization (QuantizeLinear/DequantizeLinear)")
        warnings: List[str] = []
        per_channel = self.per_channel
        if per_channel and (model.opset("") or 0) < 13:
            per_channel = False
            warnings.append(f"per-channel weights need opset >= 13 (model: {model.opset('')}); using per-tensor weights")
        wdtype = DType.INT8 if self.bits == 8 else DType.INT4
        if wdtype == DType.INT4:
            require_opset(model, 21, "int4 weights (bits=4)")
            warnings.append("int4 weights: onnxruntime runs these convolutions in float after DequantizeLinear")
        adtype = DType.INT8 if self.activations == "int8" else DType.UINT8
        try:
            from edgec.ir.shapes import infer_shapes

            infer_shapes(model)
        except Exception:  # noqa: BLE001 - types are refined when possible
            pass
        _fill_float_types(model)
        warnings.extend(str(w) for w in getattr(data, "warnings", []) or [])
        if getattr(data, "synthetic", False) and not any("synthetic" in w for w in warnings):
            warnings.append("calibration data is synthetic: activation ranges may not match real inputs")
        if self.samples > 0:
            data = _Limited(data, self.samples)

        self._float_thin = self._thin_convs_float(ctx)
        target = ctx.resources.get("target") or {}
        self._compact = self.compact == "on" or (self.compact == "auto" and target.get("name") == "onnx")
        kept_fast = [n.name for n in g if self._enabled(n) and self._slow_in_int8(n)]
        plan = self._plan(model)
        if _relus_after_float_pools(g, plan):
            plan = self._plan(model)
        if not plan["compute"] and not plan["arith"] and not plan["members"]:
            ctx.warn("quantize: no quantizable op found")
            return False
        params = self._calibrate(model, data, plan, adtype, warnings, ctx.resources.get(STATS_CACHE))
        if plan["softmax"]:  # TFLite's fixed output parameters, for the whole sharing group
            uf, groups = plan["uf"], plan["uf"].groups()
            fixed = (np.asarray(1.0 / 256.0, np.float32), np.asarray(-128 if adtype == DType.INT8 else 0,
                                                                      dtype=adtype.numpy))
            for n in plan["softmax"]:
                for v in groups[uf.find(id(n.output(0)))]:
                    params[id(v)] = fixed
        bytes_before = initializer_bytes(model)
        report_nodes = self._rewrite(model, plan, params, per_channel, wdtype, adtype, warnings)
        after = initializer_bytes(model)
        for w in warnings:
            ctx.warn("quantize: " + w)
        ctx.stat("quantized-nodes", len(report_nodes))
        ctx.stat("quantized-tensors", len(params))
        ctx.reports["quantization"] = {
            "options": {k: v for k, v in self.option_values().items()},
            "nodes": report_nodes,
            "totals": {"model_bytes_before": bytes_before, "model_bytes_after": after,
                       "ratio": (after / bytes_before) if bytes_before else 1.0,
                       "quantized_nodes": len(report_nodes), "quantized_tensors": len(params)},
            "warnings": warnings,
            "kept_float_for_speed": kept_fast,  # rule 9: their int8 kernel would be slower
        }
        return True

    # --- which tensors --------------------------------------------------------------------------
    def _thin_convs_float(self, ctx: PassContext) -> bool:
        """Whether thin Convs stay float (rule 9): asked for, or ``auto`` with the ONNX target."""
        if self.thin_convs != "auto":
            return self.thin_convs == "float"
        target = ctx.resources.get("target") or {}
        return target.get("name") == "onnx"

    def _slow_in_int8(self, node: Node) -> bool:
        """A Conv whose int8 kernel is slower than its float one where the output runs (rule 9)."""
        if not getattr(self, "_float_thin", False) or edgec_base_op(node) != "Conv" or int(node.attr("group", 1)) != 1:
            return False
        w = constant_value(node.input(1)) if node.input(1) is not None else None
        return w is not None and np.ndim(w) >= 2 and np.shape(w)[1] < THIN_CONV_CHANNELS

    def _enabled(self, node: Node) -> bool:
        if node.name in self.exclude or node.op_type in self.keep_float:
            return False
        return node.op_type in self.ops and node.domain in ("", "edgec")

    def _plan(self, model: Model) -> Dict[str, Any]:
        """Choose the tensors to quantize (the rules are in the module docstring)."""
        g = model.graph
        uf = _Union()
        masked = _mask_values(model)
        qin: Dict[int, List[Tuple[Node, int]]] = {}  # value id -> the uses that read it quantized
        int8_ops: Set[int] = set()  # nodes whose output is produced in int8 (all their readers get DQ)

        def use(v: Value, n: Node, i: int) -> None:
            uf.add(v)
            qin.setdefault(id(v), []).append((n, i))

        compute: List[Node] = []
        deferred: List[Node] = []  # MatMul/Gemm: output quantized only when a quantized op reads it
        for n in g:
            if not self._enabled(n) or edgec_base_op(n) is None or self._slow_in_int8(n):
                continue
            base = edgec_base_op(n)
            x, w = n.input(0), n.input(1)
            if not _is_act(x) or not _is_f32(n.output(0)) or id(x) in masked:
                continue
            if base == "MatMul" and _is_act(w):
                if id(w) in masked:
                    continue
                use(w, n, 1)  # activation x activation (attention): both inputs quantized
            elif constant_value(w) is None or not np.issubdtype(constant_value(w).dtype, np.floating):
                continue
            b = n.input(2)
            if b is not None and constant_value(b) is None:
                continue
            use(x, n, 0)
            if base in ("Conv", "ConvTranspose"):
                uf.add(_through_activation(n.output(0)))
                int8_ops.add(id(n))
            else:
                deferred.append(n)
            compute.append(n)
        softmaxes: List[Node] = []  # int8-softmax: input calibrated, output (1/256, type minimum)
        if self.int8_softmax:
            for n in g:
                if n.op_type != "Softmax" or n.domain != "" or n.name in self.exclude:
                    continue
                x, out = n.input(0), n.output(0)
                if not _is_act(x) or not _is_f32(out) or id(x) in masked or id(out) in masked:
                    continue
                use(x, n, 0)
                uf.add(out)
                int8_ops.add(id(n))
                softmaxes.append(n)
        movers = [n for n in g if n.op_type in MOVERS and n.domain == "" and self._enabled(n) and _mover_ok(n)
                  and all(_is_act(v) and id(v) not in masked for v in _mover_data(n))
                  and all(_is_f32(o) for o in _mover_outs(n))]
        chosen: Set[int] = set()
        maybe_int8 = {id(n) for n in deferred + movers} | int8_ops

        def float_computed(v: Value) -> bool:
            """Whether ``v`` comes from a graph input or an op that surely runs in float (through Relu/Clip)."""
            p = v.producer
            while p is not None and _absorbable(p) and p.input(0) is not None:
                v, p = p.input(0), p.input(0).producer
            return p is None or not (id(p) in maybe_int8 or (p.op_type in ARITH_OPS and self._enabled(p)))

        def pull_movers() -> None:
            changed = True
            while changed:
                changed = False
                for n in movers:
                    if id(n) in chosen:
                        continue
                    data = _mover_data(n)
                    vals = data + _mover_outs(n)
                    if not any(id(v) in uf.parent for v in data) and all(float_computed(v) for v in data):
                        # Only its output is read quantized: quantizing after the mover is as exact,
                        # never more work (MaxPool: 4x less), and spares onnxruntime an int8 mover
                        # outside its NHWC region (uint8 NCHW MaxPool: 20x slower than float).
                        continue
                    if any(id(v) in uf.parent for v in vals):
                        chosen.add(id(n))
                        int8_ops.add(id(n))
                        for i, v in enumerate(n.inputs):
                            if v is not None and any(v is d for d in _mover_data(n)):
                                qin.setdefault(id(v), []).append((n, i))
                        for v in vals[1:]:
                            uf.union(vals[0], v)
                        changed = True

        pull_movers()
        for n in deferred:
            if id(_through_activation(n.output(0))) in uf.parent:
                int8_ops.add(id(n))
        arith: List[Node] = []
        changed = True
        while changed:
            changed = False
            for n in g:
                if n.op_type not in ARITH_OPS or n.domain != "" or not self._enabled(n) or id(n) in int8_ops:
                    continue
                ins = [v for v in n.inputs if v is not None]
                acts = [v for v in ins if _is_act(v)]
                out = n.output(0)
                if not _is_f32(out) or not all(_is_f32(v) for v in ins) or not acts:
                    continue
                if id(out) in masked or any(id(v) in masked for v in ins):
                    continue
                if not all(id(v) in uf.parent for v in acts):
                    continue  # an input computed in float: quantizing this op would add error, not speed
                for i, v in enumerate(n.inputs):
                    if v is not None and _is_act(v):
                        qin.setdefault(id(v), []).append((n, i))
                uf.add(out)
                after = _through_activation(out)
                if after is not out:
                    uf.add(after)  # a Relu/Clip after it: its output stays available in int8
                int8_ops.add(id(n))
                arith.append(n)
                changed = True
            if changed:
                pull_movers()
        return {"uf": uf, "compute": compute, "arith": arith, "softmax": softmaxes, "members": list(uf.values.values()),
                "movers": [n for n in movers if id(n) in chosen], "qin": qin, "int8_ops": int8_ops}

    # --- ranges ---------------------------------------------------------------------------------
    def _calibrate(self, model: Model, data: Any, plan: Dict[str, Any], adtype: DType, warnings: List[str],
                   cache: Optional[Dict[Any, Any]] = None) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
        from edgec.quant.collect import collect_statistics
        from edgec.quant.observers import compute_range

        members: List[Value] = plan["members"]
        names = sorted({v.name for v in members})
        histogram = self.method != "minmax"
        if cache is None:
            stats = collect_statistics(model, data, names, histogram=histogram, progress=False)
        else:  # the driver's promise: same float model and data on every run (--max-drop candidates)
            key = (histogram, self.samples)
            missing = [nm for nm in names if (key, nm) not in cache]
            if missing:
                got = collect_statistics(model, data, missing, histogram=histogram, progress=False)
                cache.update({(key, nm): st for nm, st in got.items()})
            stats = {nm: cache[(key, nm)] for nm in names if (key, nm) in cache}
        out: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        for root, vals in plan["uf"].groups().items():
            los, his = [], []
            for v in vals:
                st = stats.get(v.name)
                if st is None:
                    continue
                lo, hi = compute_range(st, self.method, bits=8, symmetric=self.symmetric_activations,
                                       percentile=self.percentile)
                los.append(float(lo))
                his.append(float(hi))
            if not los:
                warnings.append(f"no calibration statistics for {', '.join(sorted(v.name for v in vals))}; left float")
                continue
            name = vals[0].name if len(vals) == 1 else f"{vals[0].name} (+{len(vals) - 1} sharing)"
            p = scheme.activation_params(min(los), max(his), adtype, self.symmetric_activations, name=name,
                                         warn=warnings.append)
            for v in vals:
                out[id(v)] = p
        return out

    # --- rewriting ------------------------------------------------------------------------------
    def _rewrite(self, model: Model, plan: Dict[str, Any], params: Dict[int, Tuple[np.ndarray, np.ndarray]],
                 per_channel: bool, wdtype: DType, adtype: DType, warnings: List[str]) -> List[Dict[str, Any]]:
        from edgec.passes.fuse_batchnorm import ConstTracker

        g = model.graph
        consts = ConstTracker()
        report: List[Dict[str, Any]] = []
        for n in plan["compute"]:
            x, y = n.input(0), _through_activation(n.output(0))
            if id(x) not in params or (id(n) in plan["int8_ops"] and id(y) not in params):
                continue
            w = n.input(1)
            if _is_act(w) and id(w) not in params:
                continue
            entry: Dict[str, Any] = {"name": n.name, "op": n.op_type, "input_scale": float(params[id(x)][0]),
                                     "output_scale": float(params[id(y)][0]) if id(y) in params else None}
            if not _is_act(w):
                entry.update(self._quantize_weights(g, n, params[id(x)][0], per_channel, wdtype, consts, warnings))
            report.append(entry)
        for n in plan["arith"]:
            if not all(id(v) in params for v in n.inputs if _is_act(v)) or id(n.output(0)) not in params:
                continue
            for i, v in enumerate(n.inputs):
                if v is None or _is_act(v):
                    continue
                arr = constant_value(v)
                if arr is None:
                    continue
                s, z = scheme.activation_params(float(np.min(arr, initial=0.0)), float(np.max(arr, initial=0.0)),
                                                adtype, self.symmetric_activations, name=v.name, warn=warnings.append)
                qv = quantized_constant(g, arr, s, z, adtype, name=v.name)
                dq = dequantize_node(g, qv, name=v.name)
                dq.outputs[0].type = v.type
                g.insert_before(n, dq)
                n.set_input(i, dq.outputs[0])
                consts.note(v)
            report.append({"name": n.name, "op": n.op_type, "output_scale": float(params[id(n.output(0))][0])})
        for n in plan["softmax"]:
            if id(n.input(0)) in params and id(n.output(0)) in params:
                report.append({"name": n.name, "op": n.op_type, "input_scale": float(params[id(n.input(0))][0]),
                               "output_scale": float(params[id(n.output(0))][0])})
        for v in plan["members"]:
            if id(v) not in params or not v.has_uses():
                continue
            s, z = params[id(v)]
            if _int8_produced(v, plan["int8_ops"]):
                insert_qdq(g, v, s, z, adtype)  # every reader gets DQ: ORT fuses the producer with its Q
                continue
            live = {(id(u), i) for u, i in v.uses()}
            uses = [(u, i) for u, i in plan["qin"].get(id(v), []) if (id(u), i) in live]
            if uses:  # a float-computed tensor: only the quantized ops read it through Q/DQ
                insert_qdq(g, v, s, z, adtype, uses=list(dict.fromkeys(uses)))
        if self.gather_tables:
            report.extend(self._quantize_tables(model, consts, warnings))
        if self._compact:
            opset = model.opset("") or 0
            for n in plan["movers"]:
                idx = MOVERS[n.op_type]
                movers_on_integers(g, n, [i for i, v in enumerate(n.inputs) if v is not None] if idx is None else idx,
                                   opset)
        _drop_saturated_relus(g, consts)
        consts.sweep()
        adopt_source_names(g)  # int8 "features.4.weight" instead of "features.4.weight_q"
        return report

    def _quantize_tables(self, model: Model, consts: Any, warnings: List[str]) -> List[Dict[str, Any]]:
        """Constant Gather tables (embeddings) to int8, one symmetric scale per column (last axis);
        the Gather reads int8 rows and a DequantizeLinear follows it (a DequantizeLinear before the
        Gather would dequantize the whole table on every run)."""
        g = model.graph
        nodes = [n for n in g if n.op_type == "Gather" and n.domain == "" and self._enabled(n)]
        out: List[Dict[str, Any]] = []
        for n in nodes:
            tv, idx, o = n.input(0), n.input(1), n.output(0)
            table = constant_value(tv) if tv is not None else None
            if table is None or o is None or idx is None or constant_value(idx) is not None:
                continue
            table = np.asarray(table)
            if table.dtype != np.float32 or table.ndim < 2 or table.size < GATHER_MIN_ELEMENTS \
                    or int(n.attr("axis", 0)) % table.ndim != 0:
                continue
            if (model.opset("") or 0) < 13:
                warnings.append(f"{n.name}: quantizing Gather table '{tv.name}' needs opset >= 13 (per-column "
                                "scales); left float")
                continue
            scale, zp = scheme.weight_params(table, table.ndim - 1, DType.INT8, True, name=tv.name)
            qt = quantized_constant(g, table, scale, zp, DType.INT8, table.ndim - 1, name=tv.name)
            rank = len(o.shape.dims) if o.shape is not None and o.shape.dims is not None else None
            if rank is None and idx.shape is not None and idx.shape.dims is not None:
                rank = len(idx.shape.dims) + table.ndim - 1
            axis = rank - 1 if rank is not None else -1
            gather = Node("Gather", [qt, idx], 1, {"axis": 0}, name=n.name)
            gather.outputs[0].name = g.new_name("gathered")
            gather.outputs[0].type = TensorType(DType.INT8, o.shape if o.shape is not None else Shape(None),
                                                QuantParams(scale, zp, axis))
            g.insert_before(n, gather)
            dq = dequantize_node(g, gather.outputs[0], name=tv.name)
            dq.outputs[0].type = o.type
            g.insert_after(gather, dq)
            o.replace_all_uses_with(dq.outputs[0])
            g.remove(n)
            consts.note(tv)
            out.append({"name": n.name, "op": "Gather", "weight": tv.name, "weight_axis": table.ndim - 1,
                        "weight_bytes_float": int(table.nbytes), "weight_bytes_quantized": int(qt.const.nbytes),
                        "weight_scale_min": float(np.min(scale)), "weight_scale_max": float(np.max(scale))})
        return out

    def _quantize_weights(self, g: Any, n: Node, s_in: np.ndarray, per_channel: bool, wdtype: DType,
                          consts: Any, warnings: List[str]) -> Dict[str, Any]:
        wv, bv = n.input(1), n.input(2)
        w = np.asarray(constant_value(wv))
        base = edgec_base_op(n)
        axis = weight_axis(n, w) if per_channel else None
        scale, zp = scheme.weight_params(w, axis, wdtype, True, name=wv.name, reduce_range=self.reduce_range)
        info: Dict[str, Any] = {"weight": wv.name, "weight_axis": axis,
                                "weight_bytes_float": int(wv.const.nbytes) if wv.const is not None else int(w.nbytes)}
        bias = constant_value(bv) if bv is not None else None
        qbias = None
        fixed: List[int] = []
        if bias is not None and base != "MatMul" and bias.ndim == 1 and np.issubdtype(bias.dtype, np.floating):
            groups = int(n.attr("group", 1)) if base == "ConvTranspose" else 1
            gemm_ok = base != "Gemm" or (float(n.attr("alpha", 1.0)) == 1.0 and float(n.attr("beta", 1.0)) == 1.0)
            n_out = bias.shape[0]
            per_c = scale.ndim > 0
            if gemm_ok and (not per_c or scale.size * groups == n_out):
                s_full = np.tile(scale, groups) if per_c else scale
                bq = scheme.bias_params(bias, float(s_in), s_full, name=bv.name)
                if bq.adjusted:
                    fixed = bq.adjusted
                    new = np.asarray(bq.weight_scale, np.float32)
                    scale = new.reshape(groups, -1).max(axis=0) if per_c else new.reshape(())
                    s_full = np.tile(scale, groups) if per_c else scale
                    bq = scheme.bias_params(bias, float(s_in), s_full, name=bv.name)
                    warnings.append(f"{n.name}: bias '{bv.name}' overflows int32 at scale s_in*s_w in "
                                    f"{len(fixed)} channel(s); enlarged their weight scale")
                qbias = bq
        dq_w = quantized_weight(g, wv, scale, zp, wdtype, axis, before=n, array=w,
                                zero_point=False if base in NO_WEIGHT_ZERO_POINT else None)
        n.set_input(1, dq_w)
        consts.note(wv)
        qbytes = dq_w.producer.input(0).const.nbytes
        if qbias is not None:
            axis_b = 0 if np.ndim(qbias.scale) > 0 else None
            qb = quantized_constant(g, qbias.values, qbias.scale, np.zeros(np.shape(qbias.scale), np.int32),
                                    DType.INT32, axis_b, name=bv.name)
            derived = product_scale(g, dq_w.producer.input(1), s_in, qbias.scale, before=n) \
                if getattr(self, "_compact", False) else None
            dq = dequantize_node(g, qb, name=bv.name, params=None if derived is None else [derived])
            dq.outputs[0].type = bv.type
            g.insert_before(n, dq)
            n.set_input(2, dq.outputs[0])
            consts.note(bv)
            qbytes += qb.const.nbytes
            info["weight_bytes_float"] += int(bv.const.nbytes) if bv.const is not None else int(bias.nbytes)
        info.update({"weight_bytes_quantized": int(qbytes), "weight_scale_min": float(np.min(scale)),
                     "weight_scale_max": float(np.max(scale)), "bias_overflow_fixed_channels": fixed})
        return info
