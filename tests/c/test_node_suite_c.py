"""The ONNX backend node tests through the C target (``edgec.backends.c.onnx_backend.CBackend``).

Every case of ``onnx.backend.test.case.node.collect_testcases()`` whose model uses only ops the C
backend claims runs through ``CBackend`` (pipeline -O2 for target c, generated C built with
``-Wall -Wextra -Werror``, run) and its outputs are compared with the expected ones: floats within
rtol 1e-4 / atol 1e-5 or 100 ULP, integers and bools exactly. The cases that fail are listed in
``KNOWN_FAILURES`` with the reason; a case fails its test when it fails and is not listed, or is
listed and passes, so the list stays exact and a regression is caught. ``test_thresholds`` asserts
from that list that at least 90% of the claimed-op cases whose graph inputs and outputs have element
types the C target stores (no float16, bfloat16, float8, int4/int2, float4, strings, sequences) pass,
and that every claimed op has a passing case; run it with ``-s`` for the per-op table and the pass
counts over all claimed-op cases and over the whole suite.

Graph inputs that only determine compile-time parameters (Reshape shapes, axes, pads, Clip bounds...)
are frozen to the test's values by the backend (see ``onnx_backend.PARAM_SLOTS``).
"""

from __future__ import annotations

import collections
import functools
import os
import shutil
import warnings
from typing import Dict, List, Tuple

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgec.backends.c.onnx_backend import CBackend, claimed_ops
from edgec.backends.c.verify import compare

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")

#: Fraction of the claimed-op cases with C element types that must pass.
THRESHOLD = 0.90

