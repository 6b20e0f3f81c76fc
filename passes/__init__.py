"""edgec's built-in passes, one module per pass.

Importing this package registers them; edgec's own distribution declares it as its
``edgec.passes`` entry point (``builtin = "edgec.passes"``), exactly as plugins do.
"""

from . import dce, toposort
from . import infer_shapes, lower_onnx, sink_constants
from . import legalize_c_types  # noqa: E402  (the C target's narrow-type legalization)

# fusion and pattern-recovery passes
from . import fuse_activation, fuse_affine, fuse_batchnorm, fuse_pad, recover_patterns  # noqa: E402

__all__ = ["dce", "toposort", "infer_shapes", "lower_onnx", "sink_constants"]
__all__ += ["fuse_activation", "fuse_affine", "fuse_batchnorm", "fuse_pad", "recover_patterns"]

# simplification passes (cse, no-ops, shape-op chains, duplicate constants, algebra)
from . import cse, dedup_initializers, eliminate_noops, merge_shape_ops, simplify_algebra  # noqa: E402

__all__ += ["cse", "dedup_initializers", "eliminate_noops", "merge_shape_ops", "simplify_algebra"]

# constant and shape passes (lift, fold, shape-operand simplification, constant If)
from . import fold_constants, inline_if, lift_constants, simplify_shapes  # noqa: E402

__all__ += ["fold_constants", "inline_if", "lift_constants", "simplify_shapes"]

# quantization passes (static QDQ, dynamic, weight-only)
from . import quantize, quantize_dynamic, quantize_weights  # noqa: E402

__all__ += ["quantize", "quantize_dynamic", "quantize_weights"]

# data-free quantization helpers (cross-layer equalization, bias correction)
from . import correct_bias, equalize_layers  # noqa: E402

__all__ += ["correct_bias", "equalize_layers"]

# structured pruning (channel groups)
from . import prune_channels  # noqa: E402

__all__ += ["prune_channels"]

# weight sparsity (unstructured and N:M pruning)
from . import prune_weights  # noqa: E402

__all__ += ["prune_weights"]
