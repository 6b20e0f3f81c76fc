"""Numpy kernels for data movement, shape and constant-producing ops (the ops of shape chains)."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np
from onnx import TensorProto, numpy_helper

from ..ir.core import Node
from ..ir.dtypes import DType
from .evaluator import DeferToFallback, EvaluationError, attr_array, attr_str, ints, norm_axis, register_evaluator

Args = List[Optional[np.ndarray]]
Out = Sequence[np.ndarray]

_FLOAT8 = {DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ}


def _need(args: Args, i: int, node: Node) -> np.ndarray:
    x = args[i] if i < len(args) else None
    if x is None:
        raise EvaluationError(f"{node.op_type}: input {i} is missing")
    return x


# --- copies and casts -------------------------------------------------------------------------------
@register_evaluator("Identity")
def _identity(node: Node, args: Args, opset: int) -> Out:
    return [_need(args, 0, node)]


def cast_array(x: np.ndarray, to: DType, saturate: bool = True) -> np.ndarray:
    """``x`` cast to ``to`` with ONNX Cast semantics (strings and float8e8m0 are deferred)."""
    if to == DType.STRING or x.dtype == object or to == DType.FLOAT8E8M0 or DType.from_numpy(x.dtype) == DType.FLOAT8E8M0:
        raise DeferToFallback
    target = to.numpy
    if to in _FLOAT8 and saturate:
        return numpy_helper.saturate_cast(x, target)
    if x.dtype == target:
        return x
    return x.astype(target)


def _to_dtype(to: object) -> DType:
    if isinstance(to, (str, bytes)):  # Cast-1 names the type
        text = to.decode() if isinstance(to, bytes) else to
        return DType(TensorProto.DataType.Value(text.upper()))
    return DType(int(to))  # type: ignore[call-overload]


@register_evaluator("Cast")
def _cast(node: Node, args: Args, opset: int) -> Out:
    to = node.attr("to")
    if to is None:
        raise EvaluationError("Cast has no 'to' attribute")
    if attr_str(node, "round_mode", "up") != "up":
        raise DeferToFallback
    return [cast_array(_need(args, 0, node), _to_dtype(to), bool(node.attr("saturate", 1)))]


@register_evaluator("CastLike", since=15)
def _cast_like(node: Node, args: Args, opset: int) -> Out:
    if attr_str(node, "round_mode", "up") != "up":
        raise DeferToFallback
    like = _need(args, 1, node)
    return [cast_array(_need(args, 0, node), DType.from_numpy(like.dtype), bool(node.attr("saturate", 1)))]


# --- shape queries ----------------------------------------------------------------------------------
@register_evaluator("Shape")
def _shape(node: Node, args: Args, opset: int) -> Out:
    dims = _need(args, 0, node).shape
    rank = len(dims)
    start = node.attr("start", 0)
    end = node.attr("end", None)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return [np.array(dims[start:end], dtype=np.int64)]


@register_evaluator("Size")
def _size(node: Node, args: Args, opset: int) -> Out:
    return [np.array(_need(args, 0, node).size, dtype=np.int64)]


# --- indexing ----------------------------------------------------------------------------------------
def _check_indices(idx: np.ndarray, dim: int, op: str) -> np.ndarray:
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise EvaluationError(f"{op}: index out of range for a dimension of size {dim}")
    return np.where(idx < 0, idx + dim, idx)


@register_evaluator("Gather")
def _gather(node: Node, args: Args, opset: int) -> Out:
    x, idx = _need(args, 0, node), _need(args, 1, node)
    axis = norm_axis(node.attr("axis", 0), x.ndim)
    return [np.take(x, _check_indices(idx, x.shape[axis], "Gather"), axis=axis)]


@register_evaluator("GatherElements", since=11)
def _gather_elements(node: Node, args: Args, opset: int) -> Out:
    x, idx = _need(args, 0, node), _need(args, 1, node)
    axis = norm_axis(node.attr("axis", 0), x.ndim)
    idx = _check_indices(idx, x.shape[axis], "GatherElements")
    # take_along_axis broadcasts; ONNX indices may be smaller than data on other axes: slice first.
    sl = tuple(slice(0, idx.shape[d]) if d != axis else slice(None) for d in range(x.ndim))
    return [np.take_along_axis(x[sl], idx, axis=axis)]


@register_evaluator("ScatterND", since=11)
def _scatter_nd(node: Node, args: Args, opset: int) -> Out:
    data, idx, upd = _need(args, 0, node), _need(args, 1, node), _need(args, 2, node)
    reduction = attr_str(node, "reduction", "none")
    out = np.array(data, copy=True)
    k = idx.shape[-1]
    flat_idx = idx.reshape(-1, k).astype(np.int64)
    flat_upd = upd.reshape((flat_idx.shape[0],) + data.shape[k:])
    ops = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    if reduction != "none" and reduction not in ops:
        raise EvaluationError(f"ScatterND: unknown reduction '{reduction}'")
    for i in range(flat_idx.shape[0]):
        pos = tuple(int(v) for v in flat_idx[i])
        if reduction == "none":
            out[pos] = flat_upd[i]
        else:
            out[pos] = ops[reduction](out[pos], flat_upd[i])
    return [out]


@register_evaluator("NonZero", since=9)
def _nonzero(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    if x.ndim == 0:
        raise DeferToFallback
    return [np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)]


# --- joining and splitting ---------------------------------------------------------------------------
@register_evaluator("Concat")
def _concat(node: Node, args: Args, opset: int) -> Out:
    xs = [a for a in args if a is not None]
    if not xs:
        raise EvaluationError("Concat has no inputs")
    axis = node.attr("axis", 1 if opset < 4 else None)
    if axis is None:
        raise EvaluationError("Concat has no 'axis' attribute")
    axis = norm_axis(axis, xs[0].ndim)
    return [np.concatenate(xs, axis=axis)]


def _split_sizes(dim: int, n: int) -> List[int]:
    chunk = math.ceil(dim / n) if n else 0
    sizes = [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
    return sizes


@register_evaluator("Split")
def _split(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    axis = norm_axis(node.attr("axis", 0), x.ndim)
    n = len(node.outputs)
    if opset >= 13:
        split = ints(args[1] if len(args) > 1 else None)
    elif opset == 1 and len(args) > 1 and args[1] is not None:
        split = ints(args[1])
    else:
        split = node.attr("split")
    if split is None:
        num = node.attr("num_outputs", n) if opset >= 18 else n
        split = _split_sizes(x.shape[axis], num)
    if sum(split) != x.shape[axis]:
        raise EvaluationError(f"Split: sizes {split} do not add up to {x.shape[axis]}")
    bounds = np.cumsum([0] + list(split))
    return [np.take(x, np.arange(bounds[i], bounds[i + 1]), axis=axis) for i in range(len(split))]


# --- slicing -------------------------------------------------------------------------------------------
@register_evaluator("Slice")
def _slice(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    if opset >= 10:
        starts, ends = ints(_need(args, 1, node)), ints(_need(args, 2, node))
        axes = ints(args[3] if len(args) > 3 else None)
        steps = ints(args[4] if len(args) > 4 else None)
    else:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    assert starts is not None and ends is not None
    if axes is None:
        axes = list(range(len(starts)))
    if steps is None:
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise EvaluationError("Slice: starts, ends, axes and steps differ in length")
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise EvaluationError("Slice: step is 0")
        # Python slicing clamps exactly as ONNX Slice does (negative ends included).
        index[norm_axis(a, x.ndim)] = slice(s, e, st)
    return [x[tuple(index)]]


# --- reshaping -----------------------------------------------------------------------------------------
@register_evaluator("Reshape")
def _reshape(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    shape = ints(_need(args, 1, node)) if opset >= 5 else list(node.attr("shape", []))
    allowzero = node.attr("allowzero", 0) if opset >= 14 else 0
    out = []
    for i, d in enumerate(shape):
        if d == 0 and not allowzero:
            if i >= x.ndim:
                raise EvaluationError("Reshape: 0 refers to a dimension the input does not have")
            out.append(x.shape[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise EvaluationError("Reshape: more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise EvaluationError(f"Reshape: cannot infer -1 for {x.shape} -> {shape}")
        out[out.index(-1)] = x.size // known
    return [x.reshape(out)]


def _axes_arg(node: Node, args: Args, opset: int, since: int) -> Optional[List[int]]:
    if opset >= since:
        return ints(args[1] if len(args) > 1 else None)
    return node.attr("axes")


@register_evaluator("Squeeze")
def _squeeze(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    axes = _axes_arg(node, args, opset, 13)
    if axes is None:
        return [np.squeeze(x)]
    axes = [norm_axis(a, x.ndim) for a in axes]
    if any(x.shape[a] != 1 for a in axes):
        raise EvaluationError(f"Squeeze: axes {axes} of {x.shape} are not all 1")
    return [np.squeeze(x, axis=tuple(axes))]


@register_evaluator("Unsqueeze")
def _unsqueeze(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    axes = _axes_arg(node, args, opset, 13)
    if axes is None:
        raise EvaluationError("Unsqueeze has no axes")
    rank = x.ndim + len(axes)
    axes = sorted(norm_axis(a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise EvaluationError("Unsqueeze: repeated axes")
    return [np.expand_dims(x, tuple(axes))]


@register_evaluator("Flatten")
def _flatten(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    axis = node.attr("axis", 1)
    if axis < 0:
        axis += x.ndim
    if not 0 <= axis <= x.ndim:
        raise EvaluationError(f"Flatten: axis out of range for rank {x.ndim}")
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return [x.reshape(outer, inner)]


@register_evaluator("Transpose")
def _transpose(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    perm = node.attr("perm")
    return [np.transpose(x, perm if perm else None)]


@register_evaluator("Expand", since=8)
def _expand(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    shape = tuple(ints(_need(args, 1, node)) or ())
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, shape)).copy()]


@register_evaluator("Tile", since=6)
def _tile(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    reps = ints(_need(args, 1, node)) or []
    if len(reps) != x.ndim:
        raise EvaluationError("Tile: repeats length differs from the input rank")
    return [np.tile(x, reps)]


# --- constant producers -----------------------------------------------------------------------------
@register_evaluator("Constant")
def _constant(node: Node, args: Args, opset: int) -> Out:
    for name in ("value", "sparse_value"):
        v = attr_array(node, name)
        if v is not None:
            return [v]
    if node.attr("value_float") is not None:
        return [np.array(node.attr("value_float"), dtype=np.float32)]
    if node.attr("value_floats") is not None:
        return [np.array(node.attr("value_floats"), dtype=np.float32).reshape(-1)]
    if node.attr("value_int") is not None:
        return [np.array(node.attr("value_int"), dtype=np.int64)]
    if node.attr("value_ints") is not None:
        return [np.array(node.attr("value_ints"), dtype=np.int64).reshape(-1)]
    if node.attr("value_string") is not None:
        return [np.array(node.attr("value_string"), dtype=object)]
    if node.attr("value_strings") is not None:
        arr = np.empty(len(node.attr("value_strings")), dtype=object)
        arr[:] = list(node.attr("value_strings"))
        return [arr]
    raise EvaluationError("Constant has no value attribute")


@register_evaluator("ConstantOfShape", since=9)
def _constant_of_shape(node: Node, args: Args, opset: int) -> Out:
    shape = ints(_need(args, 0, node)) or []
    value = attr_array(node, "value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    if value.size != 1:
        raise EvaluationError("ConstantOfShape: value must hold one element")
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


@register_evaluator("Range", since=11)
def _range(node: Node, args: Args, opset: int) -> Out:
    start, limit, delta = (_need(args, i, node) for i in range(3))
    dtype = start.dtype
    s, l, d = start.reshape(()), limit.reshape(()), delta.reshape(())
    if d == 0:
        raise EvaluationError("Range: delta is 0")
    n = max(int(math.ceil((float(l) - float(s)) / float(d))), 0) if dtype.kind == "f" else \
        max(-((int(s) - int(l)) // int(d)), 0)
    if n == 0:
        return [np.zeros(0, dtype=dtype)]
    # ONNX defines Range by accumulation (a Loop adding delta): cumsum reproduces the rounding.
    steps = np.full(n, d, dtype=dtype)
    steps[0] = s
    return [np.cumsum(steps, dtype=dtype)]


@register_evaluator("Where", since=9)
def _where(node: Node, args: Args, opset: int) -> Out:
    c, x, y = (_need(args, i, node) for i in range(3))
    if x.dtype != y.dtype:
        raise EvaluationError("Where: X and Y have different element types")
    return [np.where(c.astype(bool), x, y).astype(x.dtype, copy=False)]


@register_evaluator("Trilu", since=14)
def _trilu(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    k = int(args[1].reshape(())) if len(args) > 1 and args[1] is not None else 0
    if x.ndim < 2:
        raise EvaluationError("Trilu: input rank is below 2")
    return [np.triu(x, k) if node.attr("upper", 1) else np.tril(x, k)]


@register_evaluator("OneHot", since=9)
def _one_hot(node: Node, args: Args, opset: int) -> Out:
    idx, depth_a, values = (_need(args, i, node) for i in range(3))
    depth = int(depth_a.reshape(-1)[0])
    if values.size != 2:
        raise EvaluationError("OneHot: values must hold two elements")
    off, on = values.reshape(-1)
    rank = idx.ndim + 1
    axis = norm_axis(node.attr("axis", -1), rank)
    ind = idx.astype(np.int64) if idx.dtype.kind != "f" else np.trunc(idx).astype(np.int64)
    ind = np.where(ind < 0, ind + depth, ind)
    hot = np.arange(depth).reshape((1,) * axis + (depth,) + (1,) * (rank - axis - 1))
    mask = np.expand_dims(ind, axis) == hot
    return [np.where(mask, on, off).astype(values.dtype)]


# --- padding -----------------------------------------------------------------------------------------
@register_evaluator("Pad")
def _pad(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    mode = attr_str(node, "mode", "constant")
    if opset >= 11:
        pads = ints(_need(args, 1, node)) or []
        cv = args[2] if len(args) > 2 and args[2] is not None else None
        value = cv.reshape(-1)[0] if cv is not None and cv.size else 0
        axes = ints(args[3] if len(args) > 3 else None) if opset >= 18 else None
    else:
        pads = list(node.attr("pads") or node.attr("paddings") or [])
        value = node.attr("value", 0.0)
        axes = None
    if axes is None:
        axes = list(range(x.ndim))
    axes = [norm_axis(a, x.ndim) for a in axes]
    if len(pads) != 2 * len(axes):
        raise EvaluationError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + len(axes)]
    # Negative pads crop first.
    crop = tuple(slice(max(-b, 0), x.shape[d] - max(-e, 0)) for d, (b, e) in enumerate(zip(begin, end)))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        return [np.pad(x, width, mode="constant", constant_values=np.array(value).astype(x.dtype))]
    if mode in ("edge", "reflect", "wrap"):
        if x.size == 0 and any(w != (0, 0) for w in width):
            raise EvaluationError(f"Pad: mode '{mode}' on an empty tensor")
        if mode == "reflect" and any(w != (0, 0) and x.shape[d] < 2 for d, w in enumerate(width)):
            raise DeferToFallback
        return [np.pad(x, width, mode=mode)]
    raise EvaluationError(f"Pad: unknown mode '{mode}'")


# --- inference-mode no-ops ---------------------------------------------------------------------------
@register_evaluator("Dropout")
def _dropout(node: Node, args: Args, opset: int) -> Out:
    x = _need(args, 0, node)
    if opset < 7 and not node.attr("is_test", 0):
        raise EvaluationError("Dropout in training mode is nondeterministic")
    if opset >= 12 and len(args) > 2 and args[2] is not None and bool(args[2].reshape(-1)[0]):
        ratio = float(args[1].reshape(-1)[0]) if len(args) > 1 and args[1] is not None else 0.5
        if ratio != 0.0:
            raise EvaluationError("Dropout in training mode is nondeterministic")
    mask = np.ones(x.shape, dtype=bool if opset >= 10 else x.dtype)
    return [x, mask]
