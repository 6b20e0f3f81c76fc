"""QDQ IR -> integer IR: every quantized region becomes one ``edgec`` integer op (the int8 C target).

Input: a QDQ model (output of the ``quantize`` pass with int8 activations, or any QDQ graph that
:func:`edgec.quant.reference.run_integer` understands). The regions are found by the reference
interpreter itself (:class:`edgec.quant.reference._Interpreter` planning), and each region's integer
parameters are computed here exactly as the reference kernels compute them at run time, so the
integer IR means bit for bit what ``run_integer`` computes:

==================  ===================================  =======================================================
region anchor       integer op                           constant inputs / attributes
==================  ===================================  =======================================================
Conv (FusedConv)    ``edgec.QConv(X, W, B, M0, SHIFT)``  W int8 [M, C/G, kh, kw]; B int32 = q_b - Z_x*sum(W[m]);
                                                         M0/SHIFT int32 per output channel (or one); with
                                                         ``acc=int64`` B = q_b and the kernel subtracts Z_x
Gemm, MatMul        ``edgec.QGemm(X, W, B, M0, SHIFT)``  W int8 [N, K] (transposed at compile time); B as above
Add, Sub            ``edgec.QAdd(A, B)``                 TFLite PrepareAdd parameters (left shift 20)
Mul                 ``edgec.QMul(A, B)``                 M = S_a*S_b/S_y
AveragePool,        ``edgec.QAvgPool(X)``                sum(q) / n rounded half away (shared scale/zp)
GlobalAveragePool   ``edgec.QAvgPoolRq(X)``              own output (S, Z): sum(q - Z_x) requantized with
                                                         M[n] = S_x/(S_y*n), one (M0, shift) per count n
Softmax             ``edgec.QSoftmax(X)``                TFLite int8 softmax (gemmlowp fixed point), output
                                                         (1/256, -128); input multiplier, left shift, diff_min
Q(DQ), Relu, Clip,  ``edgec.QRequant(X)``                M = S_x/S_y
Identity
MaxPool, Reshape,   the ONNX op on int8                  (shared scale and zero point); a folded Relu/Clip that
Concat, ...                                              narrows the range adds a QRequant clamp
==================  ===================================  =======================================================

Every integer op carries ``qmin``/``qmax`` (the output range narrowed by fused Relu/Clip),
``rounding`` (``double`` gemmlowp or ``single`` CMSIS-NN), ``source_op`` (the ONNX op) and
``fused`` (the folded activation ops). QConv/QGemm carry ``acc_bound`` (the static overflow
bound ``K*128*max|W[c]| + max|B[c]|``) and ``acc`` (``int32`` when the bound fits, else ``int64``).
Regions the reference runs in float stay float nodes, QuantizeLinear/DequantizeLinear stay at the
float boundaries; with ``int8_io`` the graph inputs/outputs that are only quantized/dequantized
become int8 and their (scale, zero point) are returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import UnsupportedModelError
from ...ir import Model, Node, Value
from ...ir.core import Attr, AttrKind
from ...ir.dtypes import DType
from ...ir.edgec_ops import DOMAIN as EDGEC, FUSED_OPS
from ...ir.tensor import ArrayTensor
from ...ir.types import QuantParams, Shape, TensorType
from ...quant import fixedpoint as fx
from ...quant.reference import QTensor, _Interpreter, region_out_params  # the region planner of the oracle
from ...rewrite import constant_value

__all__ = ["integerize", "IntegerizeResult", "INTEGER_OPS", "compile_int8", "Placement"]

#: The integer ops of the edgec domain this transform creates.
INTEGER_OPS = ("QConv", "QGemm", "QAdd", "QMul", "QAvgPool", "QRequant", "QAvgPoolRq", "QSoftmax")
INT32_MAX = (1 << 31) - 1
#: max |q| of an int8 activation (raw values, zero point included).
_ACT_MAX = 128

Placement = Callable[[Node], str]


@dataclass
class IntegerizeResult:
    """What :func:`integerize` did: integer ops by source op, float regions, boundary parameters."""

    integer_nodes: List[str] = field(default_factory=list)  # names of the anchors now integer
    float_regions: List[str] = field(default_factory=list)  # anchors the reference runs in float
    io: Dict[str, Tuple[float, int]] = field(default_factory=dict)  # --int8-io: name -> (scale, zp)
    overflow: List[Dict[str, Any]] = field(default_factory=list)  # per QConv/QGemm: bound, acc type
    float_nodes: List[str] = field(default_factory=list)  # float compute left (outside any region), "op:name"

    def summary(self) -> str:
        wide = sum(1 for o in self.overflow if o["acc"] == "int64")
        return (f"{len(self.integer_nodes)} integer regions, {len(self.float_regions)} float regions, "
                f"{len(self.float_nodes)} float nodes{' (' + ', '.join(self.float_nodes[:4]) + ')' if self.float_nodes else ''}, "
                f"{len(self.overflow)} accumulating layers ({wide} widened to int64)")


def _unsupported(node: Node, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"int8 C target: node '{node.name}' ({node.qualified_op}): {why}")


def _const(v: Optional[Value]) -> Optional[np.ndarray]:
    if v is None:
        return None
    if v.is_constant() and v.const is not None:
        c = v.const
        return np.asarray(c.to_dense() if hasattr(c, "to_dense") else c.numpy())
    return constant_value(v)


def _is_dq(v: Optional[Value]) -> bool:
    return v is not None and v.producer is not None and v.producer.op_type == "DequantizeLinear" \
        and v.producer.domain == ""


def _qtensor(v: Optional[Value]) -> Optional[QTensor]:
    """The QTensor the reference would make of ``v`` (a DequantizeLinear output), statically; else None."""
    if not _is_dq(v):
        return None
    dq = v.producer
    x = dq.input(0)
    if x is None or x.dtype is None:
        return None
    npdt = x.dtype.numpy
    if npdt.kind not in "iu" or npdt.itemsize > 4 or int(dq.attr("block_size", 0) or 0) > 0:
        return None
    scale, zp = _const(dq.input(1)), _const(dq.input(2)) if dq.input(2) is not None else None
    if scale is None or (dq.input(2) is not None and zp is None):
        raise _unsupported(dq, "scale and zero point must be constants")
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros(scale.shape, np.int64) if zp is None else np.asarray(zp).astype(np.int64)
    rank = len(x.shape.dims) if x.shape is not None and x.shape.dims is not None else 1
    axis = int(dq.attr("axis", 1)) % max(rank, 1) if scale.size > 1 else None
    q = _const(x)
    return QTensor(q if q is not None else np.zeros(0, npdt), scale, zp, axis, lambda: None)


def _scalar(a: Optional[np.ndarray]) -> Optional[float]:
    if a is None:
        return None
    a = np.asarray(a)
    return float(a.reshape(-1)[0]) if a.size == 1 else None


class _Integerizer:
    def __init__(self, model: Model, rounding: str) -> None:
        self.model = model
        self.g = model.graph
        self.rounding = rounding
        self.opset = model.opset("") or 21
        self.res = IntegerizeResult()

    # --- output parameters (reference _out_params, statically) ----------------------------------
    def out_params(self, anchor: Node, acts: List[Node], q: Node) -> Optional[Tuple[float, int, np.dtype, int, int]]:
        if _const(q.input(1)) is None or (q.input(2) is not None and _const(q.input(2)) is None):
            raise _unsupported(q, "scale and zero point must be constants")
        for a in acts:
            if a.op_type == "Clip" and (self.model.opset(a.domain) or self.opset) >= 11:
                if any(a.input(i) is not None and _const(a.input(i)) is None for i in (1, 2)):
                    raise _unsupported(a, "Clip bounds must be constants")
        return region_out_params(anchor, acts, q, _const, lambda a: self.model.opset(a.domain) or self.opset)

    # --- the transform ----------------------------------------------------------------------------
    def run(self) -> IntegerizeResult:
        plan = _Interpreter(self.model, self.rounding, integer=True).regions
        for anchor, (spec, acts, q) in list(plan.items()):
            chain = [anchor] if spec.activation_anchor else []
            params = self.out_params(anchor, chain + acts, q)
            qins = list(range(len(anchor.inputs))) if spec.quantized_inputs is None else list(spec.quantized_inputs)
            ins = [_qtensor(v) for v in anchor.inputs]
            new: Optional[List[Node]] = None
            if params is not None and all(ins[i] is not None for i in qins if i < len(ins)):
                if params[2] != np.dtype(np.int8):
                    raise _unsupported(q, "the int8 C target needs int8 activations (quantize with activations=int8)")
                new = self.region(anchor, ins, params, q)
            if new is None:
                self.res.float_regions.append(anchor.name)
                continue
            out = q.output(0)
            for n in new:
                self.g.insert_before(q, n)
            last = new[-1].output(0)
            last.type = TensorType(out.dtype, out.shape, out.type.quant if isinstance(out.type, TensorType) else None)
            out.replace_all_uses_with(last)
            if last.name.startswith("_") or not last.name:
                last.name = self.g.new_name(out.name)
            for n in [q] + acts[::-1] + ([anchor] if anchor is not q else []):
                if n.graph is self.g:
                    self.g.remove(n)
            self.res.integer_nodes.append(anchor.name)
        self.fold_constant_dequantize()
        _dce(self.g)
        for n in self.g:
            if n.domain == EDGEC and n.op_type in INTEGER_OPS or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            if any(o is not None and o.dtype in (DType.FLOAT, DType.DOUBLE) for o in n.outputs):
                self.res.float_nodes.append(f"{n.op_type}:{n.name}")
        return self.res

    def fold_constant_dequantize(self) -> None:
        """DequantizeLinear of a constant (weights of float regions) -> a float constant, computed as ONNX
        (and the reference) does: ``(float32(q) - zp) * scale``; no dequantization at run time."""
        from ...ops import evaluate

        for n in list(self.g):
            if n.op_type != "DequantizeLinear" or n.domain != "":
                continue
            args = [_const(v) if v is not None else None for v in n.inputs]
            if any(a is None for a, v in zip(args, n.inputs) if v is not None):
                continue
            y = evaluate(n, args, max(self.opset, 19))[0]  # onnx.reference has DequantizeLinear from 19 on
            out = n.output(0)
            c = self._c(np.asarray(y, dtype=np.float32), (out.name or "dq") + "_f32")
            out.replace_all_uses_with(c)
            self.g.remove(n)

    def _node(self, op: str, inputs: Sequence[Optional[Value]], attrs: Dict[str, Any], name: str,
              src: Node, fused: Sequence[str]) -> Node:
        attrs = dict(attrs)
        attrs["source_op"] = src.op_type if src.domain == "" else FUSED_OPS.get(src.op_type, src.op_type)
        attrs["fused"] = Attr("fused", AttrKind.STRINGS, [str(f) for f in fused])
        return Node(op, list(inputs), 1, attrs, name=self.g.new_name(name, node_name=True), domain=EDGEC)

    def _fused(self, anchor: Node, q: Node) -> List[str]:
        out = []
        if anchor.domain == EDGEC and anchor.attr("activation", ""):
            out.append(str(anchor.attr("activation")))
        cur = anchor.output(0)
        while cur is not None:
            users = cur.consumers()
            if len(users) != 1 or users[0] is q:
                break
            u = users[0]
            if u.op_type in ("Relu", "Clip"):
                out.append("Relu6" if u.op_type == "Clip" and _scalar(_const(u.input(2))) == 6.0 else u.op_type)
                cur = u.output(0)
            else:
                break
        return out

    def _c(self, arr: np.ndarray, hint: str) -> Value:
        return self.g.add_constant(ArrayTensor(np.ascontiguousarray(arr)), hint)

    def region(self, anchor: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
               q: Node) -> Optional[List[Node]]:
        base = FUSED_OPS.get(anchor.op_type, anchor.op_type) if anchor.domain == EDGEC else anchor.op_type
        fused = self._fused(anchor, q)
        if anchor.op_type in ("Relu", "Clip") and anchor.domain == "":
            fused = [anchor.op_type] + fused
        if base in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            return self.linear(anchor, base, ins, params, fused)
        if base in ("Add", "Sub"):
            return self.add(anchor, ins, params, fused)
        if base == "Mul":
            return self.mul(anchor, ins, params, fused)
        if base in ("AveragePool", "GlobalAveragePool"):
            return self.avgpool(anchor, ins, params, fused)
        if base in ("QuantizeLinear", "Identity", "Relu", "Clip"):
            return self.requant(anchor, ins, params, fused)
        if base == "Softmax":
            return self.softmax(anchor, ins, params, fused)
        return self.movement(anchor, ins, params, fused)

    def _rq_attrs(self, params: Tuple[float, int, np.dtype, int, int]) -> Dict[str, Any]:
        return {"y_zero_point": int(params[1]), "qmin": int(params[3]), "qmax": int(params[4]),
                "rounding": self.rounding}

    # Conv / Gemm / MatMul ---------------------------------------------------------------------------
    def linear(self, node: Node, base: str, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
               fused: List[str]) -> Optional[List[Node]]:
        x, w = ins[0], ins[1]
        if not x.per_tensor:
            return None
        if base == "ConvTranspose":
            raise _unsupported(node, "ConvTranspose has no int8 C kernel")
        wq = _const(node.input(1).producer.input(0))
        if wq is None:
            raise _unsupported(node, "activation x activation MatMul has no int8 C kernel (the weight must be constant)")
        w.q = np.asarray(wq)
        if w.q.dtype != np.int8:
            raise _unsupported(node, f"weights must be int8, not {w.q.dtype}")
        if np.any(w.zero_point != 0):
            raise _unsupported(node, "weights must be symmetric (zero point 0)")
        from ...quant.reference import _weight_channel_axis

        if not w.per_tensor and w.axis != _weight_channel_axis(node, w):
            return None
        alpha = beta = 1.0
        if base == "Gemm":
            alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
            if int(node.attr("transA", 0)):
                raise _unsupported(node, "Gemm transA=1 has no int8 C kernel")
        s_x, z_x = x.params()
        s_x = float(s_x)
        s_acc = alpha * s_x * w.scale.astype(np.float64).reshape(-1)
        # weights in output-channel-major layout
        if base == "Conv":
            wmat = w.q
            n_out = wmat.shape[0]
        else:
            if w.q.ndim != 2:
                raise _unsupported(node, "MatMul weight must be 2-D")
            wmat = w.q.T if (base == "MatMul" or not int(node.attr("transB", 0))) else w.q
            wmat = np.ascontiguousarray(wmat)
            n_out = wmat.shape[0]
        # bias, as the reference computes it
        b = np.zeros(n_out, np.int64)
        bias_v = node.input(2) if len(node.inputs) > 2 else None
        if bias_v is not None:
            bq = ins[2] if len(ins) > 2 else None
            if bq is not None:
                bq.q = _const(bias_v.producer.input(0))
                if bq.q is None:
                    raise _unsupported(node, "the bias must be constant")
                ratio = beta * bq.scale.astype(np.float64).reshape(-1) / s_acc
                qb = bq.centered()
                if np.all(np.abs(ratio - 1.0) <= 1e-6):
                    bb = qb
                else:
                    bb = fx.round_half_even(qb * (ratio if ratio.size == 1 else _along(ratio, qb, -1))).astype(np.int64)
            else:
                fb = _const(bias_v)
                if fb is None:
                    raise _unsupported(node, "the bias must be constant")
                fb = np.asarray(fb, dtype=np.float64)
                bb = fx.round_half_even(beta * fb / (s_acc if s_acc.size == 1 else _along(s_acc, fb, -1))).astype(np.int64)
            bb = np.asarray(bb)
            if bb.size == 1:
                b = np.full(n_out, int(bb.reshape(-1)[0]), np.int64)
            elif bb.size == n_out and (base == "Conv" or bb.shape[-1] == n_out):
                b = bb.reshape(-1).astype(np.int64)
            else:
                raise _unsupported(node, f"bias of shape {list(bb.shape)} is not per output channel")
        wsum = wmat.reshape(n_out, -1).astype(np.int64).sum(axis=1)
        b_fold = b - int(z_x) * wsum
        k = int(np.prod(wmat.shape[1:]))
        wmax = np.abs(wmat.reshape(n_out, -1).astype(np.int64)).max(axis=1)
        bound = int((k * _ACT_MAX * wmax + np.abs(b_fold)).max())
        acc = "int32" if bound <= INT32_MAX else "int64"
        if acc == "int64":  # widened: the kernel subtracts the zero point itself, the bias stays unfolded
            b_fold = b
        if np.any(np.abs(b_fold) > INT32_MAX):
            raise _unsupported(node, "the bias overflows int32")
        m0, shift = fx.quantize_multipliers(s_acc / float(params[0]), self.rounding)
        per_c = m0.size > 1
        cname = node.name or base
        wv = self._c(wmat.astype(np.int8), cname + "_w_s8")
        bv = self._c(b_fold.astype(np.int32), cname + "_bias_s32")
        mv = self._c(m0.reshape(-1).astype(np.int32), cname + "_m0")
        sv = self._c(shift.reshape(-1).astype(np.int32), cname + "_shift")
        attrs = {"x_zero_point": int(z_x), "acc": acc, "acc_bound": bound, "per_channel": int(per_c),
                 **self._rq_attrs(params)}
        xin = node.input(0).producer.input(0)
        self.res.overflow.append({"node": node.name, "op": base, "k": k, "bound": bound, "acc": acc})
        if base == "Conv":
            for key in ("strides", "pads", "dilations", "group", "auto_pad", "kernel_shape"):
                if key in node.attrs:
                    attrs[key] = node.attr(key)
            return [self._node("QConv", [xin, wv, bv, mv, sv], attrs, cname + "_q", node, fused)]
        return [self._node("QGemm", [xin, wv, bv, mv, sv], attrs, cname + "_q", node, fused)]

    # Add / Sub / Mul ------------------------------------------------------------------------------------
    def add(self, node: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
            fused: List[str]) -> Optional[List[Node]]:
        a, b = ins[0], ins[1]
        if not (a.per_tensor and b.per_tensor):
            return None
        (s1, z1), (s2, z2) = a.params(), b.params()
        p = fx.add_params(s1, z1, s2, z2, params[0], params[1], params[3], params[4], sub=node.op_type == "Sub",
                          rounding=self.rounding)
        attrs = {"input1_offset": p.input1_offset, "input2_offset": p.input2_offset, "output_offset": p.output_offset,
                 "left_shift": p.left_shift, "input1_multiplier": p.input1_multiplier, "input1_shift": p.input1_shift,
                 "input2_multiplier": p.input2_multiplier, "input2_shift": p.input2_shift,
                 "output_multiplier": p.output_multiplier, "output_shift": p.output_shift, "sub": int(p.sub),
                 **self._rq_attrs(params)}
        xs = [node.input(0).producer.input(0), node.input(1).producer.input(0)]
        return [self._node("QAdd", xs, attrs, (node.name or "add") + "_q", node, fused)]

    def mul(self, node: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
            fused: List[str]) -> Optional[List[Node]]:
        a, b = ins[0], ins[1]
        if not (a.per_tensor and b.per_tensor):
            return None
        (s1, z1), (s2, z2) = a.params(), b.params()
        m0, shift = fx.quantize_multiplier(float(np.float32(s1)) * float(np.float32(s2)) / float(params[0]),
                                           self.rounding)
        attrs = {"a_zero_point": int(z1), "b_zero_point": int(z2), "multiplier": int(m0), "shift": int(shift),
                 **self._rq_attrs(params)}
        xs = [node.input(0).producer.input(0), node.input(1).producer.input(0)]
        return [self._node("QMul", xs, attrs, (node.name or "mul") + "_q", node, fused)]

    # pools, requantization, data movement ------------------------------------------------------------
    def avgpool(self, node: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
                fused: List[str]) -> Optional[List[Node]]:
        x = ins[0]
        if not x.per_tensor:
            return None
        if node.op_type == "AveragePool" and node.attr("ceil_mode", 0):
            return None
        shared = x.same_params(params[0], params[1])
        attrs = {"x_zero_point": int(x.params()[1]), "global": int(node.op_type == "GlobalAveragePool"),
                 **self._rq_attrs(params)}
        for key in ("kernel_shape", "strides", "pads", "dilations", "auto_pad", "count_include_pad"):
            if key in node.attrs:
                attrs[key] = node.attr(key)
        op = "QAvgPool"
        if not shared:  # own output parameters: sum(q - Z_x) * S_x/(S_y*n), one multiplier per count n
            xs = node.input(0).shape
            if xs is None or xs.dims is None or not all(isinstance(d, int) for d in xs.dims) or len(xs.dims) < 3:
                raise _unsupported(node, "an average pool with its own output scale needs a static input shape")
            if attrs["global"]:
                cmin = cmax = int(np.prod(xs.dims[2:]))
            else:
                cmin, cmax = 1, int(np.prod(node.attr("kernel_shape")))
            m0, sh = fx.avgpool_multipliers(x.params()[0], params[0], np.arange(cmin, cmax + 1), self.rounding)
            attrs.update(count_min=cmin, multipliers=[int(v) for v in m0], shifts=[int(v) for v in sh])
            op = "QAvgPoolRq"
        return [self._node(op, [node.input(0).producer.input(0)], attrs, (node.name or "pool") + "_q", node, fused)]

    def softmax(self, node: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
                fused: List[str]) -> Optional[List[Node]]:
        """TFLite int8 softmax (reference ``_softmax``): the output must be (1/256, -128)."""
        from ...quant.reference import softmax_layout, softmax_output_ok

        x = ins[0]
        if not x.per_tensor or not softmax_output_ok(params[0], params[1], params[2]):
            return None
        xs = node.input(0).shape
        if xs is None or xs.dims is None or not all(isinstance(d, int) for d in xs.dims):
            raise _unsupported(node, "an int8 Softmax needs a static input shape")
        opset = self.model.opset(node.domain) or self.opset
        lay = softmax_layout(node, xs.dims, opset)
        if lay is None or not 1 <= lay[1] <= fx.SOFTMAX_MAX_DEPTH:
            return None
        p = fx.softmax_params(x.params()[0], 1.0, self.rounding)
        if p is None:
            return None
        attrs = {"outer": lay[0], "depth": lay[1], "inner": lay[2], "input_multiplier": p.input_multiplier,
                 "input_left_shift": p.input_left_shift, "diff_min": p.diff_min, **self._rq_attrs(params)}
        return [self._node("QSoftmax", [node.input(0).producer.input(0)], attrs, (node.name or "softmax") + "_q", node,
                           fused)]

    def requant(self, node: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
                fused: List[str]) -> Optional[List[Node]]:
        x = ins[0]
        if not x.per_tensor:
            return None
        s, z = x.params()
        m0, shift = fx.quantize_multiplier(float(np.float32(s)) / float(params[0]), self.rounding)
        attrs = {"x_zero_point": int(z), "multiplier": int(m0), "shift": int(shift), **self._rq_attrs(params)}
        return [self._node("QRequant", [node.input(0).producer.input(0)], attrs, (node.name or "requant") + "_q",
                           node, fused)]

    def movement(self, node: Node, ins: List[Optional[QTensor]], params: Tuple[float, int, np.dtype, int, int],
                 fused: List[str]) -> Optional[List[Node]]:
        new_in: List[Optional[Value]] = []
        for v, qt in zip(node.inputs, ins):
            if qt is not None:
                if not (qt.per_tensor and qt.same_params(params[0], params[1])):
                    return None
                src = v.producer.input(0)
                if src.dtype != DType.INT8:
                    raise _unsupported(node, "data movement of non-int8 integers")
                new_in.append(src)
            else:
                new_in.append(v)
        mv = Node(node.op_type, new_in, 1, dict(node.attrs), name=self.g.new_name((node.name or node.op_type) + "_s8",
                                                                                  node_name=True), domain=node.domain)
        out = [mv]
        if params[3] > -128 or params[4] < 127:  # a folded Relu/Clip narrows the range: a clamp
            mv.output(0).name = self.g.new_name(mv.name + "_out")
            mv.output(0).type = TensorType(DType.INT8, Shape(None))
            attrs = {"x_zero_point": int(params[1]), "multiplier": 1 << 30, "shift": 1, **self._rq_attrs(params)}
            out.append(self._node("QRequant", [mv.output(0)], attrs, (node.name or "clamp") + "_clamp", node, fused))
        return out


def _along(p: np.ndarray, like: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * max(like.ndim, 1)
    shape[axis] = p.size
    return p.reshape(shape)


def _dce(g: Any) -> None:
    changed = True
    while changed:
        changed = False
        for n in reversed(list(g)):
            if all(o is None or not o.has_uses() for o in n.outputs):
                g.remove(n)
                changed = True
    for v in list(g.initializers.values()):
        if not v.has_uses() and not v.is_graph_input():
            g.remove_initializer(v)


def _int8_io(model: Model, res: IntegerizeResult) -> None:
    """Graph inputs read only through one QuantizeLinear (per tensor, int8) become int8 inputs; graph
    outputs computed by DequantizeLinear of int8 become the int8 tensors."""
    g = model.graph
    ins = list(g.inputs)
    new_ins: List[Value] = []
    for v in ins:
        users = v.uses()
        qs = [u for u, i in users if u.op_type == "QuantizeLinear" and u.domain == "" and i == 0]
        ok = bool(users) and len(qs) == len(users) and not v.is_graph_output() and not v.is_initializer()
        keys = set()
        for qn in qs:
            s, z = _const(qn.input(1)), _const(qn.input(2)) if qn.input(2) is not None else None
            if s is None or z is None or np.size(s) != 1 or np.asarray(z).dtype != np.int8:
                ok = False
                break
            keys.add((float(np.float32(_scalar(s))), int(_scalar(z))))
        if not ok or len(keys) != 1:
            new_ins.append(v)
            continue
        scale, zp = keys.pop()
        nv = Value(v.name + "__int8", TensorType(DType.INT8, v.shape, QuantParams(np.float32(scale), np.int8(zp))))
        for qn in qs:
            qn.output(0).replace_all_uses_with(nv, graph_outputs=False)
        res.io[v.name] = (scale, zp)
        new_ins.append(nv)
        nv.meta["public_name"] = v.name
    for v in ins:
        g.remove_input(v)
    for v in new_ins:
        if "public_name" in v.meta:
            pass
        g.add_input(v)
    _dce(g)
    for v in new_ins:  # the old float input is gone: the int8 input takes its name
        if "public_name" in v.meta:
            v.name = v.meta.pop("public_name")
    for i, o in enumerate(list(g.outputs)):
        p = o.producer
        if p is None or p.op_type != "DequantizeLinear" or p.domain != "":
            continue
        src = p.input(0)
        s, z = _const(p.input(1)), _const(p.input(2)) if p.input(2) is not None else np.int8(0)
        if src.dtype != DType.INT8 or s is None or z is None or np.size(s) != 1 or src.is_graph_output() \
                or src.is_graph_input() or src.producer is None:
            continue
        name = o.name
        g.set_output(i, src)
        if not o.has_uses():
            g.remove(p)
            o.name = g.new_name(name + "_float")
        src.name = name
        res.io[name] = (float(np.float32(_scalar(s))), int(_scalar(z)))
    _dce(g)


def integerize(model: Model, *, rounding: str = "double", int8_io: bool = False) -> IntegerizeResult:
    """Rewrite the QDQ ``model`` in place into the integer IR (see the module docstring)."""
    from ...ir.shapes import infer_shapes

    if rounding not in fx.ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {fx.ROUNDING_MODES}, not {rounding!r}")
    if model.opset(EDGEC) is None:
        model.opset_imports[EDGEC] = 1
    infer_shapes(model)
    res = _Integerizer(model, rounding).run()
    if int8_io:
        _int8_io(model, res)
    return res


def compile_int8(model: Model, name: str = "model", *, rounding: str = "double", int8_io: bool = False,
                 placement: Optional[Placement] = None, source: str = "",
                 int8_kernels: str = "fast") -> Tuple[Any, IntegerizeResult]:
    """QDQ ``model`` (changed in place) -> integer IR -> C. Returns ``(CCode, IntegerizeResult)``.

    ``int8_kernels``: "fast" (CPU convolutions on weights packed as int16 pairs, :mod:`.kernels_int8_fast`)
    or "compact" (int8 weights: half the weight bytes, slower on a host CPU).

    The header gets ``<NAME>_<IO>_SCALE`` / ``_ZERO_POINT`` macros of every int8 input/output;
    the report gets ``int8`` (rounding, integer/float regions, per-layer overflow bounds).
    """
    from .emit import generate_c
    from .kernels import flit

    res = integerize(model, rounding=rounding, int8_io=int8_io)
    if int8_kernels not in ("fast", "compact"):
        raise UnsupportedModelError(f"int8 kernels '{int8_kernels}': expected fast or compact")
    code = generate_c(model, name, source=source, placement=placement, int8_kernels=int8_kernels)
    up = name.upper()
    macros = []
    for t in code.report["inputs"] + code.report["outputs"]:
        if t["name"] in res.io and t["dtype"] == "int8":
            s, z = res.io[t["name"]]
            m = f"{up}_{t['c_name'].upper()}"
            macros += [f"/* '{t['name']}' is int8: real = ({m}_SCALE) * (q - ({m}_ZERO_POINT)) */",
                       f"#define {m}_SCALE {flit(s)}", f"#define {m}_ZERO_POINT {z}"]
    if macros:
        h = code.files[f"{name}.h"]
        anchor = "\n/* Runs the model;"
        code.files[f"{name}.h"] = h.replace(anchor, "\n" + "\n".join(macros) + "\n" + anchor, 1)
    code.report["int8"] = {"rounding": rounding, "int8_io": int8_io, "integer_regions": len(res.integer_nodes),
                           "float_regions": res.float_regions, "overflow": res.overflow}
    return code, res


# --- verification against the integer reference ------------------------------------------------------
@dataclass
class Int8Check:
    """C outputs vs :func:`edgec.quant.reference.run_integer` over some samples."""

    samples: int = 0
    exact: int = 0  # samples whose every output equals the reference bit for bit
    histogram: Dict[int, int] = field(default_factory=dict)  # int8 outputs: C - reference, in LSB
    max_float_diff: float = 0.0  # float outputs of float regions (not integer): max |C - reference|
    int_outputs: int = 0
    float_outputs: int = 0

    @property
    def ok(self) -> bool:
        return self.samples > 0 and self.exact == self.samples

    def summary(self) -> str:
        return (f"{'PASS' if self.ok else 'FAIL'}: {self.exact}/{self.samples} samples bit-exact with the integer "
                f"reference; LSB histogram {dict(sorted(self.histogram.items()))}"
                + (f"; float outputs max abs diff {self.max_float_diff:.3g}" if self.float_outputs else ""))


def boundary_feeds(feeds: Dict[str, np.ndarray], io: Dict[str, Tuple[float, int]], report: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Float feeds -> what the C entry point takes: int8 inputs quantized as ONNX QuantizeLinear does."""
    out = {}
    for t in report["inputs"]:
        x = np.asarray(feeds[t["name"]])
        if t["dtype"] == "int8" and x.dtype != np.int8 and t["name"] in io:
            s, z = io[t["name"]]
            x = np.clip(np.rint(x.astype(np.float32) / np.float32(s)).astype(np.int32) + z, -128, 127).astype(np.int8)
        out[t["name"]] = x
    return out


