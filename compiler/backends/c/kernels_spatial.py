"""C kernels of the spatial ops decoders need: ConvTranspose and Resize / Upsample.

* ``ConvTranspose`` and ``edgec.FusedConvTranspose`` (1-D, 2-D and 3-D): groups, strides, dilations,
  pads, output_padding, auto_pad, output_shape (the begin pads follow from the static output
  shape, as onnxruntime computes them), fused activation.
* ``Resize`` (opset 10-19) and ``Upsample`` (opset 7-9): any rank; ``nearest`` (every
  ``nearest_mode``), ``linear`` and ``cubic`` (``cubic_coeff_a``, ``exclude_outside``);
  coordinate modes half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners,
  asymmetric, tf_half_pixel_for_nn; ``axes`` and ``keep_aspect_ratio_policy`` (opset 18). The
  scales or sizes must be constants; the per-axis source indices and weights are computed at
  compile time (float32, the formulas onnxruntime uses) and baked into tables.
  tf_crop_and_resize (constant roi, extrapolation_value); ``antialias=1`` (opset 18: the linear /
  cubic kernel widened by 1/scale when downsampling, as the ONNX reference and onnxruntime do).
  align_corners uses the integer output length, as onnxruntime and PyTorch do. The ONNX reference
  uses the fractional ``input * scale`` when scales are given (intended, onnx/onnx#2462), so the node
  tests test_resize_downsample_scales_{linear,cubic}_align_corners (lengths 2.4 and 1.2) expect other
  values; following them would make the C code disagree with onnxruntime, which edgec verifies against.

(DepthToSpace / SpaceToDepth, which decoders also use, are typed copies in ``kernels_typed``.)
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ...ir import Node
from . import kernels as K
from .kernels import ACT_CODES, KernelContext, NodeCode, flit, unsupported

__all__ = ["gen_conv_transpose", "gen_resize"]

f32 = np.float32

K.HELPERS["conv_transpose"] = """\
/* Transposed convolution, NC[D]HW (1-D and 2-D use D = 1), W [C, M/G, KD, KH, KW]; groups, dilations,
   strides; pd, ph, pw: begin pads. Every input pixel scatters its kernel-sized patch into y; act is
   applied per output plane. */
