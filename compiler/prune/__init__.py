"""Pruning: weight sparsity (unstructured and N:M, ``prune-weights``) and, separately, structured
channel pruning (``prune-channels``, with its dependency analysis in :mod:`edgec.prune.dependency`).

Modules (imported on demand, so one part never needs the other):

- :mod:`edgec.prune.scores`: prunable layers (their weight as a [rows, reduction] matrix), scores
  (magnitude, Wanda) and masks (per layer, global, N:M);
- :mod:`edgec.prune.reconstruct`: layer inputs from calibration data (per-channel norms, Hessians
  ``XᵀX``) and the least-squares weight update (exact masked solve, SparseGPT/OBS column sweep);
- :mod:`edgec.prune.sparse_storage`: ONNX ``sparse_initializer`` storage and packed-size estimates;
- :mod:`edgec.prune.report`: the ``ctx.reports['pruning']`` rows, the summary and the JSON file;
- :mod:`edgec.prune.dependency`: channel groups (residual Adds, depthwise convs, Concat/Split,
  Flatten->Gemm, attention heads) for structured pruning;
- :mod:`edgec.prune.channels`: channel scores (l1/l2/bn, or OBS from calibration data), MAC-targeted
  allocation, slicing the members, refit of the next layers.
"""