def check_int8(prog: str, code: Any, qdq: Model, samples: Sequence[Dict[str, np.ndarray]], *, rounding: str,
               io: Dict[str, Tuple[float, int]], float_atol: float = 0.0,
               collect: Optional[List[Any]] = None) -> Int8Check:
    """Run the built harness ``prog`` (``verify.build`` or :func:`build_batch`) on float ``samples`` and
    compare with ``run_integer(qdq)``.

    int8 outputs must be equal; float outputs are equal when they come from an integer region (a
    DequantizeLinear), otherwise (float regions) within ``float_atol``. ``collect`` receives the C outputs.
    """
    from ...quant.reference import run_integer
    from .verify import run_binary

    res = Int8Check()
    if prog.endswith("_batch"):  # a build_batch harness: every sample in one process
        outs, _ = run_batch(prog, code.report, [boundary_feeds(f, io, code.report) for f in samples])
    else:
        outs = [run_binary(prog, code.report, boundary_feeds(f, io, code.report)) for f in samples]
    for feeds, got in zip(samples, outs):
        if collect is not None:
            collect.append(got)
        want_q = run_integer(qdq, feeds, rounding=rounding, return_quantized=True)
        want_f = run_integer(qdq, feeds, rounding=rounding)
        same = True
        for t, g in zip(code.report["outputs"], got):
            name = t["name"]
            if t["dtype"] == "int8":
                r = want_q[name]
                d = g.astype(np.int64) - r.astype(np.int64)
                for k_, c_ in zip(*np.unique(d, return_counts=True)):
                    res.histogram[int(k_)] = res.histogram.get(int(k_), 0) + int(c_)
                same &= bool(np.array_equal(g, r))
                res.int_outputs += 1
            else:
                r = np.asarray(want_f[name])
                diff = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))) if r.size else 0.0
                res.max_float_diff = max(res.max_float_diff, diff)
                same &= diff <= float_atol
                res.float_outputs += 1
        res.samples += 1
        res.exact += int(same)
    return res


