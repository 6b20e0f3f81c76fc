"""GPTQ: weight-only quantization that compensates each row's rounding error (Frantar et al. 2022).

For a linear layer ``Y = X W`` (``W`` is ``[K, N]``, MatMul layout) the loss of quantizing ``W`` is
``||X W - X W_q||^2 = tr((W - W_q)^T H (W - W_q)) / 2`` with ``H = 2 X^T X`` over the calibration
inputs. GPTQ quantizes the K rows of ``W`` in order and, after each row, spreads its error over the
rows not yet quantized along the inverse-Hessian direction (the optimal least-squares update), so
later rows absorb what earlier ones lost. The weights keep the blocked format of round-to-nearest:
per block of ``block_size`` rows along K, one scale (and zero point) per column, chosen when the
block starts from the already-updated weights (with the MSE clipping search of
:func:`edgec.quant.scheme.search_weight_params`).

Two parts:

- :func:`collect_hessians`: one streamed pass of the float model over calibration data in
  onnxruntime (the :class:`edgec.quant.collect.ModelRunner` the static calibration uses), folding
  ``X^T X`` of each requested tensor batch by batch; a batch's activations are dropped before the
  next batch. Inputs come from the float model (every layer sees float inputs), so one pass serves
  every layer;
- :func:`gptq_quantize`: the per-layer algorithm (numpy, float64), returning the dequantized
  weights and their block parameters; quantizing the returned weights with those parameters gives
  back the GPTQ integers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import EdgecError
from ..ir.core import Model
from .data import CalibrationData
from .progress import Progress
from .scheme import DTypeLike, as_dtype, check_finite, quant_range, search_weight_params, weight_params

__all__ = ["Hessian", "collect_hessians", "inverse_hessian_factor", "gptq_quantize", "layer_error", "hessian_inputs",
           "DAMP", "LAZY_ROWS"]

#: Damping added to H's diagonal, as a fraction of its mean diagonal (the paper's 1%).
DAMP = 0.01
#: Rows updated together before the rest of ``W`` gets their accumulated error (GPTQ's lazy batch).
LAZY_ROWS = 128


@dataclass
class Hessian:
    """``X^T X`` (float64, ``[K, K]``) of one tensor's last axis, summed over ``rows`` input rows."""

    xtx: np.ndarray
    rows: int = 0

    def update(self, x: np.ndarray) -> None:
        """Fold one batch (any leading shape, last axis K) into the sum."""
        x2 = np.asarray(x, np.float32).reshape(-1, self.xtx.shape[0])
        self.xtx += (x2.T @ x2).astype(np.float64)  # float32 per batch (2x faster), summed in float64
        self.rows += x2.shape[0]

    @property
    def h(self) -> np.ndarray:
        """``H = 2 X^T X / rows`` (the mean keeps the damping independent of the data size)."""
        return self.xtx * (2.0 / max(self.rows, 1))


def collect_hessians(model: Model, data: CalibrationData, tensors: Dict[str, int], *,
                     batch_size: Optional[int] = None, progress: bool = False) -> Dict[str, Hessian]:
    """One pass of ``model`` over ``data``: the :class:`Hessian` of each tensor of ``tensors``
    (name -> K, the size of its last axis). Peak memory: one batch's activations plus the K x K sums."""
    from .collect import ModelRunner

    out = {name: Hessian(np.zeros((k, k), np.float64)) for name, k in tensors.items()}
    if not out:
        return out
    runner = ModelRunner(model, list(out), threads=0)
    try:
        with Progress(data.num_samples, "gptq statistics", unit="samples", enabled=progress) as bar:
            for n, feeds in data.counted_batches(batch_size):
                acts = runner.run(feeds)
                for name, hess in out.items():
                    a = acts[name]
                    if a.shape[-1] != hess.xtx.shape[0]:
                        raise EdgecError(f"gptq: tensor '{name}' has last dim {a.shape[-1]}, the weight has K = "
                                         f"{hess.xtx.shape[0]}")
                    hess.update(a)
                del acts, feeds
                bar.update(n)
    finally:
        runner.close()
    return out


