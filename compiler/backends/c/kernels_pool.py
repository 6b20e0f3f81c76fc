"""C kernels of the pooling ops: MaxPool (with its Indices output), AveragePool, GlobalMaxPool and
GlobalAveragePool, on 1-D, 2-D and 3-D inputs (any rank >= 3), through one N-D generator.

The geometry is static, so it is resolved at compile time. On every spatial axis, output index
``o`` and kernel tap ``t`` read input index ``o * stride - pad_begin + t * dilation``; the taps that
fall inside the input form one contiguous range ``[lo, hi)`` (the index grows with ``t``), which is
baked into the code (a constant when it is the same for every output, else a small table). The C
loops run over the planes (N x C), the output positions and the in-range taps only: no bounds test
in the inner loop, and constant trip counts the compiler unrolls (3x3 max pools of CNNs).

Semantics (the ONNX reference and onnxruntime agree on all of it):

* output sizes come from shape inference (``ceil_mode``, ``auto_pad``), pads from ``pads`` or
  ``auto_pad``; with ``ceil_mode`` the last window may reach past the end pad;
* MaxPool: the maximum of the in-range taps; ``Indices`` (int64) is the flat index of the first
  maximum in the whole input tensor, ``(n * C + c) * spatial_size + offset`` where ``offset`` is
  row-major (``storage_order=0``) or column-major (``storage_order=1``) in the spatial dims;
  every numeric element type;
* AveragePool (float, double): the sum of the in-range taps divided by their number
  (``count_include_pad=0``) or by the number of taps before the end of the *padded* input
  (``count_include_pad=1``: pads count, the extra area ``ceil_mode`` adds past the end pad does
  not); dilations (opset 19) apply to both;
* global pools are the same kernel with one window covering the flattened spatial dims.

LpPool is a typed kernel of :mod:`.kernels_typed`. int8 MaxPool (the integer C target) runs here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ...ir import Node, Value
from ...ir.dtypes import DType
from . import kernels as K
from .kernels import KernelContext, NodeCode, _prod, _strides, unsupported

__all__ = ["PoolGeometry", "axis_taps", "gen_global_pool", "gen_pool", "pool_body", "pool_geometry"]

_FLOATS = frozenset({DType.FLOAT, DType.DOUBLE})
_NUMERIC = _FLOATS | {DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.UINT8, DType.UINT16,
                      DType.UINT32, DType.UINT64}
#: The smallest value of each type: the start of a running maximum.
_LOWEST = {DType.FLOAT: "(-INFINITY)", DType.DOUBLE: "(-(double)INFINITY)", DType.INT8: "INT8_MIN",
           DType.INT16: "INT16_MIN", DType.INT32: "INT32_MIN", DType.INT64: "INT64_MIN", DType.UINT8: "0",
           DType.UINT16: "0", DType.UINT32: "0", DType.UINT64: "0"}


@dataclass
class PoolGeometry:
    """Static geometry of a pooling node; lists are per spatial axis."""

    planes: int
    x: List[int]
    y: List[int]
    kernel: List[int]
    strides: List[int]
    dilations: List[int]
    pad_begin: List[int]
    pad_end: List[int]


def pool_geometry(node: Node, k: KernelContext) -> PoolGeometry:
    """The geometry of a MaxPool / AveragePool node, or of a global pool as one window over the
    flattened spatial dims (the same sums and maxima, in the same order)."""
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    if len(x) < 2:
        raise unsupported(node, f"input rank {len(x)} (pooling needs N x C x spatial)")
    planes = x[0] * x[1]
    if node.op_type.startswith("Global"):
        vol = _prod(x[2:])
        return PoolGeometry(planes, [vol], [1], [vol], [1], [1], [0], [0])
    ns = len(x) - 2
    if ns < 1:
        raise unsupported(node, "pooling needs at least one spatial dim")
    ks = [int(v) for v in node.attr("kernel_shape")]
    st = [int(v) for v in (node.attr("strides", None) or [1] * ns)]
    dl = [int(v) for v in (node.attr("dilations", None) or [1] * ns)]
    if not len(ks) == len(st) == len(dl) == ns:
        raise unsupported(node, f"kernel_shape/strides/dilations do not match input rank {len(x)}")
    pb, pe = K._spatial(node, x, y, ks, st, dl)
    return PoolGeometry(planes, list(x[2:]), list(y[2:]), ks, st, dl, [int(p) for p in pb], [int(p) for p in pe])


def axis_taps(x: int, y: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int
              ) -> Tuple[List[int], List[int], List[int]]:
    """Per output index of one axis: first and end in-range tap (``[lo, hi)``) and the number of taps
    before the end of the padded input (the ``count_include_pad=1`` divisor on this axis)."""
    lo, hi, padded = [], [], []
    for o in range(y):
        idx = [o * stride - pad_begin + t * dilation for t in range(kernel)]
        inside = [t for t, i in enumerate(idx) if 0 <= i < x]
        lo.append(inside[0] if inside else 0)
        hi.append(inside[-1] + 1 if inside else 0)
        padded.append(sum(1 for i in idx if i < x + pad_end))
    return lo, hi, padded


def _check_types(node: Node, x: Value, allowed: frozenset) -> str:
    """The C type of the pool's element type (input and output must share it)."""
    from .kernels_typed import CT  # the C type names (imported late: that module registers generators)

    dt, yt = x.type.dtype, node.output(0).type.dtype  # type: ignore[union-attr]
    if dt not in allowed or yt != dt:
        raise unsupported(node, f"{node.op_type} on {dt.name if dt else 'untyped'} -> "
                                f"{yt.name if yt else 'untyped'} is not supported")
    return CT[dt]


