"""Target descriptions for integer-only (ASIC/NPU + microcontroller) targets.

* :mod:`.description`: ``load_target(path) -> TargetDescription`` from a TOML file (format in
  docs/target-description.md);
* :mod:`.legality`: ``place(model, target)`` puts every node on the NPU or the CPU, with the reason;
* :mod:`.cost`: ``build_cost_report(model, c_report, target, placements)`` (MACs, bytes, cycles,
  latency, SRAM/flash fit) and ``format_cost_report(report)``;
* :mod:`.crosscompile`: ``cross_compile(out_dir, target)`` builds the generated C for the target CPU
  and measures text/rodata/data/bss.
"""

from __future__ import annotations

from .cost import TargetFitError, build_cost_report, format_cost_report
from .crosscompile import CrossCompileError, cross_compile
from .description import (CpuSpec, MemorySpec, NpuSpec, OpConstraints, TargetDescription, TargetDescriptionError,
                          load_target, parse_target)
from .legality import Placement, place, place_node, unit_of

__all__ = [
    "CpuSpec", "MemorySpec", "NpuSpec", "OpConstraints", "TargetDescription", "TargetDescriptionError",
    "load_target", "parse_target", "Placement", "place", "place_node", "unit_of", "TargetFitError", "build_cost_report",
    "format_cost_report", "CrossCompileError", "cross_compile",
]
