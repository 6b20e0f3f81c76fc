"""A small CNN trained here on scikit-learn's digits (8x8 grey images, 10 classes).

The data ships inside scikit-learn (``sklearn.datasets.load_digits``: 1797 images, no network),
so the model has a real accuracy to lose, which makes it the zoo's quantization yardstick.

- split: stratified and seeded, 1000 train / 200 calibration / 597 test (:data:`SPLITS`);
- inputs: pixels ``/ 16`` then standardized with the train split's mean and std, float32
  ``[batch, 1, 8, 8]`` named ``input``; output ``logits`` ``[batch, 10]``;
- network: 3 x (Conv 3x3 + BatchNorm + ReLU) with two 2x2 max-pools, Flatten, Linear;
- training: deterministic (fixed seeds, CPU, 1 thread, deterministic algorithms), a few seconds.

    from zoo.digits import digits_cnn, digits_data, write_digits_npz
    proto = digits_cnn()                    # exported once, then cached by zoo.get
    x, y = digits_data("test")              # float32 [597, 1, 8, 8], int64 [597]
    write_digits_npz("cal.npz", "calibration")   # {'input': x, 'labels': y}: edgec's format
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np
import onnx

from ._export import DEFAULT_OPSET, export

#: Sizes of the stratified, seeded splits (they add up to the 1797 images).
SPLITS: Dict[str, int] = {"train": 1000, "calibration": 200, "test": 597}
SPLIT_SEED = 0
TRAIN_SEED = 0


def _splits() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """All splits, raw pixels in [0, 16] as float64 [n, 64] and int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = data.data.astype(np.float64), data.target.astype(np.int64)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, train_size=SPLITS["train"], stratify=y,
                                                  random_state=SPLIT_SEED)
    x_cal, x_te, y_cal, y_te = train_test_split(x_rest, y_rest, train_size=SPLITS["calibration"],
                                                stratify=y_rest, random_state=SPLIT_SEED)
    return {"train": (x_tr, y_tr), "calibration": (x_cal, y_cal), "test": (x_te, y_te)}


def digits_data(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``split`` (``train``, ``calibration`` or ``test``): x float32 [n, 1, 8, 8]
    normalized like the model's training data, y int64 [n] class labels."""
    splits = _splits()
    if split not in splits:
        raise KeyError(f"unknown split {split!r}; known: {sorted(splits)}")
    train = splits["train"][0] / 16.0
    mean, std = float(train.mean()), float(train.std())
    x, y = splits[split]
    x = ((x / 16.0 - mean) / std).astype(np.float32).reshape(-1, 1, 8, 8)
    return np.ascontiguousarray(x), y


def write_digits_npz(path: Union[str, Path], split: str = "calibration") -> Path:
    """Write ``split`` as an .npz ``{'input': x, 'labels': y}`` (edgec's calibration format:
    keys named after graph inputs are fed, other keys are labels). Returns the path."""
    x, y = digits_data(split)
    path = Path(path)
    np.savez(path, input=x, labels=y)
    return path


def _torch_digits_cnn(width: int) -> Any:
    import torch.nn as nn

    def block(cin: int, cout: int) -> Any:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *block(1, width), nn.MaxPool2d(2),                     # 8x8 -> 4x4
                *block(width, 2 * width), nn.MaxPool2d(2),             # 4x4 -> 2x2
                *block(2 * width, 4 * width))
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * width * 4, 10))

        def forward(self, x: Any) -> Any:
            return self.classifier(self.features(x))

    return DigitsCNN()


def train_digits_cnn(width: int = 16, epochs: int = 30, seed: int = TRAIN_SEED) -> Any:
    """Train the CNN on the train split (deterministic) and return the torch module in eval mode."""
    x, y = digits_data("train")
    return _fit(lambda: _torch_digits_cnn(width), x, y, epochs, seed)


def _fit(make_net: Any, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Any:
    """Train ``make_net()`` on (x, y) (deterministic: fixed seeds, CPU, 1 thread; AdamW with a one-cycle
    schedule, shifts by up to one pixel per batch) and return it in eval mode."""
    import torch

    shift = max(1, x.shape[-1] // 8)  # one pixel of the 8x8 digit
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        net = make_net()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed + 1)
        steps_per_epoch = (len(xt) + 31) // 32
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=epochs * steps_per_epoch)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), 32):
                idx = perm[i:i + 32]
                xb = xt[idx]
                # light augmentation: random shifts by up to one pixel
                dx, dy = (shift * int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
                loss = torch.nn.functional.cross_entropy(net(xb), yt[idx], label_smoothing=0.05)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        return net.eval()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def build_digits_cnn(width: int = 16, epochs: int = 30, seed: int = TRAIN_SEED,
                     opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Train (see :func:`train_digits_cnn`) and export the digits CNN; BatchNorm nodes are kept.
    Input ``input`` float32 [batch, 1, 8, 8]; output ``logits`` float32 [batch, 10]."""
    net = train_digits_cnn(width=width, epochs=epochs, seed=seed)
    return _export_trained(net, *digits_data("test"), opset, f"zoo digits_cnn width={width}")


def _export_trained(net: Any, x: np.ndarray, y: np.ndarray, opset: int, doc: str) -> onnx.ModelProto:
    """Export a trained digits classifier (input ``input``, output ``logits``, dynamic batch) with its torch
    top-1 on the test images (x, y) in the doc string."""
    import torch

    with torch.no_grad():
        acc = float((net(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    return export(net, (torch.from_numpy(x[:2]),), input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset=opset,
                  input_spec={"input": {"kind": "image"}},
                  doc=f"{doc}: trained on sklearn digits, torch test top-1 {acc:.4f} on {len(y)} images")


def digits_images(split: str, size: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``split`` as 3-channel images of ``size`` x ``size`` (each pixel of the normalized 8x8 digit
    repeated, grey in all three channels): inputs for ImageNet-style networks."""
    x, y = digits_data(split)
    r = size // 8
    x = np.repeat(np.repeat(np.repeat(x, r, axis=2), r, axis=3), 3, axis=1)
    return np.ascontiguousarray(x, np.float32), y


def build_digits_mobilenetv2(width: float = 0.35, size: int = 32, epochs: int = 20, seed: int = TRAIN_SEED,
                             opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """A MobileNetV2 (``width`` multiplier, 10 classes) trained on :func:`digits_images` and exported: the
    zoo's MobileNet with a real accuracy to lose. Input ``input`` float32 [batch, 3, size, size]."""
    from .cnn import _torch_mobilenetv2

    x, y = digits_images("train", size)
    net = _fit(lambda: _torch_mobilenetv2(width, 10, 1.0), x, y, epochs, seed)
    return _export_trained(net, *digits_images("test", size), opset,
                           f"zoo digits_mobilenetv2 width={width} size={size}")


def digits_mobilenetv2(**params: Any) -> onnx.ModelProto:
    """The trained digits MobileNetV2 (built on first use, then cached by :func:`zoo.get`)."""
    from . import get

    return get("digits_mobilenetv2", **params)


def digits_cnn(**params: Any) -> onnx.ModelProto:
    """The trained digits CNN (built on first use, then cached by :func:`zoo.get`)."""
    from . import get

    return get("digits_cnn", **params)


def digits_accuracy(model: Union[onnx.ModelProto, str, Path], split: str = "test") -> float:
    """Top-1 accuracy of an ONNX model (``input`` -> logits) on ``split``, run with onnxruntime."""
    import onnxruntime as ort

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                providers=["CPUExecutionProvider"])
    x, y = digits_data(split)
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())
