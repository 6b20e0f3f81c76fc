"""The pass manager: the Pass API, the registry (built-ins and plugins), textual pipelines,
presets, instruments and the driver. See :mod:`edgec.passmanager.base` for how a pass is written.
"""

from .base import OptionSpec, Pass, PassContext, function_pass, register_pass
from .instruments import CrashReproducer, DumpDir, Instrument, PrintIR, Statistics, Timing, VerifyEach
from .manager import PassManager, PassManagerOptions
from .pipeline import Pipeline, Repeat, parse_pipeline
from .presets import DEFAULT_OPT_LEVEL, PRESETS, preset_pipeline
from .registry import PassInfo, PassRegistry, Provider, get_registry, using_registry

__all__ = [
    "OptionSpec", "Pass", "PassContext", "function_pass", "register_pass",
    "CrashReproducer", "DumpDir", "Instrument", "PrintIR", "Statistics", "Timing", "VerifyEach",
    "PassManager", "PassManagerOptions", "Pipeline", "Repeat", "parse_pipeline",
    "DEFAULT_OPT_LEVEL", "PRESETS", "preset_pipeline",
    "PassInfo", "PassRegistry", "Provider", "get_registry", "using_registry",
]
