"""edgec's intermediate representation."""

from .core import Attr, AttrKind, Function, Graph, Model, Node, SparseTensor, Value
from .dtypes import DType
from .tensor import ArrayTensor, ExternalTensor, Tensor
from .types import Dim, MapType, OptionalType, QuantParams, SequenceType, Shape, SparseTensorType, TensorType, Type, tensor

__all__ = [
    "Attr", "AttrKind", "Function", "Graph", "Model", "Node", "SparseTensor", "Value", "DType",
    "ArrayTensor", "ExternalTensor", "Tensor", "Dim", "MapType", "OptionalType", "QuantParams",
    "SequenceType", "Shape", "SparseTensorType", "TensorType", "Type", "tensor",
]