def ort_lsb_per_layer(qdq: Model, feeds: Dict[str, np.ndarray], *, rounding: str = "double") -> Dict[str, Dict[int, int]]:
    """Per integer region: onnxruntime on that region alone (its int8 inputs taken from the integer
    reference), minus the reference's output, as an LSB histogram (region anchor name -> {diff: count}).

    Comparing layer by layer keeps 1-LSB differences of one layer from propagating into the next.
    Needs onnxruntime; the model is lowered to standard ONNX first.
    """
    import tempfile

    import onnx
    import onnx.utils
    import onnxruntime as ort

    from ...backends.onnx_export import to_proto
    from ...backends.onnx_lowering import lower_for_onnx
    from ...ir.parser import parse_model
    from ...ir.printer import print_model
    from ...quant.reference import run_integer

    m = parse_model(print_model(qdq, elide_limit=None))
    lower_for_onnx(m)
    regions = _Interpreter(m, rounding, integer=True).regions
    probe = parse_model(print_model(m, elide_limit=None))
    names = {v.name for v in probe.graph.outputs}
    for n in probe.graph:
        if n.op_type == "QuantizeLinear" and n.output(0).name not in names:
            probe.graph.add_output(n.output(0))
            names.add(n.output(0).name)
    ref = run_integer(probe, feeds, rounding=rounding, return_quantized=True)
    out: Dict[str, Dict[int, int]] = {}
    with tempfile.TemporaryDirectory() as d:
        full = f"{d}/full.onnx"
        onnx.save(to_proto(m), full)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 4
        for anchor, (spec, acts, q) in regions.items():
            srcs = []
            for i, v in enumerate(anchor.inputs):
                if _is_dq(v) and not v.producer.input(0).is_constant():
                    srcs.append(v.producer.input(0).name)
            if anchor is q:
                srcs = [anchor.input(0).producer.input(0).name]
            target = q.output(0).name
            if target not in ref or any(s not in ref and s not in feeds for s in srcs):
                continue
            part = f"{d}/part.onnx"
            try:
                onnx.utils.extract_model(full, part, list(dict.fromkeys(srcs)), [target], check_model=False)
                sess = ort.InferenceSession(part, so, providers=["CPUExecutionProvider"])
            except Exception:  # noqa: BLE001 - a region ORT cannot take alone is skipped
                continue
            got = sess.run(None, {s: (ref[s] if s in ref else feeds[s]) for s in dict.fromkeys(srcs)})[0]
            diff = got.astype(np.int64) - np.asarray(ref[target]).astype(np.int64)
            out[anchor.name] = {int(k): int(c) for k, c in zip(*np.unique(diff, return_counts=True))}
    return out


