"""Precision reduction: calibration, int8 post-training quantization, and the tools around it.

Modules (one concern each):

- ``data``        calibration data: .npz/.npy files or folders keyed by input name (other keys are
                  labels), a Python callable from a plugin, or synthetic inputs (with a warning);
                  ``CalibrationData`` yields batches (dict name -> array) and labels.
- ``observers``   streaming statistics per tensor (running min/max, histograms) and the range
                  methods minmax, percentile, entropy (KL) and mse.
- ``collect``     runs the float model in onnxruntime batch by batch with chosen intermediate
                  tensors exposed, feeding observers; never holds all activations at once.
- ``scheme``      the quantization arithmetic: scales and zero points (per-tensor, per-channel,
                  blocked), rounding half to even, int32 bias, the traps (zero range, NaN/Inf,
                  int32 overflow of the bias).
- ``qdq``         IR helpers that insert QuantizeLinear/DequantizeLinear with quantized types.
- ``reference``   a numpy simulation of a quantized graph with exact integer semantics.

The passes that use them live in ``passes/`` (``quantize``, ``quantize-dynamic``,
``quantize-weights``, ``equalize-layers``, ``correct-bias``). In the IR, a quantized tensor is an
integer value whose ``TensorType.quant`` holds its ``QuantParams``: passes and back ends read the
scale and zero point from the type, without pattern-matching Q/DQ pairs.
"""
