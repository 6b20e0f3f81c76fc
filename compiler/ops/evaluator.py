"""Evaluate one IR node on numpy inputs: registered numpy kernels first, ``onnx.reference`` after.

``evaluate(node, inputs, opset)`` is what constant folding (and a reference interpreter) calls.
Kernels are registered per ``(domain, op_type)`` with the first opset version whose semantics they
implement (``since``); the kernel with the highest ``since <= opset`` runs. A kernel that meets an
attribute combination it does not handle raises :class:`DeferToFallback`, and the node then runs
on a one-node model in ``onnx.reference.ReferenceEvaluator``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import helper

from ..ir.core import Attr, AttrKind, Node, SparseTensor
from ..ir.dtypes import DType
from ..ir.tensor import Tensor, to_proto

#: Ops whose result is random or has side effects: never evaluated at compile time.
NONDETERMINISTIC_OPS: FrozenSet[str] = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)

#: Domains ``onnx.reference`` can run (``""`` is the default ONNX domain).
_REFERENCE_DOMAINS = frozenset({"", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"})

Kernel = Callable[[Node, List[Optional[np.ndarray]], int], Sequence[np.ndarray]]


class EvaluationError(Exception):
    """A node that cannot be evaluated (unsupported, nondeterministic, or failing on its inputs)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class SubgraphNotSupportedError(EvaluationError, NotImplementedError):
    """A node with graph-valued attributes (If, Loop, Scan, ...): not evaluated yet."""


class DeferToFallback(Exception):
    """Raised by a kernel for an attribute or dtype combination it leaves to ``onnx.reference``."""


_REGISTRY: Dict[Tuple[str, str], List[Tuple[int, Kernel]]] = {}


def register_evaluator(op_type: Union[str, Iterable[str]], domain: str = "", since: int = 1) -> Callable[[Kernel], Kernel]:
    """Decorator: register a numpy kernel ``fn(node, inputs, opset) -> outputs`` from opset ``since``."""
    names = [op_type] if isinstance(op_type, str) else list(op_type)
    dom = "" if domain == "ai.onnx" else domain

    def deco(fn: Kernel) -> Kernel:
        for name in names:
            versions = _REGISTRY.setdefault((dom, name), [])
            versions[:] = [(s, k) for s, k in versions if s != since] + [(since, fn)]
            versions.sort(key=lambda sk: sk[0])
        return fn

    return deco


def _load_kernels() -> None:
    # Imported lazily: the kernel modules import this one for the decorator.
    from . import kernels_math, kernels_tensor  # noqa: F401


def registered_ops(domain: str = "") -> List[str]:
    """The op types with a numpy kernel in ``domain``."""
    _load_kernels()
    return sorted(op for d, op in _REGISTRY if d == domain)


def find_kernel(op_type: str, domain: str, opset: int) -> Optional[Kernel]:
    """The kernel for ``op_type`` at ``opset``, or None."""
    _load_kernels()
    best = None
    for since, fn in _REGISTRY.get(("" if domain == "ai.onnx" else domain, op_type), ()):
        if since <= opset:
            best = fn
    return best


# --- public entry points ---------------------------------------------------------------------------
def can_evaluate(node: Node, opset: Optional[int] = None) -> bool:
    """True when ``node`` is deterministic and a kernel or the reference fallback can run it."""
    if node.domain == "" and node.op_type in NONDETERMINISTIC_OPS:
        return False
    if node.subgraphs() or any(a.ref is not None for a in node.attrs.values()):
        return False
    if node.domain == "" and node.op_type == "Dropout" and opset is not None and opset < 7 and not node.attr("is_test", 0):
        return False
    if find_kernel(node.op_type, node.domain, opset if opset is not None else 10**6) is not None:
        return True
    return _reference_has(node.domain, node.op_type)