#: At most this many copies of the window loop: axes are split into runs of outputs with the same
#: tap range (innermost axis first) while the product of their run counts stays within it; the
#: other axes read their tap ranges from tables.
MAX_COPIES = 27

#: One run of outputs ``[start, end)`` of an axis: C expressions of its first and end tap and of its
#: averaging divisor (literals for a run, table reads for an axis that is not split).
Run = Tuple[int, int, str, str, str]


def _runs(lo: Sequence[int], hi: Sequence[int], n: Sequence[int]) -> List[Run]:
    """Maximal runs of consecutive outputs with equal tap range and divisor."""
    out: List[Run] = []
    start = 0
    for o in range(1, len(lo) + 1):
        if o == len(lo) or (lo[o], hi[o], n[o]) != (lo[start], hi[start], n[start]):
            out.append((start, o, str(lo[start]), str(hi[start]), str(n[start])))
            start = o
    return out


def _table_run(axis: int, lo: Sequence[int], hi: Sequence[int], n: Sequence[int], decl: List[str]) -> Run:
    """The whole axis as one run whose tap range and divisor are table reads (literals when uniform)."""
    exprs = []
    for name, vals in (("lo", lo), ("hi", hi), ("n", n)):
        if len(set(vals)) == 1:
            exprs.append(str(vals[0]))
        else:
            decl.append(f"    static const long {name}{axis}[{len(vals)}] = {{{', '.join(map(str, vals))}}};\n")
            exprs.append(f"{name}{axis}[o{axis}]")
    return (0, len(lo), exprs[0], exprs[1], exprs[2])


def _axis_runs(g: PoolGeometry, include_pad: bool, decl: List[str]) -> Tuple[List[List[Run]], bool]:
    """Per axis its runs, and whether some window has no element to average."""
    runs: List[List[Run]] = [[] for _ in g.x]
    copies, empty = 1, False
    for a in reversed(range(len(g.x))):
        lo, hi, padded = axis_taps(g.x[a], g.y[a], g.kernel[a], g.strides[a], g.dilations[a], g.pad_begin[a],
                                   g.pad_end[a])
        n = padded if include_pad else [e - b for b, e in zip(lo, hi)]
        empty = empty or min(n) == 0
        split = _runs(lo, hi, n)
        if copies * len(split) <= MAX_COPIES:
            runs[a] = split
            copies *= len(split)
        else:
            runs[a] = [_table_run(a, lo, hi, n, decl)]
    return runs, empty


