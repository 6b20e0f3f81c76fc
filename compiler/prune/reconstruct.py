"""Layer inputs from calibration data, and the least-squares update of a pruned layer's weights.

:func:`collect_layer_stats` runs the *dense* model once over the calibration data (onnxruntime via
:class:`edgec.quant.collect.ModelRunner`, one batch at a time) and, for every layer, accumulates
the per-input-channel sums of squares (Wanda's ``‖X_j‖₂²``) and, when asked, the Hessian
``H = XᵀX`` of its unfolded input rows (im2col for Conv, in the column order of
:meth:`Layer.to_matrix`, one ``[K, K]`` block per group).

:func:`reconstruct` then solves, per output row ``w`` with kept set ``S``,

    min ‖X_S w'_S − X w‖²   (the dense teacher's layer output on the dense model's inputs)

with damping ``λ = damp · mean(diag H)``: exactly (``w'_S = (H+λI)_SS⁻¹ (H+λI)_S: w``) for small
layers, else with the SparseGPT/OBS column sweep through the upper Cholesky factor of ``(H+λI)⁻¹``.
Inputs come from the dense model (one calibration pass for all layers), not from the pruned prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import CalibrationError
from ..ir.core import Model
from .scores import Layer

__all__ = ["LayerStats", "collect_layer_stats", "unfold", "reconstruct", "layer_error", "DAMP", "MAX_ROWS"]

#: Damping of the Hessian, relative to the mean of its diagonal.
DAMP = 0.01
#: Unfolded rows per layer and batch beyond which a seeded random subset is used (scaled, unbiased).
MAX_ROWS = 32768
#: Work (sum over rows of |S|³) up to which :func:`reconstruct` solves every row exactly.
EXACT_BUDGET = 4e9


@dataclass
class LayerStats:
    """What the calibration pass saw at one layer's input."""

    sumsq: Optional[np.ndarray] = None       # per input channel
    hessians: List[np.ndarray] = field(default_factory=list)  # per group, [K, K]
    rows: int = 0

    @property
    def norms(self) -> Optional[np.ndarray]:
        return None if self.sumsq is None else np.sqrt(self.sumsq)


def _conv_pads(layer: Layer, spatial: Sequence[int]) -> List[int]:
    node, k = layer.node, layer.shape[2:]
    n = len(k)
    strides = list(node.attr("strides", [1] * n))
    dil = list(node.attr("dilations", [1] * n))
    auto = node.attr("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * n)
        for i in range(n):
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - spatial[i])
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + n] = lo, total - lo
        return pads
    if auto == "VALID":
        return [0] * (2 * n)
    return list(node.attr("pads", [0] * (2 * n)))


def unfold(layer: Layer, x: np.ndarray, group: int) -> np.ndarray:
    """The input rows of ``group`` as ``[rows, K]`` in the column order of ``layer.to_matrix``."""
    x = np.asarray(x, np.float64)
    if layer.op == "Conv":
        _, cs = layer.row_groups()[group]
        xs = x[:, cs]
        k = layer.shape[2:]
        n = len(k)
        strides = list(layer.node.attr("strides", [1] * n))
        dil = list(layer.node.attr("dilations", [1] * n))
        pads = _conv_pads(layer, xs.shape[2:])
        xp = np.pad(xs, [(0, 0), (0, 0)] + [(pads[i], pads[i + n]) for i in range(n)])
        span = [(k[i] - 1) * dil[i] + 1 for i in range(n)]
        win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + n)))
        idx = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dil)
        win = win[idx]  # [N, Cg, *out, *k]
        order = (0,) + tuple(range(2, 2 + n)) + tuple(range(2 + n, 2 + 2 * n)) + (1,)
        return win.transpose(order).reshape(-1, layer.taps * xs.shape[1])
    if layer.op == "ConvTranspose":
        _, cs = layer.row_groups()[group]
        xs = x[:, cs]
        return np.moveaxis(xs, 1, -1).reshape(-1, xs.shape[1])
    if layer.trans_a:
        return x.T
    return x.reshape(-1, x.shape[-1])


