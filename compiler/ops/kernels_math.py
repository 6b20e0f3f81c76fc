"""Numpy kernels for elementwise math, logic, reductions and the few NN ops constant folding meets."""

from __future__ import annotations

import math
from functools import reduce
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..ir.core import Node
from .evaluator import DeferToFallback, EvaluationError, attr_str, ints, norm_axis, register_evaluator

Args = List[Optional[np.ndarray]]
Out = Sequence[np.ndarray]


def _need(args: Args, i: int, node: Node) -> np.ndarray:
    x = args[i] if i < len(args) else None
    if x is None:
        raise EvaluationError(f"{node.op_type}: input {i} is missing")
    return x


def _same(x: np.ndarray, like: np.dtype) -> np.ndarray:
    return x if x.dtype == like else x.astype(like)


def _computable(x: np.ndarray) -> np.ndarray:
    """``x`` in float32 when its type is an ml_dtypes one (bfloat16, float8) that BLAS routines reject."""
    return x.astype(np.float32) if x.dtype.kind == "V" or x.dtype.type.__module__.startswith("ml_dtypes") else x


# --- binary elementwise -------------------------------------------------------------------------------
def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[Node, Args, int], Out]:
    def kernel(node: Node, args: Args, opset: int) -> Out:
        a, b = _need(args, 0, node), _need(args, 1, node)
        if opset < 7 and node.attr("broadcast", 0) and node.attr("axis") is not None:
            raise DeferToFallback  # legacy broadcast along an axis
        return [_same(np.asarray(fn(a, b)), a.dtype)]

    return kernel


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (C semantics, as onnxruntime and onnx.reference)."""
    if np.any(b == 0):
        raise EvaluationError("Div: integer division by zero")
    if a.dtype.kind == "u":
        return np.floor_divide(a, b)
    q = np.floor_divide(a, b)
    r = np.remainder(a, b)
    return q + ((r != 0) & ((a < 0) ^ (b < 0))).astype(q.dtype)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return _int_div(a, b)
    return np.divide(a, b)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        if b.dtype.kind in "iu" and not np.any(b < 0):
            return np.power(a, b.astype(a.dtype))
        return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    return np.power(a, b.astype(a.dtype) if b.dtype.kind == "f" else b).astype(a.dtype)


register_evaluator("Add")(_binary(np.add))
register_evaluator("Sub")(_binary(np.subtract))
register_evaluator("Mul")(_binary(np.multiply))
register_evaluator("Div")(_binary(_div))
register_evaluator("Pow")(_binary(_pow))


@register_evaluator("Mod", since=10)
def _mod(node: Node, args: Args, opset: int) -> Out:
    a, b = _need(args, 0, node), _need(args, 1, node)
    if a.dtype.kind in "iu" and np.any(b == 0):
        raise EvaluationError("Mod: integer modulo by zero")
    fn = np.fmod if node.attr("fmod", 0) else np.mod  # np.mod: the remainder takes the divisor's sign
    return [_same(fn(a, b), a.dtype)]


def _compare(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[Node, Args, int], Out]:
    def kernel(node: Node, args: Args, opset: int) -> Out:
        a, b = _need(args, 0, node), _need(args, 1, node)
        if opset < 7 and node.attr("broadcast", 0) and node.attr("axis") is not None:
            raise DeferToFallback
        return [np.asarray(fn(a, b)).astype(bool)]

    return kernel


for _name, _fn in (("Equal", np.equal), ("Less", np.less), ("Greater", np.greater),
                   ("LessOrEqual", np.less_equal), ("GreaterOrEqual", np.greater_equal),
                   ("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)):
    register_evaluator(_name)(_compare(_fn))


@register_evaluator("Not")
def _not(node: Node, args: Args, opset: int) -> Out:
    return [np.logical_not(_need(args, 0, node))]


# --- unary elementwise --------------------------------------------------------------------------------
def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Node, Args, int], Out]:
    def kernel(node: Node, args: Args, opset: int) -> Out:
        x = _need(args, 0, node)
        return [_same(np.asarray(fn(x)), x.dtype)]

    return kernel


def _sigmoid(x: np.ndarray) -> np.ndarray:
    xf = x.astype(np.float64)
    return np.where(xf >= 0, 1.0 / (1.0 + np.exp(-xf)), np.exp(xf) / (1.0 + np.exp(xf)))


_erf64 = np.vectorize(math.erf, otypes=[np.float64])


def _erf(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x
    y = _erf64(x.astype(np.float64))
    # Integer inputs round through float32, as onnx.reference does (erf(-5) -> -1).
    return y.astype(np.float32) if x.dtype.kind in "iu" else y


for _name, _fn in (("Neg", np.negative), ("Abs", np.abs), ("Sqrt", np.sqrt), ("Exp", np.exp), ("Log", np.log),
                   ("Reciprocal", np.reciprocal), ("Floor", np.floor), ("Ceil", np.ceil), ("Sign", np.sign),
                   ("Tanh", np.tanh), ("Sigmoid", _sigmoid), ("Relu", lambda x: np.maximum(x, 0)),
                   ("Erf", _erf)):
    register_evaluator(_name)(_unary(_fn))

register_evaluator("Round", since=11)(_unary(np.round))  # numpy rounds half to even, as ONNX does


@register_evaluator("Clip")
def _clip(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    if opset >= 11:
        lo = args[1] if len(args) > 1 else None
        hi = args[2] if len(args) > 2 else None
    else:
        lo, hi = node.attr("min"), node.attr("max")
        lo = None if lo is None else np.array(lo)
        hi = None if hi is None else np.array(hi)
    out = x
    if lo is not None:
        out = np.maximum(out, lo.astype(x.dtype))
    if hi is not None:
        out = np.minimum(out, hi.astype(x.dtype))
    return [_same(np.asarray(out), x.dtype)]


# --- variadic ---------------------------------------------------------------------------------------------
def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: bool = False) -> Callable[[Node, Args, int], Out]:
    def kernel(node: Node, args: Args, opset: int) -> Out:
        xs = [a for a in args if a is not None]
        if not xs:
            raise EvaluationError(f"{node.op_type} has no inputs")
        dtype = xs[0].dtype
        out = reduce(fn, xs)
        out = np.broadcast_to(out, np.broadcast_shapes(*(x.shape for x in xs)))
        if mean:
            out = out / np.array(len(xs), dtype=dtype)
        return [_same(np.array(out), dtype)]

    return kernel


register_evaluator("Max")(_variadic(np.maximum))
register_evaluator("Min")(_variadic(np.minimum))
register_evaluator("Sum")(_variadic(np.add))
register_evaluator("Mean")(_variadic(np.add, mean=True))


# --- reductions -------------------------------------------------------------------------------------------
_AXES_INPUT_SINCE = {"ReduceSum": 13}  # the other Reduce* take axes as an input from opset 18


def _reduce_axes(node: Node, args: Args, opset: int, rank: int) -> Optional[tuple]:
    """The reduced axes, or None when nothing is reduced (noop_with_empty_axes)."""
    if opset >= _AXES_INPUT_SINCE.get(node.op_type, 18):
        axes = ints(args[1] if len(args) > 1 else None)
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return None
            return tuple(range(rank))
    else:
        axes = node.attr("axes")
        if not axes:
            return tuple(range(rank))
    return tuple(sorted({norm_axis(a, rank) for a in axes}))


def _reduction(fn: Callable[[np.ndarray, tuple, bool], np.ndarray]) -> Callable[[Node, Args, int], Out]:
    def kernel(node: Node, args: Args, opset: int) -> Out:
        x = _need(args, 0, node)
        axes = _reduce_axes(node, args, opset, x.ndim)
        if axes is None:
            return [x]
        keep = bool(node.attr("keepdims", 1))
        return [_same(np.asarray(fn(x, axes, keep)), x.dtype)]

    return kernel


def _extreme(x: np.ndarray, largest: bool):
    if x.dtype.kind == "f":
        return -np.inf if largest else np.inf
    if x.dtype.kind == "b":
        return not largest
    info = np.iinfo(x.dtype)
    return info.min if largest else info.max


def _acc(x: np.ndarray) -> np.dtype:
    return np.dtype(np.float32) if x.dtype == np.float16 else x.dtype


def _mean(x: np.ndarray, axes: tuple, keep: bool) -> np.ndarray:
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    acc = {"f": np.float64, "i": np.int64, "u": np.uint64}.get(x.dtype.kind, np.float64)
    s = np.sum(x, axis=axes, keepdims=keep, dtype=acc)
    if x.dtype.kind == "f":
        return s / n if n else np.full(s.shape, np.nan)
    if not n:
        return s
    q = np.abs(s) // n  # integer mean truncates toward zero, as in onnxruntime
    return np.where(s < 0, -q, q).astype(x.dtype)


for _name, _fn in (
    ("ReduceSum", lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=_acc(x))),
    ("ReduceProd", lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=_acc(x))),
    ("ReduceMax", lambda x, a, k: np.max(x, axis=a, keepdims=k, initial=_extreme(x, True))),
    ("ReduceMin", lambda x, a, k: np.min(x, axis=a, keepdims=k, initial=_extreme(x, False))),
    ("ReduceMean", _mean),
    ("ReduceL2", lambda x, a, k: np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=a, keepdims=k))),
    ("ReduceL1", lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k, dtype=_acc(x))),
    ("ReduceSumSquare", lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k, dtype=_acc(x))),
):
    register_evaluator(_name)(_reduction(_fn))


def _arg(largest: bool) -> Callable[[Node, Args, int], Out]:
    def kernel(node: Node, args: Args, opset: int) -> Out:
        x = _need(args, 0, node)
        axis = norm_axis(node.attr("axis", 0), x.ndim)
        fn = np.argmax if largest else np.argmin
        if node.attr("select_last_index", 0):
            flipped = np.flip(x, axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = idx.astype(np.int64)
        if node.attr("keepdims", 1):
            idx = np.expand_dims(idx, axis)
        return [idx]

    return kernel


register_evaluator("ArgMax")(_arg(True))
register_evaluator("ArgMin")(_arg(False))


@register_evaluator("CumSum", since=11)
def _cumsum(node: Node, args: Args, opset: int) -> Out:
    x, ax = _need(args, 0, node), _need(args, 1, node)
    axis = norm_axis(int(ax.reshape(-1)[0]), x.ndim)
    y = np.flip(x, axis) if node.attr("reverse", 0) else x
    out = np.cumsum(y, axis=axis, dtype=x.dtype)
    if node.attr("exclusive", 0):
        out = out - y
    if node.attr("reverse", 0):
        out = np.flip(out, axis)
    return [_same(np.ascontiguousarray(out), x.dtype)]


@register_evaluator("TopK")
def _topk(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    k = node.attr("k") if opset < 10 else int(_need(args, 1, node).reshape(-1)[0])
    axis = norm_axis(node.attr("axis", -1), x.ndim)
    largest = node.attr("largest", 1) if opset >= 11 else 1
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise DeferToFallback
    if k < 0 or k > x.shape[axis]:
        raise EvaluationError(f"TopK: k={k} is out of range")
    if largest:
        # Stable ascending sort of the reversed axis, reversed: descending, ties by lower index first.
        n = x.shape[axis]
        order = np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
        order = n - 1 - order
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]


# --- linear algebra ------------------------------------------------------------------------------------
@register_evaluator("MatMul")
def _matmul(node: Node, args: Args, opset: int) -> Out:
    a, b = _need(args, 0, node), _need(args, 1, node)
    return [_same(np.matmul(_computable(a), _computable(b)), a.dtype)]


@register_evaluator("Gemm")
def _gemm(node: Node, args: Args, opset: int) -> Out:
    a, b = _need(args, 0, node), _need(args, 1, node)
    c = args[2] if len(args) > 2 else None
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    dtype = a.dtype
    a, b = _computable(a), _computable(b)
    c = None if c is None else _computable(c)
    # Scalars in the computation type: int32 * float would promote to float64.
    cdt = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
    y = np.matmul(a, b)
    if alpha != 1.0:
        y = _same(y * np.array(alpha, dtype=cdt), a.dtype)
    if c is not None and beta != 0.0:
        y = _same(y + (c if beta == 1.0 else _same(c * np.array(beta, dtype=cdt), c.dtype)), a.dtype)
    return [_same(y, dtype)]


@register_evaluator("Einsum", since=12)
def _einsum(node: Node, args: Args, opset: int) -> Out:
    xs = [a for a in args if a is not None]
    eq = attr_str(node, "equation", "").replace(" ", "")
    return [_same(np.asarray(np.einsum(eq, *(_computable(x) for x in xs))), xs[0].dtype)]


# --- NN ------------------------------------------------------------------------------------------------
@register_evaluator("Softmax")
def _softmax(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    if opset < 13:
        axis = norm_axis(node.attr("axis", 1), x.ndim) if x.ndim else 0
        shape = x.shape
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        x2 = x.reshape(outer, -1)
        e = np.exp(x2 - np.max(x2, axis=1, keepdims=True))
        return [_same((e / np.sum(e, axis=1, keepdims=True)).reshape(shape), x.dtype)]
    axis = norm_axis(node.attr("axis", -1), x.ndim)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return [_same(e / np.sum(e, axis=axis, keepdims=True), x.dtype)]


@register_evaluator("BatchNormalization")
def _batch_norm(node: Node, args: Args, opset: int) -> Out:
    x, scale, bias, mean, var = (_need(args, i, node) for i in range(5))
    training = node.attr("training_mode", 0) if opset >= 14 else 0
    if opset < 7 and not node.attr("is_test", 0):
        training = 1
    if opset < 14 and sum(o is not None for o in node.outputs) > 1:
        training = 1
    if training:
        raise DeferToFallback
    eps = node.attr("epsilon", 1e-5)

    def chan(p: np.ndarray) -> np.ndarray:
        return p.reshape((1,) + p.shape + (1,) * (x.ndim - 1 - p.ndim))

    y = chan(scale) * (x - chan(mean)) / np.sqrt(chan(var) + np.array(eps, dtype=var.dtype)) + chan(bias)
    return [_same(y, x.dtype)]
