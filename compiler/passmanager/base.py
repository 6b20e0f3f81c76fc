"""The pass contract: a ``Pass`` is a small dataclass whose fields are its options.

Writing a pass::

    from edgec.passmanager import Pass, PassContext, register_pass

    @register_pass
    class DeadCodeElimination(Pass):
        \"\"\"Remove nodes whose results are never used.\"\"\"

        name = "dce"
        opt_level = 1
        keep_initializers: bool = False      # an option: `dce{keep-initializers=true}`

        def run(self, model: Model, ctx: PassContext) -> bool:
            ...
            ctx.stat("nodes-removed", n)
            return n > 0

or, for a pass that is just a function, ``@function_pass("name", opt_level=1)`` on
``def f(model, ctx, *, option: int = 3) -> bool``.

A pass never prints: dumps, timing, statistics and verification are instruments of the pass manager.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional, Sequence, Tuple, get_args, get_origin

from ..errors import PipelineError, PluginError

if typing.TYPE_CHECKING:  # pragma: no cover
    from ..ir import Model
    from .registry import PassRegistry

__all__ = ["Pass", "PassContext", "OptionSpec", "register_pass", "function_pass", "format_option_value"]

#: Pass names: lower-case words joined by hyphens (``fold-constants``).
PASS_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*$")
#: Names the pipeline syntax uses for itself.
RESERVED_NAMES = frozenset({"repeat"})


@dataclass
class PassContext:
    """What a running pass may use besides the model: statistics, warnings, the pipeline.

    ``ctx.stat(name, n)`` adds ``n`` to the statistic ``name`` of the pass that is running;
    ``ctx.warn(message)`` records a warning the driver shows the user after the run.
    """

    pipeline: str = ""
    #: pass name -> statistic name -> value, summed over every run of the pass.
    stats: Dict[str, Dict[str, int]] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    #: the pass currently running (set by the pass manager).
    current: Optional["Pass"] = None
    #: the current pass and what follows it (a Pipeline; set by the pass manager, used by reproducers).
    remaining: Any = None
    #: inputs some passes need besides the model, by name: ``"calibration"`` (a
    #: :class:`edgec.quant.data.CalibrationData`), set by the driver (CLI ``--calibration``).
    resources: Dict[str, Any] = field(default_factory=dict)
    #: reports passes leave for the driver to print or save (``"quantization"`` -> dict), by name.
    reports: Dict[str, Any] = field(default_factory=dict)

    def stat(self, name: str, n: int = 1) -> None:
        """Add ``n`` to statistic ``name`` of the current pass."""
        key = self.current.name if self.current is not None else "<none>"
        per_pass = self.stats.setdefault(key, {})
        per_pass[name] = per_pass.get(name, 0) + n

    def warn(self, message: str) -> None:
        """Record a warning (shown by the driver, never printed by a pass)."""
        self.warnings.append(message)


@dataclass(frozen=True)
class OptionSpec:
    """One option of a pass: its field name, annotation and default."""

    field_name: str
    annotation: Any
    default: Any

    @property
    def name(self) -> str:
        """The option name as written in pipelines (hyphens for underscores)."""
        return self.field_name.replace("_", "-")

    @property
    def type_name(self) -> str:
        """A short human name of the option type (``int``, ``list[str]``, ``{a,b}``)."""
        return _type_name(self.annotation)

    @property
    def is_list(self) -> bool:
        return _is_list(_strip_optional(self.annotation))

    def parse(self, raw: Sequence[str], pass_name: str) -> Any:
        """Convert the raw text value(s) of the option to its Python value."""
        ann = _strip_optional(self.annotation)
        where = f"option '{self.name}' of pass '{pass_name}'"
        if _is_list(ann):
            (elem,) = get_args(ann)[:1] or (str,)
            if list(raw) == [""]:
                return []
            return [_parse_scalar(r, elem, where) for r in raw]
        if len(raw) != 1:
            raise PipelineError(f"{where} takes one value, got {len(raw)}: {','.join(raw)}")
        return _parse_scalar(raw[0], ann, where)


class Pass:
    """Base class of every pass. Subclasses are dataclasses (see :func:`register_pass`).

    Class attributes: ``name`` (pipeline name), ``opt_level`` (lowest -O that may include it),
    ``idempotent`` (running it twice in a row changes nothing the second time). Annotated class
    fields with defaults are the options. The summary is the first line of the docstring.
    """

    name: ClassVar[str] = ""
    opt_level: ClassVar[int] = 2
    idempotent: ClassVar[bool] = True

    def run(self, model: "Model", ctx: PassContext) -> bool:
        """Transform ``model`` in place; return True when anything changed."""
        raise NotImplementedError(f"pass {self.name!r} does not implement run()")

    # --- metadata -------------------------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0].strip() if doc.strip() else ""

    @classmethod
    def options(cls) -> List[OptionSpec]:
        """The options, in declaration order."""
        if not dataclasses.is_dataclass(cls):
            return []
        hints = _type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            out.append(OptionSpec(f.name, hints.get(f.name, f.type), default))
        return out

    @classmethod
    def option(cls, name: str) -> Optional[OptionSpec]:
        """The option called ``name`` (hyphens or underscores), or None."""
        for spec in cls.options():
            if spec.name == name.replace("_", "-"):
                return spec
        return None

    @classmethod
    def from_options(cls, raw: Dict[str, List[str]]) -> "Pass":
        """An instance from textual options (``{"per-channel": ["true"]}``)."""
        kwargs = {}
        for key, values in raw.items():
            spec = cls.option(key)
            if spec is None:
                names = ", ".join(s.name for s in cls.options()) or "none"
                raise PipelineError(f"pass '{cls.name}' has no option '{key}' (its options: {names})")
            kwargs[spec.field_name] = spec.parse(values, cls.name)
        return cls(**kwargs)

    def option_values(self) -> Dict[str, Any]:
        """Option name (pipeline spelling) -> current value."""
        return {s.name: getattr(self, s.field_name) for s in self.options()}

    def __str__(self) -> str:
        """The pipeline text of this pass: its name and its non-default options."""
        parts = []
        for spec in self.options():
            value = getattr(self, spec.field_name)
            if value != spec.default:
                parts.append(f"{spec.name}={format_option_value(value)}")
        return self.name + ("{" + ",".join(parts) + "}" if parts else "")


# --- registration -------------------------------------------------------------------------------

def _make_dataclass(cls: type) -> type:
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise PluginError(f"@register_pass needs a subclass of edgec.passmanager.Pass, got {cls!r}")
    for reserved in ("name", "opt_level", "idempotent"):
        if reserved in cls.__dict__.get("__annotations__", {}):
            raise PluginError(f"pass class {cls.__qualname__}: '{reserved}' is a class attribute, not an option; "
                              f"write `{reserved} = ...` without an annotation")
    if "__dataclass_fields__" not in cls.__dict__:
        for attr in cls.__dict__.get("__annotations__", {}):
            default = cls.__dict__.get(attr, dataclasses.MISSING)
            if isinstance(default, (list, dict, set)):  # allow `patterns: list[str] = ["a"]`
                setattr(cls, attr, field(default_factory=lambda d=default: type(d)(d)))
        cls = dataclass(cls)
    name = cls.__dict__.get("name") or getattr(cls, "name", "")
    if not name or not PASS_NAME_RE.match(name) or name in RESERVED_NAMES:
        raise PluginError(f"pass class {cls.__qualname__} has an invalid name {name!r} "
                          f"(lower-case words joined by '-', not 'repeat')")
    for spec in cls.options():
        try:
            _type_name(spec.annotation)
        except TypeError as e:
            raise PluginError(f"pass '{name}': option '{spec.name}': {e}") from None
        if spec.default is dataclasses.MISSING:
            raise PluginError(f"pass '{name}': option '{spec.name}' needs a default value")
    return cls


def register_pass(cls: Optional[type] = None, *, name: Optional[str] = None,
                  registry: Optional["PassRegistry"] = None) -> Any:
    """Class decorator: make a Pass subclass a dataclass and register it.

    ``@register_pass`` registers in the active registry (see :func:`edgec.passmanager.registry.get_registry`);
    ``@register_pass(name="x", registry=r)`` sets the name and/or the registry explicitly.
    """

    def deco(c: type) -> type:
        if name is not None:
            c.name = name  # type: ignore[attr-defined]
        c = _make_dataclass(c)
        from .registry import declare_pass

        declare_pass(c, registry)
        return c

    if isinstance(cls, str):  # @register_pass("name")
        name, cls = cls, None
    return deco if cls is None else deco(cls)


def function_pass(name: str, *, opt_level: int = 2, idempotent: bool = True,
                  registry: Optional["PassRegistry"] = None) -> Callable[[Callable[..., bool]], type]:
    """Decorator: make ``def f(model, ctx, *, opt: T = default) -> bool`` a registered pass.

    The parameters after ``model`` and ``ctx`` are the options (annotated, with defaults); the
    summary is the first line of the function's docstring. Returns the generated Pass class.
    """

    def deco(fn: Callable[..., bool]) -> type:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())[2:]
        hints = typing.get_type_hints(fn)
        annotations: Dict[str, Any] = {}
        namespace: Dict[str, Any] = {
            "name": name, "opt_level": opt_level, "idempotent": idempotent,
            "__doc__": fn.__doc__, "__module__": fn.__module__, "__qualname__": fn.__qualname__,
        }
        for p in params:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            if p.default is inspect.Parameter.empty:
                raise PluginError(f"function pass '{name}': option '{p.name}' needs a default value")
            annotations[p.name] = hints.get(p.name, type(p.default))
            namespace[p.name] = p.default
        namespace["__annotations__"] = annotations

        def run(self: Pass, model: "Model", ctx: PassContext) -> bool:
            opts = {s.field_name: getattr(self, s.field_name) for s in self.options()}
            return bool(fn(model, ctx, **opts))

        namespace["run"] = run
        cls = type(fn.__name__, (Pass,), namespace)
        return register_pass(cls, registry=registry)

    return deco


# --- option types -------------------------------------------------------------------------------

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _type_hints(cls: type) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)  # each class's annotations in its own module's namespace
    except Exception:  # noqa: BLE001 - resolve field by field instead
        pass
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        ann = f.type
        if isinstance(ann, str):
            owner = next((k for k in cls.__mro__ if f.name in k.__dict__.get("__annotations__", {})), cls)
            module = sys.modules.get(owner.__module__)
            namespace = dict(vars(typing))
            namespace.update(vars(module) if module else {})
            try:
                ann = eval(ann, namespace)  # noqa: S307 - an annotation written by the pass author
            except Exception:  # noqa: BLE001
                pass
        out[f.name] = ann
    return out


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) is typing.Union:
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _is_list(ann: Any) -> bool:
    return get_origin(ann) in (list, List, tuple, Tuple, Sequence) or ann in (list, List)


def _type_name(ann: Any) -> str:
    ann = _strip_optional(ann)
    if get_origin(ann) is Literal:
        return "{" + ",".join(str(a) for a in get_args(ann)) + "}"
    if _is_list(ann):
        args = get_args(ann)
        return f"list[{_type_name(args[0]) if args else 'str'}]"
    if ann in (int, float, bool, str):
        return ann.__name__
    raise TypeError(f"unsupported option type {ann!r} (use int, float, bool, str, Literal[...] or list[...] of them)")


def _parse_scalar(raw: str, ann: Any, where: str) -> Any:
    ann = _strip_optional(ann)
    if get_origin(ann) is Literal:
        choices = get_args(ann)
        for c in choices:
            if str(c) == raw:
                return c
        raise PipelineError(f"{where}: '{raw}' is not one of: {', '.join(str(c) for c in choices)}")
    if ann is bool:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise PipelineError(f"{where}: expected true or false, got '{raw}'")
    if ann is int:
        try:
            return int(raw, 0)
        except ValueError:
            raise PipelineError(f"{where}: expected an integer, got '{raw}'") from None
    if ann is float:
        try:
            return float(raw)
        except ValueError:
            raise PipelineError(f"{where}: expected a number, got '{raw}'") from None
    return raw


_SPECIAL = re.compile(r"[\s,{}()=\"\\]")


def format_option_value(value: Any) -> str:
    """Text of an option value, the inverse of parsing (lists comma-joined, strings quoted if needed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_option_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if text == "" or _SPECIAL.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text
