"""A zoo of real-architecture ONNX models for tests and benchmarks.

Usage::

    from zoo import get, get_path, make_inputs, TEST_PARAMS
    proto = get("resnet18", **TEST_PARAMS["resnet18"])        # onnx.ModelProto
    feeds = make_inputs(proto, seed=0, dims={"batch": 3})     # dict[str, np.ndarray]

Builders export torch modules (a test-only dependency) with fixed seeds, so models are
deterministic. Exporting takes seconds, so :func:`get` caches the ``.onnx`` files in
``$EDGEC_ZOO_CACHE`` (default: ``<system temp dir>/edgec-zoo-cache``), keyed by model name,
parameters, the torch / onnx versions and a hash of the zoo's own source.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np
import onnx

from ._export import get_input_spec
from .cnn import cnn_opset, mobilenetv2, paddle_style, resnet18
from .digits import (build_digits_cnn, build_digits_mobilenetv2, digits_cnn, digits_data, digits_images,
                     digits_mobilenetv2, write_digits_npz)
from .minilm import build_minilm, minilm, minilm_inputs, minilm_sentences, write_minilm_npz
from .recurrent import gru, lstm, recurrent_if_loop, recurrent_if_loop_manual
from .transformer import bert_encoder, vit

Builder = Callable[..., onnx.ModelProto]

#: Every model the zoo can build, by name.
BUILDERS: Dict[str, Builder] = {
    "resnet18": resnet18,
    "mobilenetv2": mobilenetv2,
    "bert_encoder": bert_encoder,
    "vit": vit,
    "recurrent_if_loop": recurrent_if_loop,
    "recurrent_if_loop_manual": recurrent_if_loop_manual,
    "lstm": lstm,
    "gru": gru,
    "paddle_style": paddle_style,
    "cnn_opset": cnn_opset,
    # trained / pretrained models with data (quantization benchmarks); minilm needs the bench extra
    "digits_cnn": build_digits_cnn,
    "digits_mobilenetv2": build_digits_mobilenetv2,
    "minilm": build_minilm,
}

#: Opsets at which the CNN is offered (``get("cnn_opset", opset=...)``).
OPSETS = (11, 13, 15, 17, 19, 21)

#: Small variants: fast to export and run, same topology as the full models.
TEST_PARAMS: Dict[str, Dict[str, Any]] = {
    "resnet18": dict(width=8, image_size=32, num_classes=10),
    "mobilenetv2": dict(width=0.25, depth=0.5, image_size=32, num_classes=10),
    "bert_encoder": dict(hidden=32, depth=2, heads=4, vocab=100, max_pos=64),
    "vit": dict(image_size=32, patch=8, hidden=32, depth=2, heads=4, num_classes=10),
    "recurrent_if_loop": dict(features=8, hidden=16, num_classes=4),
    "recurrent_if_loop_manual": dict(features=8, hidden=16, num_classes=4),
    "lstm": dict(features=8, hidden=16, depth=2),
    "gru": dict(features=8, hidden=16),
    "paddle_style": dict(width=8, image_size=32),
    **{f"cnn_opset{o}": dict(opset=o, width=8, image_size=32, num_classes=10) for o in OPSETS},
}

#: Full-size variants for benchmarks (the builders' defaults).
FULL_PARAMS: Dict[str, Dict[str, Any]] = {
    "resnet18": {}, "mobilenetv2": {}, "bert_encoder": {}, "vit": {}, "recurrent_if_loop": {},
    "lstm": {}, "gru": {}, "paddle_style": dict(width=64, image_size=224),
}

_DEFAULT_DIMS = {"batch": 2, "seq": 8}


def builder_name(name: str) -> str:
    """Map a zoo entry name to its builder (``cnn_opset13`` -> ``cnn_opset``)."""
    if name in BUILDERS:
        return name
    if name.startswith("cnn_opset") and name[len("cnn_opset"):].isdigit():
        return "cnn_opset"
    raise KeyError(f"unknown zoo model {name!r}; known: {sorted(BUILDERS)}")


def cache_dir() -> Path:
    """The directory holding exported models (created on demand)."""
    d = Path(os.environ.get("EDGEC_ZOO_CACHE") or Path(tempfile.gettempdir()) / "edgec-zoo-cache")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_key(name: str, params: Mapping[str, Any]) -> str:
    """Key of a (model, params) pair: also covers torch / onnx versions and the zoo source."""
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = "none"
    blob = json.dumps({"name": builder_name(name), "params": dict(params), "torch": torch_version,
                       "onnx": onnx.__version__, "src": _source_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def get_path(name: str, **params: Any) -> Path:
    """Return the path of the cached ``.onnx`` file of ``name`` built with ``params``, building it
    first if needed. Files are written atomically, so concurrent test workers are safe."""
    path = cache_dir() / f"{name}-{cache_key(name, params)}.onnx"
    if not path.exists():
        proto = BUILDERS[builder_name(name)](**params)
        onnx.checker.check_model(proto, full_check=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    return path


def get(name: str, **params: Any) -> onnx.ModelProto:
    """Return the model ``name`` built with ``params`` (cached; see :func:`get_path`)."""
    return onnx.load(str(get_path(name, **params)))


def _dim_value(dim: onnx.TensorShapeProto.Dimension, axis: int, dims: Mapping[str, int]) -> int:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    if dim.dim_param in dims:
        return int(dims[dim.dim_param])
    # Unnamed or foreign-named dims (e.g. ``p2o.DynamicDimension.0``): axis 0 is the batch.
    return int(dims["batch"] if axis == 0 else dims["seq"])


def make_inputs(model: Union[onnx.ModelProto, str, Path], seed: int = 0,
                dims: Optional[Mapping[str, int]] = None) -> Dict[str, np.ndarray]:
    """Realistic inputs for ``model``: images / features ~ N(0, 1), token ids within the
    vocabulary, attention masks of 0/1 (ones then padding, never all-zero rows).

    Symbolic dims take their value from ``dims`` (defaults ``batch=2, seq=8``); how each input
    is generated comes from the zoo metadata the builders store, else from its dtype.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    all_dims = {**_DEFAULT_DIMS, **(dims or {})}
    spec = get_input_spec(model)
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds: Dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        shape = tuple(_dim_value(d, i, all_dims) for i, d in enumerate(tt.shape.dim))
        kind = spec.get(vi.name, {}).get("kind")
        if kind == "tokens":
            arr = rng.integers(0, int(spec[vi.name]["high"]), size=shape)
        elif kind == "mask":
            arr = np.zeros(shape)
            lengths = rng.integers(1, shape[-1] + 1, size=shape[:-1])
            arr[...] = np.arange(shape[-1]) < lengths[..., None]
        elif np.issubdtype(dtype, np.floating) or kind == "image":
            arr = rng.standard_normal(shape)
        elif dtype == np.bool_:
            arr = rng.integers(0, 2, size=shape)
        else:
            arr = rng.integers(0, 10, size=shape)
        feeds[vi.name] = np.ascontiguousarray(arr.astype(dtype))
    return feeds


__all__ = ["BUILDERS", "OPSETS", "TEST_PARAMS", "FULL_PARAMS", "get", "get_path", "make_inputs", "cache_dir",
           "cache_key", "builder_name", "resnet18", "mobilenetv2", "bert_encoder", "vit", "recurrent_if_loop",
           "recurrent_if_loop_manual", "lstm", "gru", "paddle_style", "cnn_opset", "digits_cnn", "digits_data", "digits_images", "digits_mobilenetv2",
           "write_digits_npz", "minilm", "minilm_inputs", "minilm_sentences", "write_minilm_npz"]
