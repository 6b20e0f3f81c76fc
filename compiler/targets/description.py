"""Target descriptions: one declarative TOML file per chip (CPU, memories, NPU and its op constraints).

Format (every key is checked; an unknown key is an error, so typos never pass silently; the full
reference with an example is docs/target-description.md)::

    name = "npu-int8"                  # required: [A-Za-z0-9_.-]+
    description = "..."                # optional free text
    clock_hz = 400_000_000             # required: int/float Hz, or "400 MHz" / "1.2 GHz" / "32 kHz"
    rounding = "double"                # requantization: "double" (gemmlowp/TFLite) or "single" (CMSIS-NN)
    native_dtypes = ["int8", "int32"]  # element types the CPU handles in hardware (float32 needs an FPU)

    [cpu]                              # required
    core = "cortex-m55"                # -mcpu value (cortex-m0 ... cortex-m85) or "host" (the build machine)
    fpu = "auto"                       # optional -mfpu value
    float_abi = "hard"                 # optional -mfloat-abi: soft | softfp | hard
    macs_per_cycle = 4                 # int8 MACs per cycle of the CPU kernels
    float_macs_per_cycle = 1           # optional, float32 MACs per cycle (default: macs_per_cycle)
    extra_flags = []                   # optional further compiler flags, each starting with "-"
    toolchain_prefix = "arm-none-eabi-"  # optional (default for Arm cores; "" for host)

    [memory]                           # required
    sram_bytes = "1 MiB"               # int bytes or "<n> B|KiB|MiB|GiB": activation arena + I/O buffers
    flash_bytes = "4 MiB"              # weights and code
    alignment = 16                     # optional, bytes (power of two), default 16
    bandwidth_bytes_per_cycle = 8      # SRAM bytes per cycle (activations)
    flash_bandwidth_bytes_per_cycle = 2  # optional, flash bytes per cycle (weights; default: bandwidth)

    [npu]                              # optional: without it every node runs on the CPU
    name = "ethos-u55-128"
    macs_per_cycle = 128
    dtypes = ["int8"]                  # tensor types the NPU runs (default ["int8"])
    fused_activations = ["Relu", "Clip"]  # activations its output stage applies (default Relu, Clip; Clip covers Relu6)

    [npu.ops]                          # ONNX op type -> constraints; an op not listed runs on the CPU
    Conv = { max_kernel = [8, 8], strides = [1, 2, 3], dilations = [1, 2], depthwise = true, grouped = false }
    Relu = {}

Constraint keys, by op family (any op also takes ``dtypes``, ``max_rank``, ``max_dim``, ``max_batch``):

* Conv, ConvInteger, QLinearConv, ConvTranspose: ``max_kernel`` (int for every spatial axis, or a
  list per axis), ``strides`` and ``dilations`` (allowed values), ``depthwise``, ``grouped`` (bool),
  ``max_channels`` (input and output channels);
* Gemm, MatMul, MatMulInteger, QLinearMatMul: ``max_k`` (reduction length), ``max_n`` (output
  columns), ``constant_weights`` (bool: the second operand must be a constant);
* MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool: ``max_window``, ``strides``;
* Add, Sub, Mul, Div, Min, Max, Sum, Mean, Pow, PRelu: ``broadcast`` (bool);
* Concat: ``max_inputs``; Softmax, LogSoftmax: ``last_axis_only`` (bool).

Errors are :class:`TargetDescriptionError`, one line naming the file and the key.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import EdgecError
from ..ir.dtypes import DType

__all__ = ["TargetDescriptionError", "OpConstraints", "NpuSpec", "CpuSpec", "MemorySpec", "TargetDescription",
           "load_target", "parse_target", "DTYPE_NAMES", "ARM_CORES", "OP_FAMILIES"]


class TargetDescriptionError(EdgecError):
    """A target description file that is missing, not TOML, or has a malformed or unknown entry."""


#: dtype names accepted in ``native_dtypes`` / ``dtypes``.
DTYPE_NAMES: Dict[str, DType] = {
    "int4": DType.INT4, "uint4": DType.UINT4, "int8": DType.INT8, "uint8": DType.UINT8, "int16": DType.INT16,
    "uint16": DType.UINT16, "int32": DType.INT32, "int64": DType.INT64, "float16": DType.FLOAT16,
    "bfloat16": DType.BFLOAT16, "float32": DType.FLOAT, "float64": DType.DOUBLE, "bool": DType.BOOL,
}

#: ``cpu.core`` values (besides "host"); they are passed to ``-mcpu``.
ARM_CORES = ("cortex-m0", "cortex-m0plus", "cortex-m1", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m23",
             "cortex-m33", "cortex-m35p", "cortex-m52", "cortex-m55", "cortex-m85")

_COMMON_KEYS = ("dtypes", "max_rank", "max_dim", "max_batch")

#: op family -> (its ops, the constraint keys it takes besides the common ones)
OP_FAMILIES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "conv": (("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"),
             ("max_kernel", "strides", "dilations", "depthwise", "grouped", "max_channels")),
    "matmul": (("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"), ("max_k", "max_n", "constant_weights")),
    "pool": (("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool"), ("max_window", "strides")),
    "binary": (("Add", "Sub", "Mul", "Div", "Min", "Max", "Sum", "Mean", "Pow", "PRelu"), ("broadcast",)),
    "concat": (("Concat",), ("max_inputs",)),
    "softmax": (("Softmax", "LogSoftmax"), ("last_axis_only",)),
}


def op_family(op: str) -> Optional[str]:
    """The constraint family of an ONNX op type (``"conv"``, ``"matmul"``, ...), or None."""
    for fam, (ops, _) in OP_FAMILIES.items():
        if op in ops:
            return fam
    return None


@dataclass(frozen=True)
class OpConstraints:
    """What the NPU accepts for one op type; None / True mean "no limit"."""

    op: str
    dtypes: Tuple[str, ...]
    max_rank: Optional[int] = None
    max_dim: Optional[int] = None
    max_batch: Optional[int] = None
    max_kernel: Optional[Tuple[int, ...]] = None  # one entry: every spatial axis
    strides: Optional[Tuple[int, ...]] = None
    dilations: Optional[Tuple[int, ...]] = None
    depthwise: bool = True
    grouped: bool = True
    max_channels: Optional[int] = None
    max_k: Optional[int] = None
    max_n: Optional[int] = None
    constant_weights: bool = False
    max_window: Optional[Tuple[int, ...]] = None
    broadcast: bool = True
    max_inputs: Optional[int] = None
    last_axis_only: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """The constraints that differ from "no limit", JSON-able."""
        d: Dict[str, Any] = {"dtypes": list(self.dtypes)}
        for k in ("max_rank", "max_dim", "max_batch", "max_kernel", "strides", "dilations", "max_channels", "max_k",
                  "max_n", "max_window", "max_inputs"):
            v = getattr(self, k)
            if v is not None:
                d[k] = list(v) if isinstance(v, tuple) else v
        for k, default in (("depthwise", True), ("grouped", True), ("constant_weights", False), ("broadcast", True),
                           ("last_axis_only", False)):
            if getattr(self, k) != default:
                d[k] = getattr(self, k)
        return d


@dataclass(frozen=True)
class NpuSpec:
    """The accelerator: throughput, tensor types, fusable activations and per-op constraints."""

    name: str
    macs_per_cycle: float
    dtypes: Tuple[str, ...]
    fused_activations: Tuple[str, ...]
    ops: Mapping[str, OpConstraints]


@dataclass(frozen=True)
class CpuSpec:
    """The CPU running everything the NPU does not (and the glue code)."""

    core: str
    macs_per_cycle: float
    float_macs_per_cycle: float
    fpu: Optional[str] = None
    float_abi: Optional[str] = None
    extra_flags: Tuple[str, ...] = ()
    toolchain_prefix: str = ""

    @property
    def is_host(self) -> bool:
        return self.core == "host"

    def flags(self) -> List[str]:
        """Target flags for the C compiler (``-mthumb -mcpu=... [-mfpu=...] [-mfloat-abi=...]``)."""
        out: List[str] = [] if self.is_host else ["-mthumb", f"-mcpu={self.core}"]
        if self.fpu:
            out.append(f"-mfpu={self.fpu}")
        if self.float_abi:
            out.append(f"-mfloat-abi={self.float_abi}")
        return out + list(self.extra_flags)


@dataclass(frozen=True)
class MemorySpec:
    """On-chip memories: SRAM for the activation arena and I/O, flash for weights and code."""

    sram_bytes: int
    flash_bytes: int
    bandwidth_bytes_per_cycle: float
    flash_bandwidth_bytes_per_cycle: float
    alignment: int = 16


@dataclass(frozen=True)
class TargetDescription:
    """A parsed target description file (see the module docstring for the format)."""

    name: str
    clock_hz: float
    rounding: str
    native_dtypes: Tuple[str, ...]
    cpu: CpuSpec
    memory: MemorySpec
    npu: Optional[NpuSpec] = None
    description: str = ""
    path: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able summary (for reports)."""
        d: Dict[str, Any] = {
            "name": self.name, "file": os.path.basename(self.path) if self.path else "", "clock_hz": self.clock_hz,
            "rounding": self.rounding, "native_dtypes": list(self.native_dtypes),
            "cpu": {"core": self.cpu.core, "macs_per_cycle": self.cpu.macs_per_cycle,
                    "float_macs_per_cycle": self.cpu.float_macs_per_cycle, "flags": self.cpu.flags()},
            "memory": {"sram_bytes": self.memory.sram_bytes, "flash_bytes": self.memory.flash_bytes,
                       "alignment": self.memory.alignment,
                       "bandwidth_bytes_per_cycle": self.memory.bandwidth_bytes_per_cycle,
                       "flash_bandwidth_bytes_per_cycle": self.memory.flash_bandwidth_bytes_per_cycle},
            "npu": None,
        }
        if self.npu is not None:
            d["npu"] = {"name": self.npu.name, "macs_per_cycle": self.npu.macs_per_cycle,
                        "dtypes": list(self.npu.dtypes), "fused_activations": list(self.npu.fused_activations),
                        "ops": {k: v.to_dict() for k, v in sorted(self.npu.ops.items())}}
        return d