def evaluate(node: Node, inputs: Sequence[Optional[np.ndarray]], opset: int) -> List[Optional[np.ndarray]]:
    """Evaluate ``node`` at ``opset`` (the version of its domain) on ``inputs`` (None = omitted).

    Returns one array per entry of ``node.outputs``; None where that output is omitted. Outputs may
    be views of the inputs (Identity, Reshape, Slice, ...): treat them as read-only.
    Raises :class:`EvaluationError` when the node cannot be evaluated.
    """
    op = node.op_type
    if node.domain == "" and op in NONDETERMINISTIC_OPS:
        raise EvaluationError(f"{op} is nondeterministic and is not evaluated")
    if node.subgraphs():
        raise SubgraphNotSupportedError(f"{op} has subgraph attributes; evaluating it is not supported")
    for a in node.attrs.values():
        if a.ref is not None:
            raise EvaluationError(f"{op} attribute '{a.name}' refers to function attribute '{a.ref}'")
    args: List[Optional[np.ndarray]] = [None if x is None else np.asarray(x) for x in inputs]
    n_in = len(node.inputs)
    args = (args + [None] * n_in)[: max(n_in, len(args))]
    kernel = find_kernel(op, node.domain, opset)
    results: Optional[Sequence[Any]] = None
    if kernel is not None:
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results = kernel(node, args, opset)
        except DeferToFallback:
            results = None
        except EvaluationError:
            raise
        except Exception as e:  # a bad input (shape mismatch, out-of-range index, ...)
            raise EvaluationError(f"{op}: {_first_line(e)}") from None
    if results is None:
        results = _run_reference(node, args, opset)
    out: List[Optional[np.ndarray]] = []
    for i, o in enumerate(node.outputs):
        if o is None or i >= len(results) or results[i] is None:
            if o is not None:
                raise EvaluationError(f"{op}: output {i} was not computed")
            out.append(None)
        else:
            out.append(_as_output(results[i]))
    return out


