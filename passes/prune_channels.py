"""Structured channel pruning: remove whole channels (DepGraph groups), shrinking the layers."""

from __future__ import annotations

from typing import List, Literal

from edgec.errors import EdgecError
from edgec.ir import Model
from edgec.passmanager import Pass, PassContext, register_pass

__all__ = ["PruneChannels"]


@register_pass
class PruneChannels(Pass):
    """Remove whole channels of coupled channel groups (structured pruning), shrinking every layer.

    Groups come from :mod:`edgec.prune.dependency` (residual Adds, concat/split offsets, depthwise
    convs, Flatten->Gemm blocks are followed; anything unknown freezes its group). Options:
    ``sparsity`` (fraction of channels removed per group, or of MACs with ``target=macs``),
    ``allocation`` (``target=macs``: ``greedy`` removes chunks of channels from the group losing the
    least importance per MAC saved; ``uniform`` one ratio for all groups),
    ``round-to`` (kept counts are multiples of it), ``score`` (l1, l2, bn: |gamma| of the
    BatchNormalization in the group, or obs: the next layers' output error after a least-squares
    refit, from calibration data), ``min-channels``, ``skip`` (producer node or output names whose
    groups stay), ``refit`` (least-squares refit of each next layer to the dense model's outputs on
    ``ctx.resources['calibration']``). Report: ``ctx.reports['channel-pruning']``.
    """

    name = "prune-channels"
    opt_level = 3
    sparsity: float = 0.5
    target: Literal["channels", "macs"] = "channels"
    round_to: int = 1
    score: Literal["l1", "l2", "bn", "obs"] = "l1"
    min_channels: int = 1
    skip: List[str] = []
    refit: bool = False
    allocation: Literal["greedy", "uniform"] = "greedy"

    def run(self, model: Model, ctx: PassContext) -> bool:
        from edgec.prune.channels import apply_pruning, plan, prunable_groups, refit_consumers, total_macs
        from edgec.prune.dependency import analyze

        if not 0.0 <= self.sparsity < 1.0:
            raise EdgecError(f"prune-channels: sparsity must be in [0, 1), got {self.sparsity}")
        if self.score == "obs" and ctx.resources.get("calibration") is None:
            raise EdgecError("prune-channels: score=obs needs calibration data (--calibration)")
        if self.round_to < 1 or self.min_channels < 1:
            raise EdgecError("prune-channels: round-to and min-channels must be >= 1")
        dg = analyze(model)
        macs_before = total_macs(model)
        keep = plan(model, dg, sparsity=self.sparsity, target=self.target, round_to=self.round_to,
                    score=self.score, min_channels=self.min_channels, skip=self.skip, allocation=self.allocation,
                    calibration=ctx.resources.get("calibration"))
        groups = dg.groups()
        pruned_ids = {dg.find(k) for k in keep}
        candidates = {g.id for g in prunable_groups(dg, self.skip)}
        report = {
            "sparsity": self.sparsity, "target": self.target, "score": self.score,
            "macs_before": macs_before, "macs_after": macs_before,
            "groups": [{
                "id": g.id, "channels_before": g.size,
                "channels_after": int(len(keep[g.id])) if g.id in keep else g.size,
                "prunable": g.id in candidates,
                "reasons": g.reasons if not g.prunable else ([] if g.id in candidates else ["skipped"]),
                "producers": [p.name for p in g.producers],
                "members": [m.describe() for m in g.members],
            } for g in groups],
            "refit": [],
        }
        ctx.reports["channel-pruning"] = report
        if not keep:
            return False
        dense = None
        if self.refit:
            if ctx.resources.get("calibration") is None:
                raise EdgecError("prune-channels: refit=true needs calibration data (--calibration)")
            from edgec.backends.onnx_export import to_proto
            from edgec.frontend.onnx_import import from_proto

            dense = from_proto(to_proto(model), model.base_dir, check=False)
        n = apply_pruning(model, dg, keep)
        if dense is not None:
            report["refit"] = refit_consumers(dense, model, dg, keep, ctx.resources["calibration"])
        report["macs_after"] = total_macs(model)
        ctx.stat("groups-pruned", len(pruned_ids))
        ctx.stat("channels-removed", int(sum(g.size - len(keep[g.id]) for g in groups if g.id in keep)))
        ctx.stat("tensors-changed", n)
        return True
