"""edgec's own ops (domain ``edgec``, version 1): fused producer+activation ops and recovered patterns.

Fusion and recovery passes create them; backends consume them (the C backend directly,
``edgec.backends.onnx_lowering.lower_for_onnx`` rewrites them into standard ONNX or ORT contrib
ops). Importing this module registers them with :func:`edgec.ir.opschema.register_op`.

=====================  ==================  ==========================================================
op                     inputs              semantics
=====================  ==================  ==========================================================
FusedConv              X, W, B?            ``act(Conv(X, W, B))``; every Conv attribute
FusedConvTranspose     X, W, B?            ``act(ConvTranspose(X, W, B))``; every ConvTranspose attribute
FusedGemm              A, B, C?            ``act(Gemm(A, B, C))``; alpha, beta, transA, transB
FusedMatMul            A, B, Bias?         ``act(MatMul(A, B) + Bias)``; Bias is 1-D of size N (last axis)
Gelu                   X                   ``approximate="none"``: x*0.5*(1+erf(x/sqrt 2));
                                           ``"tanh"``: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))
LayerNorm              X, Scale, B?        ONNX LayerNormalization-17 (axis, epsilon), first output only
Attention              Q, K, V, Mask?      multi-head scaled dot-product attention, heads merged (below)
=====================  ==================  ==========================================================

``Attention`` (attributes ``num_heads`` int >= 1, required; ``scale`` float, default
``1/sqrt(Dq)``):

==========  ======================  =================================================================
name        shape                   meaning
==========  ======================  =================================================================
Q           [B, Sq, H*Dq]           queries, already projected; head ``h`` is ``Q[..., h*Dq:(h+1)*Dq]``
K           [B, Sk, H*Dq]           keys, already projected, split into heads the same way
V           [B, Sk, H*Dv]           values, already projected (Dv may differ from Dq)
Mask        broadcastable (numpy)   optional *additive* bias, Q's dtype, broadcast to [B, H, Sq, Sk];
            to [B, H, Sq, Sk]       it must not enlarge that shape (rank <= 4)
Y           [B, Sq, H*Dv]           output, heads merged back (head ``h`` at ``h*Dv:(h+1)*Dv``)
==========  ======================  =================================================================

With ``split(X, D) = X.reshape(B, S, H, D).transpose(0, 2, 1, 3)`` ([B, H, S, D])::

    scores = scale * (split(Q, Dq) @ split(K, Dq).transpose(0, 1, 3, 2)) + Mask   # [B, H, Sq, Sk]
    Y = (softmax(scores, axis=-1) @ split(V, Dv)).transpose(0, 2, 1, 3).reshape(B, Sq, H*Dv)

The scale multiplies the scores before the mask is added (the mask is never scaled). No causal
masking, no dropout, no past key/value; B and H of Q, K, V are equal (no broadcasting).

Fused ops carry ``activation`` (string; absent or ``""`` means none) and ``activation_params``
(floats). Activations (``act``) and their parameters:

=============  ==================  ================================================
activation     activation_params   act(y)
=============  ==================  ================================================
Relu           -                   max(y, 0)
Clip           min, max            min(max(y, min), max)
LeakyRelu      alpha               y if y >= 0 else alpha*y
Sigmoid        -                   1/(1+exp(-y))
HardSigmoid    alpha, beta         max(0, min(1, alpha*y + beta))
HardSwish      -                   y * max(0, min(1, y/6 + 1/2))
Gelu           -                   y*0.5*(1+erf(y/sqrt 2))
GeluTanh       -                   0.5y(1+tanh(sqrt(2/pi)(y+0.044715y^3)))
Silu           -                   y * sigmoid(y)
Tanh           -                   tanh(y)
=============  ==================  ================================================
"""

from __future__ import annotations

from typing import Dict, Tuple

from .opschema import register_op, registered_ops

__all__ = ["DOMAIN", "VERSION", "ACTIVATIONS", "ACTIVATION_PARAM_COUNT", "FUSED_OPS"]

DOMAIN = "edgec"
VERSION = 1

#: activation name -> number of ``activation_params`` it takes.
ACTIVATION_PARAM_COUNT: Dict[str, int] = {
    "Relu": 0, "Clip": 2, "LeakyRelu": 1, "Sigmoid": 0, "HardSigmoid": 2, "HardSwish": 0,
    "Gelu": 0, "GeluTanh": 0, "Silu": 0, "Tanh": 0,
}
ACTIVATIONS: Tuple[str, ...] = tuple(ACTIVATION_PARAM_COUNT)

