"""IR -> self-contained C99: ``<name>.h``, ``<name>.c`` (+ ``<name>_weights.c``) and a report.

The model must be optimized already (edgec fused ops are consumed as they are) and have static
shapes. Layout of the generated code:

* weights: ``const float`` arrays with exact hex-float literals (in ``<name>_weights.c`` when they
  exceed :data:`WEIGHTS_SPLIT_BYTES`);
* one ``static`` C function per node (fully specialized loops, shared helpers from
  :mod:`.kernels` for conv, gemm, pooling, softmax, normalization);
* ``<name>_run_with_arena(inputs..., outputs..., void* arena)`` places every intermediate tensor at
  the offset chosen by the memory planner inside the caller's arena
  (``<NAME>_ARENA_BYTES``, 16-byte aligned); ``<name>_run(...)`` uses a static arena;
* view ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout) are pointer aliases;
  elementwise ops may run in place over an input that dies at that node.

No malloc, no stdio; the output depends only on the model and the options (deterministic).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ... import __version__
from ...errors import EdgecError, UnsupportedModelError
from ...fsutil import write_text_atomic
from ...ir import Model, Value
from ...ir.dtypes import DType
from ...ir.shapes import infer_shapes
from ...units import human_bytes
from . import kernels as K
from . import narrow_types as NT


def _load_kernel_modules() -> None:
    """Import every ``kernels_*`` module of this package: each registers its generators and helpers."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules([os.path.dirname(__file__)]), key=lambda i: i.name):
        if info.name.startswith("kernels_"):
            importlib.import_module(f"{__package__}.{info.name}")


_load_kernel_modules()

__all__ = ["CCode", "generate_c", "write_c", "c_identifier", "WEIGHTS_SPLIT_BYTES"]

#: Weights above this many bytes go to ``<name>_weights.c``.
WEIGHTS_SPLIT_BYTES = 64 * 1024
ALIGN = 16

_C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef union unsigned void
volatile while _Bool _Complex _Imaginary main NULL""".split())

#: C element type, name in the report, and byte size of every dtype the back end stores. Bool is one
#: byte (0 or 1) as in ONNX, stored as ``uint8_t`` so no C99 ``_Bool`` conversion rules apply.
_CTYPES = {DType.FLOAT: "float", DType.DOUBLE: "double", DType.INT64: "int64_t", DType.INT32: "int32_t",
           DType.INT16: "int16_t", DType.INT8: "int8_t", DType.UINT8: "uint8_t", DType.UINT16: "uint16_t",
           DType.UINT32: "uint32_t", DType.UINT64: "uint64_t", DType.BOOL: "uint8_t"}
_DTNAME = {DType.FLOAT: "float32", DType.DOUBLE: "float64", DType.INT64: "int64", DType.INT32: "int32",
           DType.INT16: "int16", DType.INT8: "int8", DType.UINT8: "uint8", DType.UINT16: "uint16",
           DType.UINT32: "uint32", DType.UINT64: "uint64", DType.BOOL: "bool"}
_ITEMSIZE = {DType.FLOAT: 4, DType.DOUBLE: 8, DType.INT64: 8, DType.INT32: 4, DType.INT16: 2, DType.INT8: 1,
             DType.UINT8: 1, DType.UINT16: 2, DType.UINT32: 4, DType.UINT64: 8, DType.BOOL: 1}
# Narrow types (float16, bfloat16, float8, float4, int4/int2 ...) are stored unpacked as bit patterns,
# one element per uint16_t / uint8_t (the layout of ml_dtypes; see narrow_types). Their report name
# is the lower-case DType name, so DType[name.upper()].numpy is the matching numpy dtype.
for _d in NT.NARROW:
    _CTYPES[_d] = NT.storage_ctype(_d)
    _DTNAME[_d] = _d.name.lower()
    _ITEMSIZE[_d] = 2 if _CTYPES[_d] == "uint16_t" else 1


def _nbytes(v: Value) -> int:
    return _ITEMSIZE[_dtype(v)] * int(v.type.shape.numel())  # type: ignore[union-attr]


def c_identifier(name: str, taken: set) -> str:
    """A C identifier from ``name``, unique (case-insensitively) among ``taken``, which it joins."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", name) or "t"
    if s[0].isdigit():
        s = "t_" + s
    if s in _C_KEYWORDS or s.startswith("__"):
        s = "v_" + s
    base, i = s, 1
    while s.lower() in taken:
        s = f"{base}_{i}"
        i += 1
    taken.add(s.lower())
    return s


