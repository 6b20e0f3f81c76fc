"""Optimization presets: ``-O0`` .. ``-O3`` are pipelines, all in this one table.

Every pass in preset ``-On`` has ``opt_level <= n`` (a test checks it). Later passes are added here.
"""

from __future__ import annotations

from typing import Dict, Optional

from ..errors import PipelineError
from .pipeline import Pipeline, parse_pipeline
from .registry import PassRegistry

__all__ = ["PRESETS", "DEFAULT_OPT_LEVEL", "preset_pipeline"]

# Exact clean-up: folding, shape-chain simplification, no-ops, CSE, dead code, to a fixed point.
_CLEANUP = ("repeat{max-iters=6}(fold-constants,simplify-shapes,eliminate-noops,merge-shape-ops,cse,"
            "dedup-initializers,dce),sink-constants")
# Fusions change rounding (within rtol 1e-5), so they start at -O2.
_FUSE = "recover-patterns,fuse-batchnorm,fuse-pad,fuse-affine,simplify-algebra,fuse-activation"

#: -O level -> pipeline text.
PRESETS: Dict[int, str] = {
    0: "",
    1: f"infer-shapes,lift-constants,inline-if,{_CLEANUP},toposort",
    2: f"infer-shapes,lift-constants,inline-if,{_CLEANUP},{_FUSE},{_CLEANUP},toposort",
    3: f"infer-shapes,lift-constants,inline-if,{_CLEANUP},{_FUSE},{_CLEANUP},toposort",
}

#: What `edgec compile` runs when given neither -O nor --passes.
DEFAULT_OPT_LEVEL = 2


def preset_pipeline(level: int, registry: Optional[PassRegistry] = None) -> Pipeline:
    """The pipeline of ``-O<level>``."""
    if level not in PRESETS:
        raise PipelineError(f"no optimization level -O{level} (choose one of {', '.join(f'-O{k}' for k in sorted(PRESETS))})")
    return parse_pipeline(PRESETS[level], registry)
