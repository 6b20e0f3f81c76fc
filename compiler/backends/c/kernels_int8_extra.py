"""int8 C kernels of Softmax and of average pools with their own output parameters (the int8 C target).

Both follow :mod:`edgec.quant.fixedpoint` bit for bit (no float arithmetic):

* ``edgec.QSoftmax``: the TFLite reference int8 softmax (gemmlowp fixed point: ``exp_on_negative_values``,
  ``GetReciprocal``), over ``[outer, depth, inner]``; output scale 1/256, zero point -128.
* ``edgec.QAvgPoolRq``: ``acc = sum(x - x_zp)`` over the counted window elements, then
  ``clamp(MBQM(acc, M[n], shift[n]) + y_zp, qmin, qmax)`` with ``M[n] = S_x / (S_y * n)``.

They run on the CPU (static functions in ``<name>.c``); the accelerator HAL has no entry for them.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from ...ir import Node
from ...ir.dtypes import DType
from . import kernels as K
from .kernels import KernelContext, NodeCode, unsupported

__all__ = ["gen_qsoftmax", "gen_qavgpool_rq"]

EDGEC = "edgec"

_SOFTMAX = """\
/* gemmlowp SaturatingRoundingMultiplyByPOT<e>, e > 0: a left shift saturated to int32. */
static inline int32_t edgec_q_sat_shl(int32_t x, int e)
{
    return edgec_q_sat32((int64_t)x * ((int64_t)1 << e));
}
/* exp(a) for a in [-1/4, 0) (Q0.31 in and out): Taylor expansion around -1/8. */
static inline int32_t edgec_q_exp_interval(int32_t a)
{
    const int32_t x = a + (1 << 28);
    const int32_t x2 = edgec_q_srdhm(x, x), x3 = edgec_q_srdhm(x2, x), x4 = edgec_q_srdhm(x2, x2);
    const int32_t p = edgec_q_rdbpot(edgec_q_srdhm(edgec_q_rdbpot(x4, 2) + x3, 715827883) + x2, 1);
    return 1895147668 + edgec_q_srdhm(1895147668, x + p);
}
/* gemmlowp exp_on_negative_values: a <= 0 in Q5.26, exp(a) in Q0.31. */
static inline int32_t edgec_q_exp_neg(int32_t a)
{
    static const int32_t mul[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t t = (a & ((1 << 24) - 1)) - (1 << 24);
    const int32_t rem = t - a;
    int32_t r = edgec_q_exp_interval(edgec_q_sat_shl(t, 5));
    for (int k = 0; k < 7; ++k)
        if (rem & ((int32_t)1 << (24 + k))) r = edgec_q_srdhm(r, mul[k]);
    return a == 0 ? INT32_MAX : r;
}
/* gemmlowp one_over_one_plus_x_for_x_in_0_1 (Q0.31): Newton-Raphson in Q2.29. */
static inline int32_t edgec_q_recip_1px(int32_t a)
{
    const int64_t s = (int64_t)a + INT32_MAX;
    const int32_t hd = (int32_t)((s + (s >= 0 ? 1 : -1)) / 2);
    int32_t x = 1515870810 + edgec_q_srdhm(hd, -1010580540);
    for (int i = 0; i < 3; ++i) {
        const int32_t om = (1 << 29) - edgec_q_srdhm(hd, x);
        x = x + edgec_q_sat_shl(edgec_q_srdhm(x, om), 2);
    }
    return edgec_q_sat_shl(x, 1);
}
typedef struct {
    int32_t outer, depth, inner, mult, left_shift, diff_min, qmin, qmax, single;
} edgec_q_softmax_params;
/* TFLite int8 softmax over the middle axis of [outer, depth, inner] (output scale 1/256, zero point -128). */
static void edgec_q_softmax_s8(const edgec_q_softmax_params* p, const int8_t* x, int8_t* y)
{
    const long D = p->depth, I = p->inner;
    for (long o = 0; o < p->outer; ++o) {
        for (long i = 0; i < I; ++i) {
            const int8_t* xr = x + o * D * I + i;
            int8_t* yr = y + o * D * I + i;
            int32_t mx = INT8_MIN;
            for (long c = 0; c < D; ++c) mx = xr[c * I] > mx ? xr[c * I] : mx;
            int32_t sum = 0; /* Q12.19; depth <= 4095 */
            for (long c = 0; c < D; ++c) {
                const int32_t d = xr[c * I] - mx;
                if (d >= p->diff_min)
                    sum += edgec_q_rdbpot(edgec_q_exp_neg(edgec_q_mbqm(d, p->mult, p->left_shift, p->single)), 12);
            }
            int h = 0; /* leading zeros of sum > 0 */
            while (!(((uint32_t)sum << h) & 0x80000000u)) ++h;
            const int32_t recip = edgec_q_recip_1px((int32_t)(((uint32_t)sum << h) - 0x80000000u));
            const int e = 12 - h + 23;
            for (long c = 0; c < D; ++c) {
                const int32_t d = xr[c * I] - mx;
                int32_t v = INT8_MIN;
                if (d >= p->diff_min) {
                    const int32_t ex = edgec_q_exp_neg(edgec_q_mbqm(d, p->mult, p->left_shift, p->single));
                    const int32_t u = e > 31 ? 0 : edgec_q_rdbpot(edgec_q_srdhm(recip, ex), e);
                    v = u + INT8_MIN;
                    v = v > INT8_MAX ? INT8_MAX : v;
                }
                yr[c * I] = edgec_q_clamp8(v, p->qmin, p->qmax);
            }
        }
    }
}
"""

_AVGPOOL_RQ = """\
typedef struct {
    int32_t nc, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, include_pad, x_zp, y_zp, qmin, qmax, single, count_min;
} edgec_q_avgpool_rq_params;
/* Average pool with its own output parameters: acc = sum(x - x_zp) over the n counted elements,
   y = clamp(MBQM(acc, mult[n - count_min], shift[n - count_min]) + y_zp, qmin, qmax). */
static void edgec_q_avgpool_rq_s8(const edgec_q_avgpool_rq_params* p, const int32_t* mult, const int32_t* shift,
                                  const int8_t* x, int8_t* y)
{
    const long H = p->h, W = p->w, OH = p->oh, OW = p->ow;
    if (OH == 1 && OW == 1 && p->kh == H && p->kw == W && p->ph == 0 && p->pw == 0) { /* global: no window */
        const int32_t cnt = (int32_t)(H * W) < p->count_min ? p->count_min : (int32_t)(H * W);
        const long k = cnt - p->count_min;
        for (long q = 0; q < p->nc; ++q) {
            const int8_t* xp = x + q * H * W;
            int32_t s = 0;
            for (long i = 0; i < H * W; ++i) s += xp[i];
            s -= (int32_t)(H * W) * p->x_zp;
            y[q] = edgec_q_clamp8(edgec_q_mbqm(s, mult[k], shift[k], p->single) + p->y_zp, p->qmin, p->qmax);
        }
        return;
    }
    for (long q = 0; q < p->nc; ++q) {
        const int8_t* xp = x + q * H * W;
        for (long oh = 0; oh < OH; ++oh) {
            for (long ow = 0; ow < OW; ++ow) {
                int32_t s = 0, cnt = 0;
                for (long kh = 0; kh < p->kh; ++kh) {
                    const long ih = oh * p->sh - p->ph + kh * p->dh;
                    for (long kw = 0; kw < p->kw; ++kw) {
                        const long iw = ow * p->sw - p->pw + kw * p->dw;
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                            s += xp[ih * W + iw] - p->x_zp;
                            ++cnt;
                        } else if (p->include_pad) {
                            ++cnt; /* a counted pad holds x_zp: adds 0 */
                        }
                    }
                }
                if (cnt < p->count_min) cnt = p->count_min;
                const long k = cnt - p->count_min;
                y[(q * OH + oh) * OW + ow] = edgec_q_clamp8(edgec_q_mbqm(s, mult[k], shift[k], p->single) + p->y_zp,
                                                            p->qmin, p->qmax);
            }
        }
    }
}
"""

K.HELPERS["q_softmax"] = _SOFTMAX
K.HELPER_DEPS["q_softmax"] = ("q_common",)
K.HELPERS["q_avgpool_rq"] = _AVGPOOL_RQ
K.HELPER_DEPS["q_avgpool_rq"] = ("q_common",)


def _rq(node: Node) -> Dict[str, int]:
    rounding = node.attr("rounding", "double")
    rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
    if rounding not in ("double", "single"):
        raise unsupported(node, f"rounding '{rounding}'")
    return {"qmin": int(node.attr("qmin", -128)), "qmax": int(node.attr("qmax", 127)),
            "single": int(rounding == "single")}


def _check(node: Node) -> None:
    for v in (node.input(0), node.output(0)):
        if v is None or v.dtype != DType.INT8:
            raise unsupported(node, f"'{getattr(v, 'name', '?')}' must be int8")


def _init(fields: Dict[str, int]) -> str:
    return "{" + ", ".join(f".{k} = {int(v)}" for k, v in fields.items()) + "}"


def _done(node: Node, body: str, helper: str) -> NodeCode:
    code = NodeCode([node.input(0)], body, [helper], typed=True)
    code.report = {"placement": "cpu", "source_op": node.attr("source_op", node.op_type),  # type: ignore[attr-defined]
                   "fused": list(node.attr("fused", []) or []), "placement_note": "no accelerator HAL entry"}
    return code


def gen_qsoftmax(node: Node, k: KernelContext) -> NodeCode:
    _check(node)
    outer, depth, inner = (int(node.attr(a)) for a in ("outer", "depth", "inner"))
    if outer * depth * inner != int(np.prod(k.dims(node.input(0)))):
        raise unsupported(node, "layout does not match the input shape")
    fields = {"outer": outer, "depth": depth, "inner": inner, "mult": int(node.attr("input_multiplier")),
              "left_shift": int(node.attr("input_left_shift")), "diff_min": int(node.attr("diff_min")), **_rq(node)}
    body = (f"    static const edgec_q_softmax_params p = {_init(fields)};\n"
            "    edgec_q_softmax_s8(&p, x0, y0);\n")
    return _done(node, body, "q_softmax")


def gen_qavgpool_rq(node: Node, k: KernelContext) -> NodeCode:
    _check(node)
    x, y = k.dims(node.input(0)), k.dims(node.output(0))
    if len(x) not in (3, 4):
        raise unsupported(node, f"only 1-D and 2-D pooling (input rank {len(x)})")
    if int(node.attr("global", 0)):
        hw = (x[2], x[3]) if len(x) == 4 else (1, x[2])
        ks, st, dl, pb, inc = list(hw), [1, 1], [1, 1], [0, 0], 0
    else:
        _, _, ks, st, dl, pb = K.window_2d(node, x, y, node.attr("kernel_shape"))
        inc = int(node.attr("count_include_pad", 0))
    if len(x) == 3:
        x, y = (x[0], x[1], 1, x[2]), (y[0], y[1], 1, y[2])
    mult = [int(v) for v in node.attr("multipliers")]
    shift = [int(v) for v in node.attr("shifts")]
    fields = {"nc": x[0] * x[1], "h": x[2], "w": x[3], "oh": y[2], "ow": y[3], "kh": ks[0], "kw": ks[1], "sh": st[0],
              "sw": st[1], "dh": dl[0], "dw": dl[1], "ph": pb[0], "pw": pb[1], "include_pad": inc,
              "x_zp": int(node.attr("x_zero_point", 0)), "y_zp": int(node.attr("y_zero_point", 0)), **_rq(node),
              "count_min": int(node.attr("count_min", 1))}
    body = (f"    static const edgec_q_avgpool_rq_params p = {_init(fields)};\n"
            f"    static const int32_t mult[{len(mult)}] = {{{', '.join(str(v) for v in mult)}}};\n"
            f"    static const int32_t shift[{len(shift)}] = {{{', '.join(str(v) for v in shift)}}};\n"
            "    edgec_q_avgpool_rq_s8(&p, mult, shift, x0, y0);\n")
    return _done(node, body, "q_avgpool_rq")


K.GENERATORS[(EDGEC, "QSoftmax")] = gen_qsoftmax
K.GENERATORS[(EDGEC, "QAvgPoolRq")] = gen_qavgpool_rq