@dataclass
class CCode:
    """Generated files (name -> text) and the report (JSON-able dict)."""

    files: Dict[str, str]
    report: Dict[str, Any]
    report_text: str = ""


@dataclass
class _Tensor:
    value: Value
    cname: str
    kind: str  # input | output | const | arena | view
    root: Optional["_Tensor"] = None  # views: the tensor whose storage they share
    size: int = 0
    first: int = 0
    last: int = 0
    users: List[int] = field(default_factory=list)


def _dtype(v: Value) -> DType:
    return v.type.dtype  # type: ignore[union-attr]


def _check_static(model: Model) -> None:
    g = model.graph
    for v in g.values():
        if not v.has_uses() and not v.is_graph_output():
            continue
        t = v.type
        if t is None or getattr(t, "shape", None) is None or not t.shape.is_static:
            shown = "unknown" if t is None or getattr(t, "shape", None) is None or t.shape.dims is None else \
                "x".join(str(d) for d in t.shape.dims)
            raise EdgecError(f"C target needs static shapes: value '{v.name}' has shape {shown}; pin the inputs "
                             f"with --input-shape NAME=D1xD2x... (or SYMBOL=N)")


def _is_empty(v: Value) -> bool:
    """True for a zero-element tensor: it has no storage (no arena bytes, no weight array)."""
    return int(v.type.shape.numel()) == 0  # type: ignore[union-attr]


def _check_empty_operands(n: Any, code: K.NodeCode) -> None:
    """Reject a node that reads a zero-element tensor at run time but has a non-empty output.

    A generator that handles an empty input (Concat skips it, a reduction over an empty set writes
    the reduction's identity) does not list it among its operands; any other kernel would compute
    from data that does not exist, so such a node is a clear error rather than wrong output.
    """
    for v in code.operands:
        if _is_empty(v):
            raise UnsupportedModelError(f"C target: node '{n.name}' ({n.qualified_op}) computes a non-empty output "
                                        f"from the zero-element tensor '{v.name}' (not supported for this op)")


def _check_view(n: Any, src: Value, out: Value) -> None:
    """Reject a view op whose output has another element count than its source.

    An invalid Reshape (e.g. [0, 4] to [4, 0] without allowzero, inferred as [4, 4]) as a view would read
    past its source's storage, or through the NULL pointer of an empty tensor.
    """
    def numel(v: Value) -> Optional[int]:
        shape = getattr(v.type, "shape", None)
        return None if shape is None else shape.numel()

    a, b = numel(src), numel(out)
    if a is not None and b is not None and a != b:
        raise UnsupportedModelError(f"C target: node '{n.name}' ({n.qualified_op}) turns {a} elements of "
                                    f"'{src.name}' into {b} of '{out.name}' (invalid)")


