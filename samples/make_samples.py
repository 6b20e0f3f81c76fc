"""Regenerate the sample models in this folder from the test zoo (needs torch, a test dependency).

    python samples/make_samples.py
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import onnx  # noqa: E402

from zoo import get  # noqa: E402

SAMPLES = {
    # MobileNetV2 topology at width 0.5, 96x96 images, 10 classes: small enough for git, real enough to optimize.
    "mobilenetv2_tiny.onnx": ("mobilenetv2", dict(width=0.5, depth=1.0, image_size=96, num_classes=10)),
    # A 2-layer BERT-style encoder (hidden 64) with dynamic batch and sequence.
    "bert_tiny.onnx": ("bert_encoder", dict(hidden=64, depth=2, heads=4, vocab=1000, max_pos=128)),
}

if __name__ == "__main__":
    for file, (name, params) in SAMPLES.items():
        onnx.save(get(name, **params), os.path.join(HERE, file))
        print(f"wrote {file} ({os.path.getsize(os.path.join(HERE, file)) / 1024:.0f} KiB)")
