"""Constant tensors: in-memory numpy arrays, or external data read lazily through a memory map."""

from __future__ import annotations

import mmap
import os
from typing import BinaryIO, Optional, Tuple

import numpy as np
from onnx import TensorProto, numpy_helper

from .dtypes import DType


class Tensor:
    """A constant: element type, static dims, and its values as numpy on demand."""

    dtype: DType
    dims: Tuple[int, ...]

    def numpy(self) -> np.ndarray:
        """The values (read-only for external tensors)."""
        raise NotImplementedError

    @property
    def numel(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes in ONNX storage (packed for sub-byte types)."""
        if self.dtype == DType.STRING:
            return int(sum(len(s) for s in self.numpy().ravel()))
        return (self.numel * self.dtype.itemsize_bits + 7) // 8

    @property
    def is_external(self) -> bool:
        return False

    def raw_bytes(self) -> bytes:
        """The little-endian ONNX ``raw_data`` encoding."""
        return to_proto(self, "").raw_data

    def __repr__(self) -> str:
        dims = "x".join(str(d) for d in self.dims)
        return f"{type(self).__name__}<{dims}x{self.dtype.short}>"


class ArrayTensor(Tensor):
    """A constant held in memory as a numpy array."""

    def __init__(self, array: np.ndarray, dtype: Optional[DType] = None) -> None:
        array = np.asarray(array)
        self.dtype = DType(dtype) if dtype is not None else DType.from_numpy(array.dtype)
        if self.dtype != DType.STRING and array.dtype != self.dtype.numpy:
            array = array.astype(self.dtype.numpy)
        self._array = array
        self.dims = tuple(int(d) for d in array.shape)

    def numpy(self) -> np.ndarray:
        return self._array


class ExternalTensor(Tensor):
    """A constant stored in an external data file, mapped on first use and never copied whole.

    The path must already be validated (inside the model's directory) by the front end.
    """

    def __init__(self, path: str, offset: int, length: int, dtype: DType, dims: Tuple[int, ...]) -> None:
        self.path = path
        self.offset = int(offset)
        self.length = int(length)
        self.dtype = DType(dtype)
        self.dims = tuple(int(d) for d in dims)
        self._array: Optional[np.ndarray] = None
        self._pinned: Optional[bytes] = None  # the stored bytes, once pin() has copied them

    @property
    def is_external(self) -> bool:
        return True

    def pin(self) -> None:
        """Copy the stored bytes into memory, so the tensor no longer reads its file (which may then be replaced)."""
        if self._pinned is None:
            self._pinned = self.read_bytes()

    def numpy(self) -> np.ndarray:
        if self._array is None:
            self._array = self._load()
        return self._array

    def _load(self) -> np.ndarray:
        bits = self.dtype.itemsize_bits
        if self.length == 0 or self.numel == 0:
            return np.zeros(self.dims, dtype=self.dtype.numpy)
        if bits % 8 == 0 and self.dtype != DType.STRING:
            if self._pinned is not None:
                dt = self.dtype.numpy.newbyteorder("<")
                return np.frombuffer(self._pinned, dtype=dt, count=self.numel).reshape(self.dims)
            # Map only the pages that hold this tensor: mmap offsets must be page aligned.
            start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
            with open(self.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), self.offset - start + self.length, access=mmap.ACCESS_READ, offset=start)
            arr = np.frombuffer(mm, dtype=self.dtype.numpy.newbyteorder("<"), count=self.numel, offset=self.offset - start)
            return arr.reshape(self.dims)
        proto = TensorProto(data_type=int(self.dtype), dims=self.dims)
        proto.raw_data = self.read_bytes()
        return numpy_helper.to_array(proto)

    def read_bytes(self) -> bytes:
        if self._pinned is not None:
            return self._pinned
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.length)

    def copy_to(self, out: BinaryIO, chunk: int = 16 << 20) -> None:
        """Stream the stored bytes to ``out`` without holding them in memory."""
        if self._pinned is not None:
            view = memoryview(self._pinned)
            for i in range(0, self.length, chunk):
                out.write(view[i:i + chunk])
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.length
            while left:
                buf = f.read(min(chunk, left))
                if not buf:
                    raise OSError(f"external data file '{os.path.basename(self.path)}' ends early")
                out.write(buf)
                left -= len(buf)

    def raw_bytes(self) -> bytes:
        return self.read_bytes()


def to_proto(tensor: Tensor, name: str) -> TensorProto:
    """An in-memory ``TensorProto`` holding the tensor's values."""
    if isinstance(tensor, ExternalTensor) and tensor.dtype != DType.STRING:
        proto = TensorProto(name=name, data_type=int(tensor.dtype), dims=tensor.dims)
        proto.raw_data = tensor.read_bytes()
        return proto
    arr = tensor.numpy()
    if tensor.dtype == DType.STRING:
        proto = TensorProto(name=name, data_type=TensorProto.STRING, dims=tensor.dims)
        proto.string_data.extend(s if isinstance(s, bytes) else str(s).encode("utf-8") for s in arr.ravel())
        return proto
    return numpy_helper.from_array(np.ascontiguousarray(arr).reshape(arr.shape), name)  # keeps 0-d shape


def from_proto_values(proto: TensorProto) -> ArrayTensor:
    """An ArrayTensor from a TensorProto whose data is inline."""
    dtype = DType(proto.data_type)
    if dtype == DType.STRING:
        arr = np.array(list(proto.string_data), dtype=object).reshape(tuple(proto.dims))
        return ArrayTensor(arr, DType.STRING)
    return ArrayTensor(numpy_helper.to_array(proto), dtype)