#: Cases of claimed ops that fail, with the reason (kept exact by the per-case tests: a case that
#: starts passing must be removed from here).
KNOWN_FAILURES: Dict[str, str] = {
    "test_attention_24_qk_matmul_output_mode3_softmax_precision_expanded": "element type float16 (not a C target type)",
    "test_attention_3d_causal_bf16_expanded": "element type bfloat16 (not a C target type)",
    "test_attention_4d_attn_mask_causal_bf16_expanded": "element type bfloat16 (not a C target type)",
    "test_attention_4d_causal_bf16_expanded": "element type bfloat16 (not a C target type)",
    "test_attention_4d_causal_fp16_expanded": "element type float16 (not a C target type)",
    "test_attention_4d_causal_padded_kv_bf16_expanded": "element type bfloat16 (not a C target type)",
    "test_attention_4d_fp16_expanded": "element type float16 (not a C target type)",
    "test_attention_4d_gqa_causal_nonpad_decode_fp16_expanded": "element type float16 (not a C target type)",
    "test_attention_4d_gqa_with_past_and_present_fp16_expanded": "element type float16 (not a C target type)",
    "test_attention_4d_padded_kv_bf16_expanded": "element type bfloat16 (not a C target type)",
    "test_attention_local_window_ext_cache_float16_mask_expanded": "element type float16 (not a C target type)",
    "test_averagepool_2d_ceil_last_window_starts_on_pad": "AveragePool ceil_mode, last window on the pad: 2/3 elements off (max abs 5.6e-05)",
    "test_averagepool_2d_dilations": "AveragePool: AveragePool dilations",
    "test_averagepool_3d_default": "AveragePool: only 1-D and 2-D pooling (input rank 5)",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": "AveragePool: only 1-D and 2-D pooling (input rank 5)",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": "AveragePool: only 1-D and 2-D pooling (input rank 5)",
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": "AveragePool: only 1-D and 2-D pooling (input rank 5)",
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": "AveragePool: only 1-D and 2-D pooling (input rank 5)",
    "test_averagepool_3d_dilations_small": "AveragePool: only 1-D and 2-D pooling (input rank 5)",
    "test_batchnorm_epsilon_training_mode": "BatchNormalization: training_mode",
    "test_batchnorm_example_training_mode": "BatchNormalization: training_mode",
    "test_blackmanwindow_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_blackmanwindow_symmetric_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_cast_BFLOAT16_to_FLOAT": "element type bfloat16 (not a C target type)",
    "test_cast_DOUBLE_to_FLOAT16": "element type float16 (not a C target type)",
    "test_cast_FLOAT16_to_DOUBLE": "element type float16 (not a C target type)",
    "test_cast_FLOAT16_to_FLOAT": "element type float16 (not a C target type)",
    "test_cast_FLOAT16_to_FLOAT4E2M1": "element type float16/float4e2m1 (not a C target type)",
    "test_cast_FLOAT16_to_FLOAT8E4M3FN": "element type float16/float8e4m3fn (not a C target type)",
    "test_cast_FLOAT16_to_FLOAT8E4M3FNUZ": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_cast_FLOAT16_to_FLOAT8E5M2": "element type float16/float8e5m2 (not a C target type)",
    "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_cast_FLOAT16_to_INT2": "element type float16/int2 (not a C target type)",
    "test_cast_FLOAT16_to_INT4": "element type float16/int4 (not a C target type)",
    "test_cast_FLOAT16_to_UINT2": "element type float16/uint2 (not a C target type)",
    "test_cast_FLOAT16_to_UINT4": "element type float16/uint4 (not a C target type)",
    "test_cast_FLOAT4E2M1_to_FLOAT": "element type float4e2m1 (not a C target type)",
    "test_cast_FLOAT4E2M1_to_FLOAT16": "element type float16/float4e2m1 (not a C target type)",
    "test_cast_FLOAT8E4M3FNUZ_to_FLOAT": "element type float8e4m3fnuz (not a C target type)",
    "test_cast_FLOAT8E4M3FNUZ_to_FLOAT16": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_cast_FLOAT8E4M3FN_to_FLOAT": "element type float8e4m3fn (not a C target type)",
    "test_cast_FLOAT8E4M3FN_to_FLOAT16": "element type float16/float8e4m3fn (not a C target type)",
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT": "element type float8e5m2fnuz (not a C target type)",
    "test_cast_FLOAT8E5M2FNUZ_to_FLOAT16": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_cast_FLOAT8E5M2_to_FLOAT": "element type float8e5m2 (not a C target type)",
    "test_cast_FLOAT8E5M2_to_FLOAT16": "element type float16/float8e5m2 (not a C target type)",
    "test_cast_FLOAT_to_BFLOAT16": "element type bfloat16 (not a C target type)",
    "test_cast_FLOAT_to_FLOAT16": "element type float16 (not a C target type)",
    "test_cast_FLOAT_to_FLOAT4E2M1": "element type float4e2m1 (not a C target type)",
    "test_cast_FLOAT_to_FLOAT8E4M3FN": "element type float8e4m3fn (not a C target type)",
    "test_cast_FLOAT_to_FLOAT8E4M3FNUZ": "element type float8e4m3fnuz (not a C target type)",
    "test_cast_FLOAT_to_FLOAT8E5M2": "element type float8e5m2 (not a C target type)",
    "test_cast_FLOAT_to_FLOAT8E5M2FNUZ": "element type float8e5m2fnuz (not a C target type)",
    "test_cast_FLOAT_to_INT2": "element type int2 (not a C target type)",
    "test_cast_FLOAT_to_INT4": "element type int4 (not a C target type)",
    "test_cast_FLOAT_to_UINT2": "element type uint2 (not a C target type)",
    "test_cast_FLOAT_to_UINT4": "element type uint4 (not a C target type)",
    "test_cast_INT2_to_FLOAT": "element type int2 (not a C target type)",
    "test_cast_INT2_to_FLOAT16": "element type float16/int2 (not a C target type)",
    "test_cast_INT2_to_INT8": "element type int2 (not a C target type)",
    "test_cast_INT4_to_FLOAT": "element type int4 (not a C target type)",
    "test_cast_INT4_to_FLOAT16": "element type float16/int4 (not a C target type)",
    "test_cast_INT4_to_INT8": "element type int4 (not a C target type)",
    "test_cast_UINT2_to_FLOAT": "element type uint2 (not a C target type)",
    "test_cast_UINT2_to_FLOAT16": "element type float16/uint2 (not a C target type)",
    "test_cast_UINT2_to_UINT8": "element type uint2 (not a C target type)",
    "test_cast_UINT4_to_FLOAT": "element type uint4 (not a C target type)",
    "test_cast_UINT4_to_FLOAT16": "element type float16/uint4 (not a C target type)",
    "test_cast_UINT4_to_UINT8": "element type uint4 (not a C target type)",
    "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0": "element type float16/float8e8m0 (not a C target type)",
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT": "element type float8e8m0 (not a C target type)",
    "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16": "element type float16/float8e8m0 (not a C target type)",
    "test_cast_e8m0_FLOAT_to_FLOAT8E8M0": "element type float8e8m0 (not a C target type)",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN": "element type float16/float8e4m3fn (not a C target type)",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2": "element type float16/float8e5m2 (not a C target type)",
    "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN": "element type float8e4m3fn (not a C target type)",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ": "element type float8e4m3fnuz (not a C target type)",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2": "element type float8e5m2 (not a C target type)",
    "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_BFLOAT16_to_FLOAT": "element type bfloat16 (not a C target type)",
    "test_castlike_BFLOAT16_to_FLOAT_expanded": "element type bfloat16 (not a C target type)",
    "test_castlike_DOUBLE_to_FLOAT16": "element type float16 (not a C target type)",
    "test_castlike_DOUBLE_to_FLOAT16_expanded": "element type float16 (not a C target type)",
    "test_castlike_FLOAT16_to_DOUBLE": "element type float16 (not a C target type)",
    "test_castlike_FLOAT16_to_DOUBLE_expanded": "element type float16 (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT": "element type float16 (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT4E2M1": "element type float16/float4e2m1 (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT4E2M1_expanded": "element type float16/float4e2m1 (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E4M3FN": "element type float16/float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded": "element type float16/float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E5M2": "element type float16/float8e5m2 (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT8E5M2_expanded": "element type float16/float8e5m2 (not a C target type)",
    "test_castlike_FLOAT16_to_FLOAT_expanded": "element type float16 (not a C target type)",
    "test_castlike_FLOAT16_to_INT2": "element type float16/int2 (not a C target type)",
    "test_castlike_FLOAT16_to_INT2_expanded": "element type float16/int2 (not a C target type)",
    "test_castlike_FLOAT16_to_INT4": "element type float16/int4 (not a C target type)",
    "test_castlike_FLOAT16_to_INT4_expanded": "element type float16/int4 (not a C target type)",
    "test_castlike_FLOAT16_to_UINT2": "element type float16/uint2 (not a C target type)",
    "test_castlike_FLOAT16_to_UINT2_expanded": "element type float16/uint2 (not a C target type)",
    "test_castlike_FLOAT16_to_UINT4": "element type float16/uint4 (not a C target type)",
    "test_castlike_FLOAT16_to_UINT4_expanded": "element type float16/uint4 (not a C target type)",
    "test_castlike_FLOAT4E2M1_to_FLOAT": "element type float4e2m1 (not a C target type)",
    "test_castlike_FLOAT4E2M1_to_FLOAT16": "element type float16/float4e2m1 (not a C target type)",
    "test_castlike_FLOAT4E2M1_to_FLOAT16_expanded": "element type float16/float4e2m1 (not a C target type)",
    "test_castlike_FLOAT4E2M1_to_FLOAT_expanded": "element type float4e2m1 (not a C target type)",
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT": "element type float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded": "element type float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT8E4M3FN_to_FLOAT": "element type float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT8E4M3FN_to_FLOAT16": "element type float16/float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded": "element type float16/float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded": "element type float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT8E5M2_to_FLOAT": "element type float8e5m2 (not a C target type)",
    "test_castlike_FLOAT8E5M2_to_FLOAT16": "element type float16/float8e5m2 (not a C target type)",
    "test_castlike_FLOAT8E5M2_to_FLOAT16_expanded": "element type float16/float8e5m2 (not a C target type)",
    "test_castlike_FLOAT8E5M2_to_FLOAT_expanded": "element type float8e5m2 (not a C target type)",
    "test_castlike_FLOAT_to_BFLOAT16": "element type bfloat16 (not a C target type)",
    "test_castlike_FLOAT_to_BFLOAT16_expanded": "element type bfloat16 (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT16": "element type float16 (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT16_expanded": "element type float16 (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT4E2M1": "element type float4e2m1 (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT4E2M1_expanded": "element type float4e2m1 (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E4M3FN": "element type float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ": "element type float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded": "element type float8e4m3fnuz (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded": "element type float8e4m3fn (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E5M2": "element type float8e5m2 (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_FLOAT_to_FLOAT8E5M2_expanded": "element type float8e5m2 (not a C target type)",
    "test_castlike_FLOAT_to_INT2": "element type int2 (not a C target type)",
    "test_castlike_FLOAT_to_INT2_expanded": "element type int2 (not a C target type)",
    "test_castlike_FLOAT_to_INT4": "element type int4 (not a C target type)",
    "test_castlike_FLOAT_to_INT4_expanded": "element type int4 (not a C target type)",
    "test_castlike_FLOAT_to_UINT2": "element type uint2 (not a C target type)",
    "test_castlike_FLOAT_to_UINT2_expanded": "element type uint2 (not a C target type)",
    "test_castlike_FLOAT_to_UINT4": "element type uint4 (not a C target type)",
    "test_castlike_FLOAT_to_UINT4_expanded": "element type uint4 (not a C target type)",
    "test_castlike_INT2_to_FLOAT": "element type int2 (not a C target type)",
    "test_castlike_INT2_to_FLOAT16": "element type float16/int2 (not a C target type)",
    "test_castlike_INT2_to_FLOAT16_expanded": "element type float16/int2 (not a C target type)",
    "test_castlike_INT2_to_FLOAT_expanded": "element type int2 (not a C target type)",
    "test_castlike_INT2_to_INT8": "element type int2 (not a C target type)",
    "test_castlike_INT2_to_INT8_expanded": "element type int2 (not a C target type)",
    "test_castlike_INT4_to_FLOAT": "element type int4 (not a C target type)",
    "test_castlike_INT4_to_FLOAT16": "element type float16/int4 (not a C target type)",
    "test_castlike_INT4_to_FLOAT16_expanded": "element type float16/int4 (not a C target type)",
    "test_castlike_INT4_to_FLOAT_expanded": "element type int4 (not a C target type)",
    "test_castlike_INT4_to_INT8": "element type int4 (not a C target type)",
    "test_castlike_INT4_to_INT8_expanded": "element type int4 (not a C target type)",
    "test_castlike_UINT2_to_FLOAT": "element type uint2 (not a C target type)",
    "test_castlike_UINT2_to_FLOAT16": "element type float16/uint2 (not a C target type)",
    "test_castlike_UINT2_to_FLOAT16_expanded": "element type float16/uint2 (not a C target type)",
    "test_castlike_UINT2_to_FLOAT_expanded": "element type uint2 (not a C target type)",
    "test_castlike_UINT2_to_UINT8": "element type uint2 (not a C target type)",
    "test_castlike_UINT2_to_UINT8_expanded": "element type uint2 (not a C target type)",
    "test_castlike_UINT4_to_FLOAT": "element type uint4 (not a C target type)",
    "test_castlike_UINT4_to_FLOAT16": "element type float16/uint4 (not a C target type)",
    "test_castlike_UINT4_to_FLOAT16_expanded": "element type float16/uint4 (not a C target type)",
    "test_castlike_UINT4_to_FLOAT_expanded": "element type uint4 (not a C target type)",
    "test_castlike_UINT4_to_UINT8": "element type uint4 (not a C target type)",
    "test_castlike_UINT4_to_UINT8_expanded": "element type uint4 (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN": "element type float16/float8e4m3fn (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded": "element type float16/float8e4m3fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded": "element type float16/float8e4m3fn (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2": "element type float16/float8e5m2 (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded": "element type float16/float8e5m2fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded": "element type float16/float8e5m2 (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN": "element type float8e4m3fn (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ": "element type float8e4m3fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded": "element type float8e4m3fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded": "element type float8e4m3fn (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2": "element type float8e5m2 (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded": "element type float8e5m2fnuz (not a C target type)",
    "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded": "element type float8e5m2 (not a C target type)",
    "test_causal_conv_with_state_fp16_expanded": "element type float16 (not a C target type)",
    "test_causal_conv_with_state_kernel_size_one_expanded": "zero-sized tensor (the C target has none)",
    "test_causal_conv_with_state_silu_fp16_expanded": "element type float16 (not a C target type)",
    "test_celu_bfloat16": "element type bfloat16 (not a C target type)",
    "test_celu_bfloat16_expanded": "element type bfloat16 (not a C target type)",
    "test_celu_float16": "element type float16 (not a C target type)",
    "test_celu_float16_expanded": "element type float16 (not a C target type)",
    "test_constantofshape_int_shape_zero": "zero-sized tensor (the C target has none)",
    "test_dequantizelinear_blocked": "DequantizeLinear: blocked DequantizeLinear",
    "test_dequantizelinear_e4m3fn": "element type float8e4m3fn (not a C target type)",
    "test_dequantizelinear_e4m3fn_float16": "element type float16/float8e4m3fn (not a C target type)",
    "test_dequantizelinear_e4m3fn_zero_point": "element type float8e4m3fn (not a C target type)",
    "test_dequantizelinear_e5m2": "element type float8e5m2 (not a C target type)",
    "test_dequantizelinear_float4e2m1": "element type float4e2m1 (not a C target type)",
    "test_dequantizelinear_int16": "DequantizeLinear: DequantizeLinear int8/uint8/int32 -> float32 only",
    "test_dequantizelinear_int2": "element type int2 (not a C target type)",
    "test_dequantizelinear_int4": "element type int4 (not a C target type)",
    "test_dequantizelinear_uint16": "DequantizeLinear: DequantizeLinear int8/uint8/int32 -> float32 only",
    "test_dequantizelinear_uint2": "element type uint2 (not a C target type)",
    "test_dequantizelinear_uint4": "element type uint4 (not a C target type)",
    "test_dropout_default_mask": "Dropout: output 'z' is not supported",
    "test_dropout_default_mask_ratio": "Dropout: output 'z' is not supported",
    "test_dynamicquantizelinear_expanded": "QuantizeLinear: scale (input 1) must be a constant",
    "test_dynamicquantizelinear_max_adjusted_expanded": "QuantizeLinear: scale (input 1) must be a constant",
    "test_dynamicquantizelinear_min_adjusted_expanded": "QuantizeLinear: scale (input 1) must be a constant",
    "test_equal_string": "element type string (not a C target type)",
    "test_equal_string_broadcast": "element type string (not a C target type)",
    "test_flexattention_double_expanded_ver26": "onnx::MatMul on DOUBLE (function value) (this kernel is float32 only)",
    "test_flexattention_fp16_expanded_ver26": "element type float16 (not a C target type)",
    "test_hammingwindow_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_hammingwindow_symmetric_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_hannwindow_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_hannwindow_symmetric_expanded": "data-dependent shape (not static after pinning the inputs)",
    "test_identity_opt": "element type non-tensor (not a C target type)",
    "test_identity_sequence": "element type non-tensor (not a C target type)",
    "test_isinf_float16": "element type float16 (not a C target type)",
    "test_isnan_float16": "element type float16 (not a C target type)",
    "test_max_float16": "element type float16 (not a C target type)",
    "test_maxpool_2d_uint8": "onnx::MaxPool on UINT8 'x' (this kernel is float32 only)",
    "test_maxpool_3d_default": "MaxPool: only 1-D and 2-D pooling (input rank 5)",
    "test_maxpool_3d_dilations": "MaxPool: only 1-D and 2-D pooling (input rank 5)",
    "test_maxpool_3d_dilations_use_ref_impl": "MaxPool: only 1-D and 2-D pooling (input rank 5)",
    "test_maxpool_3d_dilations_use_ref_impl_large": "MaxPool: only 1-D and 2-D pooling (input rank 5)",
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool: MaxPool Indices output",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool: MaxPool Indices output",
    "test_min_float16": "element type float16 (not a C target type)",
    "test_mod_float16_mixed_sign_fmod_0": "element type float16 (not a C target type)",
    "test_mod_float_edge_cases_fmod_0_float16": "element type float16 (not a C target type)",
    "test_mod_mixed_sign_float16": "element type float16 (not a C target type)",
    "test_not_2d": "default-domain opset 1 is outside the supported range 7..28",
    "test_not_3d": "default-domain opset 1 is outside the supported range 7..28",
    "test_not_4d": "default-domain opset 1 is outside the supported range 7..28",
    "test_onehot_with_bfloat16_values": "element type bfloat16 (not a C target type)",
    "test_quantizelinear_axis": "QuantizeLinear: per-axis QuantizeLinear at the float boundary",
    "test_quantizelinear_blocked_asymmetric": "QuantizeLinear: blocked QuantizeLinear",
    "test_quantizelinear_blocked_symmetric": "QuantizeLinear: QuantizeLinear float32 -> int8/uint8 only",
    "test_quantizelinear_e4m3fn": "element type float8e4m3fn (not a C target type)",
    "test_quantizelinear_e5m2": "element type float8e5m2 (not a C target type)",
    "test_quantizelinear_float4e2m1": "element type float4e2m1 (not a C target type)",
    "test_quantizelinear_int16": "QuantizeLinear: QuantizeLinear float32 -> int8/uint8 only",
    "test_quantizelinear_int2": "element type int2 (not a C target type)",
    "test_quantizelinear_int4": "element type int4 (not a C target type)",
    "test_quantizelinear_uint16": "QuantizeLinear: QuantizeLinear float32 -> int8/uint8 only",
    "test_quantizelinear_uint2": "element type uint2 (not a C target type)",
    "test_quantizelinear_uint4": "element type uint4 (not a C target type)",
    "test_range_bfloat16_type_positive_delta": "element type bfloat16 (not a C target type)",
    "test_range_float16_type_positive_delta": "element type float16 (not a C target type)",
    "test_reduce_l1_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_l1_empty_set_expanded": "zero-sized tensor (the C target has none)",
    "test_reduce_l2_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_l2_empty_set_expanded": "zero-sized tensor (the C target has none)",
    "test_reduce_log_sum_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_log_sum_empty_set_expanded": "zero-sized tensor (the C target has none)",
    "test_reduce_log_sum_exp_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_log_sum_exp_empty_set_expanded": "zero-sized tensor (the C target has none)",
    "test_reduce_max_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_max_empty_set_bool": "zero-sized tensor (the C target has none)",
    "test_reduce_min_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_prod_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_sum_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_sum_empty_set_non_reduced_axis_zero": "zero-sized tensor (the C target has none)",
    "test_reduce_sum_square_empty_set": "zero-sized tensor (the C target has none)",
    "test_reduce_sum_square_empty_set_expanded": "zero-sized tensor (the C target has none)",
    "test_reshape_allowzero_reordered": "zero-sized tensor (the C target has none)",
    "test_resize_downsample_scales_cubic_align_corners": "Resize (kernels_spatial): wrong values, 8/9 elements (max abs 1.05)",
    "test_resize_downsample_scales_linear_align_corners": "Resize (kernels_spatial): wrong values, 1/2 elements (max abs 0.857)",
    "test_reversesequence_bfloat16": "element type bfloat16 (not a C target type)",
    "test_rotary_embedding_3d_input_expanded": "zero-sized tensor (the C target has none)",
    "test_rotary_embedding_expanded": "zero-sized tensor (the C target has none)",
    "test_rotary_embedding_interleaved_expanded": "zero-sized tensor (the C target has none)",
    "test_rotary_embedding_no_position_ids_expanded": "zero-sized tensor (the C target has none)",
    "test_rotary_embedding_no_position_ids_interleaved_expanded": "zero-sized tensor (the C target has none)",
    "test_shape_start_greater_than_end": "zero-sized tensor (the C target has none)",
    "test_slice_start_out_of_bounds": "zero-sized tensor (the C target has none)",
    "test_split_zero_size_splits_opset13": "zero-sized tensor (the C target has none)",
    "test_split_zero_size_splits_opset18": "zero-sized tensor (the C target has none)",
    "test_swiglu_float16_expanded": "element type float16 (not a C target type)",
    "test_training_dropout": "Dropout training_mode=1: random mask from numpy's generator (not reproducible)",
    "test_training_dropout_default": "Dropout training_mode=1: random mask from numpy's generator (not reproducible)",
    "test_training_dropout_default_mask": "Dropout: output 'z' is not supported",
    "test_training_dropout_mask": "Dropout: output 'z' is not supported",
    "test_training_dropout_zero_ratio_mask": "Dropout: output 'z' is not supported",
    "test_tril_zero": "zero-sized tensor (the C target has none)",
    "test_triu_zero": "zero-sized tensor (the C target has none)",
}


