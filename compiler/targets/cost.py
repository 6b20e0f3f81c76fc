"""Per-layer cost report for a target: MACs, bytes, memory placement, estimated cycles, fit checks.

Inputs: the model the C back end compiled (same node order), its report dict (``memory.arena_bytes``,
``memory.lower_bound_bytes``, ``layers[...]`` with ``node``, ``output_bytes``, ``arena_offset``,
``view_of``), the target and the placements from :func:`edgec.targets.legality.place`.

Per layer (``report["layers"]``):

* ``macs``: :func:`edgec.inspect.node_macs` of the node, or of its source op for ``edgec`` ops
  (QConv counts as Conv); ``ops`` = MACs, or for MAC-free layers one operation per output element
  (times the window of pools): what the compute estimate charges;
* ``weight_bytes``: bytes of the constant operands (int64 shape-like operands excluded);
  ``weight_bytes_packed``: for integer weights with zeros, values + a bitmap
  (:func:`edgec.prune.sparse_storage.packed_bytes`) when smaller, else the raw bytes;
* ``activation_bytes``: bytes of the non-constant inputs plus the outputs (what the layer moves);
* ``weights_in`` ``flash``, ``output_in`` ``arena`` (with ``arena_offset``), ``output`` (the
  caller's buffer) or ``view`` (no code, no cost); ``live_bytes``: arena bytes live at this step;
* ``cycles`` = max(``compute_cycles``, ``memory_cycles``) with ``compute_cycles`` = ops / MACs per
  cycle of the unit (the CPU's float rate when the layer reads or writes float32) and
  ``memory_cycles`` = activation bytes / SRAM bandwidth + weight bytes / flash bandwidth (the NPU
  reads packed weights, the CPU kernels raw ones).

The summary adds totals, NPU/CPU shares, arena vs lower bound, SRAM use (arena + I/O buffers) and
flash use (the C code's weight arrays, or text + rodata + data of a cross-compile result), latency at
the clock and inferences per second. These are planning estimates, not measurements.

A C report layer may give ``scratch_bytes`` (a layer's temporary buffer in the arena): it is counted
as live at that layer.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import EdgecError
from ..inspect import MAC_OPS, node_macs
from ..ir import Model, Node, Value
from ..ir.dtypes import DType
from ..ir.types import TensorType
from ..units import human_bytes
from .description import TargetDescription, op_family
from .legality import Placement, dtype_name, fused_ops, node_key, place_node, source_op, weight_input

__all__ = ["TargetFitError", "build_cost_report", "format_cost_report", "layer_macs", "cost_report_json"]

#: ops the C back end turns into pointer aliases (no code, no bytes moved)
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})


class TargetFitError(EdgecError):
    """The compiled model does not fit the target's SRAM or flash."""


class _MacView:
    """A node seen as its source op, for :func:`node_macs` (data input and weight at 0 and 1)."""

    def __init__(self, node: Node, op: str, inputs: List[Optional[Value]]) -> None:
        self.op_type, self.domain, self._node, self._inputs = op, "", node, inputs

    def input(self, i: int) -> Optional[Value]:
        return self._inputs[i] if i < len(self._inputs) else None

    def output(self, i: int = 0) -> Optional[Value]:
        return self._node.output(i)

    def attr(self, name: str, default: Any = None) -> Any:
        return self._node.attr(name, default)


def layer_macs(node: Node) -> Optional[int]:
    """MACs of a node (``edgec`` ops counted as their source op); None when shapes are unknown."""
    if node.domain in ("", "ai.onnx"):
        return node_macs(node)[0]
    if node.op_type == "QGemm":  # W int8 [N, K]: every output element is a K-long dot product
        w, y = weight_input(node), _numel(node.output(0))
        wd = w.type.shape.dims if w is not None and isinstance(w.type, TensorType) else None
        if y is None or not wd or len(wd) != 2 or not isinstance(wd[1], int):
            return None
        return y * wd[1]
    op = source_op(node)
    if op not in MAC_OPS:
        return 0
    return node_macs(_MacView(node, op, [node.input(0), weight_input(node)]))[0]  # type: ignore[arg-type]