#: fused op -> the standard op it extends.
FUSED_OPS: Dict[str, str] = {
    "FusedConv": "Conv", "FusedConvTranspose": "ConvTranspose", "FusedGemm": "Gemm", "FusedMatMul": "MatMul",
}

_SPECS = {
    "FusedConv": (2, 3, "act(Conv(X, W, B)) with Conv attributes plus activation/activation_params"),
    "FusedConvTranspose": (2, 3, "act(ConvTranspose(X, W, B)) with ConvTranspose attributes plus activation"),
    "FusedGemm": (2, 3, "act(Gemm(A, B, C)) with Gemm attributes plus activation/activation_params"),
    "FusedMatMul": (2, 3, "act(MatMul(A, B) + Bias) with activation/activation_params"),
    "Gelu": (1, 1, "GELU; approximate='none' (erf) or 'tanh'"),
    "LayerNorm": (2, 3, "LayerNormalization-17 semantics (axis, epsilon), one output"),
    "Attention": (3, 4, "multi-head attention softmax(scale*Q_h K_h^T + Mask) V_h, heads merged; num_heads, scale"),
}


def _register() -> None:
    have = registered_ops()
    for op, (lo, hi, doc) in _SPECS.items():
        if (DOMAIN, op) not in have:
            register_op(DOMAIN, op, min_inputs=lo, max_inputs=hi, num_outputs=1, doc=doc)


_register()


def _register_shape_rules() -> None:
    """Output type of ``Attention``: [B, Sq, H*Dv] from Q and V."""
    from .shapes import shape_rule
    from .types import Shape, TensorType

    @shape_rule("Attention", domain=DOMAIN)
    def _attention(ctx):  # noqa: ANN001, ANN202 - ShapeContext -> [TensorType]
        q, v = ctx.dims(0), ctx.dims(2)
        if ctx.dtype(0) is None:
            return None
        dims = None
        if q is not None and v is not None and len(q) == 3 and len(v) == 3:
            dims = (q[0], q[1], v[2])
        return [TensorType(ctx.dtype(0), Shape(dims))]


_register_shape_rules()


# --- integer ops of the int8 C target (created by edgec.backends.c.integerize) -------------------------
#: integer op -> (min inputs, max inputs, doc). All carry ``qmin``, ``qmax``, ``y_zero_point``,
#: ``rounding`` ("double" | "single"), ``source_op`` and ``fused`` (list of folded op types).
INTEGER_OPS: Dict[str, Tuple[int, int, str]] = {
    "QConv": (5, 5, "int8 Conv: X, W int8 [M,C/G,kh,kw], B int32 (zero-point terms folded), M0, SHIFT int32; "
                    "acc = B + sum(X_pad*W) (padding reads x_zero_point), y = clamp(MBQM(acc) + y_zero_point)"),
    "QGemm": (5, 5, "int8 fully connected: X [..., K], W int8 [N, K], B int32 [N] folded, M0, SHIFT int32"),
    "QAdd": (2, 2, "TFLite int8 Add/Sub (left shift 20, three multipliers), numpy broadcasting"),
    "QMul": (2, 2, "TFLite int8 Mul: MBQM((a-za)*(b-zb), M) + y_zero_point"),
    "QAvgPool": (1, 1, "int8 average pool (global=1: over all spatial dims): sum(q)/n rounded half away"),
    "QRequant": (1, 1, "int8 requantization clamp(MBQM(x - x_zero_point, multiplier, shift) + y_zero_point)"),
    "QAvgPoolRq": (1, 1, "int8 average pool with its own output parameters: acc = sum(x - x_zero_point) over the "
                         "n counted elements, y = clamp(MBQM(acc, multipliers[n - count_min], shifts[...]) + y_zp)"),
    "QSoftmax": (1, 1, "TFLite int8 softmax over [outer, depth, inner] (gemmlowp fixed point: input_multiplier, "
                       "input_left_shift, diff_min); output scale 1/256, zero point -128"),
}


def _register_integer_ops() -> None:
    have = registered_ops()
    for op, (lo, hi, doc) in INTEGER_OPS.items():
        if (DOMAIN, op) not in have:
            register_op(DOMAIN, op, min_inputs=lo, max_inputs=hi, num_outputs=1, doc=doc)


_register_integer_ops()
