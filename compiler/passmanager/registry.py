"""The pass registry: pass name -> (pass class, provider).

Built-in passes and plugins register the same way: a distribution declares an entry point in
the group ``edgec.passes`` whose value is either a module (importing it registers its passes with
``@register_pass``) or ``module:function`` (the function is called with the registry)::

    [project.entry-points."edgec.passes"]
    builtin = "edgec.passes"                  # edgec's own
    my_npu = "my_npu_plugin.passes:register"  # a plugin

A local file can be loaded with ``--load-pass-plugin file.py``. A name registered twice is a
:class:`~edgec.errors.PluginError` naming both providers; so is a plugin that fails to import.

Registration is remembered per module, so a fresh registry (each CLI run makes one) gets the
passes of modules that were imported before it existed.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Type

from ..errors import PipelineError, PluginError
from .base import Pass

__all__ = ["Provider", "PassInfo", "PassRegistry", "get_registry", "using_registry", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "edgec.passes"
#: Bumped when the Pass API changes incompatibly; a plugin may declare ``EDGEC_PLUGIN_API = 1``.
PLUGIN_API_VERSION = 1


@dataclass(frozen=True)
class Provider:
    """Who registered a pass: edgec itself (``builtin``) or a plugin (distribution or file)."""

    kind: str  # "builtin" | "plugin"
    name: str  # distribution name, or file stem for --load-pass-plugin

    def describe(self, origin: str) -> str:
        """``edgec (edgec.passes.dce)`` or ``plugin my_plugin (file.py)``."""
        return f"{self.name} ({origin})" if self.kind == "builtin" else f"plugin {self.name} ({origin})"


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its class (the factory), provider, and origin (module or file)."""

    name: str
    cls: Type[Pass]
    provider: Provider
    origin: str

    def describe(self) -> str:
        return self.provider.describe(self.origin)


#: module name -> pass classes declared there (for replaying into fresh registries).
_DECLARED: Dict[str, List[Type[Pass]]] = {}
#: module name -> file name, for modules loaded from files with --load-pass-plugin.
_FILE_MODULES: Dict[str, str] = {}


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