def _numel(v: Optional[Value]) -> Optional[int]:
    if v is None or not isinstance(v.type, TensorType) or v.type.shape.dims is None:
        return None
    n = 1
    for d in v.type.shape.dims:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _nbytes(v: Optional[Value]) -> int:
    n = _numel(v)
    if n is None or v is None:
        return 0
    bits = v.type.dtype.itemsize_bits  # type: ignore[union-attr]
    return (n * bits + 7) // 8


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _weights(node: Node) -> List[Value]:
    out: List[Value] = []
    for v in node.inputs:
        if v is not None and v.is_constant() and v.const is not None and v not in out:
            if isinstance(v.type, TensorType) and v.type.dtype == DType.INT64:
                continue  # shapes, axes, pads: compile-time parameters
            out.append(v)
    return out


def _weight_sizes(v: Value) -> Tuple[int, int]:
    """(raw bytes, packed bytes) of a constant."""
    from ..prune.sparse_storage import packed_bytes

    c = v.const
    raw = int(c.nbytes) if hasattr(c, "nbytes") else _nbytes(v)
    dt = v.type.dtype if isinstance(v.type, TensorType) else None
    if dt is None or not dt.is_integer or dt == DType.INT32 or dt == DType.INT64:
        return raw, raw  # float weights, int32 biases: stored as they are
    arr = c.numpy() if hasattr(c, "numpy") else c.to_dense()  # type: ignore[union-attr]
    if arr.ndim < 2:
        return raw, raw
    nnz = int(np.count_nonzero(arr))
    packed = packed_bytes(int(arr.size), nnz, max(1, dt.itemsize_bits // 8))
    return raw, min(raw, packed)


def _liveness(model: Model, c_layers: Mapping[str, Mapping[str, Any]], align: int) \
        -> Tuple[List[int], List[List[str]]]:
    """Arena bytes and tensor names live at each step of the schedule (views alias their root)."""
    nodes = list(model.graph)
    root: Dict[int, Value] = {}
    first: Dict[int, int] = {}
    last: Dict[int, int] = {}
    vals: Dict[int, Value] = {}
    outputs = {id(v) for v in model.graph.outputs}
    for i, n in enumerate(nodes):
        crec = c_layers.get(n.name)
        is_view = n.op_type in VIEW_OPS or (crec is not None and "view_of" in crec)
        for v in n.inputs:
            if v is not None and id(root.get(id(v), v)) in first:
                r = root.get(id(v), v)
                last[id(r)] = max(last[id(r)], i)
        if is_view and n.input(0) is not None:
            src = n.input(0)
            r = root.get(id(src), src)
            for o in n.outputs:
                if o is not None:
                    root[id(o)] = r
                    if id(o) in outputs and id(r) in first:
                        last[id(r)] = len(nodes)
            continue
        for o in n.outputs:
            if o is None:
                continue
            in_arena = ("arena_offset" in crec) if (crec is not None and o is n.output(0)) else id(o) not in outputs
            if in_arena:
                first[id(o)] = last[id(o)] = i
                vals[id(o)] = o
    live = [0] * len(nodes)
    names: List[List[str]] = [[] for _ in nodes]
    for k, v in vals.items():
        size = _align(_nbytes(v), align)
        for i in range(first[k], min(last[k], len(nodes) - 1) + 1):
            live[i] += size
            names[i].append(v.name)
    # in-place pairs (C report "inplace_of"): the output overwrites an input that dies at that node;
    # a layer's scratch buffer (C report "scratch_bytes") lives during that layer only
    for i, n in enumerate(nodes):
        crec = c_layers.get(n.name)
        if crec and int(crec.get("scratch_bytes", 0) or 0) > 0:
            live[i] += _align(int(crec["scratch_bytes"]), align)
            names[i].append(f"<scratch of layer {i}>")
        o = n.output(0) if n.outputs else None
        if not crec or not crec.get("inplace_of") or o is None or id(o) not in vals:
            continue
        size = _align(_nbytes(o), align)
        for v in n.inputs:
            r = root.get(id(v), v) if v is not None else None
            if r is not None and id(r) in vals and last[id(r)] == i and _align(_nbytes(r), align) == size:
                live[i] -= size
                break
    return live, names


def build_cost_report(model: Model, c_report: Mapping[str, Any], target: TargetDescription,
                      placements: Optional[Mapping[str, Placement]] = None, *,
                      code_size: Optional[Mapping[str, Any]] = None, check: bool = True) -> Dict[str, Any]:
    """The cost report (JSON-able dict) of ``model`` compiled for ``target``.

    ``c_report`` is the C back end's report of the same model; ``placements`` default to
    :func:`edgec.targets.legality.place`; ``code_size`` is a :func:`cross_compile` result (adds
    code to the flash use). With ``check`` (default), raises :class:`TargetFitError` when the SRAM
    or the flash is too small; the error names the layer whose live tensors are largest.
    """
    mem = c_report.get("memory", {})
    align = int(mem.get("alignment", target.memory.alignment) or target.memory.alignment)
    c_layers = {str(L.get("node")): L for L in c_report.get("layers", [])}
    nodes = list(model.graph)
    live, live_names = _liveness(model, c_layers, align)
    npu, cpu, m = target.npu, target.cpu, target.memory
    layers: List[Dict[str, Any]] = []
    seen_w: Dict[int, Tuple[int, int]] = {}
    soft_float = "float32" not in target.native_dtypes
    soft_layers = 0
    for i, n in enumerate(nodes):
        key = node_key(n, i)
        p = (placements or {}).get(key) or place_node(n, target)
        crec = c_layers.get(n.name, {})
        is_view = n.op_type in VIEW_OPS or "view_of" in crec
        macs = layer_macs(n)
        if macs is None:
            macs = int(crec.get("macs", 0) or 0)
        outs = [v for v in n.outputs if v is not None]
        w_raw = w_packed = 0
        if not is_view:
            for v in _weights(n):
                if id(v) not in seen_w:
                    seen_w[id(v)] = _weight_sizes(v)
                r, pk = seen_w[id(v)]
                w_raw += r
                w_packed += pk
        in_b = 0 if is_view else sum(_nbytes(v) for v in n.inputs if v is not None and not v.is_constant())
        out_b = 0 if is_view else sum(_nbytes(v) for v in outs)
        ops = 0
        if not is_view:
            ops = int(macs)
            if ops == 0:
                ops = sum(_numel(v) or 0 for v in outs)
                if op_family(p.op or source_op(n)) == "pool":
                    x = n.input(0)
                    ks = n.attr("kernel_shape")
                    if ks:
                        ops *= int(np.prod([int(k) for k in ks]))
                    elif x is not None and _numel(x) and outs and _numel(outs[0]):
                        ops = _numel(x) or 0  # global pools read every input element once
        is_float = any(dtype_name(v) == "float32" for v in list(n.inputs) + list(n.outputs)
                       if v is not None and not v.is_constant())
        if p.unit == "npu" and npu is not None:
            rate = npu.macs_per_cycle
            w_moved = w_packed
        else:
            rate = cpu.float_macs_per_cycle if is_float else cpu.macs_per_cycle
            w_moved = w_raw
            if is_float and soft_float and not is_view and ops:
                soft_layers += 1
        compute = ops / rate if ops else 0.0
        memory = (in_b + out_b) / m.bandwidth_bytes_per_cycle + w_moved / m.flash_bandwidth_bytes_per_cycle
        cycles = int(math.ceil(max(compute, memory) - 1e-9))  # no extra cycle from float noise
        rec: Dict[str, Any] = {
            "index": i, "node": key, "op": p.op or source_op(n), "qualified_op": n.qualified_op,
            "fused": fused_ops(n), "unit": p.unit, "reason": p.reason, "macs": int(macs), "ops": ops,
            "weight_bytes": w_raw, "weight_bytes_packed": w_packed, "weights_in": "flash" if w_raw else None,
            "activation_bytes": in_b + out_b, "output_bytes": out_b,
            "output_shape": [int(d) for d in (outs[0].type.shape.dims or ())] if outs and _numel(outs[0]) is not None
            else None,
            "output_in": "view" if is_view else ("arena" if "arena_offset" in crec else "output" if crec else None),
            "arena_offset": crec.get("arena_offset"), "live_bytes": live[i], "live_tensors": len(live_names[i]),
            "compute_cycles": round(compute, 3), "memory_cycles": round(memory, 3), "cycles": cycles,
            "bound": "none" if cycles == 0 else ("compute" if compute >= memory else "memory"),
        }
        layers.append(rec)

    total_cycles = sum(L["cycles"] for L in layers)
    npu_layers = [L for L in layers if L["unit"] == "npu"]
    io_vals = [v for v in model.graph.inputs if not v.is_initializer()] + list(model.graph.outputs)
    io_bytes = sum(_align(_nbytes(v), align) for v in io_vals)
    arena = int(mem.get("arena_bytes", max(live, default=0)))
    lb = int(mem.get("lower_bound_bytes", max(live, default=0)))
    weights_raw = sum(r for r, _ in seen_w.values())
    weights_packed = sum(pk for _, pk in seen_w.values())
    code_flash = int(code_size["total"]["flash_bytes"]) if code_size else None
    c_weights = c_report.get("weights", {}).get("bytes")  # the arrays the C code holds, if reported
    flash_used = code_flash if code_flash is not None else int(c_weights if c_weights is not None else weights_raw)
    peak_i = max(range(len(layers)), key=lambda j: (live[j], -j)) if layers else None
    peak = None
    if peak_i is not None:
        peak = {"index": peak_i, "node": layers[peak_i]["node"], "op": layers[peak_i]["op"],
                "live_bytes": live[peak_i], "tensors": sorted(live_names[peak_i])}
    sram_used = arena + io_bytes
    notes = []
    if soft_layers:
        notes.append(f"float32 is not native on {target.name}: {soft_layers} CPU layers run in software float "
                     f"({cpu.float_macs_per_cycle:g} MACs/cycle)")
    if code_flash is None:
        notes.append("flash use counts weights only (cross-compile for code size)")
    summary = {
        "layers": len(layers), "npu_layers": len(npu_layers), "cpu_layers": len(layers) - len(npu_layers),
        "macs": sum(L["macs"] for L in layers), "npu_macs": sum(L["macs"] for L in npu_layers),
        "weight_bytes": weights_raw, "weight_bytes_packed": weights_packed,
        "activation_bytes_moved": sum(L["activation_bytes"] for L in layers),
        "cycles": total_cycles, "npu_cycles": sum(L["cycles"] for L in npu_layers),
        "cpu_cycles": total_cycles - sum(L["cycles"] for L in npu_layers),
        "latency_ms": 1e3 * total_cycles / target.clock_hz,
        "inferences_per_second": (target.clock_hz / total_cycles) if total_cycles else None,
        "memory": {
            "arena_bytes": arena, "lower_bound_bytes": lb,
            "overhead": round(arena / lb, 4) if lb else 1.0, "io_bytes": io_bytes,
            "sram_bytes": m.sram_bytes, "sram_used_bytes": sram_used, "sram_fits": sram_used <= m.sram_bytes,
            "flash_bytes": m.flash_bytes, "flash_used_bytes": flash_used,
            "flash_fits": flash_used <= m.flash_bytes, "peak": peak,
        },
    }
    report: Dict[str, Any] = {"target": target.to_dict(), "model": str(c_report.get("name", "")),
                              "source": str(c_report.get("source", "")), "summary": summary, "layers": layers,
                              "notes": notes}
    if code_size is not None:
        report["code_size"] = dict(code_size)
    if check:
        check_fit(report)
    return report


def check_fit(report: Mapping[str, Any]) -> None:
    """Raise :class:`TargetFitError` (one line) when the report's SRAM or flash use exceeds the target's."""
    t, s = report["target"], report["summary"]["memory"]
    where = f"target {t['name']}" + (f" ({t['file']})" if t.get("file") else "")
    if not s["sram_fits"]:
        pk = s["peak"] or {}
        shown = ", ".join(f"'{x}'" for x in pk.get("tensors", [])[:4])
        more = f" and {len(pk['tensors']) - 4} more" if len(pk.get("tensors", [])) > 4 else ""
        raise TargetFitError(
            f"{where}: model needs {human_bytes(s['sram_used_bytes'])} ({s['sram_used_bytes']} B) of SRAM "
            f"(arena {s['arena_bytes']} B + inputs/outputs {s['io_bytes']} B) but the target has "
            f"{human_bytes(s['sram_bytes'])} ({s['sram_bytes']} B); largest live tensors at layer "
            f"'{pk.get('node', '?')}' ({pk.get('op', '?')}): {pk.get('live_bytes', 0)} B live in {shown}{more}")
    if not s["flash_fits"]:
        what = "code and weights" if "code_size" in report else "weights"
        raise TargetFitError(f"{where}: {what} need {human_bytes(s['flash_used_bytes'])} "
                             f"({s['flash_used_bytes']} B) of flash but the target has "
                             f"{human_bytes(s['flash_bytes'])} ({s['flash_bytes']} B)")


def cost_report_json(report: Mapping[str, Any]) -> str:
    """The report as stable, indented JSON."""
    return json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


def format_cost_report(report: Mapping[str, Any]) -> str:
    """The human-readable report: a Vela-style summary, then one row per layer."""
    t, s = report["target"], report["summary"]
    mm = s["memory"]
    hz = t["clock_hz"]
    clock = f"{hz / 1e6:g} MHz" if hz >= 1e6 else f"{hz / 1e3:g} kHz"
    npu = t.get("npu")
    cpu = t["cpu"]
    rows = [
        ("target", f"{t['name']}" + (f" ({t['file']})" if t.get("file") else "")),
        ("npu", f"{npu['name']}, {npu['macs_per_cycle']:g} MACs/cycle, {'/'.join(npu['dtypes'])}" if npu else "none"),
        ("cpu", f"{cpu['core']}, {cpu['macs_per_cycle']:g} int8 / {cpu['float_macs_per_cycle']:g} float32 MACs/cycle"),
        ("clock", clock),
        ("SRAM used", f"{human_bytes(mm['sram_used_bytes'])} of {human_bytes(mm['sram_bytes'])} "
                      f"({_pct(mm['sram_used_bytes'], mm['sram_bytes'])}): arena {mm['arena_bytes']} B "
                      f"+ I/O {mm['io_bytes']} B"),
        ("arena vs lower bound", f"{mm['arena_bytes']} B vs {mm['lower_bound_bytes']} B "
                                 f"(overhead {100 * (mm['overhead'] - 1):.1f}%)"),
        ("peak live tensors", f"{mm['peak']['live_bytes']} B at layer '{mm['peak']['node']}' ({mm['peak']['op']})"
                              if mm.get("peak") else "-"),
        ("flash used", f"{human_bytes(mm['flash_used_bytes'])} of {human_bytes(mm['flash_bytes'])} "
                       f"({_pct(mm['flash_used_bytes'], mm['flash_bytes'])})"),
        ("weights raw / packed", f"{s['weight_bytes']} B / {s['weight_bytes_packed']} B"),
        ("NPU operators", f"{s['npu_layers']} ({_pct(s['npu_layers'], s['layers'])})"),
        ("CPU operators", f"{s['cpu_layers']} ({_pct(s['cpu_layers'], s['layers'])})"),
        ("MACs", f"{s['macs']:,} (NPU {_pct(s['npu_macs'], s['macs'])})"),
        ("NPU / CPU cycles", f"{s['npu_cycles']:,} / {s['cpu_cycles']:,}"),
        ("total cycles", f"{s['cycles']:,}"),
        ("inference time", f"{s['latency_ms']:.3f} ms, " + (f"{s['inferences_per_second']:.2f} inferences/s"
                                                            if s["inferences_per_second"] else "-")),
    ]
    cs = report.get("code_size")
    if cs:
        tot = cs["total"]
        rows.append(("code (cross-compiled)", f"text {tot['text']} / rodata {tot['rodata']} / data {tot['data']} / "
                                               f"bss {tot['bss']} B ({cs.get('compiler', '')})"))
    w = max(len(k) for k, _ in rows)
    lines = [f"{k:<{w}}  {v}" for k, v in rows]
    lines += [f"note: {x}" for x in report.get("notes", [])]
    lines += ["", f"{'#':>4}  {'op':<18} {'fused':<10} {'unit':<4} {'MACs':>12} {'weights':>9} {'packed':>9} "
                  f"{'act B':>9} {'live B':>9} {'cycles':>10} {'bound':<7} node: reason"]
    for L in report["layers"]:
        fused = "+".join(L["fused"]) or "-"
        lines.append(f"{L['index']:>4}  {L['op']:<18} {fused:<10} {L['unit']:<4} {L['macs']:>12,} "
                     f"{L['weight_bytes']:>9} {L['weight_bytes_packed']:>9} {L['activation_bytes']:>9} "
                     f"{L['live_bytes']:>9} {L['cycles']:>10,} {L['bound']:<7} {L['node']}: {L['reason']}")
    return "\n".join(lines) + "\n"
