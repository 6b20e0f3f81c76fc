"""Prunable layers, importance scores and masks for weight sparsity.

Every prunable weight is seen as a matrix ``[rows, K]`` whose second axis is the layer's reduction
axis (what one output sums over):

- Conv ``W[Cout, Cin/g, *k]``: rows = Cout, K = taps x Cin/g in *channels-last* order (tap-major,
  channel-minor), so N:M groups run along input channels for each kernel tap (the NHWC
  implicit-GEMM layout sparse hardware uses); group ``g`` of rows reads input channels of group ``g``;
- ConvTranspose ``W[Cin, Cout/g, *k]``: rows = (Cout/g, taps) per group, K = Cin/g;
- Gemm: ``B`` (``[N, K]`` with transB, else ``B.T``); MatMul: a constant 2-D ``B[K, N]`` as ``B.T``;
- the ``edgec.Fused*`` forms of these are handled like their base op.

Masks (True = kept) are exact: unstructured layer masks prune ``round(s * size)`` weights (Wanda
compares within output rows, as in the paper: the count is spread over the rows); a global mask prunes
``round(s * total)`` weights by RMS-normalised score across layers; N:M keeps the N largest scores in
every group of M consecutive entries along K (layers with K not a multiple of M are skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..ir.core import Model, Node, Value
from ..ir.tensor import Tensor

__all__ = ["Layer", "find_layers", "score_matrix", "layer_mask", "nm_mask", "global_masks", "parse_nm", "MODES"]

MODES = ("unstructured", "2:4", "4:8")
_BASE = {"Conv": "Conv", "ConvTranspose": "ConvTranspose", "Gemm": "Gemm", "MatMul": "MatMul",
         "FusedConv": "Conv", "FusedConvTranspose": "ConvTranspose", "FusedGemm": "Gemm", "FusedMatMul": "MatMul"}


def parse_nm(mode: str) -> Optional[Tuple[int, int]]:
    """``(N, M)`` of an ``'N:M'`` mode, None for unstructured."""
    if mode == "unstructured":
        return None
    n, m = (int(x) for x in mode.split(":"))
    if not 0 < n < m:
        raise ValueError(f"bad N:M mode {mode!r}")
    return n, m


@dataclass
class Layer:
    """One prunable node and the matrix view of its constant weight."""

    node: Node
    weight: Value
    op: str          # base op: Conv, ConvTranspose, Gemm, MatMul
    shape: Tuple[int, ...]
    groups: int = 1
    trans_a: bool = False

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def taps(self) -> int:
        return int(np.prod(self.shape[2:], dtype=np.int64)) if self.op in ("Conv", "ConvTranspose") else 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def channel_axis(self) -> int:
        """Axis of the input activation holding the reduction's input channels (K for Gemm/MatMul)."""
        if self.op in ("Conv", "ConvTranspose"):
            return 1
        return 0 if self.trans_a else -1

    def array(self) -> np.ndarray:
        return np.asarray(self.weight.const.numpy())  # type: ignore[union-attr]

    def to_matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as ``[rows, K]`` (see the module doc)."""
        if self.op == "Conv":
            cout, cg = w.shape[0], w.shape[1]
            return w.reshape(cout, cg, self.taps).transpose(0, 2, 1).reshape(cout, self.taps * cg)
        if self.op == "ConvTranspose":
            cin, cog, g = w.shape[0], w.shape[1], self.groups
            cig = cin // g
            blocks = w.reshape(g, cig, cog, self.taps).transpose(0, 2, 3, 1)  # [g, cog, taps, cig]
            return blocks.reshape(g * cog * self.taps, cig)
        if self.op == "Gemm" and self.node.attr("transB", 0):
            return w
        return w.T

    def from_matrix(self, m: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_matrix`."""
        if self.op == "Conv":
            cout, cg = self.shape[0], self.shape[1]
            return m.reshape(cout, self.taps, cg).transpose(0, 2, 1).reshape(self.shape)
        if self.op == "ConvTranspose":
            cin, cog, g = self.shape[0], self.shape[1], self.groups
            cig = cin // g
            return m.reshape(g, cog, self.taps, cig).transpose(0, 3, 1, 2).reshape(self.shape)
        if self.op == "Gemm" and self.node.attr("transB", 0):
            return m
        return m.T

    def row_groups(self) -> List[Tuple[slice, slice]]:
        """``(rows, input channels)`` of every group: the rows of a group read only those channels."""
        g = self.groups
        if self.op == "Conv":
            r, c = self.shape[0] // g, self.shape[1]
        elif self.op == "ConvTranspose":
            r, c = self.shape[1] * self.taps, self.shape[0] // g
        else:
            return [(slice(None), slice(None))]
        return [(slice(i * r, (i + 1) * r), slice(i * c, (i + 1) * c)) for i in range(g)]

    def column_scale(self, per_channel: np.ndarray) -> np.ndarray:
        """A per-input-channel vector broadcast to the matrix shape ``[rows, K]``."""
        per_channel = np.asarray(per_channel, np.float64)
        rows = self.to_matrix(np.zeros(self.shape, np.float32)).shape[0]
        out = np.empty((rows, self.matrix_k), np.float64)
        for rs, cs in self.row_groups():
            v = per_channel[cs]
            out[rs] = np.tile(v, self.taps) if self.op == "Conv" else v
        return out

    @property
    def matrix_k(self) -> int:
        if self.op == "Conv":
            return self.taps * self.shape[1]
        if self.op == "ConvTranspose":
            return self.shape[0] // self.groups
        return self.shape[1] if (self.op == "Gemm" and self.node.attr("transB", 0)) else self.shape[0]