@functools.lru_cache(maxsize=None)
def _cases() -> Tuple:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(sorted(collect_testcases(None), key=lambda c: c.name))


@functools.lru_cache(maxsize=None)
def _case_by_name() -> Dict:
    return {c.name: c for c in _cases()}


def case_ops(case) -> List[str]:
    return _ops_of(case.name)


@functools.lru_cache(maxsize=None)
def _ops_of(name: str) -> List[str]:
    case = _case_by_name()[name]
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                   for n in case.model.graph.node})


@functools.lru_cache(maxsize=None)
def _claimed_cases() -> Tuple:
    ops = set(claimed_ops())
    return tuple(c for c in _cases() if set(case_ops(c)) <= ops)


def run_case(case) -> Tuple[str, str]:
    """(status, reason): status is ok or failed."""
    try:
        rep = CBackend.prepare(case.model, "CPU")
        for inputs, outputs in case.data_sets:
            got = rep.run(list(inputs))
            if len(got) != len(outputs):
                return "failed", f"{len(got)} outputs, expected {len(outputs)}"
            for i, (g, r) in enumerate(zip(got, outputs)):
                r = numpy_helper.to_array(r) if isinstance(r, onnx.TensorProto) else np.asarray(r)
                if r.dtype == object or r.dtype.kind in "SU":
                    return "failed", f"output {i}: non-tensor expected value"
                if tuple(g.shape) != tuple(r.shape):
                    return "failed", f"output {i}: shape {tuple(g.shape)}, expected {tuple(r.shape)}"
                if r.dtype.kind in "biu" and g.dtype.kind not in "biu":
                    return "failed", f"output {i}: dtype {g.dtype}, expected {r.dtype}"
                c = compare(str(i), g, r, rtol=1e-4, atol=1e-5, max_ulp=100)
                if not c.ok:
                    return "failed", f"output {i}: {c.bad}/{c.total} elements differ (max abs {c.max_abs:.3g})"
    except Exception as e:  # noqa: BLE001 - every exception is a failure of the case
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return "failed", f"{type(e).__name__}: {msg[:300]}"
    return "ok", ""


