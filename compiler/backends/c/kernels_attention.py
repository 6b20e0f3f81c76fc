"""C kernel of ``edgec.Attention`` (multi-head scaled dot-product attention, heads merged).

Semantics in :mod:`edgec.ir.edgec_ops`: Q [B, Sq, H*Dq], K [B, Sk, H*Dq], V [B, Sk, H*Dv], optional
additive Mask broadcastable (numpy rules, rank <= 4) to [B, H, Sq, Sk]; Y [B, Sq, H*Dv] with
``Y_h = softmax(scale * Q_h K_h^T + Mask) V_h``. Heads are read in place (no split/merge copies);
one row of scores lives in the node's scratch buffer (Sk floats). The mask is read through
broadcast strides, so a [B, 1, 1, Sk] padding mask costs no copy.

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
    madd = ""
    if mask is not None:
        ms = _bcast4(node, k.dims(mask), [b, h, sq, sk])
        ops.append(mask)
        moff = " + ".join(f"{a} * {s}" for a, s in zip(["b", "hh", "i"], ms[:3]) if s) or "0"
        madd = f" + x3[{moff} + j * {ms[3]}]" if ms[3] else f" + x3[{moff}]"
    body = (f"    for (long b = 0; b < {b}; ++b)\n"
            f"    for (long hh = 0; hh < {h}; ++hh)\n"
            f"    for (long i = 0; i < {sq}; ++i) {{\n"
            f"        const float* restrict qr = x0 + (b * {sq} + i) * {hdq} + hh * {dq};\n"
            f"        float* restrict yr = y0 + (b * {sq} + i) * {hdv} + hh * {dv};\n"
            f"        float m = -INFINITY;\n"
            f"        for (long j = 0; j < {sk}; ++j) {{\n"
            f"            const float* restrict kr = x1 + (b * {sk} + j) * {hdq} + hh * {dq};\n"
            f"            float s = 0.0f;\n"
            f"            for (long d = 0; d < {dq}; ++d) s += qr[d] * kr[d];\n"
            f"            s = s * {flit(scale)}{madd};\n"
            f"            s0[j] = s;\n"
            f"            m = s > m ? s : m;\n"
            f"        }}\n"
            f"        float sum = 0.0f;\n"
            f"        for (long j = 0; j < {sk}; ++j) {{\n"
            f"            const float e = expf(s0[j] - m);\n"
            f"            s0[j] = e;\n"
            f"            sum += e;\n"
            f"        }}\n"
            f"        const float inv = 1.0f / sum;\n"
            f"        for (long d = 0; d < {dv}; ++d) yr[d] = 0.0f;\n"
            f"        for (long j = 0; j < {sk}; ++j) {{\n"
            f"            const float p = s0[j] * inv;\n"
            f"            const float* restrict vr = x2 + (b * {sk} + j) * {hdv} + hh * {dv};\n"
            f"            for (long d = 0; d < {dv}; ++d) yr[d] += p * vr[d];\n"
            f"        }}\n"
            f"    }}\n")
    return NodeCode(ops, body, macs=b * h * sq * sk * (dq + dv), scratch=4 * sk)


K.GENERATORS[("edgec", "Attention")] = gen_attention
