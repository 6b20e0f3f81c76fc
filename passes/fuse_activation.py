"""Fuse an activation into the Conv, ConvTranspose, Gemm or MatMul(+bias) that produces its input.

The result is an ``edgec.Fused*`` op (see ``edgec.ir.edgec_ops``) with ``activation`` and
``activation_params`` attributes; ``edgec.backends.onnx_lowering`` turns it back into ONNX.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.ir import edgec_ops
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Const, Either, Match, Op, Pattern, RewriteRule, Rewriter, Var, apply_rules, constant_value

from .fuse_batchnorm import ConstTracker, RankOracle

__all__ = ["FuseActivation", "fuse_activation_rules"]

_FLT_MAX = float(np.finfo(np.float32).max)

#: producer op -> fused op
_PRODUCERS = {"Conv": "FusedConv", "ConvTranspose": "FusedConvTranspose", "Gemm": "FusedGemm", "MatMul": "FusedMatMul"}


def _producer() -> Pattern:
    std = Op(tuple(_PRODUCERS), name="p", extra_inputs=True)
    fused = Op(tuple(edgec_ops.FUSED_OPS), name="p", domain=edgec_ops.DOMAIN, extra_inputs=True,
               attrs={"activation": lambda a: not a})
    bias = Op("Add", Op("MatMul", Var("a"), Var("b"), name="p"), Const("bias"), name="add", commute=True)
    return Either([bias, std, fused])


def _act_params(act: Node, kind: str) -> Optional[Tuple[str, List[float]]]:
    """(activation, params) of an activation node, or None if it cannot be expressed."""
    if kind == "Clip":
        bounds = [float(act.attr("min", -_FLT_MAX)), float(act.attr("max", _FLT_MAX))]
        for i in (1, 2):
            v = act.input(i)
            if v is not None:
                arr = constant_value(v)
                if arr is None or arr.size != 1:
                    return None
                bounds[i - 1] = float(arr.reshape(-1)[0])
        return "Clip", bounds
    if kind == "LeakyRelu":
        return "LeakyRelu", [float(act.attr("alpha", 0.01))]
    if kind == "HardSigmoid":
        return "HardSigmoid", [float(act.attr("alpha", 0.2)), float(act.attr("beta", 0.5))]
    if kind == "Gelu":
        approx = act.attr("approximate", "none")
        if isinstance(approx, bytes):
            approx = approx.decode()
        return ("GeluTanh" if approx == "tanh" else "Gelu"), []
    return kind, []


def fuse_activation_rules(model: Model, consts: ConstTracker, ranks: RankOracle) -> List[RewriteRule]:
    """The rules of :class:`FuseActivation`."""

    def fuse(act_kind: str) -> Callable[[Match, Rewriter], Optional[Value]]:
        def rewrite(m: Match, rw: Rewriter) -> Optional[Value]:
            p: Node = m["p"]
            if act_kind == "Silu":
                act, params = "Silu", []
            else:
                got = _act_params(m.root, act_kind)
                if got is None:
                    return None
                act, params = got
            if p.domain == edgec_ops.DOMAIN:
                op = p.op_type
            else:
                op = _PRODUCERS[p.op_type]
            inputs = list(p.inputs)
            attrs = {k: a for k, a in p.attrs.items()}
            if m.get("add") is not None:  # MatMul + bias: the bias must be a vector over the last axis
                bdims = ranks.dims(m["b"])
                c = m.const("bias")
                if bdims is None or not bdims or not isinstance(bdims[-1], int) or c.ndim != 1 or c.size != bdims[-1]:
                    return None
                if m["b"].dtype is not None and m["b"].dtype.numpy != c.dtype:
                    return None
                inputs = [m["a"], m["b"], m["bias"]]
            attrs["activation"] = act
            if params:
                attrs["activation_params"] = [float(v) for v in params]
            else:
                attrs.pop("activation_params", None)
            if act_kind == "Clip":
                consts.note(*m.root.inputs[1:])
            model.opset_imports.setdefault(edgec_ops.DOMAIN, edgec_ops.VERSION)
            return rw.op(op, inputs, attrs, domain=edgec_ops.DOMAIN)
        return rewrite

    rules = []
    for kind in ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu"):
        rules.append(RewriteRule(f"fuse-{kind.lower()}", Op(kind, _producer(), extra_inputs=True), fuse(kind)))
    rules.append(RewriteRule("fuse-gelu", Op("Gelu", _producer(), domain=edgec_ops.DOMAIN, attrs={}), fuse("Gelu")))
    # x * Sigmoid(x): the producer pattern twice binds the same nodes
    rules.append(RewriteRule("fuse-silu", Op("Mul", _producer(), Op("Sigmoid", _producer()), commute=True), fuse("Silu")))
    return rules


@register_pass
class FuseActivation(Pass):
    """Fuse Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Gelu and SiLU into the op before.

    Rules ``fuse-<activation>``: act(P(...)) -> edgec.Fused<P>(..., activation=act,
    activation_params=...) for P in Conv, ConvTranspose, Gemm, MatMul, Add(MatMul(A, B), bias) with
    a constant 1-D bias over the last axis (-> FusedMatMul(A, B, bias)), and an edgec Fused op that
    has no activation yet. Clip bounds must be constants; Gelu is the ONNX op (either approximation)
    or ``edgec.Gelu``; ``fuse-silu`` matches x*Sigmoid(x). The producer's output must have no other
    user and must not be a graph output. Adds the ``edgec`` opset import.
    """

    name = "fuse-activation"
    opt_level = 2

    def run(self, model: Model, ctx: PassContext) -> bool:
        consts = ConstTracker()
        stats = apply_rules(model, fuse_activation_rules(model, consts, RankOracle(model)))
        consts.sweep()
        for rule, n in stats.fired.items():
            ctx.stat(rule, n)
        return stats.changed
