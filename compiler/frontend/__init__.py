"""Front ends: ONNX -> IR."""

from .onnx_import import from_proto, load_model

__all__ = ["from_proto", "load_model"]