def _as_output(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind in ("U", "S"):
        arr = arr.astype(object)
    return arr


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# --- fallback: onnx.reference on a one-node model ---------------------------------------------------
@functools.lru_cache(maxsize=None)
def _reference_has(domain: str, op_type: str) -> bool:
    """Whether ``onnx.reference`` implements ``domain::op_type`` (natively or as a function)."""
    if domain not in _REFERENCE_DOMAINS:
        return False
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import RuntimeContextError

    try:
        if domain == "":
            from onnx.reference.ops import load_op

            load_op(domain, op_type, None, evaluator_cls=ReferenceEvaluator)
        elif domain == "ai.onnx.ml":
            from onnx.reference.ops.aionnxml import load_op as load_ml

            load_ml(domain, op_type, None)
        elif domain == "ai.onnx.preview":
            from onnx.reference.ops.aionnx_preview import load_op as load_pv

            load_pv(domain, op_type, None)
        else:
            from onnx.reference.ops.aionnx_preview_training import load_op as load_tr

            load_tr(domain, op_type, None)
    except RuntimeContextError:
        return True
    except Exception:
        return False
    return True


def attr_to_proto(a: Attr) -> onnx.AttributeProto:
    """An ``AttributeProto`` from an IR attribute (graph and type attributes are not converted)."""
    K = AttrKind
    v = a.value
    if a.kind in (K.GRAPH, K.GRAPHS):
        raise SubgraphNotSupportedError(f"attribute '{a.name}' holds a subgraph")
    if a.kind == K.TENSOR:
        v = _tensor_proto(v)
    elif a.kind == K.TENSORS:
        v = [_tensor_proto(t) for t in v]
    elif a.kind == K.SPARSE_TENSOR:
        v = _sparse_proto(v)
    elif a.kind == K.SPARSE_TENSORS:
        v = [_sparse_proto(t) for t in v]
    elif a.kind in (K.TYPE_PROTO, K.TYPE_PROTOS, K.UNDEFINED):
        raise EvaluationError(f"attribute '{a.name}' of kind {a.kind.name} is not supported by the evaluator")
    return helper.make_attribute(a.name, v, attr_type=int(a.kind))


def _tensor_proto(t: Any) -> onnx.TensorProto:
    if isinstance(t, Tensor):
        return to_proto(t, "")
    from ..ir.tensor import ArrayTensor

    return to_proto(ArrayTensor(np.asarray(t)), "")


def _sparse_proto(s: SparseTensor) -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(_tensor_proto(s.values), _tensor_proto(s.indices), list(s.dims))


def _elem_type(arr: np.ndarray) -> int:
    return int(DType.from_numpy(arr.dtype))


def node_to_proto(node: Node, input_names: Sequence[str], output_names: Sequence[str]) -> onnx.NodeProto:
    """A ``NodeProto`` for ``node`` with the given value names ("" for omitted ones)."""
    proto = helper.make_node(node.op_type, list(input_names), list(output_names), domain=node.domain)
    proto.attribute.extend(attr_to_proto(a) for a in node.attrs.values())
    return proto


def _run_reference(node: Node, args: List[Optional[np.ndarray]], opset: int) -> List[Optional[np.ndarray]]:
    op = node.op_type
    if not _reference_has(node.domain, op):
        raise EvaluationError(f"no evaluator for {node.qualified_op}")
    in_names = [f"x{i}" if a is not None else "" for i, a in enumerate(args)]
    while in_names and not in_names[-1]:
        in_names.pop()
    out_names = [f"y{i}" if o is not None else "" for i, o in enumerate(node.outputs)]
    proto = node_to_proto(node, in_names, out_names)
    graph_inputs = [
        helper.make_tensor_value_info(n, _elem_type(a), a.shape) for n, a in zip(in_names, args) if n and a is not None
    ]
    graph_outputs = [helper.make_empty_tensor_value_info(n) for n in out_names if n]
    graph = helper.make_graph([proto], "evaluate", graph_inputs, graph_outputs)
    opsets = {node.domain: opset}
    if node.domain != "":
        opsets[""] = onnx.defs.onnx_opset_version()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    feeds = {n: a for n, a in zip(in_names, args) if n and a is not None}
    from onnx.reference import ReferenceEvaluator

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sess = ReferenceEvaluator(model)
            got = sess.run(None, feeds)
    except EvaluationError:
        raise
    except Exception as e:
        raise EvaluationError(f"{op} (reference fallback): {_first_line(e)}") from None
    it = iter(got)
    return [next(it) if n else None for n in out_names]


# --- helpers shared by the kernel modules -----------------------------------------------------------
def ints(x: Optional[np.ndarray]) -> Optional[List[int]]:
    """A 1-D (or scalar) integer tensor as a Python list; None stays None."""
    if x is None:
        return None
    return [int(v) for v in np.asarray(x).reshape(-1)]


def norm_axis(axis: int, rank: int) -> int:
    """``axis`` in ``[-rank, rank)`` made non-negative."""
    if not -rank <= axis < max(rank, 1):
        raise EvaluationError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def attr_array(node: Node, name: str) -> Optional[np.ndarray]:
    """A tensor attribute as numpy, or None."""
    v = node.attr(name)
    if v is None:
        return None
    if isinstance(v, Tensor):
        return v.numpy()
    if isinstance(v, SparseTensor):
        return v.to_dense()
    return np.asarray(v)


def attr_str(node: Node, name: str, default: str) -> str:
    """A string attribute as ``str``."""
    v = node.attr(name, default)
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


__all__ = [
    "NONDETERMINISTIC_OPS", "EvaluationError", "SubgraphNotSupportedError", "DeferToFallback", "Kernel",
    "register_evaluator", "registered_ops", "find_kernel", "can_evaluate", "evaluate", "attr_to_proto",
    "node_to_proto", "ints", "norm_axis", "attr_array", "attr_str",
]