def _weight_of(node: Node) -> Optional[Value]:
    w = node.input(1)
    if w is None or w.producer is not None or not w.is_constant() or not isinstance(w.const, Tensor):
        return None
    if not w.const.dtype.is_float:
        return None
    return w


def find_layers(model: Model, *, skip: Sequence[str] = ()) -> Tuple[List[Layer], Dict[str, str]]:
    """Prunable layers of the main graph, and ``node name -> reason`` for those left alone."""
    layers: List[Layer] = []
    skipped: Dict[str, str] = {}
    skip_set = set(skip)
    for node in model.graph:
        base = _BASE.get(node.op_type)
        if base is None or node.domain not in ("", "edgec") or (node.domain == "edgec") != node.op_type.startswith("Fused"):
            continue
        if node.name in skip_set:
            skipped[node.name] = "skipped by option"
            continue
        w = _weight_of(node)
        if w is None:
            skipped[node.name] = "weight is not a float constant initializer"
            continue
        if len(w.consumers()) != 1 or w.is_graph_output():
            skipped[node.name] = "weight is shared with other nodes"
            continue
        shape = tuple(int(d) for d in w.const.dims)  # type: ignore[union-attr]
        if base in ("Gemm", "MatMul") and len(shape) != 2:
            skipped[node.name] = f"weight has rank {len(shape)} (2-D only)"
            continue
        if base in ("Conv", "ConvTranspose") and len(shape) < 3:
            skipped[node.name] = "weight rank below 3"
            continue
        groups = int(node.attr("group", 1)) if base in ("Conv", "ConvTranspose") else 1
        layers.append(Layer(node, w, base, shape, groups, bool(node.attr("transA", 0)) if base == "Gemm" else False))
    return layers, skipped


def score_matrix(layer: Layer, kind: str, norms: Optional[np.ndarray] = None) -> np.ndarray:
    """Importance per weight as ``[rows, K]``: ``|W|`` (magnitude) or ``|W|·‖X_j‖₂`` (Wanda)."""
    s = np.abs(layer.to_matrix(layer.array()).astype(np.float64))
    if kind == "wanda":
        if norms is None:
            raise ValueError(f"wanda scores of {layer.name} need input norms")
        s = s * layer.column_scale(norms)
    return s


def _prune_lowest(score: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask that drops exactly the ``k`` lowest scores (stable order breaks ties)."""
    keep = np.ones(score.size, dtype=bool)
    if k > 0:
        keep[np.argsort(score.reshape(-1), kind="stable")[:k]] = False
    return keep.reshape(score.shape)


def layer_mask(score: np.ndarray, sparsity: float, *, per_row: bool = False) -> np.ndarray:
    """Exactly ``round(sparsity * size)`` weights pruned, across the layer or spread over its rows."""
    k = int(round(float(sparsity) * score.size))
    if not per_row:
        return _prune_lowest(score, k)
    rows = score.shape[0]
    base, extra = divmod(k, rows)
    keep = np.ones(score.shape, dtype=bool)
    for r in range(rows):
        kr = base + (1 if r < extra else 0)
        if kr:
            keep[r, np.argsort(score[r], kind="stable")[:kr]] = False
    return keep


def nm_mask(score: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` consecutive scores along K (K % m == 0)."""
    rows, k = score.shape
    if k % m:
        raise ValueError(f"reduction axis {k} is not a multiple of {m}")
    g = score.reshape(rows, k // m, m)
    order = np.argsort(g, axis=-1, kind="stable")
    keep = np.ones_like(g, dtype=bool)
    np.put_along_axis(keep, order[..., : m - n], False, axis=-1)
    return keep.reshape(rows, k)


def global_masks(scores: Dict[str, np.ndarray], sparsity: float) -> Dict[str, np.ndarray]:
    """One threshold across layers on RMS-normalised scores; exactly ``round(s * total)`` pruned."""
    names = list(scores)
    flat = []
    for n in names:
        s = scores[n]
        rms = float(np.sqrt(np.mean(s * s))) if s.size else 0.0
        flat.append((s / rms if rms > 0 else s).reshape(-1))
    allv = np.concatenate(flat) if flat else np.zeros(0)
    keep_all = _prune_lowest(allv, int(round(float(sparsity) * allv.size)))
    out, at = {}, 0
    for n, f in zip(names, flat):
        out[n] = keep_all[at:at + f.size].reshape(scores[n].shape)
        at += f.size
    return out