def _prepare_dropout(model: Model, opset: int) -> None:
    """Check every Dropout is the identity (inference) and turn a used mask into a constant fill.

    Dropout is a view of its input in the C code, which is right only at inference: ``training_mode``
    absent or a constant false, or a constant ratio of 0 (opsets 1-6: ``is_test=1``). A training-mode
    Dropout draws a random mask, which no C code can reproduce: a clear error. The mask of an
    inference Dropout is all true; when it is used it becomes a ``ConstantOfShape`` node (a fill
    loop, not a weight array) and the Dropout node keeps only its view output.
    """
    from ...ir import Node
    from ...ir.tensor import ArrayTensor
    from ...ir.types import Shape, TensorType

    g = model.graph
    for n in list(g):
        if n.domain != "" or n.op_type != "Dropout":
            continue
        if not _dropout_is_identity(n, opset):
            raise UnsupportedModelError(f"C target: node '{n.name}' (Dropout) runs in training mode with a non-zero "
                                        f"ratio: its random mask cannot be reproduced (only inference Dropout)")
        mask = n.output(1)
        if mask is None or not (mask.has_uses() or mask.is_graph_output()):
            continue
        dims = [int(d) for d in mask.type.shape.dims]  # type: ignore[union-attr]
        one = np.ones([1], dtype=mask.type.dtype.numpy)  # type: ignore[union-attr]
        shape = g.add_constant(np.array(dims, dtype=np.int64), f"{mask.name}_shape")
        fill = Node("ConstantOfShape", [shape], [g.new_name(mask.name)], {"value": ArrayTensor(one)},
                    name=g.new_name(f"{n.name}_mask", node_name=True))
        fill.output(0).type = TensorType(mask.type.dtype, Shape(dims))  # type: ignore[union-attr]
        g.insert_after(n, fill)
        mask.replace_all_uses_with(fill.output(0))


def _dropout_is_identity(n: Any, opset: int) -> bool:
    """True when Dropout node ``n`` is deterministic: inference mode, or a constant ratio of 0."""
    if opset < 7:
        return bool(n.attr("is_test", 0))
    if opset < 12 or n.input(2) is None:
        return True  # no training_mode input: inference
    tm = n.input(2).const.numpy() if n.input(2).is_constant() else None
    if tm is not None and not bool(np.asarray(tm).reshape(-1)[0]):
        return True
    ratio = n.input(1)
    if ratio is None:
        return False  # default ratio 0.5
    r = ratio.const.numpy() if ratio.is_constant() else None
    return r is not None and float(np.asarray(r).reshape(-1)[0]) == 0.0


