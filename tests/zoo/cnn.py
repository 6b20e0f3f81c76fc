"""Convolutional networks: ResNet-18, MobileNetV2, a Paddle-style CNN and opset variants.

The module definitions follow torchvision's reference implementations (same topology, same
layer names) so exported graphs look like the ones users feed to edgec.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ._export import DEFAULT_OPSET, export, randomize_norm_stats, seed_all, set_input_spec

IMAGE_SPEC = {"input": {"kind": "image"}}


def _torch_resnet18(width: int, num_classes: int) -> Any:
    """Build a torch ResNet-18 (BasicBlock x [2, 2, 2, 2]) with base width ``width``."""
    import torch.nn as nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample: Optional[nn.Module] = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            chans = [w, 2 * w, 4 * w, 8 * w]
            cin = w
            for i, c in enumerate(chans):
                stride = 1 if i == 0 else 2
                setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1)))
                cin = c
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * w, num_classes)

        def forward(self, x: Any) -> Any:
            import torch

            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


def resnet18(width: int = 64, image_size: int = 224, num_classes: int = 1000, opset: int = DEFAULT_OPSET,
             seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 with BatchNorm, residual Adds, MaxPool, global AveragePool and a Gemm head.

    ``width=64, image_size=224, num_classes=1000`` is the real 11.7M-parameter network; tests use
    ``width=8, image_size=32``. Input ``input`` [batch, 3, H, W], output ``logits`` [batch, classes].
    """
    import torch

    seed_all(seed)
    net = _torch_resnet18(width, num_classes)
    randomize_norm_stats(net, seed + 1)
    x = torch.randn(1, 3, image_size, image_size)
    return export(net, (x,), input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset=opset,
                  input_spec=IMAGE_SPEC, doc=f"zoo resnet18 width={width}")


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _torch_mobilenetv2(width_mult: float, num_classes: int, depth: float) -> Any:
    """Build torchvision's MobileNetV2 (inverted residuals, depthwise convs, ReLU6, BN)."""
    import torch.nn as nn

    def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
        layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = int(round(cin * expand))
            self.use_res_connect = stride == 1 and cin == cout
            layers: List[nn.Module] = []
            if expand != 1:
                layers.append(conv_bn(cin, hidden, 1, 1))
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, act=False)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # t (expansion), c (channels), n (repeats), s (stride)
            setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                       [6, 160, 3, 2], [6, 320, 1, 1]]
            cin = _make_divisible(32 * width_mult)
            last = _make_divisible(1280 * max(1.0, width_mult))
            feats: List[nn.Module] = [conv_bn(3, cin, 3, 2)]
            for t, c, n, s in setting:
                cout = _make_divisible(c * width_mult)
                reps = max(1, int(round(n * depth)))
                for i in range(reps):
                    feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            feats.append(conv_bn(cin, last, 1, 1))
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

        def forward(self, x: Any) -> Any:
            import torch
            import torch.nn.functional as F

            x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def mobilenetv2(width: float = 1.0, depth: float = 1.0, image_size: int = 224, num_classes: int = 1000,
                opset: int = DEFAULT_OPSET, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2: inverted residual blocks with depthwise 3x3 convs, ReLU6 (Clip) and BN.

    ``width`` is the width multiplier, ``depth`` scales the repeats of each stage (at least 1, so
    every stage and both residual / non-residual block kinds stay present). Full size: 3.5M params.
    """
    import torch

    seed_all(seed)
    net = _torch_mobilenetv2(width, num_classes, depth)
    randomize_norm_stats(net, seed + 1)
    x = torch.randn(1, 3, image_size, image_size)
    return export(net, (x,), input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset=opset,
                  input_spec=IMAGE_SPEC, doc=f"zoo mobilenetv2 width={width} depth={depth}")


def cnn_opset(opset: int = 13, width: int = 8, image_size: int = 32, num_classes: int = 10,
              seed: int = 0) -> onnx.ModelProto:
    """The small ResNet-18 exported directly at ``opset`` (11..21), falling back to the converter.

    The exporter's own ``opset_version`` is used where it works; otherwise the model is exported
    at the default opset and converted with ``onnx.version_converter``.
    """
    try:
        return resnet18(width=width, image_size=image_size, num_classes=num_classes, opset=opset, seed=seed)
    except Exception:  # pragma: no cover - depends on the installed torch
        from onnx import version_converter

        base = resnet18(width=width, image_size=image_size, num_classes=num_classes, seed=seed)
        return version_converter.convert_version(base, opset)


# ---------------------------------------------------------------------------------------------
# Paddle-style model
# ---------------------------------------------------------------------------------------------

_PADDLE_PARAM_NAMES = {
    # op type -> (paddle layer prefix, names of the parameter inputs by input index)
    "Conv": ("conv2d", {1: "w_0", 2: "b_0"}),
    "BatchNormalization": ("batch_norm", {1: "w_0", 2: "b_0", 3: "w_1", 4: "w_2"}),
    "MatMul": ("fc", {1: "w_0"}),
    "Add": ("fc", {1: "b_0"}),
}


def _small_cnn(width: int, num_classes: int) -> Any:
    """A plain VGG-like CNN: conv-bn-relu blocks, max pools, global pool, fc, softmax."""
    import torch
    import torch.nn as nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            blocks: List[nn.Module] = []
            cin = 3
            for i, c in enumerate([w, w, 2 * w, 2 * w, 4 * w]):
                blocks += [nn.Conv2d(cin, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU()]
                if i in (1, 3):
                    blocks.append(nn.MaxPool2d(2, 2))
                cin = c
            self.features = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x: Any) -> Any:
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
            return torch.softmax(self.fc(x), dim=-1)

    return SmallCNN()


def paddle_style(width: int = 16, image_size: int = 32, num_classes: int = 10, opset: int = 11,
                 seed: int = 0) -> onnx.ModelProto:
    """A CNN as paddle2onnx emits it: every weight is a ``Constant`` node, no initializers.

    An exported torch CNN is rewritten the way paddle2onnx output looks: parameters become
    ``Constant`` nodes at the top of the graph named like Paddle parameters (``conv2d_0.w_0``,
    ``batch_norm_0.w_1``, ``fc_0.w_0``), ``Gemm`` becomes ``MatMul`` + ``Add`` with an [in, out]
    weight, tensors are named ``<layer>_<k>.tmp_<j>``, nodes ``p2o.<Op>.<k>``, the input is ``x``
    with batch dim ``p2o.DynamicDimension.0`` and the output goes through a ``scale`` Identity
    into ``save_infer_model/scale_0.tmp_0``.
    """
    import torch

    seed_all(seed)
    net = _small_cnn(width, num_classes)
    randomize_norm_stats(net, seed + 1)
    x = torch.randn(1, 3, image_size, image_size)
    src = export(net, (x,), input_names=["x"], output_names=["softmax_0.tmp_0"],
                 dynamic_axes={"x": {0: "p2o.DynamicDimension.0"},
                               "softmax_0.tmp_0": {0: "p2o.DynamicDimension.0"}}, opset=opset)
    g = src.graph
    inits: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    # Constant nodes emitted by the exporter (e.g. Clip bounds) are hoisted like parameters.
    nodes = list(g.node)

    counters: Dict[str, int] = {}
    op_counters: Dict[str, int] = {}
    rename: Dict[str, str] = {}
    consts: List[onnx.NodeProto] = []
    body: List[onnx.NodeProto] = []

    def fresh(prefix: str) -> int:
        k = counters.get(prefix, 0)
        counters[prefix] = k + 1
        return k

    def node_name(op: str) -> str:
        k = op_counters.get(op, 0)
        op_counters[op] = k + 1
        return f"p2o.{op}.{k}"

    def add_const(name: str, arr: np.ndarray) -> str:
        consts.append(helper.make_node("Constant", [], [name], name=node_name("Constant"),
                                       value=numpy_helper.from_array(arr, name)))
        return name

    layer_of_op = {"Conv": "conv2d", "BatchNormalization": "batch_norm", "Relu": "relu", "MaxPool": "pool2d",
                   "GlobalAveragePool": "pool2d", "AveragePool": "pool2d", "Flatten": "flatten",
                   "Softmax": "softmax", "Reshape": "reshape2"}
    fc_idx = 0
    for n in nodes:
        if n.op_type == "Constant":
            arr = numpy_helper.to_array(n.attribute[0].t)
            rename[n.output[0]] = add_const(f"fill_constant_{fresh('fill_constant')}.tmp_0", arr)
            continue
        ins = [rename.get(i, i) for i in n.input]
        if n.op_type == "Gemm":
            w = inits[n.input[1]]
            if any(a.name == "transB" and a.i == 1 for a in n.attribute):
                w = w.T
            w_name = add_const(f"fc_{fc_idx}.w_0", np.ascontiguousarray(w))
            b_name = add_const(f"fc_{fc_idx}.b_0", inits[n.input[2]])
            mm_out = f"fc_{fc_idx}.tmp_0"
            out = f"fc_{fc_idx}.tmp_1"
            body.append(helper.make_node("MatMul", [ins[0], w_name], [mm_out], name=node_name("MatMul")))
            body.append(helper.make_node("Add", [mm_out, b_name], [out], name=node_name("Add")))
            rename[n.output[0]] = out
            fc_idx += 1
            continue
        prefix = layer_of_op.get(n.op_type, n.op_type.lower())
        k = fresh(prefix)
        pnames = _PADDLE_PARAM_NAMES.get(n.op_type, ("", {}))[1]
        for idx, i in enumerate(n.input):
            if i in inits:
                suffix = pnames.get(idx, f"w_{idx}")
                ins[idx] = add_const(f"{prefix}_{k}.{suffix}", inits[i])
        outs = []
        for j, o in enumerate(n.output):
            new = o if o in {v.name for v in g.output} else f"{prefix}_{k}.tmp_{j}"
            rename[o] = new
            outs.append(new)
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "BatchNormalization":
            attrs.pop("training_mode", None)
        body.append(helper.make_node(n.op_type, ins, outs, name=node_name(n.op_type), **attrs))

    final = "save_infer_model/scale_0.tmp_0"
    body.append(helper.make_node("Identity", [g.output[0].name], [final], name=node_name("Identity")))
    inp = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                        ["p2o.DynamicDimension.0", 3, image_size, image_size])
    out = helper.make_tensor_value_info(final, onnx.TensorProto.FLOAT, ["p2o.DynamicDimension.0", num_classes])
    graph = helper.make_graph(consts + body, "paddle-infer", [inp], [out])
    model = helper.make_model(graph, producer_name="PaddlePaddle", producer_version="",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    set_input_spec(model, {"x": {"kind": "image"}})
    model.doc_string = f"zoo paddle_style width={width}"
    onnx.checker.check_model(model)
    return model


__all__ = ["resnet18", "mobilenetv2", "cnn_opset", "paddle_style"]
