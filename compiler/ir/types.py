"""Value types: tensors with symbolic shapes, quantized element types, sequences, optionals and maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

import numpy as np

from .dtypes import DType

#: One dimension: an int (static), a str (a symbolic name shared by every dim of that name) or None (unknown).
Dim = Union[int, str, None]


@dataclass(frozen=True)
class Shape:
    """A tensor shape; ``dims is None`` means the rank is unknown."""

    dims: Optional[Tuple[Dim, ...]]

    def __post_init__(self) -> None:
        if self.dims is not None:
            object.__setattr__(self, "dims", tuple(self.dims))

    @property
    def rank(self) -> Optional[int]:
        return None if self.dims is None else len(self.dims)

    @property
    def is_static(self) -> bool:
        """True when the rank and every dim are known integers."""
        return self.dims is not None and all(isinstance(d, int) for d in self.dims)

    def numel(self) -> Optional[int]:
        """Number of elements, or None when not static."""
        if not self.is_static:
            return None
        n = 1
        for d in self.dims:  # type: ignore[union-attr]
            n *= d  # type: ignore[operator]
        return n

    @property
    def symbols(self) -> Tuple[str, ...]:
        """The symbolic dim names, in order of appearance."""
        return tuple(d for d in (self.dims or ()) if isinstance(d, str))

    def __iter__(self):
        return iter(self.dims or ())

    def __len__(self) -> int:
        if self.dims is None:
            raise TypeError("shape of unknown rank has no length")
        return len(self.dims)

    def __getitem__(self, i):
        if self.dims is None:
            raise TypeError("shape of unknown rank")
        return self.dims[i]


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Affine quantization of an integer element type: ``real = (q - zero_point) * scale``.

    ``axis`` is None for per-tensor; per-channel parameters hold one value per slice of ``axis``;
    ``block_size`` > 0 means blocked quantization along ``axis`` (ONNX opset 21 DequantizeLinear).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: Optional[int] = None
    block_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", np.asarray(self.scale, dtype=np.float32))
        object.__setattr__(self, "zero_point", np.asarray(self.zero_point))

    @property
    def per_channel(self) -> bool:
        return self.axis is not None and self.scale.size > 1

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, QuantParams)
            and self.axis == other.axis
            and self.block_size == other.block_size
            and self.scale.shape == other.scale.shape
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    def __hash__(self) -> int:
        return hash((self.axis, self.block_size, self.scale.tobytes(), self.zero_point.tobytes()))


class Type:
    """Base of every value type."""


@dataclass(frozen=True)
class TensorType(Type):
    """A dense tensor: element type, shape, and optional quantization parameters."""

    dtype: DType
    shape: Shape = field(default_factory=lambda: Shape(None))
    quant: Optional[QuantParams] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType(self.dtype))
        if not isinstance(self.shape, Shape):
            object.__setattr__(self, "shape", Shape(self.shape))

    def with_shape(self, dims) -> "TensorType":
        return TensorType(self.dtype, Shape(dims), self.quant)


@dataclass(frozen=True)
class SparseTensorType(Type):
    """A sparse tensor (ONNX SparseTensor)."""

    dtype: DType
    shape: Shape = field(default_factory=lambda: Shape(None))


@dataclass(frozen=True)
class SequenceType(Type):
    """An ONNX sequence of values of one type (elem None when unknown)."""

    elem: Optional[Type]


@dataclass(frozen=True)
class OptionalType(Type):
    """An ONNX optional value."""

    elem: Optional[Type]


@dataclass(frozen=True)
class MapType(Type):
    """An ONNX map (key element type to value type)."""

    key: DType
    value: Optional[Type]


def tensor(dtype: DType, dims=None) -> TensorType:
    """Shorthand: ``tensor(DType.FLOAT, [1, "N", 3])``."""
    return TensorType(DType(dtype), Shape(None if dims is None else tuple(dims)))