# --- a harness that runs many samples (or times one) in one process -----------------------------------
def batch_harness_source(report: Dict[str, Any]) -> str:
    """``prog IN.bin OUT.bin N [REPS]``: runs ``<name>_run`` on N consecutive samples of IN.bin, writing the
    outputs to OUT.bin; with REPS, then runs sample 0 REPS times and prints the mean nanoseconds per run."""
    from .verify import io_buffers

    name = report["name"]
    decl, reads, writes, args = io_buffers(report, "        ")
    call = f"{name}_run({', '.join(args)})"
    return "\n".join([
        "/* Batch / timing harness generated by edgec. */", "#define _POSIX_C_SOURCE 199309L",
        "#include <stdio.h>", "#include <stdlib.h>", "#include <time.h>", f'#include "{name}.h"', "", *decl, "",
        "int main(int argc, char** argv)", "{", "    if (argc < 4) return 2;",
        '    FILE* fi = fopen(argv[1], "rb");', '    FILE* fo = fopen(argv[2], "wb");', "    if (!fi || !fo) return 2;",
        "    const long n = atol(argv[3]);", "    for (long s = 0; s < n; ++s) {", *reads,
        f"        if ({call} != 0) return 4;", *writes, "    }", "    fclose(fi);", "    fclose(fo);",
        # timing: the fastest of 20 blocks of reps/20 runs (a shared machine interrupts some blocks)
        "    if (argc > 4) {", "        const long reps = atol(argv[4]), per = reps >= 20 ? reps / 20 : 1;",
        "        double best = -1.0;", "        for (long b = 0; b * per < reps; ++b) {",
        "            struct timespec t0, t1;", "            clock_gettime(CLOCK_MONOTONIC, &t0);",
        f"            for (long r = 0; r < per; ++r) (void){call};", "            clock_gettime(CLOCK_MONOTONIC, &t1);",
        "            const double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (double)per;",
        "            if (best < 0.0 || ns < best) best = ns;", "        }", '        printf("%.1f\\n", best);',
        "    }", "    return 0;", "}", ""])


