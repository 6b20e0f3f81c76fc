"""The op registry view: which ops exist in which domain at which opset, and their signatures.

Official ONNX domains are answered by ``onnx.defs``. Domains that edgec itself declares (``edgec``
for fused and quantized ops) hold ops registered with :func:`register_op`; passes and plugins call
it to declare their custom ops. Any other domain (``com.microsoft``, a vendor's) is opaque: ops in it
are allowed when the model imports the domain, and nothing is known of their signatures.

Everything here is cached: the verifier asks for every node after every pass.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional, Tuple

import onnx.defs

from .dtypes import DType

#: Domains whose ops ``onnx.defs`` defines (``""`` is the default ONNX domain).
ONNX_DOMAINS: FrozenSet[str] = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training"})

#: Domains edgec declares itself; ops in them must be registered with :func:`register_op`.
EDGEC_DOMAINS: set = {"edgec"}

#: Arity bound meaning "any number" (what ``onnx.defs`` reports for variadic parameters).
UNBOUNDED = 2**31 - 1


class OpKind(enum.Enum):
    """Where the definition of an op comes from."""

    ONNX = "onnx"  # onnx.defs
    REGISTERED = "registered"  # register_op, in an edgec-declared domain
    OPAQUE = "opaque"  # an unknown, non-ONNX domain: allowed, signature unknown


class ParamOption(enum.Enum):
    """How many actual inputs or outputs a formal parameter takes."""

    SINGLE = "single"
    OPTIONAL = "optional"
    VARIADIC = "variadic"


@dataclass(frozen=True)
class Param:
    """A formal input or output: its option, type parameter (or fixed type) and homogeneity."""

    name: str
    option: ParamOption = ParamOption.SINGLE
    type_str: str = ""
    homogeneous: bool = True
    min_arity: int = 1


@dataclass(frozen=True)
class OpSignature:
    """What the verifier needs of an op: arity, formal parameters and type constraints.

    ``constraints`` maps a type parameter (``T``) to the element types it allows, or to None when
    the constraint allows something other than plain tensors (sequences, optionals) and so is not
    checked on element types.
    """

    domain: str
    op_type: str
    since_version: int
    kind: OpKind
    min_inputs: int = 0
    max_inputs: int = UNBOUNDED
    min_outputs: int = 0
    max_outputs: int = UNBOUNDED
    inputs: Tuple[Param, ...] = ()
    outputs: Tuple[Param, ...] = ()
    constraints: Dict[str, Optional[FrozenSet[DType]]] = field(default_factory=dict)
    deprecated: bool = False
    doc: str = ""

    @property
    def qualified_op(self) -> str:
        return f"{self.domain or 'onnx'}::{self.op_type}"


def normalize_domain(domain: str) -> str:
    """``ai.onnx`` and ``""`` name the same domain; the IR uses ``""``."""
    return "" if domain == "ai.onnx" else domain


def is_onnx_domain(domain: str) -> bool:
    """True for the domains that ``onnx.defs`` defines."""
    return normalize_domain(domain) in ONNX_DOMAINS


# --- custom (edgec-declared) ops ---------------------------------------------------------------
_REGISTRY: Dict[Tuple[str, str], OpSignature] = {}


def register_domain(domain: str) -> None:
    """Declare ``domain`` as edgec's own: its ops must then be registered to be valid."""
    if is_onnx_domain(domain):
        raise ValueError(f"'{domain}' is an ONNX domain; its ops come from onnx.defs")
    EDGEC_DOMAINS.add(domain)


