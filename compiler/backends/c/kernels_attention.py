"""C kernel of ``edgec.Attention`` (multi-head scaled dot-product attention, heads merged).

Semantics in :mod:`edgec.ir.edgec_ops`: Q [B, Sq, H*Dq], K [B, Sk, H*Dq], V [B, Sk, H*Dv], optional
additive Mask broadcastable (numpy rules, rank <= 4) to [B, H, Sq, Sk]; Y [B, Sq, H*Dv] with
``Y_h = softmax(scale * Q_h K_h^T + Mask) V_h``.

Per (batch, head), both products run on the packed register-blocked GEMM of the ``gemm_core`` helper:
K_h^T is packed into NR-column panels in the node's scratch, Q_h is read in place (row stride H*Dq),
and the scores of a block of query rows go to scratch; each score row gets the mask (read through
broadcast strides, so a [B, 1, 1, Sk] padding mask costs no copy) and the softmax row loops of the
``softmax`` helper (vectorized max / exp / sum); then P V_h lands in Y in place, V_h read in place when
Dv is a multiple of NR, else packed into scratch too.

(``edgec.FusedConvTranspose`` is generated with ``ConvTranspose`` in :mod:`.kernels_spatial`.)
"""

from __future__ import annotations

from typing import List

from ...ir import Node
from . import kernels as K
from .kernels import KernelContext, NodeCode, flit, unsupported

__all__ = ["gen_attention"]


def _bcast4(node: Node, dims: tuple, full: List[int]) -> List[int]:
    """Strides that read ``dims`` broadcast to the 4-D ``full`` (0 on broadcast axes)."""
    if len(dims) > 4:
        raise unsupported(node, f"mask rank {len(dims)} > 4")
    d4 = [1] * (4 - len(dims)) + [int(d) for d in dims]
    st = [0] * 4
    acc = 1
    for i in range(3, -1, -1):
        if d4[i] != 1:
            if d4[i] != full[i]:
                raise unsupported(node, f"mask shape {tuple(dims)} does not broadcast to {tuple(full)}")
            st[i] = acc
        acc *= d4[i]
    return st


#: Floats of the score block (query rows x Sk) kept in scratch: the GEMM writes it, the softmax and the
#: P V GEMM read it back while it is in L1/L2.
SCORE_BLOCK_FLOATS = 8192

HELPER = """\
/* edgec.Attention: Y[b, i, h*Dv + :] = softmax(scale * Q_h K_h^T + mask) V_h (see kernels_attention.py).
   scratch: K_h^T panels (Dq x Sk rounded up to NR), V_h panels (Sk x Dv rounded up, only when Dv is not a
   multiple of NR; otherwise V_h is read in place), rb x Sk scores. mask(b, h, i, j) = mask[b*mb + h*mh +
   i*mi + j*mj] (NULL: none). */
static void edgec_attention(const float* q, const float* kx, const float* v, const float* mask, float* y,
                            float* restrict scratch, long B, long H, long Sq, long Sk, long Dq, long Dv,
                            float scale, long mb, long mh, long mi, long mj, long rb)
{
    const long skp = (Sk + EDGEC_NR - 1) / EDGEC_NR * EDGEC_NR, dvp = (Dv + EDGEC_NR - 1) / EDGEC_NR * EDGEC_NR;
    const int v_direct = Dv % EDGEC_NR == 0;
    float* restrict kp = scratch;
    float* restrict vp = kp + Dq * skp;
    float* restrict sc = vp + (v_direct ? 0 : Sk * dvp);
    /* column blocks of the two GEMMs: a packed B block of about 32K floats stays in cache */
    long nc1 = (32768 / (Dq > 0 ? Dq : 1)) / EDGEC_NR * EDGEC_NR;
    long nc2 = (32768 / (Sk > 0 ? Sk : 1)) / EDGEC_NR * EDGEC_NR;
    nc1 = nc1 < EDGEC_NR ? EDGEC_NR : nc1 > skp ? skp : nc1;
    nc2 = nc2 < EDGEC_NR ? EDGEC_NR : nc2 > dvp ? dvp : nc2;
    const long qs = H * Dq, vs = H * Dv;
    for (long b = 0; b < B; ++b) {
        for (long h = 0; h < H; ++h) {
            const float* kb = kx + b * Sk * qs + h * Dq;
            for (long j = 0; j < skp; ++j) { /* K_h^T: element (d, j) at kp[(j/NR)*Dq*NR + d*NR + j%NR] */
                float* restrict d = kp + (j / EDGEC_NR) * Dq * EDGEC_NR + j % EDGEC_NR;
                if (j < Sk) {
                    const float* restrict s = kb + j * qs;
                    for (long t = 0; t < Dq; ++t) d[t * EDGEC_NR] = s[t];
                } else {
                    for (long t = 0; t < Dq; ++t) d[t * EDGEC_NR] = 0.0f;
                }
            }
            const float* vb = v + b * Sk * vs + h * Dv;
            if (!v_direct) {
                for (long c0 = 0; c0 < Dv; c0 += EDGEC_NR) {
                    const long w = Dv - c0 < EDGEC_NR ? Dv - c0 : EDGEC_NR;
                    float* restrict d = vp + (c0 / EDGEC_NR) * Sk * EDGEC_NR;
                    for (long j = 0; j < Sk; ++j) {
                        const float* restrict s = vb + j * vs + c0;
                        for (long t = 0; t < w; ++t) d[j * EDGEC_NR + t] = s[t];
                        for (long t = w; t < EDGEC_NR; ++t) d[j * EDGEC_NR + t] = 0.0f;
                    }
                }
            }
            for (long i0 = 0; i0 < Sq; i0 += rb) {
                const long m = Sq - i0 < rb ? Sq - i0 : rb;
                edgec_gemm_packed(m, Sk, Dq, q + (b * Sq + i0) * qs + h * Dq, qs, 1, 0, kp, 0, sc, Sk, scale, 0.0f,
                                  NULL, 0, 0, nc1, 0, 0.0f, 0.0f);
                for (long r = 0; r < m; ++r) {
                    float* restrict row = sc + r * Sk;
                    if (mask) {
                        const float* restrict mr = mask + b * mb + h * mh + (i0 + r) * mi;
                        if (mj == 1) {
                            for (long j = 0; j < Sk; ++j) row[j] += mr[j];
                        } else if (mj == 0) {
                            const float mv = mr[0];
                            for (long j = 0; j < Sk; ++j) row[j] += mv;
                        } else {
                            for (long j = 0; j < Sk; ++j) row[j] += mr[j * mj];
                        }
                    }
                    const float mx = edgec_row_max(row, Sk);
                    edgec_row_scale(row, Sk, 1.0f / edgec_row_exp(row, row, Sk, mx));
                }
                edgec_gemm_packed(m, Dv, Sk, sc, Sk, 1, 0, v_direct ? vb : vp, v_direct ? vs : 0,
                                  y + (b * Sq + i0) * vs + h * Dv, vs, 1.0f, 0.0f, NULL, 0, 0, nc2, 0, 0.0f, 0.0f);
            }
        }
    }
}
"""