@pytest.fixture(scope="module", autouse=True)
def _build_cache(tmp_path_factory):
    """A fresh build cache for this run (the backend caches builds by content hash)."""
    old = os.environ.get("EDGEC_C_CACHE")
    os.environ["EDGEC_C_CACHE"] = str(tmp_path_factory.mktemp("c-build-cache"))
    yield
    if old is None:
        os.environ.pop("EDGEC_C_CACHE", None)
    else:
        os.environ["EDGEC_C_CACHE"] = old


@pytest.mark.parametrize("name", [c.name for c in _claimed_cases()])
def test_node_case(name: str) -> None:
    status, reason = run_case(_case_by_name()[name])
    if name in KNOWN_FAILURES:
        assert status != "ok", f"{name} is listed in KNOWN_FAILURES but passes now: remove it from the list"
    else:
        assert status == "ok", f"{name}: {reason}"


def test_known_failures_are_claimed_cases() -> None:
    names = {c.name for c in _claimed_cases()}
    stale = sorted(set(KNOWN_FAILURES) - names)
    assert not stale, f"KNOWN_FAILURES lists cases that are not claimed-op cases: {stale}"


#: Element types the C target stores; a case whose graph inputs or outputs have another type (float16,
#: bfloat16, float8, int4/int2, float4, string, sequences, optionals) cannot pass.
C_TYPES = frozenset({"FLOAT", "DOUBLE", "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64",
                     "BOOL"})


