"""Element types: one table that links ONNX data types, numpy dtypes and the short names of the textual IR."""

from __future__ import annotations

import enum

import numpy as np
from onnx import TensorProto, helper


class DType(enum.IntEnum):
    """An ONNX tensor element type; the value is the ``TensorProto.DataType`` number."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26
    FLOAT6E2M3 = 27
    FLOAT6E3M2 = 28

    @property
    def short(self) -> str:
        """The name used in the textual IR (``f32``, ``i8``, ...)."""
        return _SHORT[self]

    @classmethod
    def from_short(cls, text: str) -> "DType":
        """Inverse of :attr:`short`."""
        try:
            return _FROM_SHORT[text]
        except KeyError:
            raise ValueError(f"unknown element type '{text}'") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> "DType":
        """The element type of a numpy dtype (ml_dtypes types included)."""
        dtype = np.dtype(dtype)
        if dtype.kind in ("U", "S", "O"):
            return cls.STRING
        return cls(helper.np_dtype_to_tensor_dtype(dtype))

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds one element (object for strings)."""
        if self == DType.STRING:
            return np.dtype(object)
        return helper.tensor_dtype_to_np_dtype(int(self))

    @property
    def itemsize_bits(self) -> int:
        """Bits one element takes in packed storage."""
        if self in (DType.INT4, DType.UINT4, DType.FLOAT4E2M1):
            return 4
        if self in (DType.INT2, DType.UINT2):
            return 2
        if self in (DType.FLOAT6E2M3, DType.FLOAT6E3M2):
            return 6
        if self == DType.STRING:
            return 0
        return self.numpy.itemsize * 8

    @property
    def is_float(self) -> bool:
        return self in _FLOATS

    @property
    def is_integer(self) -> bool:
        return self in _INTS

    @property
    def is_signed(self) -> bool:
        return self in _SIGNED


_SHORT = {
    DType.UNDEFINED: "undef", DType.FLOAT: "f32", DType.UINT8: "u8", DType.INT8: "i8",
    DType.UINT16: "u16", DType.INT16: "i16", DType.INT32: "i32", DType.INT64: "i64",
    DType.STRING: "str", DType.BOOL: "bool", DType.FLOAT16: "f16", DType.DOUBLE: "f64",
    DType.UINT32: "u32", DType.UINT64: "u64", DType.COMPLEX64: "c64", DType.COMPLEX128: "c128",
    DType.BFLOAT16: "bf16", DType.FLOAT8E4M3FN: "f8e4m3fn", DType.FLOAT8E4M3FNUZ: "f8e4m3fnuz",
    DType.FLOAT8E5M2: "f8e5m2", DType.FLOAT8E5M2FNUZ: "f8e5m2fnuz", DType.UINT4: "u4",
    DType.INT4: "i4", DType.FLOAT4E2M1: "f4e2m1", DType.FLOAT8E8M0: "f8e8m0",
    DType.UINT2: "u2", DType.INT2: "i2", DType.FLOAT6E2M3: "f6e2m3", DType.FLOAT6E3M2: "f6e3m2",
}
_FROM_SHORT = {v: k for k, v in _SHORT.items()}
_FLOATS = {
    DType.FLOAT, DType.FLOAT16, DType.DOUBLE, DType.BFLOAT16, DType.FLOAT8E4M3FN,
    DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT4E2M1,
    DType.FLOAT8E8M0, DType.FLOAT6E2M3, DType.FLOAT6E3M2,
}
_SIGNED = {DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.INT4, DType.INT2}
_INTS = _SIGNED | {DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64, DType.UINT4, DType.UINT2}

assert set(_SHORT) == set(DType)
# Any data type the installed onnx knows and this table does not is a gap to close here.
assert {v for _, v in TensorProto.DataType.items()} <= {int(d) for d in DType}, "new ONNX dtype"
