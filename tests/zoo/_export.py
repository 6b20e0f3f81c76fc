"""Shared helpers for the zoo builders: seeding, realistic weights and the torch -> ONNX export.

Torch is a test-only dependency: it is imported lazily here and never by ``edgec`` itself.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import onnx

#: Key of the model metadata entry that tells :func:`zoo.make_inputs` how to fill each input.
INPUT_SPEC_KEY = "zoo.inputs"

#: Opset used when a builder is not asked for another one.
DEFAULT_OPSET = 17


def seed_all(seed: int) -> None:
    """Seed torch (and its CPU generator) so that module initialisation is deterministic."""
    import torch

    torch.manual_seed(seed)


def randomize_norm_stats(module: Any, seed: int) -> None:
    """Give every BatchNorm / LayerNorm non-trivial affine parameters and running statistics.

    Freshly constructed norms have weight 1, bias 0, mean 0 and var 1, which makes them no-ops
    and lets exporters or passes hide bugs; trained networks never look like that.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            elif isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.4 + 0.8)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.02)


def export(
    module: Any,
    args: Tuple[Any, ...],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Optional[Mapping[str, Mapping[int, str]]] = None,
    opset: int = DEFAULT_OPSET,
    keep_batchnorm: bool = True,
    input_spec: Optional[Mapping[str, Mapping[str, Any]]] = None,
    doc: str = "",
) -> onnx.ModelProto:
    """Export ``module`` with the TorchScript exporter (``dynamo=False``) and return the proto.

    The TorchScript exporter produces the classic graphs found in the wild (Shape / Gather /
    Concat / Reshape chains, ``/layer1/layer1.0/conv1/Conv`` node names). ``keep_batchnorm``
    exports with ``TrainingMode.PRESERVE`` on an eval-mode module so BatchNormalization nodes are
    kept (as in the ONNX model zoo) instead of being folded into the preceding Conv.
    ``input_spec`` is stored as metadata for :func:`zoo.make_inputs`.
    """
    import torch

    module = module.eval()
    buf = io.BytesIO()
    training = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Grad mode stays on: nn.MultiheadAttention then takes its decomposed (exportable) path
        # instead of the fused ``_native_multi_head_attention`` kernel.
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            opset_version=opset,
            training=training,
            do_constant_folding=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
        )
    proto = onnx.load_from_string(buf.getvalue())
    if doc:
        proto.doc_string = doc
    if input_spec:
        set_input_spec(proto, input_spec)
    return proto


def set_input_spec(proto: onnx.ModelProto, spec: Mapping[str, Mapping[str, Any]]) -> None:
    """Record how each graph input should be generated (see :func:`zoo.make_inputs`)."""
    for p in list(proto.metadata_props):
        if p.key == INPUT_SPEC_KEY:
            proto.metadata_props.remove(p)
    entry = proto.metadata_props.add()
    entry.key = INPUT_SPEC_KEY
    entry.value = json.dumps({k: dict(v) for k, v in spec.items()}, sort_keys=True)


def get_input_spec(proto: onnx.ModelProto) -> Dict[str, Dict[str, Any]]:
    """Return the input spec stored by :func:`set_input_spec` (empty if there is none)."""
    for p in proto.metadata_props:
        if p.key == INPUT_SPEC_KEY:
            return json.loads(p.value)
    return {}