def register_op(
    domain: str,
    op_type: str,
    *,
    min_inputs: int = 0,
    max_inputs: Optional[int] = None,
    num_outputs: Optional[int] = None,
    min_outputs: Optional[int] = None,
    max_outputs: Optional[int] = None,
    since_version: int = 1,
    type_constraints: Optional[Dict[str, Tuple[DType, ...]]] = None,
    doc: str = "",
    replace: bool = False,
) -> OpSignature:
    """Declare a custom op so that the verifier knows it and checks its arity.

    ``num_outputs`` fixes the output count; otherwise ``min_outputs``/``max_outputs`` bound it
    (defaults 1 and 1). ``max_inputs=None`` means ``min_inputs`` exactly. The domain becomes an
    edgec-declared domain. Registering the same op twice raises unless ``replace`` is true.
    """
    domain = normalize_domain(domain)
    if is_onnx_domain(domain):
        raise ValueError(f"cannot register {op_type!r} in ONNX domain '{domain}'")
    key = (domain, op_type)
    if key in _REGISTRY and not replace:
        raise ValueError(f"op {domain}::{op_type} is already registered")
    if num_outputs is not None:
        lo_out = hi_out = num_outputs
    else:
        lo_out = 1 if min_outputs is None else min_outputs
        hi_out = max(lo_out, 1) if max_outputs is None else max_outputs
    hi_in = min_inputs if max_inputs is None else max_inputs
    if hi_in < min_inputs or hi_out < lo_out:
        raise ValueError(f"op {domain}::{op_type}: max arity below min arity")
    sig = OpSignature(
        domain=domain, op_type=op_type, since_version=since_version, kind=OpKind.REGISTERED,
        min_inputs=min_inputs, max_inputs=hi_in, min_outputs=lo_out, max_outputs=hi_out,
        constraints={k: frozenset(DType(t) for t in v) for k, v in (type_constraints or {}).items()},
        doc=doc,
    )
    EDGEC_DOMAINS.add(domain)
    _REGISTRY[key] = sig
    schema.cache_clear()
    return sig


def unregister_op(domain: str, op_type: str) -> None:
    """Remove a registered op (tests, plugin unloading)."""
    _REGISTRY.pop((normalize_domain(domain), op_type), None)
    schema.cache_clear()


def registered_ops() -> Dict[Tuple[str, str], OpSignature]:
    """A copy of the custom-op registry."""
    return dict(_REGISTRY)


# --- lookups ---------------------------------------------------------------------------------------
_TENSOR_TYPE = re.compile(r"^tensor\((\w+)\)$")
_ONNX_TYPE_NAMES = {
    "float": DType.FLOAT, "uint8": DType.UINT8, "int8": DType.INT8, "uint16": DType.UINT16,
    "int16": DType.INT16, "int32": DType.INT32, "int64": DType.INT64, "string": DType.STRING,
    "bool": DType.BOOL, "float16": DType.FLOAT16, "double": DType.DOUBLE, "uint32": DType.UINT32,
    "uint64": DType.UINT64, "complex64": DType.COMPLEX64, "complex128": DType.COMPLEX128,
    "bfloat16": DType.BFLOAT16, "float8e4m3fn": DType.FLOAT8E4M3FN, "float8e4m3fnuz": DType.FLOAT8E4M3FNUZ,
    "float8e5m2": DType.FLOAT8E5M2, "float8e5m2fnuz": DType.FLOAT8E5M2FNUZ, "uint4": DType.UINT4,
    "int4": DType.INT4, "float4e2m1": DType.FLOAT4E2M1, "float8e8m0": DType.FLOAT8E8M0,
    "uint2": DType.UINT2, "int2": DType.INT2, "float6e2m3": DType.FLOAT6E2M3, "float6e3m2": DType.FLOAT6E3M2,
}


def _parse_allowed(type_strs) -> Optional[FrozenSet[DType]]:
    """Element types of a constraint that allows only plain tensors; None if anything else."""
    out = set()
    for s in type_strs:
        m = _TENSOR_TYPE.match(s)
        if m is None or m.group(1) not in _ONNX_TYPE_NAMES:
            return None
        out.add(_ONNX_TYPE_NAMES[m.group(1)])
    return frozenset(out)


_OPTION = {
    onnx.defs.OpSchema.FormalParameterOption.Single: ParamOption.SINGLE,
    onnx.defs.OpSchema.FormalParameterOption.Optional: ParamOption.OPTIONAL,
    onnx.defs.OpSchema.FormalParameterOption.Variadic: ParamOption.VARIADIC,
}


def _param(p) -> Param:
    return Param(p.name, _OPTION.get(p.option, ParamOption.SINGLE), p.type_str, bool(p.is_homogeneous), int(p.min_arity))


