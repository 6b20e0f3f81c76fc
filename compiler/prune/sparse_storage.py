"""Storage of pruned weights: ONNX ``sparse_initializer`` and the sizes of packed formats.

ONNX sparse tensors hold the nonzero values and their indices; the checker requires INT64
indices, so a float32 weight stored as linear COO takes ``12`` bytes per nonzero against ``4`` per
element dense: it only pays off above ~67% sparsity (float16: above 80%). :func:`sparsify_initializers`
converts a weight only when the sparse form is smaller. onnxruntime densifies sparse initializers
when it loads the model, so runtime memory and speed are those of the dense model: the saving is
on disk and in transfer.

Packed sizes a sparse accelerator format would take (reported, not written):

- N:M (e.g. 2:4): the kept values plus ``ceil(log2 M)`` bits of position per kept value (2:4 ->
  2 bits, as NVIDIA's sparse tensor cores' metadata);
- unstructured: the nonzero values plus a one-bit-per-element bitmap.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

from ..ir.core import Model, SparseTensor, Value
from ..ir.tensor import ArrayTensor, Tensor

__all__ = ["coo_bytes", "packed_bytes", "to_sparse", "sparsify_value", "sparsify_initializers"]

INDEX_BYTES = 8  # ONNX sparse tensors: INT64 indices only


def coo_bytes(nnz: int, itemsize: int) -> int:
    """Bytes of an ONNX sparse tensor with linear INT64 indices."""
    return int(nnz) * (int(itemsize) + INDEX_BYTES)


def packed_bytes(numel: int, nnz: int, itemsize: int, nm: Optional[Sequence[int]] = None) -> int:
    """Bytes of a hardware-style packed format: N:M values + position bits, or values + bitmap."""
    if nm is not None:
        n, m = nm
        kept = int(numel) * n // m
        return kept * int(itemsize) + math.ceil(kept * max(1, math.ceil(math.log2(m))) / 8)
    return int(nnz) * int(itemsize) + math.ceil(int(numel) / 8)


def to_sparse(array: np.ndarray) -> SparseTensor:
    """A SparseTensor with linear INT64 indices of the nonzeros of ``array``."""
    flat = np.ascontiguousarray(array).reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)
    return SparseTensor(ArrayTensor(flat[idx].copy()), ArrayTensor(idx), array.shape)


def sparsify_value(v: Value) -> Optional[int]:
    """Store a dense constant initializer as sparse if that is smaller; the bytes saved, else None."""
    c = v.const
    if not isinstance(c, Tensor) or not c.dtype.is_float or c.numel == 0:
        return None
    arr = np.asarray(c.numpy())
    nnz = int(np.count_nonzero(arr))
    if coo_bytes(nnz, arr.dtype.itemsize) >= arr.nbytes:
        return None
    v.const = to_sparse(arr)  # the value keeps its dense TensorType: consumers see a dense tensor
    return int(arr.nbytes - coo_bytes(nnz, arr.dtype.itemsize))


def sparsify_initializers(model: Model, names: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Sparse storage for the main graph's initializers (all, or ``names``) where it is smaller.

    Returns initializer name -> bytes saved. Graph inputs with defaults are left dense.
    """
    g = model.graph
    saved: Dict[str, int] = {}
    for name, v in list(g.initializers.items()):
        if (names is not None and name not in names) or v.is_graph_input():
            continue
        s = sparsify_value(v)
        if s is not None:
            saved[name] = s
    return saved