def c_typed(case) -> bool:
    for v in list(case.model.graph.input) + list(case.model.graph.output):
        if not v.type.HasField("tensor_type"):
            return False
        if onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) not in C_TYPES:
            return False
    return True


def test_thresholds() -> None:
    """>= 90% of the claimed-op cases with C element types pass; every claimed op has a passing case.

    Run with ``-s`` for the per-op table and the pass counts (also over all claimed-op cases and
    over the whole suite)."""
    cases = _claimed_cases()
    per_op: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
    for c in cases:
        ok = c.name not in KNOWN_FAILURES
        for op in case_ops(c):
            per_op[op][0] += ok
            per_op[op][1] += 1
    passed = sum(c.name not in KNOWN_FAILURES for c in cases)
    typed = [c for c in cases if c_typed(c)]
    typed_passed = sum(c.name not in KNOWN_FAILURES for c in typed)
    total = len(_cases())
    print(f"\nC backend node tests ({len(claimed_ops())} claimed ops): "
          f"{typed_passed}/{len(typed)} claimed-op cases with C element types pass "
          f"({100.0 * typed_passed / max(1, len(typed)):.1f}%); {passed}/{len(cases)} of all claimed-op cases "
          f"({100.0 * passed / max(1, len(cases)):.1f}%); {passed}/{total} of the whole suite "
          f"({100.0 * passed / total:.1f}%)")
    print(f"{'op':<28} {'passed':>6} / {'cases':<5}  failing cases")
    for op in sorted(set(per_op) | set(claimed_ops())):
        p, n = per_op.get(op, [0, 0])
        bad = [c.name for c in cases if op in case_ops(c) and c.name in KNOWN_FAILURES]
        print(f"{op:<28} {p:>6} / {n:<5}  {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}")
    assert typed_passed >= THRESHOLD * len(typed), f"only {typed_passed}/{len(typed)} claimed-op cases pass"
    without = sorted(op for op in claimed_ops() if per_op.get(op, [0, 0])[0] == 0)
    assert not without, f"claimed ops without a passing node test: {without}"


