"""edgec: a graph-level compiler that makes trained ONNX models small and fast for edge devices and ASIC-style targets."""

__version__ = "0.1.0"

from .api import load, optimize, quantize, save  # noqa: E402

__all__ = ["load", "optimize", "quantize", "save", "__version__"]