class PassRegistry:
    """Name -> :class:`PassInfo`. Entry points are loaded the first time a pass is looked up."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._passes: Dict[str, PassInfo] = {}
        self._loaded = not load_entry_points
        self._loading = False
        self._provider: Optional[Provider] = None  # provider of what is being loaded now
        self.plugin_files: List[str] = []

    # --- registration -------------------------------------------------------------------------
    def register(self, cls: Type[Pass], provider: Optional[Provider] = None, origin: Optional[str] = None) -> None:
        """Register a pass class; a different class under a taken name is a PluginError."""
        from .base import _make_dataclass

        if "__dataclass_fields__" not in cls.__dict__:
            cls = _make_dataclass(cls)
        origin = origin or _FILE_MODULES.get(cls.__module__, cls.__module__)
        provider = provider or self._provider or _provider_of_module(cls.__module__)
        info = PassInfo(cls.name, cls, provider, origin)
        old = self._passes.get(cls.name)
        if old is not None:
            if _same_class(old.cls, cls):
                self._passes[cls.name] = info if old.cls is not cls else old
                return
            raise PluginError(f"pass '{cls.name}' is registered twice: by {old.describe()} and by {info.describe()}")
        self._passes[cls.name] = info

    # --- lookup ---------------------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        """Load every ``edgec.passes`` entry point once."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            self._load_entry_points()
            self._loaded = True
        finally:
            self._loading = False

    def __contains__(self, name: str) -> bool:
        self.ensure_loaded()
        return name in self._passes

    def names(self) -> List[str]:
        """Every registered name, sorted."""
        self.ensure_loaded()
        return sorted(self._passes)

    def infos(self) -> List[PassInfo]:
        """Every registered pass, sorted by name."""
        self.ensure_loaded()
        return [self._passes[n] for n in sorted(self._passes)]

    def get(self, name: str) -> PassInfo:
        """The pass called ``name``; unknown names are a PipelineError suggesting close matches."""
        self.ensure_loaded()
        info = self._passes.get(name)
        if info is None:
            raise PipelineError(f"unknown pass '{name}'{self.suggest(name)}")
        return info

    def suggest(self, name: str) -> str:
        """`` (did you mean: a, b?)`` or a hint to list the passes."""
        close = difflib.get_close_matches(name, list(self._passes), n=3, cutoff=0.6)
        if close:
            return f" (did you mean: {', '.join(close)}?)"
        return " (run `edgec passes` to list them)"

    # --- loading ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _providing(self, provider: Provider) -> Iterator[None]:
        old, self._provider = self._provider, provider
        try:
            with using_registry(self):
                yield
        finally:
            self._provider = old

    def _load_entry_points(self) -> None:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        seen = set()
        found_builtin = False
        for ep in sorted(eps, key=lambda e: (_dist_name(e) != "edgec", _dist_name(e), e.name)):
            key = (_dist_name(ep), ep.name, ep.value)
            if key in seen:  # the same distribution seen on two sys.path entries
                continue
            seen.add(key)
            dist = _dist_name(ep)
            provider = Provider("builtin" if dist == "edgec" else "plugin", dist or ep.name)
            found_builtin |= dist == "edgec"
            self.load_module(ep.value, provider, label=f"entry point '{ep.name} = {ep.value}' of {dist or 'an unknown distribution'}")
        if not found_builtin:  # running from a source tree without installed metadata
            self.load_module("edgec.passes", Provider("builtin", "edgec"), label="edgec.passes")

    def load_module(self, target: str, provider: Provider, *, label: str) -> None:
        """Import ``module`` or ``module:function`` (then call it with this registry)."""
        module_name, _, func = target.partition(":")
        module_name = module_name.strip()
        with self._providing(provider):
            try:
                module = importlib.import_module(module_name)
                _check_api(module, label)
                if func:
                    obj = module
                    for part in func.strip().split("."):
                        obj = getattr(obj, part)
                    obj(self)
            except PluginError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure of foreign code is reported as the plugin's
                raise PluginError(f"plugin {label} failed to load: {type(e).__name__}: {e}") from e
            self._replay(module_name, provider)

    def load_file(self, path: str) -> None:
        """Load a local ``.py`` file as a plugin (``--load-pass-plugin``)."""
        self.ensure_loaded()
        if not os.path.isfile(path):
            raise PluginError(f"pass plugin file not found: {path}")
        abspath = os.path.abspath(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        module_name = f"edgec_plugin_{stem}_{abs(hash(abspath)) & 0xFFFFFF:06x}"
        filename = os.path.basename(path)
        spec = importlib.util.spec_from_file_location(module_name, abspath)
        if spec is None or spec.loader is None:
            raise PluginError(f"pass plugin {path} cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        _FILE_MODULES[module_name] = filename
        _DECLARED.pop(module_name, None)
        sys.modules[module_name] = module
        with self._providing(Provider("plugin", stem)):
            try:
                spec.loader.exec_module(module)
                _check_api(module, filename)
                register = getattr(module, "register", None)
                if callable(register) and not isinstance(register, type):
                    register(self)
            except PluginError:
                raise
            except Exception as e:  # noqa: BLE001
                raise PluginError(f"pass plugin {path} failed to load: {type(e).__name__}: {e}") from e
        self.plugin_files.append(abspath)

    def _replay(self, module_name: str, provider: Provider) -> None:
        """Register passes declared in ``module_name`` (or below) before this registry existed."""
        for mod, classes in list(_DECLARED.items()):
            if mod == module_name or mod.startswith(module_name + "."):
                for cls in classes:
                    self.register(cls, provider)

    def copy(self) -> "PassRegistry":
        """A registry with the same passes (tests add their own passes to a copy)."""
        self.ensure_loaded()
        other = PassRegistry(load_entry_points=False)
        other._passes = dict(self._passes)
        return other


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else ""


def _check_api(module: object, label: str) -> None:
    version = getattr(module, "EDGEC_PLUGIN_API", PLUGIN_API_VERSION)
    if version != PLUGIN_API_VERSION:
        raise PluginError(f"plugin {label} needs edgec plugin API {version}, this edgec has {PLUGIN_API_VERSION}")


def _provider_of_module(module: str) -> Provider:
    if module == "edgec" or module.startswith("edgec."):
        return Provider("builtin", "edgec")
    if module in _FILE_MODULES:
        return Provider("plugin", os.path.splitext(_FILE_MODULES[module])[0])
    return Provider("plugin", module.split(".")[0])


# --- the active registry ------------------------------------------------------------------------

_GLOBAL = PassRegistry()
_ACTIVE: List[PassRegistry] = [_GLOBAL]


def get_registry() -> PassRegistry:
    """The registry ``@register_pass`` and ``parse_pipeline`` use by default."""
    return _ACTIVE[-1]


@contextlib.contextmanager
def using_registry(registry: PassRegistry) -> Iterator[PassRegistry]:
    """Make ``registry`` the active one inside the ``with`` block."""
    _ACTIVE.append(registry)
    try:
        yield registry
    finally:
        _ACTIVE.pop()


def declare_pass(cls: Type[Pass], registry: Optional[PassRegistry] = None) -> None:
    """Called by ``@register_pass``: remember the class and register it (active registry by default)."""
    declared = _DECLARED.setdefault(cls.__module__, [])
    declared[:] = [c for c in declared if c.__qualname__ != cls.__qualname__] + [cls]
    (registry or get_registry()).register(cls)
