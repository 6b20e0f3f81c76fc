"""Shape and type inference as a pass: fills in the types other passes rely on."""

from __future__ import annotations

from edgec.ir import Model
from edgec.ir.shapes import infer_shapes
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["InferShapes"]


@register_pass
class InferShapes(Pass):
    """Infer element types and (symbolic) shapes of every value; existing types are refined, never overwritten.

    A conflict between an inferred static dim and a declared one keeps the declared type and is
    reported as a warning, never resolved silently.
    """

    name = "infer-shapes"
    opt_level = 1

    def run(self, model: Model, ctx: PassContext) -> bool:
        conflicts: list = []
        changed = infer_shapes(model, conflicts=conflicts)
        ctx.stat("values-typed", changed)
        for c in conflicts:
            ctx.warn(f"shape conflict: {c}")
        return changed > 0