def inverse_hessian_factor(h: np.ndarray, damp: float = DAMP) -> Tuple[np.ndarray, np.ndarray]:
    """``(U, dead)``: the upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1`` (``U^T U``) and
    the mask of rows whose inputs were always zero (their weights are irrelevant: GPTQ zeroes them)."""
    h = np.array(h, np.float64)
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, dead] = 1.0  # a zero input never sees its weight: any value is optimal, keep H invertible
    mean = float(np.mean(np.diag(h)))
    lam = damp * (mean if mean > 0 else 1.0)
    for attempt in range(6):  # a rank-deficient H (few samples) may need more damping
        try:
            hd = h + (lam * 10.0 ** attempt) * np.eye(h.shape[0])
            lower = np.linalg.cholesky(hd)
            linv = np.linalg.solve(lower, np.eye(h.shape[0]))  # L^-1: H^-1 = L^-T L^-1
            hinv = linv.T @ linv
            return np.linalg.cholesky(hinv).T, dead
        except np.linalg.LinAlgError:
            continue
    raise EdgecError("gptq: the input Hessian is not positive definite even after damping")


def _block_params(wb: np.ndarray, dtype: DTypeLike, symmetric: bool, search: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Scale and zero point (one per column) of the rows ``wb`` ``[rows, N]`` of one block."""
    if search:
        return search_weight_params(wb, 1, dtype, symmetric, block_size=0, name="gptq block")
    return weight_params(wb, 1, dtype, symmetric, block_size=0, name="gptq block")


def gptq_quantize(w: np.ndarray, u: np.ndarray, dead: np.ndarray, dtype: DTypeLike, *, block_size: int,
                  symmetric: bool = False, search: bool = True, lazy_rows: int = LAZY_ROWS
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ of ``w`` ``[K, N]`` given :func:`inverse_hessian_factor`'s ``(u, dead)``.

    Returns ``(w_q, scale, zero_point)``: ``w_q`` the dequantized weights (float32 ``[K, N]``), and
    the parameters blocked along K (``[ceil(K / block_size), N]``, as
    :func:`edgec.quant.scheme.weight_params` with ``axis=0, block_size`` returns them), so that
    ``quantize_array(w_q, scale, zero_point, dtype, 0, block_size)`` gives the GPTQ integers.
    """
    w = np.asarray(w)
    check_finite(w, "gptq weight")
    k, n = w.shape
    if u.shape != (k, k):
        raise EdgecError(f"gptq: Hessian factor {u.shape} does not match weight {w.shape}")
    d = as_dtype(dtype)
    qmin, qmax = quant_range(d)
    lazy = max(block_size, (lazy_rows // block_size) * block_size)  # a lazy batch holds whole blocks
    work = w.astype(np.float64)
    work[dead, :] = 0.0
    wq = np.zeros((k, n), np.float32)
    nb = -(-k // block_size)
    scales = np.ones((nb, n), np.float32)
    zps = np.zeros((nb, n), d.numpy)
    for i1 in range(0, k, lazy):
        i2 = min(i1 + lazy, k)
        w1 = work[i1:i2].copy()
        err = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            row = i1 + i
            if row % block_size == 0:  # the block's parameters, from the rows as updated so far
                s, z = _block_params(w1[i:i + block_size].astype(np.float32), d, symmetric, search)
                b = row // block_size
                scales[b], zps[b] = s, z
                sf, zf = s.astype(np.float32), z.astype(np.float32)
            q = np.clip(np.rint(w1[i].astype(np.float32) / sf) + zf, qmin, qmax)
            wq[row] = (q - zf) * sf
            e = (w1[i] - wq[row]) / u1[i, i]
            w1[i:] -= np.outer(u1[i, i:], e)  # compensate the rows still to come in this batch
            err[i] = e
        work[i2:] -= u[i1:i2, i2:].T @ err  # and, at once, every row after the batch
    return wq, scales, zps


def layer_error(w: np.ndarray, w_q: np.ndarray, h: np.ndarray) -> float:
    """``tr((W - W_q)^T H (W - W_q))``: with ``H = 2 X^T X / rows``, twice the squared output error of
    the layer per input row (summed over the N outputs) on the calibration inputs."""
    dw = np.asarray(w, np.float64) - np.asarray(w_q, np.float64)
    return float(np.sum(dw * (h @ dw)))


def hessian_inputs(shapes: Sequence[Tuple[str, int]]) -> Dict[str, int]:
    """Requested tensors (name -> K) without duplicates, checking that a name has a single K."""
    out: Dict[str, int] = {}
    for name, k in shapes:
        if out.setdefault(name, k) != k:
            raise EdgecError(f"gptq: tensor '{name}' feeds weights with different K ({out[name]} and {k})")
    return out