static void edgec_conv_transpose3d(const float* restrict x, const float* restrict w, const float* restrict b,
                                   float* restrict y, long N, long C, long D, long H, long W, long M, long OD,
                                   long OH, long OW, long KD, long KH, long KW, long sd, long sh, long sw, long dd,
                                   long dh, long dw, long pd, long ph, long pw, long G, int act, float p0, float p1)
{
    const long cg = C / G, mg = M / G, vol = OD * OH * OW;
    for (long n = 0; n < N; ++n) {
        for (long m = 0; m < M; ++m) {
            float* restrict yp = y + (n * M + m) * vol;
            const float bias = b ? b[m] : 0.0f;
            for (long i = 0; i < vol; ++i) yp[i] = bias;
        }
        for (long g = 0; g < G; ++g) {
            for (long c = 0; c < cg; ++c) {
                const float* restrict xp = x + (n * C + g * cg + c) * D * H * W;
                for (long m = 0; m < mg; ++m) {
                    float* restrict yp = y + (n * M + g * mg + m) * vol;
                    const float* restrict wp = w + ((g * cg + c) * mg + m) * KD * KH * KW;
                    for (long kd = 0; kd < KD; ++kd) {
                        for (long id = 0; id < D; ++id) {
                            const long od = id * sd - pd + kd * dd;
                            if (od < 0 || od >= OD) continue;
                            for (long kh = 0; kh < KH; ++kh) {
                                for (long ih = 0; ih < H; ++ih) {
                                    const long oh = ih * sh - ph + kh * dh;
                                    if (oh < 0 || oh >= OH) continue;
                                    const float* restrict xr = xp + (id * H + ih) * W;
                                    float* restrict yr = yp + (od * OH + oh) * OW;
                                    for (long kw = 0; kw < KW; ++kw) {
                                        const float wv = wp[(kd * KH + kh) * KW + kw];
                                        const long off = kw * dw - pw; /* ow = iw * sw + off */
                                        const long iw0 = off >= 0 ? 0 : (-off + sw - 1) / sw;
                                        long iw1 = OW - off <= 0 ? 0 : (OW - off + sw - 1) / sw;
                                        if (iw1 > W) iw1 = W;
                                        for (long iw = iw0; iw < iw1; ++iw) yr[iw * sw + off] += wv * xr[iw];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (long m = 0; m < M; ++m) edgec_act(y + (n * M + m) * vol, vol, act, p0, p1);
    }
}
"""
K.HELPER_DEPS["conv_transpose"] = ("act",)


def _attr_s(node: Node, name: str, default: str) -> str:
    v = node.attr(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _strides(dims: Sequence[int]) -> List[int]:
    out = [1] * len(dims)
    for i in range(len(dims) - 2, -1, -1):
        out[i] = out[i + 1] * int(dims[i + 1])
    return out


# --- ConvTranspose ------------------------------------------------------------------------------

def gen_conv_transpose(node: Node, k: KernelContext) -> NodeCode:
    x, w, y = k.dims(node.input(0)), k.dims(node.input(1)), k.dims(node.output(0))
    if len(x) not in (3, 4, 5):
        raise unsupported(node, f"only 1-D, 2-D and 3-D ConvTranspose (input rank {len(x)})")
    ns = len(x) - 2
    g = int(node.attr("group", 1))
    ks = list(node.attr("kernel_shape", list(w[2:])))
    st = list(node.attr("strides", [1] * ns))
    dl = list(node.attr("dilations", [1] * ns))
    op = list(node.attr("output_padding", [0] * ns))
    if list(w[2:]) != ks or x[1] != w[0] or y[1] != w[1] * g:
        raise unsupported(node, f"weight shape {w} does not match input {x}, output {y} and group {g}")
    auto = _attr_s(node, "auto_pad", "NOTSET")
    explicit = node.attr("output_shape", None) is not None or auto in ("SAME_UPPER", "SAME_LOWER")
    begin: List[int] = []
    for i in range(ns):
        full = st[i] * (x[2 + i] - 1) + op[i] + (ks[i] - 1) * dl[i] + 1
        if explicit:  # pads follow from the requested output size
            total = max(0, full - y[2 + i])
            begin.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        else:
            pads = list(node.attr("pads", [0] * (2 * ns)))
            begin.append(int(pads[i]))
            if full - pads[i] - pads[ns + i] != y[2 + i]:
                raise unsupported(node, f"output size {y[2 + i]} on axis {2 + i} does not match the attributes")
    pad = 3 - ns  # 1-D and 2-D run as 3-D with leading unit spatial dims
    xs, ys = [1] * pad + list(x[2:]), [1] * pad + list(y[2:])
    ks, st, dl, begin = [1] * pad + ks, [1] * pad + st, [1] * pad + dl, [0] * pad + begin
    act, p0, p1 = K._activation(node)
    ops = [node.input(0), node.input(1)] + ([node.input(2)] if len(node.inputs) > 2 and node.input(2) is not None
                                            else [])
    bias = "x2" if len(ops) == 3 else "NULL"
    args = [x[0], x[1], *xs, y[1], *ys, *ks, *st, *dl, *begin, g]
    body = (f"    edgec_conv_transpose3d(x0, x1, {bias}, y0, {', '.join(map(str, args))}, "
            f"{ACT_CODES[act]}, {flit(p0)}, {flit(p1)});\n")
    macs = int(np.prod(x)) * (y[1] // g) * int(np.prod(ks))
    return NodeCode(ops, body, ["conv_transpose"], [act], macs=macs)


# --- Resize / Upsample --------------------------------------------------------------------------

def _round_half_away(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _nearest(xo: np.float32, mode: str, downsample: bool) -> int:
    v = float(xo)
    if mode == "simple":  # Resize-10 / Upsample
        return int(math.ceil(v)) if downsample else int(v)
    if mode == "round_prefer_ceil":
        return _round_half_away(v)
    if mode == "floor":
        return int(math.floor(v))
    if mode == "ceil":
        return int(math.ceil(v))
    if xo == f32(int(v)) + f32(0.5):  # round_prefer_floor: halfway goes down
        return int(math.floor(v))
    return _round_half_away(v)


def _original(o: int, scale: np.float32, out_len: int, in_len: int, mode: str,
              roi: Tuple[float, float] = (0.0, 1.0)) -> np.float32:
    """Source coordinate of output index ``o`` (float32 arithmetic)."""
    xr, half = f32(o), f32(0.5)
    if mode == "tf_crop_and_resize":
        r0, r1 = f32(roi[0]), f32(roi[1])
        if out_len > 1:
            return f32(r0 * f32(in_len - 1) + (xr * (r1 - r0) * f32(in_len - 1)) / f32(out_len - 1))
        return f32(0.5 * (float(r0) + float(r1)) * (in_len - 1))
    if mode == "asymmetric":
        return f32(xr / scale)
    if mode == "pytorch_half_pixel":
        return f32((xr + half) / scale - half) if out_len > 1 else f32(0.0)
    if mode == "tf_half_pixel_for_nn":
        return f32((xr + half) / scale)
    if mode == "align_corners":
        return f32(0.0) if out_len == 1 else f32(xr * f32(in_len - 1) / f32(out_len - 1))
    if mode == "half_pixel_symmetric":
        adj = f32(f32(out_len) / f32(scale * f32(in_len)))
        center = f32(f32(in_len) / f32(2))
        offset = f32(center * (f32(1) - adj))
        return f32(offset + (xr + half) / scale - half)
    return f32((xr + half) / scale - half)  # half_pixel


def _cubic_coeffs(s: np.float32, a: np.float32) -> List[np.float32]:
    one, two = f32(1), f32(2)
    s1, s2, s3 = f32(s + one), f32(one - s), f32(two - s)
    return [f32(((a * s1 - f32(5) * a) * s1 + f32(8) * a) * s1 - f32(4) * a),
            f32(((a + two) * s - (a + f32(3))) * s * s + one),
            f32(((a + two) * s2 - (a + f32(3))) * s2 * s2 + one),
            f32(((a * s3 - f32(5) * a) * s3 + f32(8) * a) * s3 - f32(4) * a)]


def _antialias_taps(xo: np.float32, scale: float, in_len: int, mode: str, a: float, exclude_outside: bool
                    ) -> Tuple[List[int], List[float]]:
    """Downsampling with ``antialias=1``: the linear / cubic kernel stretched by 1/scale, normalized
    (the ONNX reference's definition; the pixel on the left is preferred at integer coordinates)."""
    x = float(xo)
    base = math.floor(x) if x != math.floor(x) else int(x) - 1
    ratio = x - base  # in (0, 1]
    if mode == "linear":
        start = int(math.floor(-1.0 / scale) + 1)
        offs = list(range(start, 2 - start))
        coeffs = [min(max(1.0 - abs((i - ratio) * scale), 0.0), 1.0) for i in offs]
    else:
        def cubic(v: float) -> float:
            v = abs(v)
            if v <= 1:
                return (a + 2) * v ** 3 - (a + 3) * v * v + 1
            if v < 2:
                return a * v ** 3 - 5 * a * v * v + 8 * a * v - 4 * a
            return 0.0

        start = int(math.floor(-2.0 / scale) + 1)
        offs = list(range(start, 2 - start))
        coeffs = [cubic(scale * (i - ratio)) for i in offs]
    tot = sum(coeffs)
    coeffs = [c / tot for c in coeffs]
    idx = [base + i for i in offs]
    if exclude_outside:
        coeffs = [c if 0 <= i < in_len else 0.0 for c, i in zip(coeffs, idx)]
        tot = sum(coeffs)
        coeffs = [c / tot if tot else c for c in coeffs]
    return [min(max(i, 0), in_len - 1) for i in idx], coeffs


def _axis_table(node: Node, mode: str, coord: str, nearest_mode: str, scale: np.float32, in_len: int, out_len: int,
                cubic_a: np.float32, exclude_outside: bool, roi: Tuple[float, float], antialias: bool = False
                ) -> Optional[Tuple[List[List[int]], List[List[float]], List[bool]]]:
    """Per output index: source indices, weights and whether it lies outside the input
    (tf_crop_and_resize: it takes the extrapolation value) along one axis; None for the identity."""
    if scale == f32(1) and in_len == out_len and coord != "tf_crop_and_resize":
        return None
    idx: List[List[int]] = []
    wts: List[List[float]] = []
    ext: List[bool] = []
    for o in range(out_len):
        xo = _original(o, scale, out_len, in_len, coord, roi)
        ext.append(coord == "tf_crop_and_resize" and bool(xo < f32(0) or xo > f32(in_len - 1)))
        if antialias and mode != "nearest" and scale < f32(1):
            ii, ww = _antialias_taps(xo, float(scale), in_len, mode, float(cubic_a), exclude_outside)
            idx.append(ii)
            wts.append(ww)
        elif mode == "nearest":
            i = min(max(_nearest(xo, nearest_mode, bool(scale < f32(1))), 0), in_len - 1)
            idx.append([i])
            wts.append([1.0])
        elif mode == "linear":
            xc = f32(max(f32(0), min(xo, f32(in_len - 1))))
            i1 = min(int(xc), in_len - 1)
            i2 = min(i1 + 1, in_len - 1)
            d1, d2 = f32(abs(xc - f32(i1))), f32(abs(xc - f32(i2)))
            if i1 == i2:
                d1 = d2 = f32(0.5)
            idx.append([i1, i2])
            wts.append([float(d2), float(d1)])
        else:  # cubic
            base = int(math.floor(float(xo)))
            cs = _cubic_coeffs(f32(xo - f32(base)), cubic_a)
            taps = [base - 1 + t for t in range(4)]
            if exclude_outside:
                cs = [c if 0 <= i < in_len else f32(0) for c, i in zip(cs, taps)]
                tot = f32(sum(cs, f32(0)))
                cs = [f32(c / tot) if tot != 0 else c for c in cs]
            idx.append([min(max(i, 0), in_len - 1) for i in taps])
            wts.append([float(c) for c in cs])
    return idx, wts, ext


def _resize_params(node: Node, k: KernelContext, x: Sequence[int]
                   ) -> Tuple[List[np.float32], str, str, str, List[Tuple[float, float]]]:
    """Per-axis scales (float32), mode, coordinate mode, nearest mode, per-axis roi (start, end)."""
    r = len(x)
    mode = _attr_s(node, "mode", "nearest")
    if node.op_type == "Upsample" or k.opset <= 10:
        if node.op_type == "Upsample" and k.opset < 9:
            sc = [f32(v) for v in node.attr("scales")]
        else:
            sc = [f32(v) for v in k.need_const(node, 1, "scales").reshape(-1)]
        if len(sc) != r:
            raise unsupported(node, f"{len(sc)} scales for rank {r}")
        return sc, mode, "asymmetric", "simple", [(0.0, 1.0)] * r
    coord = _attr_s(node, "coordinate_transformation_mode", "half_pixel")
    nearest_mode = _attr_s(node, "nearest_mode", "round_prefer_floor")
    if coord not in ("tf_crop_and_resize", "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                     "align_corners", "asymmetric", "tf_half_pixel_for_nn"):
        raise unsupported(node, f"coordinate_transformation_mode '{coord}'")
    axes = [int(a) + r if int(a) < 0 else int(a) for a in (node.attr("axes", None) or range(r))]
    scales_in = node.input(2) if len(node.inputs) > 2 else None
    sizes_in = node.input(3) if len(node.inputs) > 3 else None
    sc = [f32(1)] * r
    roi = [(0.0, 1.0)] * r
    if coord == "tf_crop_and_resize":
        vals = [float(v) for v in k.need_const(node, 1, "roi").reshape(-1)]
        if len(vals) != 2 * len(axes):
            raise unsupported(node, f"roi has {len(vals)} values for {len(axes)} axes")
        for j, a in enumerate(axes):
            roi[a] = (vals[j], vals[len(axes) + j])
    scales = k.const(scales_in) if scales_in is not None else None
    if scales is not None and scales.size > 0:
        vals = [f32(v) for v in scales.reshape(-1)]
        if len(vals) != len(axes):
            raise unsupported(node, f"{len(vals)} scales for {len(axes)} axes")
        for a, v in zip(axes, vals):
            sc[a] = v
    elif sizes_in is not None:
        sizes = k.need_const(node, 3, "sizes").reshape(-1)
        if len(sizes) != len(axes):
            raise unsupported(node, f"{len(sizes)} sizes for {len(axes)} axes")
        policy = _attr_s(node, "keep_aspect_ratio_policy", "stretch")
        ratios = [f32(f32(int(s)) / f32(x[a])) for a, s in zip(axes, sizes)]
        if policy == "not_larger":
            ratios = [min(ratios)] * len(axes)
        elif policy == "not_smaller":
            ratios = [max(ratios)] * len(axes)
        elif policy != "stretch":
            raise unsupported(node, f"keep_aspect_ratio_policy '{policy}'")
        for a, v in zip(axes, ratios):
            sc[a] = v
    else:
        raise unsupported(node, "scales or sizes must be a constant")
    return sc, mode, coord, nearest_mode, roi


def gen_resize(node: Node, k: KernelContext) -> NodeCode:
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    r = len(x)
    sc, mode, coord, nearest_mode, roi = _resize_params(node, k, x)
    if mode not in ("nearest", "linear", "cubic"):
        raise unsupported(node, f"mode '{mode}'")
    if nearest_mode not in ("simple", "round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        raise unsupported(node, f"nearest_mode '{nearest_mode}'")
    if any(s <= 0 for s in sc):
        raise unsupported(node, f"scales {[float(s) for s in sc]} must be positive")
    a = f32(node.attr("cubic_coeff_a", -0.75))
    antialias = bool(int(node.attr("antialias", 0))) and node.op_type == "Resize" and k.opset >= 18
    excl = bool(int(node.attr("exclude_outside", 0)))
    xs = _strides(x)
    decl, tables, ext_axes = "", [], []
    for ax in range(r):
        t = _axis_table(node, mode, coord, nearest_mode, sc[ax], x[ax], y[ax], a, excl, roi[ax], antialias)
        tables.append(t)
        if t is None:
            continue
        idx, wts, ext = t
        if any(ext):
            ext_axes.append(ax)
            decl += f"    static const unsigned char e{ax}[{len(ext)}] = {{{', '.join(str(int(e)) for e in ext)}}};\n"
        flat_i = [i * xs[ax] for row in idx for i in row]
        decl += f"    static const long i{ax}[{len(flat_i)}] = {{{', '.join(map(str, flat_i))}}};\n"
        if mode != "nearest":
            wl = ", ".join(flit(v) for row in wts for v in row)
            decl += f"    static const float w{ax}[{len(flat_i)}] = {{{wl}}};\n"
    taps = 1 if mode == "nearest" else 0  # 0: interpolating, per-axis tap counts below
    ntap = {ax: len(t[0][0]) for ax, t in enumerate(tables) if t is not None}
    body = decl + "    long yo = 0;\n"
    ind = "    "
    for ax in range(r):
        body += f"{ind}for (long o{ax} = 0; o{ax} < {y[ax]}; ++o{ax}) {{\n"
        ind += "    "
        prev = f"p{ax - 1}" if ax else "0"
        term = f"o{ax} * {xs[ax]}" if tables[ax] is None else (f"i{ax}[o{ax}]" if taps == 1 else "0")
        body += f"{ind}const long p{ax} = {prev} + {term};\n"
    if ext_axes:
        extrap = flit(float(node.attr("extrapolation_value", 0.0)))
        cond = " | ".join(f"e{ax}[o{ax}]" for ax in ext_axes)
        body += f"{ind}if ({cond}) {{\n{ind}    y0[yo++] = {extrap};\n{ind}    continue;\n{ind}}}\n"
    if taps == 1:
        body += f"{ind}y0[yo++] = x0[p{r - 1}];\n"
    else:
        interp = [ax for ax in range(r) if tables[ax] is not None]
        body += f"{ind}float acc = 0.0f;\n"
        inner = ind
        for ax in interp:
            body += f"{inner}for (long t{ax} = 0; t{ax} < {ntap[ax]}; ++t{ax})\n"
            inner += "    "
        w = " * ".join(f"w{ax}[o{ax} * {ntap[ax]} + t{ax}]" for ax in interp) or "1.0f"
        off = " + ".join([f"p{r - 1}"] + [f"i{ax}[o{ax} * {ntap[ax]} + t{ax}]" for ax in interp])
        body += f"{inner}acc += {w} * x0[{off}];\n{ind}y0[yo++] = acc;\n"
    for ax in range(r):
        ind = ind[:-4]
        body += f"{ind}}}\n"
    return NodeCode([node.input(0)], body, macs=int(np.prod(y)) * int(np.prod(list(ntap.values()) or [1])))


K.GENERATORS[("", "ConvTranspose")] = gen_conv_transpose
K.GENERATORS[("edgec", "FusedConvTranspose")] = gen_conv_transpose
K.GENERATORS[("", "Resize")] = gen_resize
K.GENERATORS[("", "Upsample")] = gen_resize