def _channel_sumsq(layer: Layer, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    axis = layer.channel_axis % x.ndim
    other = tuple(i for i in range(x.ndim) if i != axis)
    return np.sum(x * x, axis=other)


def collect_layer_stats(model: Model, data: object, layers: Sequence[Layer], *, hessian: bool, norms: bool,
                        batch_size: Optional[int] = None, seed: int = 0) -> Dict[str, LayerStats]:
    """One pass of the dense ``model`` over ``data`` (a CalibrationData): stats per layer name."""
    from ..quant.collect import ModelRunner

    inputs = {l.name: l.node.input(0).name for l in layers}  # type: ignore[union-attr]
    stats = {l.name: LayerStats() for l in layers}
    if not layers:
        return stats
    rng = np.random.default_rng(seed)
    runner = ModelRunner(model, list(dict.fromkeys(inputs.values())), threads=0)
    seen = 0
    try:
        for feeds in data.batches(batch_size):  # type: ignore[attr-defined]
            outs = runner.run(feeds)
            seen += 1
            for l in layers:
                x = outs[inputs[l.name]]
                st = stats[l.name]
                if norms:
                    s = _channel_sumsq(l, x)
                    st.sumsq = s if st.sumsq is None else st.sumsq + s
                if hessian:
                    for gi in range(len(l.row_groups())):
                        cols = unfold(l, x, gi)
                        scale = 1.0
                        if cols.shape[0] > MAX_ROWS:
                            scale = cols.shape[0] / MAX_ROWS
                            cols = cols[rng.choice(cols.shape[0], MAX_ROWS, replace=False)]
                        h = scale * (cols.T @ cols)
                        if len(st.hessians) <= gi:
                            st.hessians.append(h)
                        else:
                            st.hessians[gi] += h
                        if gi == 0:
                            st.rows += int(round(cols.shape[0] * scale))
            del outs
    finally:
        runner.close()
    if not seen:
        raise CalibrationError("pruning: the calibration data has no samples")
    return stats


def _damped(h: np.ndarray, damp: float) -> np.ndarray:
    h = np.array(h, np.float64, copy=True)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    diag = np.diag(h)
    h[np.diag_indices_from(h)] += damp * float(np.mean(diag))
    return h


def _exact(w: np.ndarray, keep: np.ndarray, hd: np.ndarray) -> np.ndarray:
    out = np.where(keep, w, 0.0)
    for r in range(w.shape[0]):
        s = keep[r]
        if s.all() or not s.any():
            continue
        rhs = hd[s] @ w[r]
        out[r, s] = np.linalg.solve(hd[np.ix_(s, s)], rhs)
    return out


def _sweep(w: np.ndarray, keep: np.ndarray, hd: np.ndarray, block: int = 128) -> np.ndarray:
    """SparseGPT's column sweep with a fixed mask (lazy block updates)."""
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(hd)).T  # upper: Hinv = UᵀU
    except np.linalg.LinAlgError:
        return _exact(w, keep, hd)
    w = w.copy()
    k = w.shape[1]
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            q = np.where(keep[:, i1 + i], col, 0.0)
            err = (col - q) / u1[i, i]
            w1[:, i:] -= np.outer(err, u1[i, i:])
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return np.where(keep, w, 0.0)


def reconstruct(layer: Layer, w: np.ndarray, keep: np.ndarray, hessians: Sequence[np.ndarray], *,
                damp: float = DAMP, method: str = "auto") -> np.ndarray:
    """Updated matrix ``[rows, K]`` (zeros where ``keep`` is False) fitting the dense layer outputs.

    ``method``: ``exact`` (per-row masked least squares), ``sweep`` (SparseGPT/OBS) or ``auto``.
    """
    w = np.asarray(w, np.float64)
    out = np.where(keep, w, 0.0)
    for gi, (rs, _) in enumerate(layer.row_groups()):
        hd = _damped(hessians[gi], damp)
        wg, kg = w[rs], keep[rs]
        m = method
        if m == "auto":
            work = float(np.sum(kg.sum(axis=1).astype(np.float64) ** 3))
            m = "exact" if work <= EXACT_BUDGET else "sweep"
        out[rs] = _exact(wg, kg, hd) if m == "exact" else _sweep(wg, kg, hd)
    return out


def layer_error(layer: Layer, w_dense: np.ndarray, w_new: np.ndarray, hessians: Sequence[np.ndarray]) -> float:
    """``‖(W' − W) X‖²`` summed over groups, from the Hessians (matrices ``[rows, K]``)."""
    total = 0.0
    for gi, (rs, _) in enumerate(layer.row_groups()):
        d = np.asarray(w_new[rs], np.float64) - np.asarray(w_dense[rs], np.float64)
        total += float(np.einsum("ij,jk,ik->", d, hessians[gi], d))
    return total
