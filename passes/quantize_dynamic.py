"""Dynamic quantization: int8 weights, activations quantized at run time (no calibration).

For ``MatMul(A, W)`` / ``Gemm(A, W, C)`` with a constant 2-D float weight, the form onnxruntime's
``quantize_dynamic`` emits (ORT fuses it into ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat``)::

    A -> DynamicQuantizeLinear -> (A_u8, s_a, z_a)
    MatMulInteger(A_u8, W_i8 [K, N], z_a, z_w) -> Cast(float) -> Mul(s_a * s_w) [-> Add(bias)]

``s_w`` is per column (one per N) when ``per-channel``, else per tensor; weights are symmetric
int8 (zero point 0). Gemm's ``transB`` is folded into the stored weight, ``alpha`` into ``s_w``
and ``beta*C`` becomes the Add. Ops with fused activations keep them after the Add.

Names stay short (a small model is mostly names otherwise): the int8 weight takes the float
weight's name, the integer op the layer's, and what else the rewrite adds gets short generated
names (its nodes none in a compact save).

A constant ``Gather`` table (word / position embeddings) is stored int8, symmetric, one scale
per column (per tensor without ``per-channel``), and read as ``Gather(table_i8, ids) ->
DequantizeLinear(axis=-1)``: only the gathered rows are dequantized (onnxruntime does not fold a
DequantizeLinear placed before the Gather, and dequantizing a 30k-row table costs ~7 ms a run).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from edgec.ir import Model, Node, Value
from edgec.ir.dtypes import DType
from edgec.ir.tensor import ArrayTensor
from edgec.ir.types import QuantParams, Shape, TensorType
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.quant import scheme
from edgec.backends.onnx_export import ANONYMOUS
from edgec.quant.qdq import (SOURCE_NAME, adopt_source_names, gather_table, quantized_gather, require_opset,
                             short_constant, short_name)
from edgec.rewrite import constant_value

__all__ = ["QuantizeDynamic"]


@register_pass
class QuantizeDynamic(Pass):
    """Dynamic int8 quantization of MatMul/Gemm with constant weights (weights int8, activations at run time).

    Emits DynamicQuantizeLinear + MatMulInteger + Cast + Mul (+ Add bias), which onnxruntime fuses
    into DynamicQuantizeMatMul. Constant ``Gather`` tables (embeddings) become int8, dequantized
    after the Gather. ``per-channel``: one weight scale per output column (per table column).
    ``min-size``: weights with fewer elements stay float. ``ops``: op types to quantize.
    ``exclude``: node names left alone.
    """

    name = "quantize-dynamic"
    opt_level = 3
    idempotent = True

    per_channel: bool = True
    reduce_range: bool = False
    min_size: int = 0
    ops: List[str] = ["MatMul", "Gemm", "FusedMatMul", "FusedGemm", "Conv", "FusedConv", "Gather"]
    exclude: List[str] = []

    def run(self, model: Model, ctx: PassContext) -> bool:
        require_opset(model, 11, "dynamic quantization (DynamicQuantizeLinear)")
        from edgec.passes.fuse_batchnorm import ConstTracker
        from edgec.passes.quantize import initializer_bytes

        try:
            from edgec.ir.shapes import infer_shapes

            infer_shapes(model)
        except Exception:  # noqa: BLE001 - types are refined when possible
            pass
        g = model.graph
        consts = ConstTracker()
        before = initializer_bytes(model)
        report: List[Dict[str, Any]] = []
        for n in list(g):
            if n.name in self.exclude or n.op_type not in self.ops or n.domain not in ("", "edgec"):
                continue
            if (n.domain == "edgec") != n.op_type.startswith("Fused"):
                continue
            entry = self._gather(model, n, consts) if n.op_type == "Gather" else self._rewrite(model, n, consts)
            if entry is not None:
                report.append(entry)
        consts.sweep()
        adopt_source_names(g)  # an int8 table takes the float one's name
        after = initializer_bytes(model)
        ctx.stat("quantized-nodes", len(report))
        ctx.reports["quantization"] = {"mode": "dynamic", "nodes": report, "warnings": [],
                                       "totals": {"model_bytes_before": before, "model_bytes_after": after,
                                                  "quantized_nodes": len(report)}}
        return bool(report)

    def _gather(self, model: Model, n: Node, consts: Any) -> Optional[Dict[str, Any]]:
        """An embedding ``Gather(table, ids)``: int8 table (per column, or per tensor), dequantized after the Gather."""
        table = gather_table(n)
        if table is None or table.size < max(self.min_size, 1):
            return None
        tv = n.input(0)
        axis = table.ndim - 1 if self.per_channel and (model.opset("") or 0) >= 13 else None
        scale, zp = scheme.weight_params(table, axis, DType.INT8, True, name=tv.name)
        quantized_gather(model.graph, n, scale, zp, DType.INT8, axis, array=table)
        consts.note(tv)
        return {"name": n.name, "op": "Gather", "weight": tv.name, "weight_bytes_float": int(table.nbytes),
                "weight_bytes_quantized": int(table.size + 4 * np.size(scale)), "per_channel": axis is not None,
                "weight_scale_min": float(np.min(scale)), "weight_scale_max": float(np.max(scale))}

    def _rewrite(self, model: Model, n: Node, consts: Any) -> Optional[Dict[str, Any]]:
        g = model.graph
        base = n.op_type.replace("Fused", "")
        a, wv = n.input(0), n.input(1)
        w = constant_value(wv)
        conv = base == "Conv"
        if a is None or a.dtype != DType.FLOAT or w is None or w.dtype != np.float32 or (w.ndim != 2 and not conv):
            return None
        if w.size < self.min_size or (conv and (w.ndim < 3 or n.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"))):
            return None
        alpha, bias = 1.0, None
        if conv and n.input(2) is not None:
            bias = constant_value(n.input(2))
            if bias is None:
                return None
        elif base == "Gemm":
            if int(n.attr("transA", 0)):
                return None
            if int(n.attr("transB", 0)):
                w = w.T
            alpha = float(n.attr("alpha", 1.0))
            c = n.input(2)
            if c is not None:
                cv = constant_value(c)
                bias = (cv * float(n.attr("beta", 1.0))).astype(np.float32) if cv is not None else None
                if cv is None:
                    return None
        elif n.input(2) is not None:  # FusedMatMul bias
            bias = constant_value(n.input(2))
            if bias is None:
                return None
        w_axis = 0 if conv else 1  # output channels
        scale, zp = scheme.weight_params(w, w_axis if self.per_channel else None, DType.INT8, True, name=wv.name,
                                         reduce_range=self.reduce_range)
        q = scheme.quantize_array(w, scale, zp, DType.INT8, w_axis if scale.ndim else None)
        wq = g.add_constant(ArrayTensor(q, DType.INT8), wv.name + "_quantized")
        wq.type = TensorType(DType.INT8, Shape(q.shape), QuantParams(scale, zp, w_axis if scale.ndim else None))
        wq.meta[SOURCE_NAME] = wv.name  # adopt_source_names: the float name once the float weight is gone
        zpv = short_constant(g, ArrayTensor(np.asarray(zp, np.int8).reshape(scale.shape), DType.INT8), "z")
        # per-output-channel factors broadcast against the output: [N] for MatMul, [1, C, 1, ...] for Conv
        view = (1, -1) + (1,) * (w.ndim - 2) if conv else (-1,)

        def op(op_type: str, inputs: List[Optional[Value]], attrs: Optional[dict] = None, outputs: int = 1,
               type_: Optional[TensorType] = None):
            node = Node(op_type, inputs, outputs, attrs, name=short_name(g, op_type, node_name=True))
            node.meta[ANONYMOUS] = True
            for o in node.outputs:
                o.name = short_name(g, "t")
            g.insert_before(n, node)
            if type_ is not None:
                node.outputs[0].type = type_
            return node.outputs if outputs > 1 else node.outputs[0]

        out = n.output(0)
        shape = out.shape if out.shape is not None else Shape(None)
        a_shape = a.shape if a.shape is not None else Shape(None)
        aq, sa, za = op("DynamicQuantizeLinear", [a], outputs=3)
        aq.type = TensorType(DType.UINT8, a_shape)
        sa.type = TensorType(DType.FLOAT, Shape(()))
        za.type = TensorType(DType.UINT8, Shape(()))
        if conv:
            attrs = {k: n.attr(k) for k in ("dilations", "group", "kernel_shape", "pads", "strides")
                     if n.attr(k) is not None}
            # ORT's ConvInteger takes only a scalar weight zero point: symmetric weights have 0 everywhere
            zpv = short_constant(g, ArrayTensor(np.zeros((), np.int8), DType.INT8), "z")
            acc = op("ConvInteger", [aq, wq, za, zpv], attrs, type_=TensorType(DType.INT32, shape))
        else:
            acc = op("MatMulInteger", [aq, wq, za, zpv], type_=TensorType(DType.INT32, shape))
        accf = op("Cast", [acc], {"to": int(DType.FLOAT)}, type_=TensorType(DType.FLOAT, shape))
        sw_arr = (scale * np.float32(alpha)).astype(np.float32)
        sw_arr = sw_arr.reshape(view) if sw_arr.ndim else sw_arr
        sw = short_constant(g, ArrayTensor(sw_arr, DType.FLOAT), "s")
        s = op("Mul", [sa, sw], type_=TensorType(DType.FLOAT, Shape(sw_arr.shape)))
        y = op("Mul", [accf, s], type_=TensorType(DType.FLOAT, shape))
        if bias is not None:
            b = np.asarray(bias, np.float32)
            b = b.reshape(view) if conv and b.ndim == 1 else b
            y = op("Add", [y, short_constant(g, ArrayTensor(b, DType.FLOAT), "b")], type_=TensorType(DType.FLOAT, shape))
        act = n.attr("activation", "") or ""
        act = act.decode() if isinstance(act, bytes) else act
        if act:
            # keep the activation as an edgec op the ONNX back end lowers: FusedMatMul(y, I) would cost a
            # MatMul, so emit the standard form through the lowering helper.
            from edgec.backends.onnx_lowering import emit_activation

            class _B:
                opset = model.opset("") or 13
                dtype = np.dtype(np.float32)

                def op(self, op_type, inputs, attrs=None, domain="", typed=True):  # noqa: ANN001
                    return op(op_type, list(inputs), attrs, type_=TensorType(DType.FLOAT, shape) if typed else None)

                def const(self, x):  # noqa: ANN001
                    return g.add_constant(np.array(x, np.float32), "c")

            y = emit_activation(_B(), y, act, list(n.attr("activation_params", []) or []))
        out.replace_all_uses_with(y)
        consts.note(*n.inputs[1:])
        g.remove(n)
        acc.producer.name = n.name  # the integer op carries the layer's name (free again)
        acc.producer.meta.pop(ANONYMOUS, None)
        return {"name": n.name, "op": n.op_type, "weight": wv.name, "weight_bytes_float": int(w.nbytes),
                "weight_bytes_quantized": int(q.nbytes), "per_channel": bool(scale.ndim),
                "weight_scale_min": float(np.min(scale)), "weight_scale_max": float(np.max(scale))}
