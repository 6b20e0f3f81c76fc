"""Typed C kernels: elementwise, logic, Cast, data movement, reductions and index ops on any C type.

Every generator here checks the element types itself (``NodeCode.typed``): float32, float64,
int8..int64, uint8..uint64 and bool (one byte, 0 or 1). Integer arithmetic follows ONNX: Div
truncates toward zero, Mod takes the sign of the divisor unless ``fmod=1``, results wrap to the
output type. Cast from a float to an integer truncates (values out of range are undefined, as in
the ONNX spec); to bool is ``x != 0``. Cast to and from the narrow types (float16, bfloat16, float8,
float4e2m1, int4/int2: stored as bit patterns, see :mod:`.narrow_types`) goes through C helpers with
the ONNX rounding and saturation; Where and the copy kernels move their bit patterns; every other
op sees them only after :mod:`.legalize_types` widened them. Generators registered here replace the float-only ones of
:mod:`.kernels` for the same ops (data-movement bodies there only copy elements, so they are
reused with the type check added).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...ir import Node, Value
from ...ir.dtypes import DType
from . import kernels as K
from .kernels import (GENERATORS, KernelContext, NodeCode, _bcast_strides, _elementwise, _norm_axis, _prod, _strides, dlit,
                      flit, loop_nest, unsupported)
from . import narrow_types as NT

CT: Dict[DType, str] = {DType.FLOAT: "float", DType.DOUBLE: "double", DType.INT64: "int64_t",
                        DType.INT32: "int32_t", DType.INT16: "int16_t", DType.INT8: "int8_t",
                        DType.UINT8: "uint8_t", DType.UINT16: "uint16_t", DType.UINT32: "uint32_t",
                        DType.UINT64: "uint64_t", DType.BOOL: "uint8_t"}
FLOATS = frozenset({DType.FLOAT, DType.DOUBLE})
SIGNED = frozenset({DType.INT8, DType.INT16, DType.INT32, DType.INT64})
UNSIGNED = frozenset({DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64})
INTS = SIGNED | UNSIGNED
NUMERIC = FLOATS | INTS
ALL = NUMERIC | {DType.BOOL}
#: Every type the C target stores: narrow types only as bit patterns (Cast, Where and copies).
STORED = ALL | NT.NARROW
_NPT = {DType.FLOAT: np.float32, DType.DOUBLE: np.float64, DType.INT64: np.int64, DType.INT32: np.int32,
        DType.INT16: np.int16, DType.INT8: np.int8, DType.UINT8: np.uint8, DType.UINT16: np.uint16,
        DType.UINT32: np.uint32, DType.UINT64: np.uint64, DType.BOOL: np.bool_}


def dt(v: Value) -> DType:
    return v.type.dtype  # type: ignore[union-attr]


def _check(node: Node, allowed: frozenset, values: Sequence[Optional[Value]]) -> None:
    for v in values:
        if v is not None and dt(v) not in allowed:
            raise unsupported(node, f"type {dt(v).name} of '{v.name}' is not supported by this kernel")


def lit(x, d: DType) -> str:
    """A C literal of value ``x`` in type ``d``."""
    if d == DType.FLOAT:
        return flit(float(x))
    if d == DType.DOUBLE:
        return dlit(float(x))
    if d == DType.BOOL:
        return "1" if bool(x) else "0"
    i = int(x)
    if d == DType.INT64:
        return "INT64_MIN" if i == -2**63 else f"INT64_C({i})"
    if d == DType.UINT64:
        return f"UINT64_C({i})"
    if d == DType.INT32:
        return "INT32_MIN" if i == -2**31 else str(i)
    if d == DType.UINT32:
        return f"{i}u"
    return f"(({CT[d]}){i})"


def fn(name: str, d: DType) -> str:
    """C math function ``name`` for float (``expf``) or double (``exp``)."""
    return name + "f" if d == DType.FLOAT else name


def _attr_str(node: Node, name: str, default: str) -> str:
    a = node.attr(name, default)
    return a.decode() if isinstance(a, bytes) else str(a)


def typed_elementwise(node: Node, k: KernelContext, inputs: Sequence[Value], expr: Callable[[List[str]], str],
                      out: int = 0) -> NodeCode:
    """``y<out> = expr(operands)`` with numpy broadcasting; scalar constants become literals of their type."""
    return _elementwise(node, k, inputs, expr, out=out, typed=True,
                        literal=lambda c, v: lit(c.reshape(-1)[0], dt(v)) if dt(v) in CT else None)


# --- unary ----------------------------------------------------------------------------------------

UnaryFn = Callable[[Node, str, DType], str]


def _float_fn(name: str) -> Tuple[frozenset, UnaryFn]:
    return FLOATS, lambda n, v, d: f"{fn(name, d)}({v})"


def _gelu(n: Node, v: str, d: DType) -> str:
    if _attr_str(n, "approximate", "none") == "tanh":
        return (f"({lit(0.5, d)} * {v} * ({lit(1, d)} + {fn('tanh', d)}({lit(math.sqrt(2 / math.pi), d)} * "
                f"({v} + {lit(0.044715, d)} * {v} * {v} * {v}))))")
    return f"({lit(0.5, d)} * {v} * ({lit(1, d)} + {fn('erf', d)}({v} * {lit(1 / math.sqrt(2), d)})))"


def _softplus(v: str, d: DType) -> str:
    return f"{fn('log', d)}({fn('exp', d)}({v}) + {lit(1, d)})"


_UNARY: Dict[str, Tuple[frozenset, UnaryFn]] = {
    "Abs": (NUMERIC, lambda n, v, d: f"{fn('fabs', d)}({v})" if d in FLOATS else
            (v if d in UNSIGNED else f"({CT[d]})({v} < 0 ? -{v} : {v})")),
    "Neg": (FLOATS | SIGNED, lambda n, v, d: f"({CT[d]})(-{v})"),
    "Sign": (NUMERIC, lambda n, v, d: f"({CT[d]})(({v} > 0) - ({v} < 0))"),
    "Relu": (FLOATS | SIGNED, lambda n, v, d: f"({v} > 0 ? {v} : 0)"),
    "Exp": _float_fn("exp"), "Log": _float_fn("log"), "Sqrt": _float_fn("sqrt"), "Tanh": _float_fn("tanh"),
    "Sin": _float_fn("sin"), "Cos": _float_fn("cos"), "Tan": _float_fn("tan"), "Asin": _float_fn("asin"),
    "Acos": _float_fn("acos"), "Atan": _float_fn("atan"), "Sinh": _float_fn("sinh"), "Cosh": _float_fn("cosh"),
    "Asinh": _float_fn("asinh"), "Acosh": _float_fn("acosh"), "Atanh": _float_fn("atanh"), "Erf": _float_fn("erf"),
    "Floor": _float_fn("floor"), "Ceil": _float_fn("ceil"), "Round": _float_fn("rint"),
    "Reciprocal": (FLOATS, lambda n, v, d: f"({lit(1, d)} / {v})"),
    "Sigmoid": (FLOATS, lambda n, v, d: f"({lit(1, d)} / ({lit(1, d)} + {fn('exp', d)}(-{v})))"),
    "Softplus": (FLOATS, lambda n, v, d: _softplus(v, d)),
    "Softsign": (FLOATS, lambda n, v, d: f"({v} / ({lit(1, d)} + {fn('fabs', d)}({v})))"),
    "HardSigmoid": (FLOATS, lambda n, v, d: f"{fn('fmax', d)}({lit(0, d)}, {fn('fmin', d)}({lit(1, d)}, "
                                            f"{lit(n.attr('alpha', 0.2), d)} * {v} + {lit(n.attr('beta', 0.5), d)}))"),
    "HardSwish": (FLOATS, lambda n, v, d: f"({v} * {fn('fmax', d)}({lit(0, d)}, {fn('fmin', d)}({lit(1, d)}, "
                                          f"{lit(1 / 6, d)} * {v} + {lit(0.5, d)})))"),
    "LeakyRelu": (FLOATS, lambda n, v, d: f"({v} >= 0 ? {v} : {lit(n.attr('alpha', 0.01), d)} * {v})"),
    "ThresholdedRelu": (FLOATS, lambda n, v, d: f"({v} > {lit(n.attr('alpha', 1.0), d)} ? {v} : {lit(0, d)})"),
    "Elu": (FLOATS, lambda n, v, d: f"({v} >= 0 ? {v} : {lit(n.attr('alpha', 1.0), d)} * "
                                    f"({fn('exp', d)}({v}) - {lit(1, d)}))"),
    "Selu": (FLOATS, lambda n, v, d: f"({lit(n.attr('gamma', 1.0507009873554805), d)} * ({v} > 0 ? {v} : "
                                     f"{lit(n.attr('alpha', 1.6732632423543772), d)} * ({fn('exp', d)}({v}) - "
                                     f"{lit(1, d)})))"),
    "Celu": (FLOATS, lambda n, v, d: f"({fn('fmax', d)}({lit(0, d)}, {v}) + {fn('fmin', d)}({lit(0, d)}, "
                                     f"{lit(n.attr('alpha', 1.0), d)} * ({fn('exp', d)}({v} / "
                                     f"{lit(n.attr('alpha', 1.0), d)}) - {lit(1, d)})))"),
    "Mish": (FLOATS, lambda n, v, d: f"({v} * {fn('tanh', d)}({_softplus(v, d)}))"),
    "Swish": (FLOATS, lambda n, v, d: f"({v} / ({lit(1, d)} + {fn('exp', d)}(-{lit(n.attr('alpha', 1.0), d)} * {v})))"),
    "Gelu": (FLOATS, _gelu),
    "Shrink": (NUMERIC, lambda n, v, d: f"({CT[d]})({v} < -{lit(n.attr('lambd', 0.5), DType.DOUBLE)} ? "
                                        f"{v} + {lit(n.attr('bias', 0.0), DType.DOUBLE)} : ({v} > "
                                        f"{lit(n.attr('lambd', 0.5), DType.DOUBLE)} ? {v} - "
                                        f"{lit(n.attr('bias', 0.0), DType.DOUBLE)} : 0))"),
    "Not": (frozenset({DType.BOOL}), lambda n, v, d: f"(uint8_t)!{v}"),
    "BitwiseNot": (INTS, lambda n, v, d: f"({CT[d]})(~{v})"),
}


def gen_unary(node: Node, k: KernelContext) -> NodeCode:
    allowed, f = _UNARY[node.op_type]
    x, y = node.input(0), node.output(0)
    _check(node, allowed, [x, y])
    return typed_elementwise(node, k, [x], lambda a: f(node, a[0], dt(x)))


def gen_isnan_isinf(node: Node, k: KernelContext) -> NodeCode:
    x = node.input(0)
    _check(node, FLOATS, [x])
    if node.op_type == "IsNaN":
        return typed_elementwise(node, k, [x], lambda a: f"(uint8_t)(isnan({a[0]}) != 0)")
    pos, neg = int(node.attr("detect_positive", 1)), int(node.attr("detect_negative", 1))
    d = dt(x)
    inf = lit(math.inf, d)
    conds = ([f"{{v}} == {inf}"] if pos else []) + ([f"{{v}} == -{inf}"] if neg else [])
    return typed_elementwise(node, k, [x], lambda a: "(uint8_t)(" + (" || ".join(c.format(v=a[0]) for c in conds)
                                                                     or "0") + ")")


# --- binary and variadic -----------------------------------------------------------------------------

def _mod(a: str, b: str, d: DType, fmod: bool) -> str:
    if d in FLOATS:
        if fmod:
            return f"{fn('fmod', d)}({a}, {b})"
        return (f"({fn('fmod', d)}({a}, {b}) != 0 && (({fn('fmod', d)}({a}, {b}) < 0) != ({b} < 0)) ? "
                f"{fn('fmod', d)}({a}, {b}) + {b} : {fn('fmod', d)}({a}, {b}))")
    if fmod or d in UNSIGNED:
        return f"({CT[d]})({a} % {b})"
    return f"({CT[d]})(({a} % {b}) != 0 && ((({a} % {b}) < 0) != ({b} < 0)) ? ({a} % {b}) + {b} : ({a} % {b}))"


_WIDTH = {DType.INT8: 8, DType.UINT8: 8, DType.INT16: 16, DType.UINT16: 16, DType.INT32: 32, DType.UINT32: 32,
          DType.INT64: 64, DType.UINT64: 64}


def _bitshift(a: str, b: str, d: DType, left: bool) -> str:
    """ONNX BitShift: bits past the width are dropped (wraps), right shifts of signed values are arithmetic,
    a shift count outside [0, width) gives 0 (-1 for a right shift of a negative value)."""
    w = _WIDTH[d]
    u = CT[d].lstrip("u") if d in UNSIGNED else "u" + CT[d]
    u = CT[d] if d in UNSIGNED else u
    out = f"(uint64_t){b} >= {w}"
    if left:
        return f"({CT[d]})({out} ? 0 : (({u}){a} << {b}))"
    if d in SIGNED:
        return f"({CT[d]})({out} ? ({a} < 0 ? -1 : 0) : ({a} >> {b}))"
    return f"({CT[d]})({out} ? 0 : ({a} >> {b}))"


def _maxmin(a: str, b: str, d: DType, gt: str) -> str:
    if d in FLOATS:  # NaN propagates as in numpy
        return f"((isnan({a}) || {a} {gt} {b}) ? {a} : {b})"
    return f"({a} {gt} {b} ? {a} : {b})"


BinFn = Callable[[Node, str, str, DType], str]
_ARITH: Dict[str, Tuple[frozenset, BinFn]] = {
    "Add": (NUMERIC, lambda n, a, b, d: f"({CT[d]})({a} + {b})"),
    "Sum": (NUMERIC, lambda n, a, b, d: f"({CT[d]})({a} + {b})"),
    "Sub": (NUMERIC, lambda n, a, b, d: f"({CT[d]})({a} - {b})"),
    "Mul": (NUMERIC, lambda n, a, b, d: f"({CT[d]})({a} * {b})"),
    "Div": (NUMERIC, lambda n, a, b, d: f"({CT[d]})({a} / {b})"),
    "Max": (NUMERIC, lambda n, a, b, d: _maxmin(a, b, d, ">")),
    "Min": (NUMERIC, lambda n, a, b, d: _maxmin(a, b, d, "<")),
    "Mod": (NUMERIC, lambda n, a, b, d: _mod(a, b, d, bool(int(n.attr("fmod", 0))))),
    "PRelu": (FLOATS | SIGNED, lambda n, a, b, d: f"({CT[d]})({a} < 0 ? {a} * {b} : {a})"),
    "BitwiseAnd": (INTS, lambda n, a, b, d: f"({CT[d]})({a} & {b})"),
    "BitwiseOr": (INTS, lambda n, a, b, d: f"({CT[d]})({a} | {b})"),
    "BitwiseXor": (INTS, lambda n, a, b, d: f"({CT[d]})({a} ^ {b})"),
    "BitShift": (INTS, lambda n, a, b, d: _bitshift(a, b, d, _attr_str(n, "direction", "LEFT") == "LEFT")),
    "And": (frozenset({DType.BOOL}), lambda n, a, b, d: f"(uint8_t)({a} && {b})"),
    "Or": (frozenset({DType.BOOL}), lambda n, a, b, d: f"(uint8_t)({a} || {b})"),
    "Xor": (frozenset({DType.BOOL}), lambda n, a, b, d: f"(uint8_t)(!{a} != !{b})"),
}
_CMP = {"Equal": "==", "Less": "<", "Greater": ">", "LessOrEqual": "<=", "GreaterOrEqual": ">="}


def gen_binary(node: Node, k: KernelContext) -> NodeCode:
    ins = [v for v in node.inputs if v is not None]
    op = node.op_type
    y = node.output(0)
    if op == "Mean":
        _check(node, FLOATS, ins + [y])
        d = dt(y)
        return typed_elementwise(node, k, ins, lambda a: f"({' + '.join(a)}) / {lit(len(a), d)}")
    if op in _CMP:
        _check(node, ALL, ins)
        if dt(ins[0]) != dt(ins[1]):
            raise unsupported(node, "operands of different types")
        return typed_elementwise(node, k, ins, lambda a: f"(uint8_t)({a[0]} {_CMP[op]} {a[1]})")
    if op == "Pow":
        _check(node, NUMERIC, ins + [y])
        d = dt(y)
        if d in FLOATS:
            return typed_elementwise(node, k, ins, lambda a: f"{fn('pow', d)}({a[0]}, ({CT[d]}){a[1]})")
        return typed_elementwise(node, k, ins, lambda a: f"({CT[d]})pow((double){a[0]}, (double){a[1]})")
    allowed, f = _ARITH[op]
    _check(node, allowed, ins + [y])
    d = dt(y)
    if any(dt(v) != d for v in ins):
        raise unsupported(node, "operands of different types")

    def expr(args: List[str]) -> str:
        e = args[0]
        for a in args[1:]:
            e = f(node, e, a, d)
        return e

    return typed_elementwise(node, k, ins, expr)


def gen_where(node: Node, k: KernelContext) -> NodeCode:
    c, a, b = node.input(0), node.input(1), node.input(2)
    _check(node, frozenset({DType.BOOL}), [c])
    _check(node, STORED, [a, b])  # a pure select: narrow types too (bit patterns)
    return typed_elementwise(node, k, [c, a, b], lambda x: f"({x[0]} ? {x[1]} : {x[2]})")


def gen_cast(node: Node, k: KernelContext) -> NodeCode:
    x, y = node.input(0), node.output(0)
    _check(node, STORED, [x, y])
    dst = dt(y)
    if dt(x) in NT.NARROW or dst in NT.NARROW:
        return _narrow_cast(node, k)
    if dst == DType.BOOL:
        return typed_elementwise(node, k, [x], lambda a: f"(uint8_t)({a[0]} != 0)")
    return typed_elementwise(node, k, [x], lambda a: f"({CT[dst]}){a[0]}")


def gen_castlike(node: Node, k: KernelContext) -> NodeCode:
    return gen_cast(node, k)  # the output type is the type of input 1 (read by shape inference)


def _narrow_cast(node: Node, k: KernelContext) -> NodeCode:
    """Cast from or to a narrow type (:mod:`.narrow_types`): decode the source to float / int32, then
    encode it with the ONNX rounding, ``saturate`` (float8) and ``round_mode`` (float8e8m0)."""
    x, y = node.input(0), node.output(0)
    src, dst = dt(x), dt(y)
    if src == dst:
        return typed_elementwise(node, k, [x], lambda a: a[0])
    v, is_float, helpers = "{x}", src in FLOATS, []
    if src in NT.NARROW:
        v, vtype, h = NT.decode_expr(v, src)
        is_float = vtype == "float"
        helpers.append(h)
    if dst in NT.NARROW:
        sat = bool(int(node.attr("saturate", 1)))
        e, h = NT.encode_expr(v, is_float, dst, saturate=sat, round_mode=_attr_str(node, "round_mode", "up"))
        helpers += NT.helpers_for(h)
    elif dst == DType.BOOL:
        e = f"(uint8_t)({v} != 0)"
    else:
        e = f"({CT[dst]})({v})"
    code = typed_elementwise(node, k, [x], lambda a: e.replace("{x}", a[0]))
    code.helpers = helpers
    return code


def gen_clip(node: Node, k: KernelContext) -> NodeCode:
    x, y = node.input(0), node.output(0)
    _check(node, NUMERIC, [x, y])
    d = dt(x)
    if k.opset < 11:
        lo: Optional[float] = node.attr("min", None)
        hi: Optional[float] = node.attr("max", None)
    else:
        lo = k.need_const(node, 1, "min").reshape(-1)[0] if node.input(1) is not None else None
        hi = k.need_const(node, 2, "max").reshape(-1)[0] if node.input(2) is not None else None

    def expr(a: List[str]) -> str:
        e = a[0]
        if lo is not None:
            e = f"({e} < {lit(lo, d)} ? {lit(lo, d)} : {e})"
        if hi is not None:
            e = f"({e} > {lit(hi, d)} ? {lit(hi, d)} : {e})"
        return e

    return typed_elementwise(node, k, [x], expr)


# --- data movement ---------------------------------------------------------------------------------

def _same_type(node: Node, values: Sequence[Optional[Value]]) -> None:
    vs = [v for v in values if v is not None]
    _check(node, STORED, vs)  # copies move bit patterns, so narrow types too
    if len({dt(v) for v in vs}) > 1:
        raise unsupported(node, "operands of different types")


def _typed_copy(gen: Callable[[Node, KernelContext], NodeCode], data_inputs: Sequence[int] = (0,)) -> Callable:
    """A copy-only generator of :mod:`.kernels` (its body reads and writes elements only), type-checked."""

    def g(node: Node, k: KernelContext) -> NodeCode:
        x = node.input(0)
        before = _PREVIOUS.get(node.op_type)
        if before is not None and x is not None and dt(x) == DType.INT8 and x.type.quant is not None:
            return before(node, k)  # quantized int8 tensors: the int8 module's kernel
        ins = [node.input(i) for i in data_inputs] if data_inputs else [v for v in node.inputs if v is not None]
        _same_type(node, [*ins, *node.outputs])
        code = gen(node, k)
        code.typed = True
        return code

    g.__name__ = gen.__name__ + "_typed"
    return g


def strided_copy(node: Node, k: KernelContext, ydims: Sequence[int], xstrides: Sequence[int],
                 base: int = 0) -> NodeCode:
    """``y0`` (contiguous, viewed as ``ydims``) from ``x0`` read at ``base + sum(i * xstrides)``."""
    _same_type(node, [node.input(0), node.output(0)])
    body = loop_nest(ydims, [(0, _strides(ydims)), (base, xstrides)], lambda o: f"y0[{o[0]}] = x0[{o[1]}];")
    return NodeCode([node.input(0)], body, typed=True)


def gen_tile(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    reps = [int(r) for r in k.need_const(node, 1, "repeats").reshape(-1)]
    xs = _strides(x)
    ydims, st = [], []
    for d, r, s in zip(x, reps, xs):
        ydims += [r, d]
        st += [0, s]
    return strided_copy(node, k, ydims, st)


def gen_depth_to_space(node: Node, k: KernelContext) -> NodeCode:
    n, c, h, w = k.dims(node.input(0))
    b = int(node.attr("blocksize"))
    c2 = c // (b * b)
    if _attr_str(node, "mode", "DCR") == "DCR":  # x viewed as [n, b1, b2, c2, h, w]
        sx = {"n": c * h * w, "b1": b * c2 * h * w, "b2": c2 * h * w, "c": h * w, "h": w, "w": 1}
    else:  # CRD: [n, c2, b1, b2, h, w]
        sx = {"n": c * h * w, "c": b * b * h * w, "b1": b * h * w, "b2": h * w, "h": w, "w": 1}
    ydims = [n, c2, h, b, w, b]
    return strided_copy(node, k, ydims, [sx["n"], sx["c"], sx["h"], sx["b1"], sx["w"], sx["b2"]])


def gen_space_to_depth(node: Node, k: KernelContext) -> NodeCode:
    n, c, h, w = k.dims(node.input(0))
    b = int(node.attr("blocksize"))
    if _attr_str(node, "mode", "DCR") == "CRD":  # y viewed as [n, c, b1, b2, h', w']
        return strided_copy(node, k, [n, c, b, b, h // b, w // b], [c * h * w, h * w, w, 1, b * w, b])
    ydims = [n, b, b, c, h // b, w // b]
    return strided_copy(node, k, ydims, [c * h * w, w, 1, h * w, b * w, b])


def gen_pad(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    r = len(x)
    _same_type(node, [node.input(0), node.output(0)])
    d = dt(node.input(0))
    mode = _attr_str(node, "mode", "constant")
    if k.opset < 11:
        pads, value = list(node.attr("pads")), float(node.attr("value", 0.0))
    else:
        pads = [int(v) for v in k.need_const(node, 1, "pads").reshape(-1)]
        value = k.need_const(node, 2, "constant_value").reshape(-1)[0] if node.input(2) is not None and \
            k.const(node.input(2)) is not None and k.const(node.input(2)).size else 0
        if node.input(2) is not None and k.const(node.input(2)) is None:
            raise unsupported(node, "constant_value (input 2) must be a constant")
        if len(node.inputs) > 3 and node.input(3) is not None:
            axes = [_norm_axis(node, int(a), r) for a in k.need_const(node, 3, "axes").reshape(-1)]
            full = [0] * (2 * r)
            for i, a in enumerate(axes):
                full[a], full[r + a] = pads[i], pads[len(axes) + i]
            pads = full
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise unsupported(node, f"Pad mode '{mode}'")
    maps = []
    for a in range(r):
        lo, n = pads[a], x[a]
        m = []
        for o in range(y[a]):
            i = o - lo
            if 0 <= i < n:
                m.append(i)
            elif mode == "constant":
                m.append(-1)
            elif mode == "edge":
                m.append(min(max(i, 0), n - 1))
            elif mode == "wrap":
                m.append(i % n)
            else:  # reflect
                if n == 1:
                    m.append(0)
                else:
                    p = 2 * (n - 1)
                    j = i % p
                    m.append(j if j < n else p - j)
        maps.append(m)
    return index_map_copy(node, k, maps, lit(value, d))


def gen_center_crop_pad(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    r = len(x)
    _same_type(node, [node.input(0), node.output(0)])
    shape = [int(v) for v in k.need_const(node, 1, "shape").reshape(-1)]
    axes = [_norm_axis(node, int(a), r) for a in (node.attr("axes", None) or range(r))]
    maps = [list(range(d)) for d in x]
    for a, t in zip(axes, shape):
        n = x[a]
        if t < n:
            maps[a] = [o + (n - t) // 2 for o in range(t)]
        elif t > n:
            b = (t - n) // 2
            maps[a] = [o - b if 0 <= o - b < n else -1 for o in range(t)]
    return index_map_copy(node, k, maps, lit(0, dt(node.input(0))))


def index_map_copy(node: Node, k: KernelContext, maps: Sequence[Sequence[int]], fill: str) -> NodeCode:
    """``y0[i0, i1, ...] = x0[maps[0][i0], maps[1][i1], ...]``, ``fill`` where an entry is -1."""
    x = k.dims(node.input(0))
    y = [len(m) for m in maps]
    xs = _strides(x)
    r = len(x)
    decl, idx = "", []
    need_fill = any(v < 0 for m in maps for v in m)
    for a, m in enumerate(maps):
        if list(m) == list(range(len(m))):
            idx.append(f"i{a} * {xs[a]}")
            continue
        decl += f"    static const long m{a}[{max(1, len(m))}] = {{{', '.join(str(v * xs[a] if v >= 0 else -1) for v in m)}}};\n"
        idx.append(f"m{a}[i{a}]")
    body = decl
    ind = "    "
    for a in range(r):
        body += f"{ind}for (long i{a} = 0; i{a} < {y[a]}; ++i{a})\n"
        ind += "    "
    ys = _strides(y)
    yi = " + ".join(f"i{a} * {ys[a]}" for a in range(r)) or "0"
    if need_fill:
        conds = " || ".join(f"m{a}[i{a}] < 0" for a, m in enumerate(maps) if any(v < 0 for v in m))
        xi = " + ".join(idx) or "0"
        body += f"{ind}y0[{yi}] = ({conds}) ? {fill} : x0[{xi}];\n"
    else:
        body += f"{ind}y0[{yi}] = x0[{' + '.join(idx) or '0'}];\n"
    if r == 0:
        body = "    y0[0] = x0[0];\n"
    return NodeCode([node.input(0)], body, typed=True)


def gen_gather(node: Node, k: KernelContext) -> NodeCode:
    xv, iv, yv = node.input(0), node.input(1), node.output(0)
    before = _PREVIOUS.get("Gather")
    if before is not None and dt(xv) == DType.INT8 and xv.type.quant is not None:
        return before(node, k)
    _same_type(node, [xv, yv])
    _check(node, frozenset({DType.INT64, DType.INT32}), [iv])
    x = k.dims(xv)
    ax = _norm_axis(node, int(node.attr("axis", 0)), len(x))
    nidx = _prod(k.dims(iv))
    outer, d, inner = _prod(x[:ax]), x[ax], _prod(x[ax + 1:])
    ci = k.const(iv)
    ops = [xv]
    if ci is not None:
        idx = [int(i) + d if int(i) < 0 else int(i) for i in ci.reshape(-1)]
        if any(not 0 <= i < d for i in idx):
            raise unsupported(node, f"constant index out of range [0, {d})")
        decl = f"    static const long idx[{max(1, nidx)}] = {{{', '.join(map(str, idx))}}};\n"
        src, fix = "idx[j]", ""
    else:
        ops.append(iv)
        decl, src = "", "(long)x1[j]"
        fix = f"            if (ix < 0) ix += {d};\n            if (ix < 0 || ix >= {d}) ix = 0; /* out of range: row 0 */\n"
    body = (decl + f"    for (long o = 0; o < {outer}; ++o) {{\n"
            f"        for (long j = 0; j < {nidx}; ++j) {{\n            long ix = {src};\n" + fix +
            f"            for (long i = 0; i < {inner}; ++i) y0[(o * {nidx} + j) * {inner} + i] = "
            f"x0[(o * {d} + ix) * {inner} + i];\n        }}\n    }}\n")
    return NodeCode(ops, body, typed=True)


def gen_gather_elements(node: Node, k: KernelContext) -> NodeCode:
    xv, iv, yv = node.input(0), node.input(1), node.output(0)
    _same_type(node, [xv, yv])
    _check(node, frozenset({DType.INT64, DType.INT32}), [iv])
    x, idims = k.dims(xv), k.dims(iv)
    r = len(x)
    ax = _norm_axis(node, int(node.attr("axis", 0)), r)
    xs = _strides(x)
    st = [0 if a == ax else xs[a] for a in range(r)]

    def body(o: List[str]) -> str:
        return (f"{{ long ix = (long)x1[{o[0]}]; if (ix < 0) ix += {x[ax]}; if (ix < 0 || ix >= {x[ax]}) ix = 0; "
                f"y0[{o[0]}] = x0[{o[1]} + ix * {xs[ax]}]; }}")

    return NodeCode([xv, iv], loop_nest(idims, [(0, _strides(idims)), (0, st)], body), typed=True)


_IDX = frozenset({DType.INT64, DType.INT32})


def _scatter_update(red: str, tgt: str, src: str, d: DType) -> str:
    if red == "none":
        return f"{tgt} = {src};"
    if red == "add":
        return f"{tgt} = ({CT[d]})({tgt} + {src});"
    if red == "mul":
        return f"{tgt} = ({CT[d]})({tgt} * {src});"
    if red == "max":
        return f"if ({src} > {tgt}) {tgt} = {src};"
    if red == "min":
        return f"if ({src} < {tgt}) {tgt} = {src};"
    raise KeyError(red)


def gen_scatter_elements(node: Node, k: KernelContext) -> NodeCode:
    xv, iv, uv, yv = node.input(0), node.input(1), node.input(2), node.output(0)
    _same_type(node, [xv, uv, yv])
    _check(node, _IDX, [iv])
    x, idims = k.dims(xv), k.dims(iv)
    r = len(x)
    ax = _norm_axis(node, int(node.attr("axis", 0)), r)
    red = _attr_str(node, "reduction", "none")
    if red not in ("none", "add", "mul", "max", "min"):
        raise unsupported(node, f"reduction '{red}'")
    xs = _strides(x)
    st = [0 if a == ax else xs[a] for a in range(r)]
    body = f"    for (long i = 0; i < {_prod(x)}; ++i) y0[i] = x0[i];\n"

    def stmt(o: List[str]) -> str:
        return (f"{{ long ix = (long)x1[{o[0]}]; if (ix < 0) ix += {x[ax]}; if (ix >= 0 && ix < {x[ax]}) {{ "
                + _scatter_update(red, f"y0[{o[1]} + ix * {xs[ax]}]", f"x2[{o[0]}]", dt(xv)) + " } }")

    body += loop_nest(idims, [(0, _strides(idims)), (0, st)], stmt)
    return NodeCode([xv, iv, uv], body, typed=True)


def gen_scatter_nd(node: Node, k: KernelContext) -> NodeCode:
    xv, iv, uv, yv = node.input(0), node.input(1), node.input(2), node.output(0)
    _same_type(node, [xv, uv, yv])
    _check(node, _IDX, [iv])
    x, idims = k.dims(xv), k.dims(iv)
    q = idims[-1]
    red = _attr_str(node, "reduction", "none")
    if red not in ("none", "add", "mul", "max", "min"):
        raise unsupported(node, f"reduction '{red}'")
    xs = _strides(x)
    inner = _prod(x[q:])
    m = _prod(idims[:-1])
    offs = " + ".join(f"wrap(x1[u * {q} + {a}], {x[a]}) * {xs[a]}" for a in range(q)) or "0"
    body = (f"    for (long i = 0; i < {_prod(x)}; ++i) y0[i] = x0[i];\n"
            f"#define wrap(v, n) ((long)(v) < 0 ? (long)(v) + (n) : (long)(v))\n"
            f"    for (long u = 0; u < {m}; ++u) {{\n        const long off = {offs};\n"
            f"        for (long i = 0; i < {inner}; ++i) {{ "
            + _scatter_update(red, "y0[off + i]", f"x2[u * {inner} + i]", dt(xv)) + " }\n    }\n#undef wrap\n")
    return NodeCode([xv, iv, uv], body, typed=True)


def gen_gather_nd(node: Node, k: KernelContext) -> NodeCode:
    xv, iv, yv = node.input(0), node.input(1), node.output(0)
    _same_type(node, [xv, yv])
    _check(node, _IDX, [iv])
    x, idims = k.dims(xv), k.dims(iv)
    b = int(node.attr("batch_dims", 0))
    q = idims[-1]
    nb = _prod(x[:b])
    m = _prod(idims[b:-1])
    xs = _strides(x)
    inner = _prod(x[b + q:])
    bstride = _prod(x[b:])
    offs = " + ".join(f"wrap(x1[(bb * {m} + u) * {q} + {a}], {x[b + a]}) * {xs[b + a]}" for a in range(q)) or "0"
    body = (f"#define wrap(v, n) ((long)(v) < 0 ? (long)(v) + (n) : (long)(v))\n"
            f"    for (long bb = 0; bb < {nb}; ++bb)\n        for (long u = 0; u < {m}; ++u) {{\n"
            f"            const long off = bb * {bstride} + {offs};\n"
            f"            for (long i = 0; i < {inner}; ++i) y0[(bb * {m} + u) * {inner} + i] = x0[off + i];\n"
            f"        }}\n#undef wrap\n")
    return NodeCode([xv, iv], body, typed=True)


def gen_topk(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, NUMERIC, [xv, node.output(0)])
    _check(node, frozenset({DType.INT64}), [node.output(1)])
    x = k.dims(xv)
    ax = _norm_axis(node, int(node.attr("axis", -1)), len(x))
    kk = int(k.need_const(node, 1, "K").reshape(-1)[0]) if k.opset >= 10 else int(node.attr("k"))
    largest = int(node.attr("largest", 1))
    outer, n, inner = _prod(x[:ax]), x[ax], _prod(x[ax + 1:])
    gt = ">" if largest else "<"
    body = (f"    for (long o = 0; o < {outer}; ++o)\n        for (long i = 0; i < {inner}; ++i) {{\n"
            f"            unsigned char used[{n}] = {{0}};\n            const long base = o * {n * inner} + i;\n"
            f"            for (long r = 0; r < {kk}; ++r) {{\n                long best = -1;\n"
            f"                for (long j = 0; j < {n}; ++j)\n"
            f"                    if (!used[j] && (best < 0 || x0[base + j * {inner}] {gt} x0[base + best * {inner}])) best = j;\n"
            f"                used[best] = 1;\n"
            f"                y0[o * {kk * inner} + r * {inner} + i] = x0[base + best * {inner}];\n"
            f"                y1[o * {kk * inner} + r * {inner} + i] = (int64_t)best;\n            }}\n        }}\n")
    return NodeCode([xv], body, typed=True)


def gen_reverse_sequence(node: Node, k: KernelContext) -> NodeCode:
    xv, lv = node.input(0), node.input(1)
    _same_type(node, [xv, node.output(0)])
    _check(node, _IDX, [lv])
    x = k.dims(xv)
    ba, ta = int(node.attr("batch_axis", 1)), int(node.attr("time_axis", 0))
    xs = _strides(x)
    inner = _prod(x[2:])
    body = (f"    for (long b = 0; b < {x[ba]}; ++b) {{\n        const long L = (long)x1[b];\n"
            f"        for (long t = 0; t < {x[ta]}; ++t) {{\n            const long s = t < L ? L - 1 - t : t;\n"
            f"            for (long i = 0; i < {inner}; ++i) y0[b * {xs[ba]} + t * {xs[ta]} + i] = "
            f"x0[b * {xs[ba]} + s * {xs[ta]} + i];\n        }}\n    }}\n")
    return NodeCode([xv, lv], body, typed=True)


def gen_lppool(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, FLOATS, [xv, node.output(0)])
    ct = CT[dt(xv)]
    x, y = k.dims(xv), k.dims(node.output(0))
    ns = len(x) - 2
    ks = [int(v) for v in node.attr("kernel_shape")]
    st = [int(v) for v in node.attr("strides", [1] * ns)]
    dl = [int(v) for v in node.attr("dilations", [1] * ns)]
    pb, _ = K._spatial(node, x, y, ks, st, dl)
    p = float(node.attr("p", 2))
    xs, ys = _strides(x[2:]), _strides(y[2:])
    lines = [f"    for (long pl = 0; pl < {x[0] * x[1]}; ++pl) {{",
             f"        const {ct}* xp = x0 + pl * {_prod(x[2:])};", f"        {ct}* yp = y0 + pl * {_prod(y[2:])};"]
    ind = "        "
    for a in range(ns):
        lines.append(f"{ind}for (long o{a} = 0; o{a} < {y[2 + a]}; ++o{a})")
        ind += "    "
    lines.append(ind + "{")
    ind += "    "
    lines.append(f"{ind}double s = 0;")
    for a in range(ns):
        lines.append(f"{ind}for (long k{a} = 0; k{a} < {ks[a]}; ++k{a}) {{")
        lines.append(f"{ind}    const long i{a} = o{a} * {st[a]} - {pb[a]} + k{a} * {dl[a]};")
        lines.append(f"{ind}    if (i{a} < 0 || i{a} >= {x[2 + a]}) continue;")
        ind += "    "
    xi = " + ".join(f"i{a} * {xs[a]}" for a in range(ns))
    lines.append(f"{ind}s += pow(fabs((double)xp[{xi}]), {dlit(p)});")
    for _ in range(ns):
        ind = ind[:-4]
        lines.append(f"{ind}}}")
    yi = " + ".join(f"o{a} * {ys[a]}" for a in range(ns))
    lines.append(f"{ind}yp[{yi}] = ({ct})pow(s, {dlit(1.0 / p)});")
    ind = ind[:-4]
    lines.append(ind + "}")
    lines.append("    }")
    return NodeCode([xv], "\n".join(lines) + "\n", typed=True)


def gen_trilu(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    _same_type(node, [node.input(0), node.output(0)])
    kk = int(k.need_const(node, 1, "k").reshape(-1)[0]) if len(node.inputs) > 1 and node.input(1) is not None else 0
    upper = int(node.attr("upper", 1))
    n, m = x[-2], x[-1]
    batch = _prod(x[:-2])
    cond = f"j - i >= {kk}" if upper else f"j - i <= {kk}"
    z = "0"
    body = (f"    for (long b = 0; b < {batch}; ++b)\n        for (long i = 0; i < {n}; ++i)\n"
            f"            for (long j = 0; j < {m}; ++j) {{\n                const long o = (b * {n} + i) * {m} + j;\n"
            f"                y0[o] = ({cond}) ? x0[o] : {z};\n            }}\n")
    return NodeCode([node.input(0)], body, inplace=True, typed=True)


def gen_cumsum(node: Node, k: KernelContext) -> NodeCode:
    x = k.dims(node.input(0))
    _check(node, NUMERIC, [node.input(0), node.output(0)])
    ax = _norm_axis(node, int(k.need_const(node, 1, "axis").reshape(-1)[0]), len(x))
    excl, rev = int(node.attr("exclusive", 0)), int(node.attr("reverse", 0))
    outer, n, inner = _prod(x[:ax]), x[ax], _prod(x[ax + 1:])
    ct = CT[dt(node.input(0))]
    opr, init = ("*", 1) if node.op_type == "CumProd" else ("+", 0)
    kloop = f"for (long kk = 0; kk < {n}; ++kk) {{ const long k = {f'{n - 1} - kk' if rev else 'kk'};"
    step = ("const " + ct + " v = x0[base + k * " + str(inner) + "]; " +
            (f"y0[base + k * {inner}] = s; s = ({ct})(s {opr} v); }}" if excl else
             f"s = ({ct})(s {opr} v); y0[base + k * {inner}] = s; }}"))
    body = (f"    for (long o = 0; o < {outer}; ++o)\n        for (long i = 0; i < {inner}; ++i) {{\n"
            f"            const long base = o * {n * inner} + i;\n            {ct} s = {init};\n"
            f"            {kloop} {step}\n        }}\n")
    return NodeCode([node.input(0)], body, typed=True)


def gen_onehot(node: Node, k: KernelContext) -> NodeCode:
    iv, yv = node.input(0), node.output(0)
    _check(node, NUMERIC, [iv])
    _check(node, ALL, [yv])
    depth = int(k.need_const(node, 1, "depth").reshape(-1)[0])
    vals = k.need_const(node, 2, "values").reshape(-1)
    d = dt(yv)
    idims = k.dims(iv)
    ax = int(node.attr("axis", -1))
    ax = ax + len(idims) + 1 if ax < 0 else ax
    outer, inner = _prod(idims[:ax]), _prod(idims[ax:])
    body = (f"    for (long o = 0; o < {outer}; ++o)\n        for (long i = 0; i < {inner}; ++i) {{\n"
            f"            long ix = (long)x0[o * {inner} + i];\n            if (ix < 0) ix += {depth};\n"
            f"            for (long j = 0; j < {depth}; ++j) y0[(o * {depth} + j) * {inner} + i] = "
            f"j == ix ? {lit(vals[1], d)} : {lit(vals[0], d)};\n        }}\n")
    return NodeCode([iv], body, typed=True)


def const_output(node: Node, k: KernelContext, arr: np.ndarray) -> NodeCode:
    """``y0`` = the compile-time array ``arr``."""
    y = node.output(0)
    _check(node, ALL, [y])
    d = dt(y)
    flat = np.asarray(arr).astype(_NPT[d]).reshape(-1)
    if flat.size == 0:
        return NodeCode([], "", typed=True)
    if flat.size == 1 or bool(np.all(flat == flat[0])):
        body = f"    for (long i = 0; i < {flat.size}; ++i) y0[i] = {lit(flat[0], d)};\n"
    else:
        body = (f"    static const {CT[d]} v[{flat.size}] = {{{', '.join(lit(v, d) for v in flat.tolist())}}};\n"
                f"    for (long i = 0; i < {flat.size}; ++i) y0[i] = v[i];\n")
    return NodeCode([], body, typed=True)


def gen_shape(node: Node, k: KernelContext) -> NodeCode:
    x = list(k.dims(node.input(0)))
    r = len(x)
    s = int(node.attr("start", 0))
    e = node.attr("end", None)
    s = max(0, min(r, s + r if s < 0 else s))
    e = r if e is None else max(0, min(r, int(e) + r if int(e) < 0 else int(e)))
    return const_output(node, k, np.array(x[s:e], dtype=np.int64))


def gen_size(node: Node, k: KernelContext) -> NodeCode:
    return const_output(node, k, np.array(_prod(k.dims(node.input(0))), dtype=np.int64))


def gen_constant(node: Node, k: KernelContext) -> NodeCode:
    from ...ops import evaluate

    outs = evaluate(node, [], k.opset)
    return const_output(node, k, np.asarray(outs[0]))


def gen_constant_of_shape(node: Node, k: KernelContext) -> NodeCode:
    val = node.attr("value", None)
    arr = np.asarray(val.numpy() if hasattr(val, "numpy") else (val if val is not None else 0.0)).reshape(-1)
    return const_output(node, k, np.full(_prod(k.dims(node.output(0))), arr[0] if arr.size else 0))


def gen_range(node: Node, k: KernelContext) -> NodeCode:
    s, lim, dl = (k.need_const(node, i, n).reshape(-1)[0] for i, n in ((0, "start"), (1, "limit"), (2, "delta")))
    n = max(int(math.ceil((float(lim) - float(s)) / float(dl))), 0)
    d = dt(node.output(0))
    vals = np.array([s + i * dl for i in range(n)]).astype(_NPT[d]) if d in INTS else \
        (np.asarray(s, _NPT[d]) + np.arange(n).astype(_NPT[d]) * np.asarray(dl, _NPT[d]))
    return const_output(node, k, vals)


def gen_eyelike(node: Node, k: KernelContext) -> NodeCode:
    n, m = k.dims(node.input(0))
    kk = int(node.attr("k", 0))
    return const_output(node, k, np.eye(n, m, kk))


# --- reductions and index ops ------------------------------------------------------------------------

def _reduce_axes(node: Node, k: KernelContext, r: int) -> Optional[List[int]]:
    """Sorted axes, or None for a no-op (empty axes with noop_with_empty_axes)."""
    op = node.op_type
    axes_in_input = k.opset >= 18 or (op == "ReduceSum" and k.opset >= 13)
    if axes_in_input:
        axes = [int(a) for a in k.need_const(node, 1, "axes").reshape(-1)] \
            if len(node.inputs) > 1 and node.input(1) is not None else []
    else:
        axes = list(node.attr("axes", []) or [])
    if not axes:
        if int(node.attr("noop_with_empty_axes", 0)) and axes_in_input:
            return None
        axes = list(range(r))
    return sorted({_norm_axis(node, int(a), r) for a in axes})


def reduce_loops(x: Sequence[int], axes: Sequence[int], sections: Sequence) -> str:
    """Loops over the kept axes of ``x`` and, per section, over the reduced ones.

    ``sections``: strings (code run once per output element; ``{o}`` is the output index) or
    ``("loop", stmt)`` (run for every reduced element; ``{x}`` is its input offset, ``{o}`` the output index).
    """
    xs = _strides(x)
    kept = [a for a in range(len(x)) if a not in axes and x[a] != 1]
    red = [a for a in axes if x[a] != 1]
    base = " + ".join(f"i{a} * {xs[a]}" for a in kept) or "0"
    lines = ["    long oi = 0;"]
    ind = "    "
    for a in kept:
        lines.append(f"{ind}for (long i{a} = 0; i{a} < {x[a]}; ++i{a})")
        ind += "    "
    lines.append(ind + "{")
    ind2 = ind + "    "
    lines.append(f"{ind2}const long b = {base};")
    lines.append(f"{ind2}(void)b;")
    for sec in sections:
        if isinstance(sec, str):
            lines.append(ind2 + sec.replace("{o}", "oi"))
            continue
        ind3 = ind2
        for a in red:
            lines.append(f"{ind3}for (long j{a} = 0; j{a} < {x[a]}; ++j{a})")
            ind3 += "    "
        off = " + ".join(["b"] + [f"j{a} * {xs[a]}" for a in red])
        lines.append(ind3 + sec[1].replace("{x}", off).replace("{o}", "oi"))
    lines.append(f"{ind2}++oi;")
    lines.append(ind + "}")
    return "\n".join(lines) + "\n"


def gen_reduce(node: Node, k: KernelContext) -> NodeCode:
    xv, yv = node.input(0), node.output(0)
    op = node.op_type
    allowed = ALL if op in ("ReduceMax", "ReduceMin") else NUMERIC
    _check(node, allowed, [xv, yv])
    d = dt(xv)
    x = k.dims(xv)
    axes = _reduce_axes(node, k, len(x))
    if axes is None:
        return typed_elementwise(node, k, [xv], lambda a: a[0])
    cnt = _prod(x[a] for a in axes)
    if cnt == 0:
        return _reduce_empty_set(node, k)
    isf = d in FLOATS
    acc = "double" if isf else ("int64_t" if d in SIGNED else ("uint64_t" if d in UNSIGNED else "uint8_t"))
    ct = CT[d]
    xr = f"(({acc})x0[{{x}}])"
    secs: List = []
    if op in ("ReduceMax", "ReduceMin"):
        init = (dlit(-math.inf) if op == "ReduceMax" else dlit(math.inf)) if isf else _int_limit(d, op == "ReduceMin")
        gt = ">" if op == "ReduceMax" else "<"
        nan = " || isnan(v)" if isf else ""
        secs = [f"{acc} s = {init};", ("loop", f"{{ const {acc} v = {xr}; if (v {gt} s{nan}) s = v; }}")]
    elif op == "ReduceLogSumExp":
        if not isf:
            raise unsupported(node, "ReduceLogSumExp on integers")
        secs = ["double m = -INFINITY, s = 0;", ("loop", f"if ({xr} > m) m = {xr};"),
                "if (isinf(m)) m = 0;", ("loop", f"s += exp({xr} - m);")]
    else:
        step = {"ReduceSum": f"s += {xr};", "ReduceMean": f"s += {xr};", "ReduceLogSum": f"s += {xr};",
                "ReduceProd": f"s *= {xr};", "ReduceSumSquare": f"s += {xr} * {xr};", "ReduceL2": f"s += {xr} * {xr};",
                "ReduceL1": f"s += fabs({xr});" if isf else
                (f"s += {xr} < 0 ? -{xr} : {xr};" if d in SIGNED else f"s += {xr};")}[op]
        secs = [f"{acc} s = {1 if op == 'ReduceProd' else 0};", ("loop", step)]
    fin = {"ReduceMean": f"s / {dlit(cnt) if isf else cnt}", "ReduceL2": "sqrt((double)s)",
           "ReduceLogSum": "log(s)", "ReduceLogSumExp": "log(s) + m"}.get(op, "s")
    secs.append(f"y0[{{o}}] = ({ct})({fin});")
    return NodeCode([xv], reduce_loops(x, axes, secs), typed=True)


def _reduce_empty_set(node: Node, k: KernelContext) -> NodeCode:
    """A reduction over an empty set: every output element is the identity the ONNX spec gives.

    0 for sums and norms, 1 for ReduceProd, -inf (or the type's minimum, false for bool) for
    ReduceMax and ReduceLogSum(Exp), +inf (or the maximum, true) for ReduceMin. The empty input is
    not an operand: nothing is read. ReduceMean and the logarithms of integers are undefined by
    ONNX over an empty set (numpy gives NaN where onnxruntime gives 0): a clear error.
    """
    op, d = node.op_type, dt(node.output(0))
    isf = d in FLOATS
    if op == "ReduceMean" or (op in ("ReduceLogSum", "ReduceLogSumExp") and not isf):
        raise unsupported(node, f"{op} over an empty set on {d.name} (undefined in ONNX)")
    if op in ("ReduceMax", "ReduceLogSum", "ReduceLogSumExp", "ReduceMin"):
        low = op != "ReduceMin"
        if isf:
            ident = -math.inf if low else math.inf
        else:
            ident = (0 if low else 1) if d == DType.BOOL else (np.iinfo(_NPT[d]).min if low else np.iinfo(_NPT[d]).max)
    else:
        ident = 1 if op == "ReduceProd" else 0
    return const_output(node, k, np.full(_prod(k.dims(node.output(0))), ident, dtype=_NPT[d]))


def _int_limit(d: DType, biggest: bool) -> str:
    if d == DType.BOOL:
        return "1" if biggest else "0"
    info = np.iinfo(_NPT[d])
    return lit(info.max if biggest else info.min, d)


def gen_argmax(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, NUMERIC, [xv])
    _check(node, frozenset({DType.INT64}), [node.output(0)])
    x = k.dims(xv)
    ax = _norm_axis(node, int(node.attr("axis", 0)), len(x))
    last = int(node.attr("select_last_index", 0))
    outer, n, inner = _prod(x[:ax]), x[ax], _prod(x[ax + 1:])
    gt = ">" if node.op_type == "ArgMax" else "<"
    cmp = f"v {gt}= b" if last else f"v {gt} b"
    body = (f"    for (long o = 0; o < {outer}; ++o)\n        for (long i = 0; i < {inner}; ++i) {{\n"
            f"            const long base = o * {n * inner} + i;\n            {CT[dt(xv)]} b = x0[base];\n"
            f"            long bi = 0;\n            for (long j = 1; j < {n}; ++j) {{\n"
            f"                const {CT[dt(xv)]} v = x0[base + j * {inner}];\n"
            f"                if ({cmp}) {{ b = v; bi = j; }}\n            }}\n"
            f"            y0[o * {inner} + i] = (int64_t)bi;\n        }}\n")
    return NodeCode([xv], body, typed=True)


def _axis_split(node: Node, k: KernelContext, default: int, coerce: bool) -> Tuple[int, int, int]:
    x = k.dims(node.input(0))
    ax = _norm_axis(node, int(node.attr("axis", default)), len(x))
    if coerce:
        return _prod(x[:ax]), _prod(x[ax:]), 1
    return _prod(x[:ax]), x[ax], _prod(x[ax + 1:])


def gen_softmax(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, FLOATS, [xv, node.output(0)])
    d = dt(xv)
    coerce = k.opset < 13
    outer, n, inner = _axis_split(node, k, 1 if coerce else -1, coerce)
    op = node.op_type
    e, lg = fn("exp", d), fn("log", d)
    ct = CT[d]
    if op == "Hardmax":
        core = (f"            long bi = 0;\n            for (long j = 1; j < {n}; ++j) if (xp[j * {inner}] > xp[bi * {inner}]) bi = j;\n"
                f"            for (long j = 0; j < {n}; ++j) yp[j * {inner}] = j == bi ? 1 : 0;\n")
    else:
        core = (f"            {ct} m = xp[0];\n            for (long j = 1; j < {n}; ++j) if (xp[j * {inner}] > m) m = xp[j * {inner}];\n"
                f"            {ct} s = 0;\n            for (long j = 0; j < {n}; ++j) s += {e}(xp[j * {inner}] - m);\n")
        if op == "LogSoftmax":
            core += f"            const {ct} ls = {lg}(s);\n            for (long j = 0; j < {n}; ++j) yp[j * {inner}] = xp[j * {inner}] - m - ls;\n"
        else:
            core += f"            for (long j = 0; j < {n}; ++j) yp[j * {inner}] = {e}(xp[j * {inner}] - m) / s;\n"
    body = (f"    for (long o = 0; o < {outer}; ++o)\n        for (long i = 0; i < {inner}; ++i) {{\n"
            f"            const {ct}* xp = x0 + o * {n * inner} + i;\n            {ct}* yp = y0 + o * {n * inner} + i;\n"
            + core + "        }\n")
    return NodeCode([xv], body, typed=True)


def gen_lpnorm(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, FLOATS, [xv, node.output(0)])
    ct = CT[dt(xv)]
    outer, n, inner = _axis_split(node, k, -1, False)
    p = int(node.attr("p", 2))
    acc = "s += v * v;" if p == 2 else "s += fabs(v);"
    fin = "sqrt(s)" if p == 2 else "s"
    body = (f"    for (long o = 0; o < {outer}; ++o)\n        for (long i = 0; i < {inner}; ++i) {{\n"
            f"            const long base = o * {n * inner} + i;\n            double s = 0;\n"
            f"            for (long j = 0; j < {n}; ++j) {{ const double v = x0[base + j * {inner}]; {acc} }}\n"
            f"            const double nrm = {fin};\n"
            f"            for (long j = 0; j < {n}; ++j) y0[base + j * {inner}] = ({ct})(nrm == 0 ? 0 : x0[base + j * {inner}] / nrm);\n"
            f"        }}\n")
    return NodeCode([xv], body, typed=True)


def gen_instancenorm(node: Node, k: KernelContext) -> NodeCode:
    xv, sv, bv = node.input(0), node.input(1), node.input(2)
    _check(node, FLOATS, [xv, sv, bv, node.output(0)])
    ct = CT[dt(xv)]
    x = k.dims(xv)
    n, c, s = x[0], x[1], _prod(x[2:])
    eps = float(node.attr("epsilon", 1e-5))
    body = (f"    for (long p = 0; p < {n * c}; ++p) {{\n        const long ch = p % {c};\n"
            f"        const {ct}* xp = x0 + p * {s};\n        {ct}* yp = y0 + p * {s};\n"
            f"        double mean = 0, var = 0;\n        for (long i = 0; i < {s}; ++i) mean += xp[i];\n"
            f"        mean /= {s};\n        for (long i = 0; i < {s}; ++i) {{ const double dd = xp[i] - mean; var += dd * dd; }}\n"
            f"        var /= {s};\n        const double inv = 1.0 / sqrt(var + {dlit(eps)});\n"
            f"        for (long i = 0; i < {s}; ++i) yp[i] = ({ct})((xp[i] - mean) * inv * x1[ch] + x2[ch]);\n    }}\n")
    return NodeCode([xv, sv, bv], body, typed=True)


def gen_mvn(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, FLOATS, [xv, node.output(0)])
    ct = CT[dt(xv)]
    x = k.dims(xv)
    r = len(x)
    axes = sorted({_norm_axis(node, int(a), r) for a in (node.attr("axes", [0, 2, 3]) or [])})
    cnt = _prod(x[a] for a in axes)
    secs = ["double mu = 0, sq = 0;", ("loop", "{ const double v = x0[{x}]; mu += v; sq += v * v; }"),
            f"mu /= {cnt}; sq = sqrt(sq / {cnt} - mu * mu) + {dlit(1e-9)};",
            ("loop", f"y0[{{x}}] = ({ct})((x0[{{x}}] - mu) / sq);")]
    return NodeCode([xv], reduce_loops(x, axes, secs), typed=True)


def gen_lrn(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    _check(node, FLOATS, [xv, node.output(0)])
    ct = CT[dt(xv)]
    x = k.dims(xv)
    n, c, s = x[0], x[1], _prod(x[2:])
    size = int(node.attr("size"))
    alpha, beta, bias = float(node.attr("alpha", 1e-4)), float(node.attr("beta", 0.75)), float(node.attr("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    body = (f"    for (long b = 0; b < {n}; ++b)\n        for (long ch = 0; ch < {c}; ++ch)\n"
            f"            for (long i = 0; i < {s}; ++i) {{\n                double sq = 0;\n"
            f"                for (long j = ch - {lo}; j <= ch + {hi}; ++j) if (j >= 0 && j < {c}) {{ "
            f"const double v = x0[(b * {c} + j) * {s} + i]; sq += v * v; }}\n"
            f"                const long o = (b * {c} + ch) * {s} + i;\n"
            f"                y0[o] = ({ct})(x0[o] / pow({dlit(bias)} + {dlit(alpha / size)} * sq, {dlit(beta)}));\n"
            f"            }}\n")
    return NodeCode([xv], body, typed=True)


def gen_rmsnorm(node: Node, k: KernelContext) -> NodeCode:
    xv, sv = node.input(0), node.input(1)
    _check(node, FLOATS, [xv, sv, node.output(0)])
    x = k.dims(xv)
    ax = _norm_axis(node, int(node.attr("axis", -1)), len(x))
    outer, n = _prod(x[:ax]), _prod(x[ax:])
    eps = float(node.attr("epsilon", 1e-5))
    ct = CT[dt(xv)]
    body = (f"    for (long o = 0; o < {outer}; ++o) {{\n        const {ct}* xp = x0 + o * {n};\n"
            f"        double ss = 0;\n        for (long i = 0; i < {n}; ++i) ss += (double)xp[i] * xp[i];\n"
            f"        const double inv = 1.0 / sqrt(ss / {n} + {dlit(eps)});\n"
            f"        for (long i = 0; i < {n}; ++i) y0[o * {n} + i] = ({ct})(xp[i] * inv);\n    }}\n")
    body += loop_nest(x, [(0, _strides(x)), (0, _bcast_strides(k.dims(sv), x))],
                      lambda o: f"y0[{o[0]}] = ({ct})(y0[{o[0]}] * x1[{o[1]}]);")
    return NodeCode([xv, sv], body, typed=True)


def gen_loss(node: Node, k: KernelContext) -> NodeCode:
    """NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (log-softmax over axis 1, optional log_prob)."""
    xv, tv = node.input(0), node.input(1)
    wv = node.input(2) if len(node.inputs) > 2 else None
    _check(node, FLOATS, [xv, wv, node.output(0)])
    _check(node, frozenset({DType.INT64, DType.INT32}), [tv])
    sce = node.op_type == "SoftmaxCrossEntropyLoss"
    x = k.dims(xv)
    n, c, d = x[0], x[1], _prod(x[2:])
    ct = CT[dt(xv)]
    red = _attr_str(node, "reduction", "mean")
    ii = node.attr("ignore_index", None)
    ops = [xv, tv] + ([wv] if wv is not None else [])
    logp = len(node.outputs) > 1 and node.output(1) is not None
    if sce:
        val = "(x0[(b * C + t) * D + j] - m - ls)"
        pre = ("            double m = x0[b * C * D + j], s = 0;\n"
               "            for (long q = 1; q < C; ++q) if (x0[(b * C + q) * D + j] > m) m = x0[(b * C + q) * D + j];\n"
               "            for (long q = 0; q < C; ++q) s += exp((double)x0[(b * C + q) * D + j] - m);\n"
               "            const double ls = log(s);\n")
        if logp:
            pre += f"            for (long q = 0; q < C; ++q) y1[(b * C + q) * D + j] = ({ct})(x0[(b * C + q) * D + j] - m - ls);\n"
    else:
        val, pre = "(double)x0[(b * C + t) * D + j]", ""
    ign = f"t == {int(ii)}" if ii is not None else "0"
    wexpr = "(double)x2[t < 0 ? 0 : (t >= C ? C - 1 : t)]" if wv is not None else "1.0"
    count_all = (not sce and wv is None and ii is not None and int(ii) == -1)
    body = (f"    const long C = {c}, D = {d};\n    double tot = 0, wsum = 0;\n"
            f"    for (long b = 0; b < {n}; ++b)\n        for (long j = 0; j < D; ++j) {{\n"
            f"            const long t = (long)x1[b * D + j];\n" + pre +
            f"            const int skip = {ign};\n"
            f"            const double w = skip ? 0.0 : {wexpr};\n"
            f"            const double l = skip ? 0.0 : -{val} * w;\n"
            + (f"            y0[b * D + j] = ({ct})l;\n" if red == "none" else "") +
            f"            tot += l;\n            wsum += {'1.0' if count_all else 'w'};\n        }}\n")
    if red == "mean":
        body += f"    y0[0] = ({ct})(tot / wsum);\n"
    elif red == "sum":
        body += f"    y0[0] = ({ct})tot;\n"
    else:
        body += "    (void)tot; (void)wsum;\n"
    return NodeCode(ops, body, typed=True)


def gen_rotary(node: Node, k: KernelContext) -> NodeCode:
    """RotaryEmbedding (opset 23): [B, H, S, D] or [B, S, H*D] input, caches by position_ids or [B, S, R/2]."""
    xv, cv, sv = node.input(0), node.input(1), node.input(2)
    pv = node.input(3) if len(node.inputs) > 3 else None
    _check(node, FLOATS, [xv, cv, sv, node.output(0)])
    _check(node, _IDX, [pv])
    x = k.dims(xv)
    if len(x) == 4:
        nb, nh, ns, hd = x
        off = f"((b * {nh} + h) * {ns} + s) * {hd}"
    else:
        nh = int(node.attr("num_heads", 0))
        if nh <= 0:
            raise unsupported(node, "3-D input needs num_heads")
        nb, ns, hd = x[0], x[1], x[2] // nh
        off = f"((b * {ns} + s) * {nh} + h) * {hd}"
    rd = int(node.attr("rotary_embedding_dim", 0)) or hd
    r2 = rd // 2
    il = int(node.attr("interleaved", 0))
    ops = [xv, cv, sv] + ([pv] if pv is not None else [])
    row = f"(long)x3[b * {ns} + s]" if pv is not None else f"(b * {ns} + s)"
    i1, i2 = ("2 * j", "2 * j + 1") if il else ("j", f"j + {r2}")
    ct = CT[dt(xv)]
    body = (f"    for (long b = 0; b < {nb}; ++b)\n        for (long s = 0; s < {ns}; ++s) {{\n"
            f"            const long r = {row};\n"
            f"            for (long h = 0; h < {nh}; ++h) {{\n                const long o = {off};\n"
            f"                for (long j = 0; j < {r2}; ++j) {{\n"
            f"                    const {ct} c = x1[r * {r2} + j], sn = x2[r * {r2} + j];\n"
            f"                    const {ct} a = x0[o + {i1}], bb = x0[o + {i2}];\n"
            f"                    y0[o + {i1}] = c * a - sn * bb;\n                    y0[o + {i2}] = sn * a + c * bb;\n"
            f"                }}\n                for (long i = {rd}; i < {hd}; ++i) y0[o + i] = x0[o + i];\n"
            f"            }}\n        }}\n")
    return NodeCode(ops, body, typed=True)


def gen_layernorm(node: Node, k: KernelContext) -> NodeCode:
    xv = node.input(0)
    ins = [v for v in node.inputs if v is not None]
    _check(node, FLOATS, ins + [node.output(0)])
    x = k.dims(xv)
    r = len(x)
    ax = _norm_axis(node, int(node.attr("axis", -1)), r)
    stats_used = any(len(node.outputs) > i and node.output(i) is not None and node.output(i).has_uses()
                     for i in (1, 2))
    if dt(xv) == DType.FLOAT and all(dt(v) == DType.FLOAT for v in ins) and not stats_used and \
            all(k.dims(v) == x[ax:] for v in ins[1:]):
        code = K.gen_layernorm(node, k)  # the shared float32 helper
        code.typed = True
        return code
    # general form: scale/bias broadcast, Mean / InvStdDev outputs, double
    outer, n = _prod(x[:ax]), _prod(x[ax:])
    eps = float(node.attr("epsilon", 1e-5))
    ct = CT[dt(xv)]
    ops = [xv]
    terms = []
    for i in (1, 2):
        v = node.input(i) if len(node.inputs) > i else None
        if v is None:
            terms.append(None)
            continue
        ops.append(v)
        st = _bcast_strides(k.dims(v), x)
        terms.append((len(ops) - 1, st))
    # offsets of scale/bias for element (o, j): computed with loop_nest over x
    body = (f"    for (long o = 0; o < {outer}; ++o) {{\n        const {ct}* xp = x0 + o * {n};\n"
            f"        double mean = 0, var = 0;\n        for (long i = 0; i < {n}; ++i) mean += xp[i];\n"
            f"        mean /= {n};\n        for (long i = 0; i < {n}; ++i) {{ const double dd = xp[i] - mean; var += dd * dd; }}\n"
            f"        var /= {n};\n        const double inv = 1.0 / sqrt(var + {dlit(eps)});\n")
    outs = node.outputs
    if len(outs) > 1 and outs[1] is not None:
        body += f"        y1[o] = ({CT[dt(outs[1])]})mean;\n"
    if len(outs) > 2 and outs[2] is not None:
        body += f"        y2[o] = ({CT[dt(outs[2])]})inv;\n"
    body += f"        for (long i = 0; i < {n}; ++i) y0[o * {n} + i] = ({ct})((xp[i] - mean) * inv);\n    }}\n"
    nest = [(0, _strides(x))]
    for t in terms:
        if t is not None:
            nest.append((0, t[1]))

    def fix(o: List[str]) -> str:
        e = f"y0[{o[0]}]"
        j = 1
        s = e
        if terms[0] is not None:
            s = f"{s} * x{terms[0][0]}[{o[j]}]"
            j += 1
        if terms[1] is not None:
            s = f"{s} + x{terms[1][0]}[{o[j]}]"
        return f"{e} = ({ct})({s});"

    if any(t is not None for t in terms):
        body += loop_nest(x, nest, fix)
    return NodeCode(ops, body, typed=True)


# --- registration --------------------------------------------------------------------------------------

#: Generators registered before this module for the ops it wraps (e.g. the int8 data-movement kernels).
_PREVIOUS: Dict[str, Callable[[Node, KernelContext], NodeCode]] = {}


def _register() -> None:
    for op in ("Transpose", "Slice", "Split", "Expand", "Concat", "Gather"):
        prev = GENERATORS.get(("", op))
        if prev is not None and getattr(prev, "__module__", "") != __name__:
            _PREVIOUS[op] = prev
    for op in _UNARY:
        GENERATORS[("", op)] = gen_unary
    for op in ("IsNaN", "IsInf"):
        GENERATORS[("", op)] = gen_isnan_isinf
    for op in list(_ARITH) + list(_CMP) + ["Mean", "Pow"]:
        GENERATORS[("", op)] = gen_binary
    GENERATORS[("", "Where")] = gen_where
    GENERATORS[("", "Cast")] = gen_cast
    GENERATORS[("", "CastLike")] = gen_castlike
    GENERATORS[("", "RMSNormalization")] = gen_rmsnorm
    GENERATORS[("", "NegativeLogLikelihoodLoss")] = gen_loss
    GENERATORS[("", "ScatterElements")] = gen_scatter_elements
    GENERATORS[("", "ScatterND")] = gen_scatter_nd
    GENERATORS[("", "GatherND")] = gen_gather_nd
    GENERATORS[("", "TopK")] = gen_topk
    GENERATORS[("", "Scatter")] = gen_scatter_elements
    GENERATORS[("", "ReverseSequence")] = gen_reverse_sequence
    GENERATORS[("", "RotaryEmbedding")] = gen_rotary
    GENERATORS[("", "LpPool")] = gen_lppool
    GENERATORS[("", "SoftmaxCrossEntropyLoss")] = gen_loss
    GENERATORS[("", "Clip")] = gen_clip
    for op, gen in (("Transpose", K.gen_transpose), ("Slice", K.gen_slice), ("Split", K.gen_split),
                    ("Expand", K.gen_expand)):
        GENERATORS[("", op)] = _typed_copy(gen)
    GENERATORS[("", "Concat")] = _typed_copy(K.gen_concat, ())
    GENERATORS[("", "Pad")] = gen_pad
    GENERATORS[("", "Gather")] = gen_gather
    GENERATORS[("", "GatherElements")] = gen_gather_elements
    GENERATORS[("", "Tile")] = gen_tile
    GENERATORS[("", "DepthToSpace")] = gen_depth_to_space
    GENERATORS[("", "SpaceToDepth")] = gen_space_to_depth
    GENERATORS[("", "Trilu")] = gen_trilu
    GENERATORS[("", "CumSum")] = gen_cumsum
    GENERATORS[("", "CumProd")] = gen_cumsum
    GENERATORS[("", "CenterCropPad")] = gen_center_crop_pad
    GENERATORS[("", "OneHot")] = gen_onehot
    GENERATORS[("", "Shape")] = gen_shape
    GENERATORS[("", "Size")] = gen_size
    GENERATORS[("", "Constant")] = gen_constant
    GENERATORS[("", "ConstantOfShape")] = gen_constant_of_shape
    GENERATORS[("", "Range")] = gen_range
    GENERATORS[("", "EyeLike")] = gen_eyelike
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1",
               "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"):
        GENERATORS[("", op)] = gen_reduce
    for op in ("ArgMax", "ArgMin"):
        GENERATORS[("", op)] = gen_argmax
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        GENERATORS[("", op)] = gen_softmax
    GENERATORS[("", "LpNormalization")] = gen_lpnorm
    GENERATORS[("", "InstanceNormalization")] = gen_instancenorm
    GENERATORS[("", "MeanVarianceNormalization")] = gen_mvn
    GENERATORS[("", "LRN")] = gen_lrn
    GENERATORS[("", "LayerNormalization")] = gen_layernorm


_register()