def generate_c(model: Model, name: str = "model", *, source: str = "", placement: Optional[Any] = None,
               int8_kernels: str = "fast") -> CCode:
    """C code for ``model`` (optimized, static shapes) with prefix ``name``.

    ``placement(node) -> "npu" | "cpu"`` places the integer layers (:mod:`.kernels_int8`): NPU layers
    call the accelerator HAL (``<name>_npu.h``), CPU layers inline C; default: every one on "cpu".
    ``int8_kernels``: "fast" packs CPU convolution weights as int16 pairs for the register-blocked
    kernels of :mod:`.kernels_int8_fast`, "compact" keeps them int8 (half the weight bytes).
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in _C_KEYWORDS:
        raise EdgecError(f"--name '{name}' is not a C identifier")
    from .legalize_types import legalize_types

    legalize_types(model)  # narrow element types (float16, float8, int4...) compute in float32 / int32
    infer_shapes(model)
    _check_static(model)
    g = model.graph
    if model.functions:
        raise UnsupportedModelError("C target: models with local functions are not supported (inline them first)")
    opset = model.opset("") or 21
    kctx = K.KernelContext(opset)
    kctx.placement = placement  # type: ignore[attr-defined]  # read by the int8 generators
    kctx.int8_kernels = int8_kernels  # type: ignore[attr-defined]  # "fast" | "compact" (kernels_int8)
    _prepare_dropout(model, opset)
    nodes = list(g)
    for n in nodes:
        if n.subgraphs():
            raise UnsupportedModelError(f"C target: node '{n.name}' ({n.qualified_op}) has subgraphs (control flow "
                                        f"is not supported)")
        if n.op_type not in K.VIEW_OPS and (n.domain, n.op_type) not in K.GENERATORS:
            raise UnsupportedModelError(f"C target: unsupported op {n.qualified_op} (node '{n.name}')")

    taken: set = {name.lower()}
    tensors: Dict[int, _Tensor] = {}

    def tensor_of(v: Value) -> _Tensor:
        return tensors[id(v)]

    # graph inputs and outputs: parameters of <name>_run
    in_params: List[_Tensor] = []
    for v in g.inputs:
        if v.is_initializer():
            continue  # overridable initializer: used as a constant
        dt = _dtype(v)
        if dt not in _CTYPES:
            raise UnsupportedModelError(f"C target: input '{v.name}' has unsupported type {dt.name}")
        t = _Tensor(v, c_identifier(v.name, taken), "input")
        tensors[id(v)] = t
        in_params.append(t)
    out_names = []
    for v in g.outputs:
        if _dtype(v) not in _CTYPES:
            raise UnsupportedModelError(f"C target: output '{v.name}' has unsupported type {_dtype(v).name}")
        out_names.append(c_identifier(v.name, taken))
    for v in g.initializers.values():
        if id(v) not in tensors:
            tensors[id(v)] = _Tensor(v, "NULL", "empty") if _is_empty(v) else _Tensor(v, "", "const")

    # which graph outputs are written in place by their producer
    direct: Dict[int, str] = {}
    copies: List[Tuple[Value, str]] = []
    for v, oname in zip(g.outputs, out_names):
        p = v.producer
        if p is not None and p.op_type not in K.VIEW_OPS and id(v) not in direct:
            direct[id(v)] = oname
        else:
            copies.append((v, oname))

    # node code, tensors of node outputs, liveness
    codes: List[Optional[K.NodeCode]] = []
    skipped: set = set()  # indices of nodes whose outputs all have zero elements: no code
    scratch: Dict[int, str] = {}  # node index -> C name of its scratch buffer
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if v is not None and id(v) not in tensors:
                raise UnsupportedModelError(f"C target: node '{n.name}' reads '{v.name}', which is defined outside "
                                            f"the main graph")
        if n.op_type in K.VIEW_OPS:
            src = tensor_of(n.input(0))
            root = src.root if src.kind == "view" else src
            out = n.output(0)
            _check_view(n, src.value, out)
            tensors[id(out)] = _Tensor(out, c_identifier(out.name, taken), "view", root=root)
            for extra in n.outputs[1:]:
                if extra is not None and extra.has_uses():
                    raise UnsupportedModelError(f"C target: node '{n.name}' ({n.qualified_op}): output "
                                                f"'{extra.name}' is not supported")
            codes.append(None)
            continue
        for v in n.outputs:
            if v is None:
                continue
            if _dtype(v) not in _CTYPES:
                raise UnsupportedModelError(f"C target: node '{n.name}' ({n.qualified_op}) produces "
                                            f"{_dtype(v).name} '{v.name}' (unsupported type)")
            if id(v) in direct:
                t = _Tensor(v, direct[id(v)], "output")
            elif _is_empty(v):  # no storage; a kernel that still names it gets a NULL pointer
                t = _Tensor(v, "NULL", "empty")
            else:
                t = _Tensor(v, c_identifier(v.name, taken), "arena", size=_nbytes(v))
            t.first = t.last = i
            tensors[id(v)] = t
        if all(_is_empty(v) for v in n.outputs if v is not None):
            skipped.add(i)  # nothing to compute: an all-empty node reads nothing and writes nothing
            codes.append(None)
            continue
        code = K.GENERATORS[(n.domain, n.op_type)](n, kctx)
        _check_empty_operands(n, code)
        if not code.typed:  # a float-only generator: it has not checked the element types itself
            for v in [*code.operands, *(o for o in n.outputs if o is not None)]:
                dt = _dtype(v)
                if dt != DType.FLOAT and not (n.op_type == "Gather" and v is n.input(1)):
                    raise UnsupportedModelError(f"C target: node '{n.name}' ({n.qualified_op}) on {dt.name} "
                                                f"'{v.name}' (this kernel is float32 only)")
        for v in code.operands:
            if id(v) not in tensors and v.is_constant():  # a constant made by the generator (packed weights)
                tensors[id(v)] = _Tensor(v, "", "const")
            t = tensor_of(v)
            r = t.root if t.kind == "view" else t
            r.last = max(r.last, i)
            r.users.append(i)
        if code.scratch > 0:  # temporary storage of this node only, planned with the activations
            scratch[i] = c_identifier(f"{name}_scratch_l{i}", taken)
        codes.append(code)
    end = len(nodes)
    copies = [(v, oname) for v, oname in copies if not _is_empty(v)]  # nothing to copy for no elements
    for v, _ in copies:
        t = tensor_of(v)
        r = t.root if t.kind == "view" else t
        r.last = end

    # constants that the code reads: weight arrays
    weights: List[_Tensor] = []
    for code in codes:
        for v in code.operands if code else ():
            t = tensor_of(v)
            r = t.root if t.kind == "view" else t
            if r.kind == "const" and not r.cname:
                r.cname = c_identifier(f"{name}_w_{r.value.name}", taken)
                weights.append(r)
    for v, _ in copies:
        t = tensor_of(v)
        r = t.root if t.kind == "view" else t
        if r.kind == "const" and not r.cname:
            r.cname = c_identifier(f"{name}_w_{r.value.name}", taken)
            weights.append(r)
    for w in weights:
        if _dtype(w.value) not in _CTYPES:
            raise UnsupportedModelError(f"C target: constant '{w.value.name}' has type {_dtype(w.value).name}")

    # memory plan
    from .memory import Buffer, plan_memory

    arena = [t for t in tensors.values() if t.kind == "arena"]
    buffers = []
    for t in arena:
        inplace = None
        p = t.value.producer
        code = codes[t.first]
        if code is not None and code.inplace and t.value is p.output(0):
            for v in code.operands:
                s = tensor_of(v)
                r = s.root if s.kind == "view" else s
                same_root = [u for u in code.operands if _root(tensor_of(u)) is r]
                if r.kind == "arena" and r.last == t.first and r.size == t.size and \
                        _dtype(r.value) == _dtype(t.value) and \
                        all(K.KernelContext.dims(u) == K.KernelContext.dims(t.value) for u in same_root):
                    inplace = r.cname
                    break
        buffers.append(Buffer(t.cname, t.size, t.first, t.last, inplace))
    for i, sname in scratch.items():
        buffers.append(Buffer(sname, int(codes[i].scratch), i, i, None))  # type: ignore[union-attr]
    plan = plan_memory(buffers)
    inplace_used = {b.name: b.inplace_of for b in buffers
                    if b.inplace_of and plan.offsets[b.name] == plan.offsets[b.inplace_of]}

    # --- text -----------------------------------------------------------------------------------
    up = name.upper()
    arena_bytes = int(plan.arena_bytes)
    weight_bytes = sum(_ITEMSIZE[_dtype(w.value)] * int(w.value.const.numel) for w in weights)  # as stored (unpacked)
    split = weight_bytes > WEIGHTS_SPLIT_BYTES

    hdr = [f"/* Generated by edgec {__version__}{' from ' + source if source else ''}. Do not edit. */",
           f"#ifndef {up}_H_", f"#define {up}_H_", "", "#include <stdint.h>", "",
           "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
           f"#define {up}_NUM_INPUTS {len(in_params)}", f"#define {up}_NUM_OUTPUTS {len(out_names)}",
           "/* Bytes of the activation arena (<name>_run_with_arena) and its alignment. */",
           f"#define {up}_ARENA_BYTES {arena_bytes}", f"#define {up}_ARENA_ALIGN {ALIGN}", ""]
    io = [(t.cname, t.value, "input") for t in in_params] + [(o, v, "output") for v, o in zip(g.outputs, out_names)]
    for cname, v, what in io:
        dims = [int(d) for d in v.type.shape.dims]
        m = f"{up}_{cname.upper()}"
        abi = f" ({NT.abi_note(_dtype(v))})" if _dtype(v) in NT.NARROW else ""
        hdr += [f"/* {what} '{v.name}': {_DTNAME[_dtype(v)]} [{', '.join(map(str, dims))}]{abi} */",
                f"#define {m}_RANK {len(dims)}", f"#define {m}_SHAPE {{{', '.join(map(str, dims)) or '1'}}}",
                f"#define {m}_SIZE {int(np.prod(dims, dtype=np.int64))}"]
    params = [f"const {_CTYPES[_dtype(t.value)]}* {t.cname}" for t in in_params] + \
        [f"{_CTYPES[_dtype(v)]}* {o}" for v, o in zip(g.outputs, out_names)]
    plist = ", ".join(params) if params else "void"
    hdr += ["",
            "/* Runs the model; input and output buffers must not overlap. Returns 0. Not reentrant"
            " (static arena).",
            "   A zero-element input or output is never read or written: any pointer, NULL included, may be"
            " passed for it. */",
            f"int {name}_run({plist});",
            f"/* Same with a caller-provided arena of {up}_ARENA_BYTES bytes, {up}_ARENA_ALIGN-byte aligned;",
            "   returns -1 when the arena is NULL (with a non-zero size) or misaligned. */",
            f"int {name}_run_with_arena({', '.join(params + ['void* arena'])});",
            "", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {up}_H_ */", ""]

    # weights
    def weight_def(w: _Tensor, storage: str) -> str:
        arr = np.ascontiguousarray(w.value.const.numpy()).reshape(-1)
        ct = _CTYPES[_dtype(w.value)]
        dims = "x".join(str(d) for d in w.value.const.dims) or "scalar"
        if _dtype(w.value) in NT.NARROW:  # bit patterns: bit-exact, NaN payloads and -0 included
            items = [f"0x{int(b):x}" for b in NT.bit_patterns(arr, _dtype(w.value)).tolist()]
        elif ct == "float":
            items = [K.flit(x) for x in arr.astype(np.float32).tolist()]
        elif ct == "double":
            items = [K.dlit(x) for x in arr.astype(np.float64).tolist()]
        else:
            items = [str(int(x)) for x in arr.astype(np.int64 if ct != "uint64_t" else np.uint64).tolist()]
            if ct == "int64_t":
                items = [f"INT64_C({x})" if int(x) != -2**63 else "INT64_MIN" for x in items]
            elif ct == "uint64_t":
                items = [f"UINT64_C({x})" for x in items]
            elif ct == "int32_t":
                items = [x if int(x) != -2**31 else "INT32_MIN" for x in items]
        lines = [", ".join(items[i:i + 8]) for i in range(0, len(items), 8)]
        body = ",\n    ".join(lines)
        return (f"/* '{w.value.name}' [{dims}] */\n{storage}const {ct} {w.cname}[{max(1, arr.size)}] = {{\n"
                f"    {body}\n}};\n")

    c: List[str] = [f"/* Generated by edgec {__version__}{' from ' + source if source else ''}. Do not edit. */",
                    f'#include "{name}.h"', "", "#include <math.h>", "#include <stddef.h>", "#include <stdint.h>", "",
                    "#if defined(__GNUC__) || defined(__clang__)", "#define EDGEC_ALIGNED __attribute__((aligned(16)))",
                    "#elif defined(_MSC_VER)", "#define EDGEC_ALIGNED __declspec(align(16))", "#else",
                    "#define EDGEC_ALIGNED", "#endif", ""]
    wfile = ""
    if weights:
        c.append("/* --- weights --- */")
        if split:
            wfile = (f"/* Generated by edgec {__version__}: weights of {name}. Do not edit. */\n"
                     f"#include <stdint.h>\n\n")
            for w in weights:
                n_el = max(1, int(w.value.const.numel))
                c.append(f"extern const {_CTYPES[_dtype(w.value)]} {w.cname}[{n_el}];")
                wfile += f"extern const {_CTYPES[_dtype(w.value)]} {w.cname}[{n_el}];\n" + weight_def(w, "") + "\n"
        else:
            for w in weights:
                c.append(weight_def(w, "static "))
        c.append("")

    acts: List[str] = []
    for code in codes:
        if code is not None:
            acts += code.acts
    helpers = K.helper_closure([h for code in codes if code is not None for h in code.helpers])
    if helpers:
        c.append("/* --- kernels --- */")
        for h in helpers:
            text = K.act_helper(acts) if h == "act" else K.HELPERS[h]
            c.append(text(name) if callable(text) else text)  # a callable helper takes the model name

    c.append("/* --- layers --- */")
    calls: List[str] = []
    layers: List[Dict[str, Any]] = []

    def ptr(v: Value) -> str:
        t = tensor_of(v)
        if t.kind == "view":
            t = t.root  # type: ignore[assignment]
        return t.cname

    for i, (n, code) in enumerate(zip(nodes, codes)):
        outs = [v for v in n.outputs if v is not None]
        rec = {"index": i, "node": n.name, "op": n.qualified_op,
               "output_shape": [int(d) for d in outs[0].type.shape.dims] if outs else [],
               "output_bytes": sum(_nbytes(v) for v in outs), "macs": 0}
        if i in skipped:
            rec["empty"] = True  # zero-element outputs: no code
            layers.append(rec)
            continue
        if code is None:
            rec["view_of"] = n.input(0).name
            layers.append(rec)
            continue
        fname = f"{name}_l{i}_{re.sub(r'[^0-9A-Za-z_]', '_', n.op_type)}"
        inplace_y = bool(inplace_used.get(tensor_of(outs[0]).cname)) if tensor_of(outs[0]).kind == "arena" else False
        restrict = "" if inplace_y else "restrict "
        ps, args = [], []
        for j, v in enumerate(code.operands):
            ps.append(f"const {_CTYPES[_dtype(v)]}* {restrict}x{j}")
            args.append(ptr(v))
        for j, v in enumerate(n.outputs):
            if v is None:
                continue
            ps.append(f"{_CTYPES[_dtype(v)]}* {restrict}y{j}")
            args.append(ptr(v))
        if i in scratch:
            ps.append(f"{getattr(code, 'scratch_ctype', 'float')}* restrict s0")  # integer kernels: their own type
            args.append(scratch[i])
        body = code.body
        voids = "".join(f"    (void){p.split()[-1]};\n" for p in ps if not re.search(rf"\b{p.split()[-1]}\b", body))
        src = ", ".join(f"'{v.name}'" for v in n.inputs if v is not None)
        c.append(f"/* {n.name}: {n.qualified_op}({src}) -> {', '.join(repr(v.name) for v in outs)} */\n"
                 f"static void {fname}({', '.join(ps) or 'void'})\n{{\n{voids}{body}}}\n")
        calls.append(f"    {fname}({', '.join(args)});")
        rec["macs"] = int(code.macs)
        rec.update(getattr(code, "report", None) or {})  # placement, source op, fused ops (int8 layers)
        t0 = tensor_of(outs[0])
        if t0.kind == "arena":
            rec["arena_offset"] = int(plan.offsets[t0.cname])
            if inplace_y:
                rec["inplace_of"] = inplace_used[t0.cname]
        layers.append(rec)

    # run function
    run = [f"int {name}_run_with_arena({', '.join(params + ['void* arena'])})", "{"]
    run += [f"    (void){t.cname};" for t in in_params] + [f"    (void){o};" for o in out_names]
    if arena or scratch:
        run += ["    unsigned char* const base = (unsigned char*)arena;",
                "    if (arena == NULL || ((uintptr_t)arena & (uintptr_t)15) != 0) return -1;"]
    else:
        run.append("    (void)arena;")
    for t in sorted(arena, key=lambda t: (t.first, t.cname)):
        ct = _CTYPES[_dtype(t.value)]
        run.append(f"    {ct}* const {t.cname} = ({ct}*)(void*)(base + {plan.offsets[t.cname]}); /* '{t.value.name}' */")
    for i, sname in sorted(scratch.items()):
        run.append(f"    void* const {sname} = (void*)(base + {plan.offsets[sname]}); /* scratch of layer {i} */")
    run += calls
    for v, oname in copies:
        t = tensor_of(v)
        srcp = (t.root if t.kind == "view" else t).cname
        run.append(f"    for (long i = 0; i < {int(v.type.shape.numel())}; ++i) {oname}[i] = {srcp}[i];")
    run += ["    return 0;", "}", ""]
    c += run
    call_args = [t.cname for t in in_params] + out_names
    c += [f"static unsigned char {name}_arena[{max(1, arena_bytes)}] EDGEC_ALIGNED;", "",
          f"int {name}_run({plist})", "{",
          f"    return {name}_run_with_arena({', '.join(call_args + [name + '_arena'])});", "}", ""]
    c_text = "\n".join(c)
    files = {f"{name}.h": "\n".join(hdr), f"{name}.c": c_text}
    if split:
        files[f"{name}_weights.c"] = wfile
    for h in helpers:  # helpers that come with files of their own (the accelerator HAL)
        extra = getattr(K, "HELPER_FILES", {}).get(h)
        if extra is not None:
            files.update(extra(name))

    total_macs = sum(r["macs"] for r in layers)
    report = {
        "name": name, "source": source, "edgec_version": __version__,
        "inputs": [{"name": t.value.name, "c_name": t.cname, "dtype": _DTNAME[_dtype(t.value)],
                    "shape": [int(d) for d in t.value.type.shape.dims]} for t in in_params],
        "outputs": [{"name": v.name, "c_name": o, "dtype": _DTNAME[_dtype(v)], "shape": [int(d) for d in v.type.shape.dims]}
                    for v, o in zip(g.outputs, out_names)],
        "memory": {"arena_bytes": arena_bytes, "lower_bound_bytes": int(plan.lower_bound_bytes),
                   "strategy": plan.strategy, "alignment": ALIGN, "buffers": len(buffers),
                   "inplace_buffers": len(inplace_used),
                   "overhead": round(arena_bytes / plan.lower_bound_bytes, 4) if plan.lower_bound_bytes else 1.0,
                   "unshared_bytes": sum(b.size_bytes for b in buffers),
                   "strategies": dict(plan.candidates)},
        "weights": {"bytes": weight_bytes, "arrays": len(weights), "separate_file": split},
        "code": {"files": {k: len(v.encode()) for k, v in sorted(files.items())},
                 "source_bytes_without_weights": len(c_text.encode()) - (0 if split else sum(
                     len(weight_def(w, "static ").encode()) for w in weights))},
        "macs": {"total": total_macs},
        "layers": layers,
    }
    return CCode(files, report, format_report(report))


def _root(t: _Tensor) -> _Tensor:
    return t.root if t.kind == "view" and t.root is not None else t


def format_report(r: Dict[str, Any]) -> str:
    """The human-readable report (``report.txt``)."""
    m = r["memory"]
    lines = [f"edgec C target: {r['name']} ({r['source'] or 'model'})", "",
             f"arena            {human_bytes(m['arena_bytes'])} ({m['arena_bytes']} B), strategy {m['strategy']}",
             f"lower bound      {human_bytes(m['lower_bound_bytes'])} ({m['lower_bound_bytes']} B), "
             f"overhead {100 * (m['overhead'] - 1):.1f}%",
             f"unshared         {human_bytes(m['unshared_bytes'])} in {m['buffers']} buffers "
             f"({m['inplace_buffers']} in place)",
             f"weights          {human_bytes(r['weights']['bytes'])} in {r['weights']['arrays']} arrays"
             f"{' (separate file)' if r['weights']['separate_file'] else ''}",
             "code             " + ", ".join(f"{k} {human_bytes(v)}" for k, v in r["code"]["files"].items()),
             f"MACs             {r['macs']['total']:,}", "",
             f"{'#':>4}  {'op':<24} {'output':<20} {'MACs':>12}  {'bytes':>9}  {'offset':>8}  node"]
    for L in r["layers"]:
        shape = "x".join(map(str, L["output_shape"]))
        off = L.get("arena_offset")
        off_s = "view" if "view_of" in L else ("empty" if L.get("empty") else ("out" if off is None else str(off)))
        lines.append(f"{L['index']:>4}  {L['op']:<24} {shape:<20} {L['macs']:>12,}  {L['output_bytes']:>9}  "
                     f"{off_s:>8}  {L['node']}")
    return "\n".join(lines) + "\n"


def write_c(code: CCode, out_dir: str) -> List[str]:
    """Write the files and ``report.txt`` / ``report.json`` into ``out_dir`` (created); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    items = dict(code.files)
    items["report.txt"] = code.report_text
    items["report.json"] = json.dumps(code.report, indent=2, sort_keys=True) + "\n"
    for fname, text in items.items():
        p = os.path.join(out_dir, fname)
        write_text_atomic(p, text)
        paths.append(p)
    return paths