def onnx_schema(domain: str, op_type: str, version: int) -> Optional[onnx.defs.OpSchema]:
    """The ``onnx.defs`` schema in force at opset ``version``, or None."""
    domain = normalize_domain(domain)
    try:
        if not onnx.defs.has(op_type, domain):
            return None
        return onnx.defs.get_schema(op_type, max_inclusive_version=int(version), domain=domain)
    except onnx.defs.SchemaError:
        return None


@functools.lru_cache(maxsize=4096)
def schema(domain: str, op_type: str, version: Optional[int] = None) -> Optional[OpSignature]:
    """The signature of ``domain::op_type`` at opset ``version`` of its domain, or None if unknown.

    Official ONNX domains answer from ``onnx.defs`` (None when the op does not exist yet at that
    version); registered custom ops answer from the registry (None when ``version`` is below their
    ``since_version``); opaque domains answer None.
    """
    domain = normalize_domain(domain)
    if is_onnx_domain(domain):
        if version is None:
            version = onnx.defs.onnx_opset_version() if domain == "" else 10**6
        s = onnx_schema(domain, op_type, version)
        if s is None:
            return None
        return OpSignature(
            domain=domain, op_type=op_type, since_version=s.since_version, kind=OpKind.ONNX,
            min_inputs=s.min_input, max_inputs=s.max_input, min_outputs=s.min_output, max_outputs=s.max_output,
            inputs=tuple(_param(p) for p in s.inputs), outputs=tuple(_param(p) for p in s.outputs),
            constraints={c.type_param_str: _parse_allowed(c.allowed_type_strs) for c in s.type_constraints},
            deprecated=bool(s.deprecated), doc="",
        )
    sig = _REGISTRY.get((domain, op_type))
    if sig is None or (version is not None and version < sig.since_version):
        return None
    return sig


def op_kind(domain: str) -> OpKind:
    """How ops of ``domain`` are defined: by onnx.defs, by edgec's registry, or opaque."""
    domain = normalize_domain(domain)
    if is_onnx_domain(domain):
        return OpKind.ONNX
    if domain in EDGEC_DOMAINS:
        return OpKind.REGISTERED
    return OpKind.OPAQUE


def is_known_op(domain: str, op_type: str, opset_version: int) -> bool:
    """True when ``domain::op_type`` exists (and is not deprecated) at ``opset_version``.

    Ops of opaque (unknown, non-ONNX) domains count as known: edgec passes them through unchanged.
    Whether the model imports the domain, or defines the op as a local function, is the
    verifier's business.
    """
    kind = op_kind(domain)
    if kind == OpKind.OPAQUE:
        return True
    sig = schema(normalize_domain(domain), op_type, int(opset_version))
    return sig is not None and not sig.deprecated


def check_arity(sig: OpSignature, inputs, outputs) -> Optional[str]:
    """Why a node's input/output lists (``None`` = omitted) do not fit ``sig``, or None if they do."""
    n_in, n_out = len(inputs), len(outputs)
    if not sig.min_inputs <= n_in <= sig.max_inputs:
        return f"has {n_in} inputs, {sig.qualified_op} takes {_range(sig.min_inputs, sig.max_inputs)}"
    if not sig.min_outputs <= n_out <= sig.max_outputs:
        return f"has {n_out} outputs, {sig.qualified_op} gives {_range(sig.min_outputs, sig.max_outputs)}"
    for what, params, actual in (("input", sig.inputs, inputs), ("output", sig.outputs, outputs)):
        for i, p in enumerate(params):
            if p.option == ParamOption.SINGLE and i < len(actual) and actual[i] is None:
                return f"omits required {what} {i} ('{p.name}') of {sig.qualified_op}"
            if p.option == ParamOption.VARIADIC:
                break
    return None


def _range(lo: int, hi: int) -> str:
    if hi >= UNBOUNDED:
        return f"at least {lo}"
    return str(lo) if lo == hi else f"{lo} to {hi}"


def formal_param(params: Tuple[Param, ...], i: int) -> Optional[Param]:
    """The formal parameter that actual position ``i`` binds to (variadics absorb the tail)."""
    if i < len(params):
        return params[i]
    if params and params[-1].option == ParamOption.VARIADIC:
        return params[-1]
    return None
