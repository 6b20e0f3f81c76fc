"""Weight-only quantization of MatMul/Gemm weights to int8 or int4, blocked along the K axis.

Formats:

- ``dql``: the weight becomes an int4/int8 initializer (``quant`` type, blocked along K with
  ``block_size``) read by ``DequantizeLinear(axis, block_size)`` before the unchanged MatMul/Gemm.
  Needs opset >= 21; onnxruntime fuses DQ(int4)+MatMul into MatMulNBits.
- ``matmulnbits``: ``com.microsoft.MatMulNBits(A, B_packed[N, n_blocks, blob], scales[N*n_blocks],
  zero_points?)`` (unsigned values; symmetric means the implicit zero point 8 / 128), any opset.

int4 values are packed two per byte (low nibble first), so an fp32 weight shrinks ~8x (plus one
scale per block). With ``scale-search`` (default) each block's scale is the one, among a few
clipping ratios of its range, with the least squared error (:func:`edgec.quant.scheme.search_weight_params`).

``method``: ``rtn`` rounds every weight to nearest; ``gptq`` (:mod:`edgec.quant.gptq`) needs
calibration data (``ctx.resources['calibration']``, the CLI's ``--calibration``): one streamed
onnxruntime pass collects ``X^T X`` of every MatMul/Gemm input, then each weight is quantized row by
row along K with the rounding error compensated on the rows still to come, in the same blocked
format. ``auto`` (default) is ``gptq`` when calibration data is given, ``rtn`` otherwise. Gather
tables are always round-to-nearest (a lookup has no input to compensate over).

Constant ``Gather`` tables (embeddings) along axis 0, option ``gather``:

- ``block``: ``com.microsoft.GatherBlockQuantized(table_u8 [V, D*bits/8], ids, scales [V, D/block],
  zero_points?)``, blocked along the last axis like the MatMul weights (any opset; onnxruntime
  dequantizes only the gathered rows);
- ``int8``: standard ONNX ``Gather(table_i8, ids) -> DequantizeLinear(axis=-1)``, one scale per column;
- ``auto`` (default): ``block`` with ``format=matmulnbits``, ``int8`` with ``format=dql`` (standard
  ONNX output; ``DequantizeLinear(block_size)`` before a Gather would dequantize the whole table on
  every run, ~50 ms for a 30k x 384 table in onnxruntime, and ONNX Gather takes no int4);
- ``none``: tables stay float.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np

from edgec.backends.onnx_lowering import lower_fused_linear
from edgec.errors import EdgecError
from edgec.ir import Model, Node
from edgec.ir.dtypes import DType
from edgec.ir.types import Shape, TensorType
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.quant import gptq, scheme
from edgec.quant.qdq import adopt_source_names, gather_table, quantized_gather, quantized_weight, require_opset
from edgec.rewrite import constant_value

__all__ = ["QuantizeWeights", "pack_nbits"]

MS = "com.microsoft"


def pack_nbits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-bit values along the last axis into uint8 (low nibble first for 4 bits)."""
    q = np.asarray(q).astype(np.uint8)
    if bits == 8:
        return q
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (q[..., 0::2] & 0x0F) | ((q[..., 1::2] & 0x0F) << 4)


