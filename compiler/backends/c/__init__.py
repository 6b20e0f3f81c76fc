"""The C target: an optimized model with static shapes -> self-contained C99 (no malloc, no stdio).

``generate_c(model, name)`` returns the files and the report; ``write_c(code, out_dir)`` writes
them; ``pin_shapes(model, specs)`` pins ``NAME=D1xD2...`` input shapes or ``SYMBOL=N`` dims;
:mod:`.verify` builds the code with a test harness and compares it with onnxruntime.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

from ...ir import Model, TensorType
from .emit import CCode, WEIGHTS_SPLIT_BYTES, c_identifier, generate_c, write_c

__all__ = ["CCode", "WEIGHTS_SPLIT_BYTES", "c_identifier", "generate_c", "write_c", "pin_shapes"]


def pin_shapes(model: Model, specs: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """Pin ``NAME=1x3x32x32`` (a graph input) or ``SYMBOL=N`` (a symbolic dim of the inputs).

    Returns the pinned input shapes by input name.
    """
    from ...shapes_pin import ShapeSpecError, parse_shape_spec, pin_input_shapes

    inputs = {v.name: v for v in model.graph.inputs}
    shapes: Dict[str, Tuple[int, ...]] = {}
    symbols: Dict[str, int] = {}
    for spec in specs:
        name, dims = parse_shape_spec(spec)
        if name in inputs:
            shapes[name] = dims
            continue
        known = {d for v in inputs.values() if isinstance(v.type, TensorType) and v.type.shape.dims
                 for d in v.type.shape.dims if isinstance(d, str)}
        if name in known and len(dims) == 1:
            symbols[name] = dims[0]
            continue
        raise ShapeSpecError(f"--input-shape: '{name}' is neither an input ({', '.join(inputs) or 'none'}) nor a "
                             f"symbolic dim of one ({', '.join(sorted(known)) or 'none'})")
    for name, v in inputs.items():
        if name in shapes or not isinstance(v.type, TensorType) or v.type.shape.dims is None:
            continue
        dims = [symbols.get(d, d) if isinstance(d, str) else d for d in v.type.shape.dims]
        if any(isinstance(d, str) for d in v.type.shape.dims) and all(isinstance(d, int) for d in dims):
            shapes[name] = tuple(dims)  # type: ignore[arg-type]
    if shapes:
        pin_input_shapes(model, shapes)
    return shapes


def compile_to_c(model_path: str, out_dir: str, input_shapes: Sequence[str] = (), *, name: str = "model",
                 opt_level: int = 2, verify_each: bool = False) -> CCode:
    """Load ``model_path``, pin shapes, run ``-O<opt_level>`` for the C target, write C to ``out_dir``."""
    import os

    from ...api import optimize
    from ...frontend.onnx_import import load_model

    model = load_model(model_path)
    pin_shapes(model, input_shapes)
    optimize(model, opt_level=opt_level, target="c", verify_each=verify_each)
    code = generate_c(model, name, source=os.path.basename(model_path))
    write_c(code, out_dir)
    return code


__all__.append("compile_to_c")
