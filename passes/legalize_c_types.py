"""The C target's type legalization as a pass: narrow element types compute in float32 / int32."""

from __future__ import annotations

from edgec.backends.c.legalize_types import legalize_types
from edgec.ir import Model
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["LegalizeCTypes"]


@register_pass
class LegalizeCTypes(Pass):
    """float16, bfloat16, float8, float4 and int4/int2 nodes compute in float32 / int32 with casts around them.

    The C back end runs it first in ``generate_c``; as a pass it shows the rewrite in IR dumps
    (``--print-ir-after=legalize-c-types``) and in ``edgec opt``. Data movement and Cast keep narrow
    types; QuantizeLinear / DequantizeLinear the int8 kernels do not take become float ops.
    """

    name = "legalize-c-types"
    opt_level = 0

    def run(self, model: Model, ctx: PassContext) -> bool:
        changed = legalize_types(model)
        if changed:
            ctx.stat("legalized", 1)
        return changed