def test_backend_api() -> None:
    """CBackend as an onnx backend: device check, dict and list inputs, frozen parameter inputs, errors."""
    from onnx import TensorProto as TP
    from onnx import helper as h

    from edgec.backends.c.onnx_backend import UnsupportedModelError, param_inputs

    assert CBackend.supports_device("CPU") and not CBackend.supports_device("CUDA")
    g = h.make_graph([h.make_node("Reshape", ["x", "s"], ["r"]), h.make_node("Add", ["r", "r"], ["y"])], "g",
                     [h.make_tensor_value_info("x", TP.INT32, ["n"]), h.make_tensor_value_info("s", TP.INT64, [2])],
                     [h.make_tensor_value_info("y", TP.INT32, None)])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    assert param_inputs(model) == ["s"]
    rep = CBackend.prepare(model, "CPU")
    x = np.arange(6, dtype=np.int32)
    (y,) = rep.run([x, np.array([2, 3], np.int64)])
    np.testing.assert_array_equal(y, (x + x).reshape(2, 3))
    (y,) = rep.run({"x": x, "s": np.array([3, 2], np.int64)})  # another frozen value: another program
    np.testing.assert_array_equal(y, (x + x).reshape(3, 2))
    assert "Reshape" in claimed_ops() and "Add" in claimed_ops()
    bad = h.make_model(h.make_graph([h.make_node("Det", ["x"], ["y"])], "g",
                                    [h.make_tensor_value_info("x", TP.FLOAT, [2, 2])],
                                    [h.make_tensor_value_info("y", TP.FLOAT, None)]),
                       opset_imports=[h.make_opsetid("", 17)])
    assert not CBackend.is_compatible(bad)
    with pytest.raises(UnsupportedModelError, match="unsupported op") as e:
        CBackend.run_model(bad, [np.eye(2, dtype=np.float32)])
    assert "\n" not in str(e.value)