def pool_body(g: PoolGeometry, ct: str, is_max: bool, lowest: str, include_pad: bool,
              indices: str = "") -> str:
    """The C body of a pool: ``x0`` -> ``y0`` (and the Indices ``y1`` when ``indices`` is
    ``"row"`` or ``"col"``, the storage order of the spatial offset).

    Outputs are written in order (``yo``); each axis loops over its runs, so the taps of a run have
    constant bounds (the interior of a padded CNN pool is one run with the full kernel)."""
    ns = len(g.x)
    xs = _strides(g.x)
    cs = [_prod(g.x[:a]) for a in range(ns)]  # column-major strides (storage_order=1)
    decl: List[str] = []
    runs, empty = _axis_runs(g, include_pad, decl)
    vol = _prod(g.x)

    def offset(strides: Sequence[int]) -> str:
        terms = [f"o{a} * {g.strides[a] * strides[a]}" for a in range(ns)]
        base = sum(g.pad_begin[a] * strides[a] for a in range(ns))
        return " + ".join(terms) + (f" - {base}" if base else "")

    def tap(strides: Sequence[int]) -> str:
        return " + ".join(f"t{a} * {g.dilations[a] * strides[a]}" for a in range(ns))

    def window(ind: str, path: Sequence[Run]) -> List[str]:
        out = [f"{ind}const long b = pl * {vol} + {offset(xs)};\n"]
        if indices == "col":
            out.append(f"{ind}const long bc = pl * {vol} + {offset(cs)};\n")
        if is_max:
            out.append(f"{ind}{ct} m = {lowest};\n")
            if indices:
                out.append(f"{ind}int64_t mi = -1;\n")
        else:
            out.append(f"{ind}{ct} s = 0;\n")
        inner = ind
        for a, r in enumerate(path):
            out.append(f"{inner}for (long t{a} = {r[2]}; t{a} < {r[3]}; ++t{a})\n")
            inner += "    "
        read = f"x0[b + {tap(xs)}]"
        if not is_max:
            out.append(f"{inner}s += {read};\n")
            div = " * ".join(r[4] for r in path)
            if empty:  # a window entirely in the padding: no element to average
                out.append(f"{ind}const long n = {div};\n{ind}y0[yo] = n ? s / ({ct})n : 0;\n")
            else:
                out.append(f"{ind}y0[yo] = s / ({ct})({div});\n")
        elif indices:
            where = "b + " + tap(xs) if indices == "row" else "bc + " + tap(cs)
            # strict '>': the first maximum in scan order wins, as in onnxruntime
            out.append(f"{inner}if ({read} > m) {{ m = {read}; mi = {where}; }}\n")
            out.append(f"{ind}y0[yo] = m;\n{ind}y1[yo] = mi;\n")
        else:
            out.append(f"{inner}m = {read} > m ? {read} : m;\n")
            out.append(f"{ind}y0[yo] = m;\n")
        out.append(f"{ind}++yo;\n")
        return out

    def nest(a: int, ind: str, path: List[Run]) -> List[str]:
        if a == ns:
            return window(ind, path)
        out: List[str] = []
        for r in runs[a]:
            out.append(f"{ind}for (long o{a} = {r[0]}; o{a} < {r[1]}; ++o{a}) {{\n")
            out += nest(a + 1, ind + "    ", path + [r])
            out.append(f"{ind}}}\n")
        return out

    body = decl + ["    long yo = 0;\n", f"    for (long pl = 0; pl < {g.planes}; ++pl) {{\n"]
    body += nest(0, "        ", [])
    body.append("    }\n")
    return "".join(body)


def gen_pool(node: Node, k: KernelContext) -> NodeCode:
    """MaxPool (every numeric type, optional Indices) and AveragePool (float, double), N-D."""
    xv = node.input(0)
    is_max = node.op_type == "MaxPool"
    ct = _check_types(node, xv, _NUMERIC if is_max else _FLOATS)
    g = pool_geometry(node, k)
    indices = ""
    iv = node.output(1) if is_max and len(node.outputs) > 1 else None
    if iv is not None and iv.has_uses():
        if iv.type.dtype != DType.INT64:  # type: ignore[union-attr]
            raise unsupported(node, "Indices must be int64")
        indices = "col" if int(node.attr("storage_order", 0)) == 1 else "row"
    include_pad = bool(int(node.attr("count_include_pad", 0)))
    body = pool_body(g, ct, is_max, _LOWEST[xv.type.dtype], include_pad, indices)  # type: ignore[union-attr]
    return NodeCode([xv], body, typed=True)


def gen_global_pool(node: Node, k: KernelContext) -> NodeCode:
    """GlobalMaxPool (every numeric type) and GlobalAveragePool (float, double), any rank."""
    xv = node.input(0)
    is_max = node.op_type == "GlobalMaxPool"
    ct = _check_types(node, xv, _NUMERIC if is_max else _FLOATS)
    body = pool_body(pool_geometry(node, k), ct, is_max, _LOWEST[xv.type.dtype], False)  # type: ignore[union-attr]
    return NodeCode([xv], body, typed=True)


for _op in ("MaxPool", "AveragePool"):
    K.GENERATORS[("", _op)] = gen_pool
for _op in ("GlobalMaxPool", "GlobalAveragePool"):
    K.GENERATORS[("", _op)] = gen_global_pool
