"""Weight sparsity: zero the least important constant weights of Conv/ConvTranspose/Gemm/MatMul.

Unstructured or N:M (2:4, 4:8 along the reduction axis), scored by magnitude or Wanda
(``|W|·‖X_j‖₂``), per layer or with one global threshold, optionally followed by a
SparseGPT/OBS-style least-squares update of the kept weights against the dense layer outputs
(see :mod:`edgec.prune`). Biases are never pruned. ``storage=sparse`` writes pruned weights as ONNX
sparse initializers where that is smaller than dense.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

import numpy as np

from edgec.errors import CalibrationError, PipelineError
from edgec.ir import Model
from edgec.ir.tensor import ArrayTensor
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.prune.report import totals
from edgec.prune.scores import Layer, find_layers, global_masks, layer_mask, nm_mask, parse_nm, score_matrix
from edgec.prune.sparse_storage import coo_bytes, packed_bytes, sparsify_value

__all__ = ["PruneWeights", "REPORT"]

REPORT = "pruning"


def _overrides(items: List[str]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for item in items:
        name, sep, val = item.rpartition("=")
        try:
            s = float(val)
        except ValueError:
            s = -1.0
        if not sep or not name or not 0.0 <= s < 1.0:
            raise PipelineError(f"prune-weights: override '{item}' is not NODE=SPARSITY with 0 <= SPARSITY < 1")
        out[name] = s
    return out


@register_pass
class PruneWeights(Pass):
    """Prune constant weights of Conv/ConvTranspose/Gemm/MatMul: unstructured or N:M, magnitude or Wanda.

    Options: ``sparsity`` (fraction of weights zeroed per layer, or overall with ``scope=global``;
    N:M modes ignore it), ``mode`` (``unstructured``, ``2:4``, ``4:8``: N kept in every M along the
    reduction axis), ``score`` (``wanda`` needs ``ctx.resources['calibration']``), ``reconstruct``
    (least-squares update of the kept weights to match the dense layer outputs on calibration
    data), ``storage`` (``sparse``: ONNX sparse initializers where smaller), ``skip`` (node names),
    ``overrides`` (``node=0.7``), ``min-size`` (layers with fewer weights are left dense).
    Report: ``ctx.reports['pruning']`` (see :mod:`edgec.prune.report`).
    """

    name = "prune-weights"
    opt_level = 3
    idempotent = False
    sparsity: float = 0.5
    mode: Literal["unstructured", "2:4", "4:8"] = "unstructured"
    scope: Literal["layer", "global"] = "layer"
    score: Literal["magnitude", "wanda"] = "magnitude"
    reconstruct: bool = False
    storage: Literal["dense", "sparse"] = "dense"
    skip: List[str] = []
    overrides: List[str] = []
    min_size: int = 0
    #: Sparsities at which each layer's sensitivity is measured (e.g. 0.25,0.5,0.75,0.9; empty: none):
    #: the relative error of the layer's output when only its weights are pruned that far (with
    #: calibration data ``‖(W'−W)X‖² / ‖WX‖²``; without, the weight-space ``‖W'−W‖² / ‖W‖²``).
    sensitivity: List[float] = []

    def run(self, model: Model, ctx: PassContext) -> bool:
        if not 0.0 <= self.sparsity < 1.0:
            raise PipelineError(f"prune-weights: sparsity must be in [0, 1), got {self.sparsity}")
        nm = parse_nm(self.mode)
        over = _overrides(self.overrides)
        layers, skipped = find_layers(model, skip=self.skip)
        for name in over:
            if not any(l.name == name for l in layers):
                ctx.warn(f"prune-weights: override for '{name}', which is not a prunable layer")
        if nm is not None and (self.scope == "global" or over):
            ctx.warn(f"prune-weights: mode {self.mode} prunes {nm[1] - nm[0]} of every {nm[1]} weights in each layer; "
                     f"scope=global and overrides are ignored")
        chosen: List[Layer] = []
        target: Dict[str, float] = {}
        for l in layers:
            if l.size < self.min_size:
                skipped[l.name] = f"{l.size} weights < min-size {self.min_size}"
                continue
            if nm is not None:
                if l.matrix_k % nm[1]:
                    skipped[l.name] = f"reduction axis {l.matrix_k} is not a multiple of {nm[1]}"
                    continue
                target[l.name] = 1.0 - nm[0] / nm[1]
            else:
                target[l.name] = over.get(l.name, self.sparsity)
            if target[l.name] > 0.0:
                chosen.append(l)
        if any(not 0.0 < x < 1.0 for x in self.sensitivity):
            raise PipelineError(f"prune-weights: sensitivity sparsities must be in (0, 1), got {self.sensitivity}")
        stats = self._stats(model, ctx, chosen)
        scores = {l.name: score_matrix(l, self.score, stats[l.name].norms if stats else None) for l in chosen}
        masks = self._masks(chosen, scores, target, nm)
        sens = self._sensitivity(chosen, scores, stats) if self.sensitivity else {}
        rows: List[Dict[str, Any]] = []
        pruned = 0
        for l in chosen:
            rows.append(self._apply(l, masks[l.name], stats[l.name] if stats else None, nm))
            if l.name in sens:
                rows[-1]["sensitivity"] = sens[l.name]
            pruned += rows[-1]["params"] - int(masks[l.name].sum())
        ctx.stat("layers-pruned", len(chosen))
        ctx.stat("weights-pruned", pruned)
        ctx.reports[REPORT] = {"mode": self.mode, "score": self.score, "scope": self.scope if nm is None else "layer",
                               "sparsity": self.sparsity if nm is None else 1.0 - nm[0] / nm[1],
                               "reconstruct": self.reconstruct, "storage": self.storage,
                               "inputs": "dense model" if self.reconstruct else None,
                               "layers": rows, "skipped": skipped, "totals": totals(rows)}
        if self.sensitivity:
            ctx.reports[REPORT]["sensitivity"] = {
                "sparsities": sorted(self.sensitivity),
                "measure": "layer output error (calibration data)" if stats else "weight error (no calibration data)"}
        return pruned > 0

    def _sensitivity(self, chosen: List[Layer], scores: Dict[str, np.ndarray],
                     stats: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
        """Per layer: relative output (or weight) error when that layer alone is pruned to each sparsity."""
        from edgec.prune.reconstruct import layer_error

        out: Dict[str, Dict[str, float]] = {}
        for l in chosen:
            m = l.to_matrix(l.array()).astype(np.float64)
            hs = stats[l.name].hessians if stats and stats[l.name].hessians else None
            ref = layer_error(l, np.zeros_like(m), m, hs) if hs is not None else float(np.sum(m * m))
            row: Dict[str, float] = {}
            for sp in sorted(self.sensitivity):
                keep = layer_mask(scores[l.name], sp, per_row=self.score == "wanda")
                masked = np.where(keep, m, 0.0)
                err = layer_error(l, m, masked, hs) if hs is not None else float(np.sum((m - masked) ** 2))
                row[f"{sp:g}"] = err / ref if ref > 0 else 0.0
            out[l.name] = row
        return out

    # --- steps ------------------------------------------------------------------------------------
    def _stats(self, model: Model, ctx: PassContext, chosen: List[Layer]) -> Optional[Dict[str, Any]]:
        wants_h = self.reconstruct or (bool(self.sensitivity) and ctx.resources.get("calibration") is not None)
        if not chosen or (self.score != "wanda" and not wants_h):
            return None
        data = ctx.resources.get("calibration")
        if data is None:
            what = "score=wanda" if self.score == "wanda" else "reconstruct=true"
            raise CalibrationError(f"pass 'prune-weights' with {what} needs calibration data (--calibration FILE "
                                   f"or ctx.resources['calibration'])")
        from edgec.prune.reconstruct import collect_layer_stats

        return collect_layer_stats(model, data, chosen, hessian=wants_h, norms=self.score == "wanda")

    def _masks(self, chosen: List[Layer], scores: Dict[str, np.ndarray], target: Dict[str, float],
               nm: Optional[tuple]) -> Dict[str, np.ndarray]:
        if nm is not None:
            return {l.name: nm_mask(scores[l.name], *nm) for l in chosen}
        over = set(_overrides(self.overrides))
        masks: Dict[str, np.ndarray] = {}
        if self.scope == "global":
            shared = {l.name: scores[l.name] for l in chosen if l.name not in over}
            masks.update(global_masks(shared, self.sparsity))
        for l in chosen:
            if l.name not in masks:
                masks[l.name] = layer_mask(scores[l.name], target[l.name], per_row=self.score == "wanda")
        return masks

    def _apply(self, l: Layer, keep: np.ndarray, st: Any, nm: Optional[tuple]) -> Dict[str, Any]:
        w = l.array()
        m = l.to_matrix(w).astype(np.float64)
        row: Dict[str, Any] = {"name": l.name, "op": l.node.op_type, "weight": l.weight.name, "shape": list(l.shape)}
        if self.reconstruct:
            from edgec.prune.reconstruct import layer_error, reconstruct

            new = reconstruct(l, m, keep, st.hessians)
            ref = layer_error(l, np.zeros_like(m), m, st.hessians)
            masked = np.where(keep, m, 0.0)
            row["error_magnitude"] = layer_error(l, m, masked, st.hessians) / ref if ref > 0 else 0.0
            row["error"] = layer_error(l, m, new, st.hessians) / ref if ref > 0 else 0.0
        else:
            new = np.where(keep, m, 0.0)
        out = l.from_matrix(new).astype(w.dtype)
        l.weight.const = ArrayTensor(np.ascontiguousarray(out))
        nnz = int(np.count_nonzero(out))
        item = out.dtype.itemsize
        row.update(params=int(out.size), nonzeros=nnz, sparsity=1.0 - nnz / out.size if out.size else 0.0,
                   dense_bytes=int(out.nbytes), sparse_bytes=coo_bytes(nnz, item),
                   packed_bytes=packed_bytes(out.size, nnz, item, nm), stored="dense")
        if self.storage == "sparse" and sparsify_value(l.weight) is not None:
            row["stored"] = "sparse"
        row["stored_bytes"] = row["sparse_bytes"] if row["stored"] == "sparse" else row["dense_bytes"]
        return row
