"""Back ends: IR -> ONNX (and C)."""

from .onnx_export import save_model, to_proto

__all__ = ["save_model", "to_proto"]
