"""Pin the symbolic or unknown dims of named graph inputs (``--input-shape x=1x3x224x224``).

A pinned symbolic dim (``N``) is replaced by its value in every tensor type of the model, so all
values that share the symbol agree.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .errors import EdgecError
from .ir import Model, Shape, TensorType

__all__ = ["ShapeSpecError", "parse_shape_spec", "pin_input_shapes"]


class ShapeSpecError(EdgecError):
    """An ``--input-shape`` that does not parse or does not fit the model."""


def parse_shape_spec(spec: str) -> Tuple[str, Tuple[int, ...]]:
    """``"x=1x3x224x224"`` -> ``("x", (1, 3, 224, 224))``; ``"x="`` is a scalar."""
    name, eq, dims_text = spec.rpartition("=")
    if not eq or not name:
        raise ShapeSpecError(f"--input-shape '{spec}': expected NAME=D1xD2x... (e.g. input=1x3x224x224)")
    dims: List[int] = []
    for part in dims_text.split("x") if dims_text else []:
        if not part.strip().isdigit():
            raise ShapeSpecError(f"--input-shape '{spec}': dim '{part}' is not a non-negative integer")
        dims.append(int(part))
    return name, tuple(dims)


def pin_input_shapes(model: Model, shapes: Dict[str, Sequence[int]]) -> None:
    """Give the named inputs of the main graph static shapes.

    Errors: unknown input name (the message lists the inputs), non-tensor input, rank mismatch,
    a static dim that differs, or one symbol pinned to two values.
    """
    graph = model.graph
    by_name = {v.name: v for v in graph.inputs}
    symbols: Dict[str, int] = {}
    for name, dims in shapes.items():
        v = by_name.get(name)
        if v is None:
            raise ShapeSpecError(f"--input-shape: the model has no input '{name}' (its inputs: {', '.join(by_name) or 'none'})")
        t = v.type
        if t is not None and not isinstance(t, TensorType):
            raise ShapeSpecError(f"--input-shape: input '{name}' is not a tensor")
        dims = tuple(int(d) for d in dims)
        old = t.shape.dims if isinstance(t, TensorType) else None
        if old is not None:
            if len(old) != len(dims):
                raise ShapeSpecError(f"--input-shape: input '{name}' has rank {len(old)}, "
                                     f"the given shape {'x'.join(map(str, dims)) or '(scalar)'} has rank {len(dims)}")
            for i, (o, d) in enumerate(zip(old, dims)):
                if isinstance(o, int) and o != d:
                    raise ShapeSpecError(f"--input-shape: input '{name}' dim {i} is {o}, not {d}")
                if isinstance(o, str):
                    if symbols.setdefault(o, d) != d:
                        raise ShapeSpecError(f"--input-shape: symbolic dim '{o}' is pinned to both {symbols[o]} and {d}")
        if t is None:
            raise ShapeSpecError(f"--input-shape: input '{name}' has no type")
        v.type = TensorType(t.dtype, Shape(dims), t.quant)
    if symbols:
        _substitute(model, symbols)


def _pin(t: Optional[TensorType], symbols: Dict[str, int]) -> Optional[TensorType]:
    if not isinstance(t, TensorType) or t.shape.dims is None or not any(isinstance(d, str) for d in t.shape.dims):
        return t
    return TensorType(t.dtype, Shape(tuple(symbols.get(d, d) if isinstance(d, str) else d for d in t.shape.dims)), t.quant)


def _substitute(model: Model, symbols: Dict[str, int]) -> None:
    for graph in model.graph.all_graphs():  # function bodies have their own symbol scope
        for v in list(graph.values()) + list(graph.outputs):
            v.type = _pin(v.type, symbols)  # type: ignore[arg-type]