K.HELPERS["attention"] = HELPER
K.HELPER_DEPS["attention"] = ("act", "act_fast", "gemm_core", "softmax")


def _row_block(sq: int, sk: int) -> int:
    """Query rows per score block: a multiple of the GEMM tile height within SCORE_BLOCK_FLOATS, or all."""
    mr = K._MR
    rb = max(mr, (SCORE_BLOCK_FLOATS // max(1, sk)) // mr * mr)
    return max(1, min(rb, sq))


def gen_attention(node: Node, k: KernelContext) -> NodeCode:
    q, kk, v = k.dims(node.input(0)), k.dims(node.input(1)), k.dims(node.input(2))
    if len(q) != 3 or len(kk) != 3 or len(v) != 3:
        raise unsupported(node, "Q, K, V must be 3-D [B, S, H*D]")
    h = int(node.attr("num_heads"))
    b, sq, hdq = q
    sk, hdv = kk[1], v[2]
    if h < 1 or hdq % h or hdv % h or kk != (b, sk, hdq) or v[:2] != (b, sk):
        raise unsupported(node, f"shapes Q {q}, K {kk}, V {v} with {h} heads")
    dq, dv = hdq // h, hdv // h
    scale = node.attr("scale", None)
    scale = float(scale) if scale is not None else 1.0 / float(dq) ** 0.5
    ops = [node.input(0), node.input(1), node.input(2)]
    mask = node.input(3) if len(node.inputs) > 3 else None
    marg, ms = "NULL", [0, 0, 0, 0]
    if mask is not None:
        ms = _bcast4(node, k.dims(mask), [b, h, sq, sk])
        ops.append(mask)
        marg = "x3"
    nr = K._NR
    rb = _row_block(sq, sk)
    floats = dq * K._round_up(sk, nr) + (0 if dv % nr == 0 else sk * K._round_up(dv, nr)) + rb * sk
    body = (f"    edgec_attention(x0, x1, x2, {marg}, y0, s0, {b}, {h}, {sq}, {sk}, {dq}, {dv}, {flit(scale)}, "
            f"{ms[0]}, {ms[1]}, {ms[2]}, {ms[3]}, {rb});\n")
    return NodeCode(ops, body, ["attention"], [""], macs=b * h * sq * sk * (dq + dv), scratch=4 * max(1, floats))


K.GENERATORS[("edgec", "Attention")] = gen_attention
