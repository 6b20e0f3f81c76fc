"""edgec: a graph-level compiler that makes trained ONNX models small and fast for edge devices and ASIC-style targets."""

__version__ = "0.1.0"

from .api import load, optimize, save  # noqa: E402

__all__ = ["load", "optimize", "save", "__version__"]
