"""The last step of the ONNX target: edgec-domain ops become ops onnxruntime runs."""

from __future__ import annotations

from edgec.backends.onnx_lowering import lower_for_onnx
from edgec.ir import Model
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["LowerToOnnx"]


@register_pass
class LowerToOnnx(Pass):
    """Lower edgec fused ops to standard ONNX, or to onnxruntime's com.microsoft ops with contrib-ops=true.

    `edgec compile --target onnx` appends this pass to every pipeline; it is a pass so that IR
    dumps and the verifier see the lowered graph too.
    """

    name = "lower-onnx"
    opt_level = 0
    contrib_ops: bool = False

    def run(self, model: Model, ctx: PassContext) -> bool:
        changed = lower_for_onnx(model, contrib_ops=self.contrib_ops)
        if changed:
            ctx.stat("lowered", 1)
        return changed