@register_pass
class QuantizeWeights(Pass):
    """Weight-only int4/int8 quantization of constant MatMul/Gemm weights (blocked along K) and Gather tables.

    ``bits`` 4 or 8; ``block-size`` (>= 16, a power of two); ``symmetric`` (default: a zero point
    per block, which MiniLM's int4 cosine prefers, 0.976 vs 0.967); ``scale-search``: MSE-optimal
    clipping of each block's range; ``format`` dql (DequantizeLinear with block_size, opset >= 21)
    or matmulnbits (ORT contrib op); ``gather`` auto, block, int8 or none (see the module
    docstring) with ``gather-block-size`` (0: ``block-size``; default 128: embeddings lose little
    and their scales weigh 4x less); weights with fewer than ``min-size`` elements stay float.
    ``method`` auto, rtn or gptq (see the module docstring), ``damp`` GPTQ's Hessian damping
    (fraction of its mean diagonal).
    """

    name = "quantize-weights"
    opt_level = 3
    idempotent = True

    bits: int = 4
    block_size: int = 32
    symmetric: bool = False
    scale_search: bool = True
    format: Literal["dql", "matmulnbits"] = "dql"
    gather: Literal["auto", "block", "int8", "none"] = "auto"
    gather_block_size: int = 128
    min_size: int = 1024
    exclude: List[str] = []
    method: Literal["auto", "rtn", "gptq"] = "auto"
    damp: float = gptq.DAMP

    def run(self, model: Model, ctx: PassContext) -> bool:
        if self.bits not in (4, 8):
            raise EdgecError(f"quantize-weights: bits must be 4 or 8, got {self.bits}")
        for opt, bs in (("block-size", self.block_size), ("gather-block-size", self.gather_block_size or 16)):
            if bs < 16 or bs & (bs - 1):
                raise EdgecError(f"quantize-weights: {opt} must be a power of two >= 16, got {bs}")
        if self.format == "dql":
            require_opset(model, 21, "quantize-weights format=dql (DequantizeLinear block_size)")
        from edgec.passes.fuse_batchnorm import ConstTracker
        from edgec.passes.quantize import initializer_bytes

        # -O2 fuses activations into edgec.FusedGemm/FusedMatMul; their weights are quantized like the plain
        # ops' (the ONNX target lowers them to the base op + activation at the end anyway)
        lower_fused_linear(model)
        g = model.graph
        consts = ConstTracker()
        before = initializer_bytes(model)
        report: List[Dict[str, Any]] = []
        gather = self.gather if self.gather != "auto" else ("block" if self.format == "matmulnbits" else "int8")
        self._factors = self._gptq_factors(model, ctx)  # before any rewrite: statistics of the float model
        for n in list(g):
            if n.name in self.exclude or n.domain != "":
                continue
            if n.op_type == "Gather" and gather != "none":
                entry = self._gather(model, n, gather)
                if entry is not None:
                    report.append(entry)
                continue
            w = self._weight(n)
            if w is None:
                continue
            entry = self._dql(model, n, w) if self.format == "dql" else self._nbits(model, n, w)
            if entry is not None:
                report.append(entry)
        for e in report:
            consts.note(*e.pop("_old", []))
        consts.sweep()
        adopt_source_names(g)  # the int8/int4 tensor takes the float one's name
        after = initializer_bytes(model)
        ctx.stat("quantized-weights", len(report))
        ctx.reports["quantization"] = {"mode": "weight-only", "nodes": report, "warnings": [],
                                       "totals": {"model_bytes_before": before, "model_bytes_after": after,
                                                  "quantized_nodes": len(report)}}
        return bool(report)

    def _weight(self, n: Node) -> Optional[np.ndarray]:
        """The constant 2-D float32 weight of a MatMul/Gemm this pass quantizes, else None."""
        if n.op_type not in ("MatMul", "Gemm") or n.name in self.exclude or n.domain != "":
            return None
        w = constant_value(n.input(1))
        if w is None or w.dtype != np.float32 or w.ndim != 2 or w.size < self.min_size:
            return None
        if n.op_type == "Gemm" and int(n.attr("transA", 0)):
            return None
        return w

    @staticmethod
    def _k_axis(n: Node) -> int:
        """The axis of the stored weight that runs along K (the reduction axis)."""
        return 1 if (n.op_type == "Gemm" and int(n.attr("transB", 0))) else 0

    def _gptq_factors(self, model: Model, ctx: PassContext) -> Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]]:
        """GPTQ's inverse-Hessian factor per weight input tensor (shared by the layers it feeds, e.g.
        Q/K/V), from one pass over the calibration data; None for round-to-nearest."""
        data = ctx.resources.get("calibration")
        if self.method == "rtn" or (self.method == "auto" and data is None):
            return None
        if data is None:
            raise EdgecError("quantize-weights method=gptq needs calibration data: pass --calibration FILE")
        if not 0.0 <= self.damp < 1.0:
            raise EdgecError(f"quantize-weights: damp must be in [0, 1), got {self.damp}")
        wanted = []
        for n in model.graph:
            w = self._weight(n)
            if w is not None:
                wanted.append((n.input(0).name, int(w.shape[self._k_axis(n)])))
        hessians = gptq.collect_hessians(model, data, gptq.hessian_inputs(wanted))
        return {name: gptq.inverse_hessian_factor(h.h, self.damp) for name, h in hessians.items()}

    def _solve(self, n: Node, w: np.ndarray, k_axis: int, dt: DType) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """``(w_eff, scale, zero_point, method)``: the weight to quantize with the blocked
        parameters (along ``k_axis``): ``w`` itself for round-to-nearest, GPTQ's updated weights
        (which those parameters quantize exactly to its integers) otherwise."""
        factor = None if self._factors is None else self._factors.get(n.input(0).name)
        if factor is None:
            scale, zp = self._params(w, k_axis, dt, n.input(1).name)
            return w, scale, zp, "rtn"
        w_kn = w if k_axis == 0 else w.T  # GPTQ runs along the rows of a [K, N] weight
        wq, scale, zp = gptq.gptq_quantize(w_kn, *factor, dt, block_size=self.block_size,
                                           symmetric=self.symmetric, search=self.scale_search)
        if k_axis == 1:
            wq, scale, zp = wq.T, scale.T, zp.T
        return np.ascontiguousarray(wq), np.ascontiguousarray(scale), np.ascontiguousarray(zp), "gptq"

    def _dtype(self, signed: bool) -> DType:
        if self.bits == 4:
            return DType.INT4 if signed else DType.UINT4
        return DType.INT8 if signed else DType.UINT8

    def _params(self, w: np.ndarray, axis: int, dt: DType, name: str, block_size: int = 0
                ) -> Tuple[np.ndarray, np.ndarray]:
        bs = block_size or self.block_size
        if self.scale_search:
            return scheme.search_weight_params(w, axis, dt, self.symmetric, block_size=bs, name=name)
        return scheme.weight_params(w, axis, dt, self.symmetric, block_size=bs, name=name)

    def _gather(self, model: Model, n: Node, how: str) -> Optional[Dict[str, Any]]:
        table = gather_table(n)
        if table is None or table.size < self.min_size:
            return None
        g, tv = model.graph, n.input(0)
        entry = {"name": n.name, "op": "Gather", "weight": tv.name, "weight_bytes_float": int(table.nbytes),
                 "_old": [tv]}
        bs = self.gather_block_size or self.block_size
        if how == "int8" or table.ndim != 2 or table.shape[1] % bs:
            axis = table.ndim - 1 if (model.opset("") or 0) >= 13 else None
            scale, zp = scheme.weight_params(table, axis, DType.INT8, True, name=tv.name)
            quantized_gather(g, n, scale, zp, DType.INT8, axis, array=table)
            entry.update(format="int8", bits=8, weight_bytes_quantized=int(table.size + 4 * np.size(scale)))
            return entry
        rows, d = table.shape
        dt = self._dtype(signed=False)
        scale, zp = self._params(table, 1, dt, tv.name, bs)  # [V, D / block]
        q = scheme.quantize_array(table, scale, zp, dt, 1, bs).astype(np.uint8)
        ins = [g.add_constant(pack_nbits(q, self.bits), tv.name + "_blocks"), n.input(1),
               g.add_constant(scale.astype(np.float32), tv.name + "_scales")]  # data, indices, scales
        if not self.symmetric:  # symmetric: the implicit zero point 8 (128 for 8 bits)
            ins.append(g.add_constant(pack_nbits(zp.astype(np.uint8), self.bits), tv.name + "_zero_points"))
        model.opset_imports.setdefault(MS, 1)
        node = Node("GatherBlockQuantized", ins, 1,
                    {"gather_axis": 0, "quantize_axis": 1, "block_size": bs, "bits": self.bits},
                    domain=MS, name=g.new_name(n.name + "/GatherBlockQuantized", node_name=True))
        g.insert_before(n, node)
        out = n.output(0)
        node.outputs[0].type = out.type if isinstance(out.type, TensorType) else TensorType(DType.FLOAT, Shape(None))
        out.replace_all_uses_with(node.outputs[0])
        g.remove(n)
        entry.update(format="block", bits=self.bits, block_size=bs,
                     weight_bytes_quantized=int(sum(v.const.nbytes for v in ins if v.const is not None)))
        return entry

    def _dql(self, model: Model, n: Node, w: np.ndarray) -> Optional[Dict[str, Any]]:
        g = model.graph
        wv = n.input(1)
        k_axis = self._k_axis(n)
        dt = self._dtype(signed=self.symmetric)
        w_eff, scale, zp, method = self._solve(n, w, k_axis, dt)
        dq = quantized_weight(g, wv, scale, zp, dt, k_axis, self.block_size, before=n, array=w_eff)
        n.set_input(1, dq)
        qv = dq.producer.input(0)
        extra = sum(v.const.nbytes for v in dq.producer.inputs[1:] if v is not None and v.const is not None)
        return {"name": n.name, "op": n.op_type, "weight": wv.name, "format": "dql", "method": method,
                "bits": self.bits, "block_size": self.block_size, "weight_bytes_float": int(w.nbytes),
                "weight_bytes_quantized": int(qv.const.nbytes + extra), "_old": [wv]}

    def _nbits(self, model: Model, n: Node, w: np.ndarray) -> Optional[Dict[str, Any]]:
        g = model.graph
        wv = n.input(1)
        bias = None
        if n.op_type == "Gemm":
            wt = w if int(n.attr("transB", 0)) else w.T  # [N, K]
            wt = wt * np.float32(n.attr("alpha", 1.0))
            if n.input(2) is not None:
                c = constant_value(n.input(2))
                if c is None:
                    return None
                bias = (c * np.float32(n.attr("beta", 1.0))).astype(np.float32)
        else:
            wt = w.T
        wt = np.ascontiguousarray(wt, np.float32)
        n_out, k = wt.shape
        bs = self.block_size
        nb = -(-k // bs)
        dt = self._dtype(signed=False)
        w_eff, scale, zp, method = self._solve(n, wt, 1, dt)  # padding K with zeros changes no block's range
        wp = np.pad(w_eff, [(0, 0), (0, nb * bs - k)])
        q = scheme.quantize_array(wp, scale, zp, dt, 1, bs).astype(np.uint8)  # [N, K_pad]
        packed = pack_nbits(q.reshape(n_out, nb, bs), self.bits)  # [N, nb, blob]
        ins = [n.input(0), g.add_constant(packed, wv.name + "_nbits"),
               g.add_constant(scale.astype(np.float32).reshape(-1), wv.name + "_scales")]
        if not self.symmetric:
            ins.append(g.add_constant(pack_nbits(zp.astype(np.uint8).reshape(n_out, nb), self.bits),
                                      wv.name + "_zero_points"))
        model.opset_imports.setdefault(MS, 1)
        out = n.output(0)
        node = Node("MatMulNBits", ins, 1, {"K": int(k), "N": int(n_out), "bits": self.bits, "block_size": bs},
                    domain=MS, name=g.new_name(n.name + "/MatMulNBits", node_name=True))
        g.insert_before(n, node)
        y = node.outputs[0]
        y.type = out.type if isinstance(out.type, TensorType) else TensorType(DType.FLOAT, Shape(None))
        if bias is not None:
            add = Node("Add", [y, g.add_constant(bias, wv.name + "_bias")], 1,
                       name=g.new_name(n.name + "/Add", node_name=True))
            g.insert_before(n, add)
            add.outputs[0].type = y.type
            y = add.outputs[0]
        old = list(n.inputs[1:])
        out.replace_all_uses_with(y)
        g.remove(n)
        nbytes = packed.nbytes + scale.size * 4 + (0 if self.symmetric else ins[3].const.nbytes)
        return {"name": n.name, "op": n.op_type, "weight": wv.name, "format": "matmulnbits", "method": method,
                "bits": self.bits,
                "block_size": bs, "weight_bytes_float": int(w.nbytes), "weight_bytes_quantized": int(nbytes),
                "_old": old}
