"""Op evaluation on numpy: kernels per op and opset, with ``onnx.reference`` as the fallback."""

from .evaluator import (
    NONDETERMINISTIC_OPS,
    DeferToFallback,
    EvaluationError,
    SubgraphNotSupportedError,
    can_evaluate,
    evaluate,
    find_kernel,
    register_evaluator,
    registered_ops,
)

__all__ = [
    "NONDETERMINISTIC_OPS", "DeferToFallback", "EvaluationError", "SubgraphNotSupportedError", "can_evaluate",
    "evaluate", "find_kernel", "register_evaluator", "registered_ops",
]