# --- parsing -----------------------------------------------------------------------------------

_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}
_FREQ_UNITS = {"hz": 1, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
_PRETTY = {"b": "B", "kib": "KiB", "mib": "MiB", "gib": "GiB", "hz": "Hz", "khz": "kHz", "mhz": "MHz", "ghz": "GHz"}


class _Reader:
    """Typed access to one table of the file; every error names the file and the dotted key."""

    def __init__(self, path: str, table: Mapping[str, Any], prefix: str = "") -> None:
        self.path, self.table, self.prefix = path, table, prefix
        self.used: set = set()

    def key(self, k: str) -> str:
        return f"{self.prefix}{k}"

    def fail(self, k: str, msg: str) -> TargetDescriptionError:
        return TargetDescriptionError(f"{self.path}: {self.key(k)}: {msg}")

    def has(self, k: str) -> bool:
        return k in self.table

    def get(self, k: str, required: bool = False) -> Any:
        self.used.add(k)
        if k not in self.table:
            if required:
                raise TargetDescriptionError(f"{self.path}: {self.key(k)}: missing (required)")
            return None
        return self.table[k]

    def string(self, k: str, required: bool = False, choices: Optional[Tuple[str, ...]] = None,
               pattern: Optional[str] = None) -> Optional[str]:
        v = self.get(k, required)
        if v is None:
            return None
        if not isinstance(v, str):
            raise self.fail(k, f"expected a string, got {_tname(v)}")
        if choices is not None and v not in choices:
            raise self.fail(k, f"'{v}' is not one of {', '.join(choices)}")
        if pattern is not None and not re.fullmatch(pattern, v):
            raise self.fail(k, f"'{v}' is not a valid value (expected {pattern})")
        return v

    def boolean(self, k: str, default: bool) -> bool:
        v = self.get(k)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(k, f"expected true or false, got {_tname(v)}")
        return v

    def integer(self, k: str, required: bool = False, minimum: int = 1) -> Optional[int]:
        v = self.get(k, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(k, f"expected an integer, got {_tname(v)}")
        if v < minimum:
            raise self.fail(k, f"must be >= {minimum}, got {v}")
        return v

    def number(self, k: str, required: bool = False) -> Optional[float]:
        v = self.get(k, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(k, f"expected a number, got {_tname(v)}")
        if not math.isfinite(v) or v <= 0:
            raise self.fail(k, f"must be a positive number, got {v}")
        return float(v)

    def quantity(self, k: str, units: Dict[str, float], what: str, required: bool = False) -> Optional[float]:
        """A number, or a string "<number> <unit>" (units: sizes or frequencies)."""
        v = self.get(k, required)
        if v is None:
            return None
        if isinstance(v, str):
            m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*", v)
            if not m or m.group(2).lower() not in units:
                names = ", ".join(_PRETTY.get(u, u) for u in units)
                raise self.fail(k, f"'{v}' is not {what} (a number, or '<number> <unit>' with unit one of {names})")
            v = float(m.group(1)) * units[m.group(2).lower()]
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(k, f"expected {what}, got {_tname(v)}")
        if not math.isfinite(v) or v <= 0:
            raise self.fail(k, f"must be positive, got {v}")
        return float(v)

    def size(self, k: str, required: bool = False) -> Optional[int]:
        v = self.quantity(k, _SIZE_UNITS, "a size in bytes", required)
        if v is None:
            return None
        if v != int(v):
            raise self.fail(k, f"not a whole number of bytes ({v})")
        return int(v)

    def int_list(self, k: str, minimum: int = 1) -> Optional[Tuple[int, ...]]:
        """A list of integers (an integer alone is a one-element list)."""
        v = self.get(k)
        if v is None:
            return None
        items = [v] if isinstance(v, int) and not isinstance(v, bool) else v
        if not isinstance(items, list) or not items or \
                any(isinstance(x, bool) or not isinstance(x, int) for x in items):
            raise self.fail(k, f"expected an integer or a non-empty list of integers, got {_short(v)}")
        if any(x < minimum for x in items):
            raise self.fail(k, f"values must be >= {minimum}, got {_short(v)}")
        return tuple(items)

    def str_list(self, k: str, choices: Optional[Tuple[str, ...]] = None) -> Optional[Tuple[str, ...]]:
        v = self.get(k)
        if v is None:
            return None
        if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
            raise self.fail(k, f"expected a list of strings, got {_short(v)}")
        if choices is not None:
            for x in v:
                if x not in choices:
                    raise self.fail(k, f"unknown value '{x}' (one of {', '.join(choices)})")
        return tuple(v)

    def table_at(self, k: str, required: bool = False) -> Optional["_Reader"]:
        v = self.get(k, required)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self.fail(k, f"expected a table, got {_tname(v)}")
        return _Reader(self.path, v, f"{self.key(k)}.")

    def finish(self, allowed: Optional[Tuple[str, ...]] = None) -> None:
        """Reject keys nobody read (typos, unsupported settings)."""
        for k in self.table:
            if k not in self.used:
                known = ", ".join(allowed if allowed is not None else sorted(self.used))
                raise self.fail(k, f"unknown key (known: {known})")


def _tname(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


_TOP_KEYS = ("name", "description", "clock_hz", "rounding", "native_dtypes", "cpu", "memory", "npu")
_CPU_KEYS = ("core", "fpu", "float_abi", "macs_per_cycle", "float_macs_per_cycle", "extra_flags", "toolchain_prefix")
_MEM_KEYS = ("sram_bytes", "flash_bytes", "alignment", "bandwidth_bytes_per_cycle", "flash_bandwidth_bytes_per_cycle")
_NPU_KEYS = ("name", "macs_per_cycle", "dtypes", "fused_activations", "ops")
_ACTIVATIONS = ("Relu", "Relu6", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Gelu", "GeluTanh", "Silu",
                "Tanh", "PRelu")


def load_target(path: str) -> TargetDescription:
    """Read and check a target description TOML file; raises :class:`TargetDescriptionError`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise TargetDescriptionError(f"{path}: no such target description file") from None
    except OSError as e:
        raise TargetDescriptionError(f"{path}: cannot read target description ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TargetDescriptionError(f"{path}: not a UTF-8 text file") from None
    return parse_target(text, path)


def parse_target(text: str, path: str = "<target>") -> TargetDescription:
    """Parse target description TOML ``text``; ``path`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetDescriptionError(f"{path}: invalid TOML: {e}") from None
    top = _Reader(path, doc)
    name = top.string("name", required=True, pattern=r"[A-Za-z0-9_.-]+")
    description = top.string("description") or ""
    clock = top.quantity("clock_hz", _FREQ_UNITS, "a frequency in Hz", required=True)
    rounding = top.string("rounding", required=True, choices=("double", "single"))
    native = top.str_list("native_dtypes", tuple(DTYPE_NAMES))
    if native is None:
        raise top.fail("native_dtypes", "missing (required)")

    c = top.table_at("cpu", required=True)
    core = c.string("core", required=True)
    if core != "host" and core not in ARM_CORES:
        raise c.fail("core", f"unknown core '{core}' (one of host, {', '.join(ARM_CORES)})")
    fpu = c.string("fpu", pattern=r"[a-z0-9][a-z0-9.-]*")
    abi = c.string("float_abi", choices=("soft", "softfp", "hard"))
    cmacs = c.number("macs_per_cycle", required=True)
    fmacs = c.number("float_macs_per_cycle")
    extra = c.str_list("extra_flags") or ()
    for fl in extra:
        if not fl.startswith("-") or any(ch.isspace() for ch in fl):
            raise c.fail("extra_flags", f"'{fl}' is not a single compiler flag (starting with '-')")
    prefix = c.string("toolchain_prefix", pattern=r"[A-Za-z0-9_.+-]*")
    if prefix is None:
        prefix = "" if core == "host" else "arm-none-eabi-"
    c.finish(_CPU_KEYS)
    cpu = CpuSpec(core, cmacs, fmacs if fmacs is not None else cmacs, fpu, abi, tuple(extra), prefix)  # type: ignore[arg-type]

    m = top.table_at("memory", required=True)
    sram = m.size("sram_bytes", required=True)
    flash = m.size("flash_bytes", required=True)
    align = m.integer("alignment") or 16
    if align & (align - 1):
        raise m.fail("alignment", f"must be a power of two, got {align}")
    bw = m.number("bandwidth_bytes_per_cycle", required=True)
    fbw = m.number("flash_bandwidth_bytes_per_cycle")
    m.finish(_MEM_KEYS)
    memory = MemorySpec(sram, flash, bw, fbw if fbw is not None else bw, align)  # type: ignore[arg-type]

    npu = None
    n = top.table_at("npu")
    if n is not None:
        npu = _parse_npu(n)
    top.finish(_TOP_KEYS)
    return TargetDescription(name=name, clock_hz=clock, rounding=rounding, native_dtypes=native,  # type: ignore[arg-type]
                             cpu=cpu, memory=memory, npu=npu, description=description, path=path, raw=doc)


def _parse_npu(n: _Reader) -> NpuSpec:
    import onnx.defs

    name = n.string("name", required=True, pattern=r"[A-Za-z0-9_.+-]+")
    macs = n.number("macs_per_cycle", required=True)
    dtypes = n.str_list("dtypes", tuple(DTYPE_NAMES)) or ("int8",)
    acts = n.str_list("fused_activations", _ACTIVATIONS)
    if acts is None:
        acts = ("Relu", "Clip")
    ops_r = n.table_at("ops")
    ops: Dict[str, OpConstraints] = {}
    if ops_r is not None:
        for op in list(ops_r.table):
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", op) or not onnx.defs.has(op):
                raise ops_r.fail(op, f"unknown op '{op}' (keys of [npu.ops] are ONNX op types, e.g. Conv, Gemm, "
                                     f"AveragePool)")
            t = ops_r.table_at(op)
            ops[op] = _parse_op(op, t, dtypes)  # type: ignore[arg-type]
        ops_r.finish()
    n.finish(_NPU_KEYS)
    return NpuSpec(name, macs, dtypes, acts, ops)  # type: ignore[arg-type]


def _parse_op(op: str, t: _Reader, default_dtypes: Tuple[str, ...]) -> OpConstraints:
    fam = op_family(op)
    allowed = _COMMON_KEYS + (OP_FAMILIES[fam][1] if fam else ())
    for k in t.table:
        if k not in allowed:
            raise t.fail(k, f"unknown key for {op} (known: {', '.join(allowed)})")
    kw: Dict[str, Any] = {"op": op, "dtypes": t.str_list("dtypes", tuple(DTYPE_NAMES)) or default_dtypes,
                          "max_rank": t.integer("max_rank"), "max_dim": t.integer("max_dim"),
                          "max_batch": t.integer("max_batch")}
    if fam == "conv":
        kw.update(max_kernel=t.int_list("max_kernel"), strides=t.int_list("strides"),
                  dilations=t.int_list("dilations"), depthwise=t.boolean("depthwise", True),
                  grouped=t.boolean("grouped", True), max_channels=t.integer("max_channels"))
    elif fam == "matmul":
        kw.update(max_k=t.integer("max_k"), max_n=t.integer("max_n"),
                  constant_weights=t.boolean("constant_weights", False))
    elif fam == "pool":
        kw.update(max_window=t.int_list("max_window"), strides=t.int_list("strides"))
    elif fam == "binary":
        kw.update(broadcast=t.boolean("broadcast", True))
    elif fam == "concat":
        kw.update(max_inputs=t.integer("max_inputs", minimum=2))
    elif fam == "softmax":
        kw.update(last_axis_only=t.boolean("last_axis_only", False))
    t.finish(allowed)
    return OpConstraints(**kw)