def build_batch(out_dir: str, report: Dict[str, Any], *, opt: str = "-O2", sanitize: bool = False,
                extra_flags: Sequence[str] = (), cc: Optional[str] = None) -> str:
    """Compile the generated C with :func:`batch_harness_source`; returns the program path."""
    import os
    import shlex
    import subprocess

    from .verify import SANITIZE_FLAGS, WARN_FLAGS, VerifyError

    name = report["name"]
    src = os.path.join(out_dir, f"{name}_batch.c")
    with open(src, "w", encoding="utf-8") as f:
        f.write(batch_harness_source(report))
    srcs = [src, os.path.join(out_dir, f"{name}.c")]
    if os.path.exists(os.path.join(out_dir, f"{name}_weights.c")):
        srcs.append(os.path.join(out_dir, f"{name}_weights.c"))
    prog = os.path.join(out_dir, f"{name}_batch")
    cmd = [cc or os.environ.get("CC") or "cc", opt, *WARN_FLAGS, *(SANITIZE_FLAGS if sanitize else []), *extra_flags,
           *srcs, "-o", prog, "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise VerifyError(f"C build failed: {' '.join(shlex.quote(c) for c in cmd)}\n{p.stderr.strip()}")
    return prog


def run_batch(prog: str, report: Dict[str, Any], feeds: Sequence[Dict[str, np.ndarray]],
              reps: int = 0) -> Tuple[List[List[np.ndarray]], Optional[float]]:
    """Run ``prog`` (from :func:`build_batch`) on every feed dict; returns the outputs per sample and, with
    ``reps``, the ns per run of sample 0 (the fastest of 20 blocks of ``reps / 20`` runs)."""
    import os
    import subprocess

    from .verify import _NP, VerifyError

    d = os.path.dirname(prog)
    fin, fout = os.path.join(d, "batch_in.bin"), os.path.join(d, "batch_out.bin")
    with open(fin, "wb") as f:
        for sample in feeds:
            for t in report["inputs"]:
                f.write(np.ascontiguousarray(sample[t["name"]], dtype=_NP[t["dtype"]]).astype(
                    np.dtype(_NP[t["dtype"]]).newbyteorder("<")).tobytes())
    n = len(feeds)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.run([prog, fin, fout, str(n)] + ([str(reps)] if reps else []), capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise VerifyError(f"{os.path.basename(prog)} exited with {p.returncode}: {p.stderr.strip()[-2000:]}")
    raw = np.fromfile(fout, dtype=np.uint8)
    outs, off = [], 0
    for _ in range(n):
        row = []
        for t in report["outputs"]:
            dt = np.dtype(_NP[t["dtype"]]).newbyteorder("<")
            size = int(np.prod(t["shape"], dtype=np.int64)) * dt.itemsize
            row.append(raw[off:off + size].view(dt).astype(dt.newbyteorder("=")).reshape(t["shape"]))
            off += size
        outs.append(row)
    return outs, (float(p.stdout.strip().splitlines()[-1]) if reps else None)
