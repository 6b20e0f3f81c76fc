"""Narrow element types in the C target (float16, bfloat16, float8, float4e2m1, int4/uint4, int2/uint2).

* the C conversion helpers (``narrow_types``) against ml_dtypes / ``onnx.numpy_helper``: every bit
  pattern decoded, and a large set of float32 / float64 values (ties, subnormals, inf, NaN,
  out-of-range) encoded, with and without saturation, built with -Wall -Wextra -Werror and run
  under ASan/UBSan;
* whole models through the C target (legalization to float32 / int32) compared with onnxruntime;
* the bit-exact weight writer and the unsupported cases (a clear one-line error).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

from edgec.backends.c import compile_to_c
from edgec.backends.c import kernels as K
from edgec.backends.c import narrow_types as NT
from edgec.backends.c.verify import SANITIZE_FLAGS, WARN_FLAGS, build, compare, reference_outputs, run_binary
from edgec.errors import UnsupportedModelError
from edgec.ir.dtypes import DType

CC = os.environ.get("CC", "cc")
pytestmark = pytest.mark.skipif(shutil.which(CC) is None, reason="no C compiler")

FLOAT_TYPES = sorted(NT.FLOAT_FORMATS, key=int)
INT_TYPES = sorted(NT.INT_FORMATS, key=int)
F8_SAT = [d for d in FLOAT_TYPES if d in NT.SATURATING]


# --- exhaustive conversion checks ----------------------------------------------------------------------

def _encode_values() -> Tuple[np.ndarray, np.ndarray]:
    """float32 values: every float16 and bfloat16 value, the exact midpoints (ties) between neighbours
    of float16, bfloat16 and every float8/float4 type and one float32 ulp either side of them,
    float32 subnormals, random bit patterns, inf, NaN, huge; and float64 values near float16 ties."""
    rng = np.random.default_rng(7)
    parts = [np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32),
             np.arange(65536, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)]
    for d in FLOAT_TYPES:
        bits = np.arange(1 << (16 if d in (DType.FLOAT16, DType.BFLOAT16) else 4 if d == DType.FLOAT4E2M1 else 8),
                         dtype=np.uint32)
        vals = np.unique(NT_decode_numpy(bits, d))
        vals = vals[np.isfinite(vals)].astype(np.float64)
        mid = ((vals[1:] + vals[:-1]) / 2).astype(np.float32)  # exact: one bit more than the type
        parts += [mid, np.nextafter(mid, np.float32(np.inf)), np.nextafter(mid, np.float32(-np.inf))]
    parts += [rng.integers(0, 2**32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
              np.array([1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 1e10, -1e10, 0.0, -0.0,
                        np.inf, -np.inf, np.nan, -np.nan, 448, 449, 464, 465, 480, 57344, 61440, 65504, 65520,
                        6, 6.5, 7, 100, 2147483647.0, -2147483648.0, 3e9, -3e9], np.float32)]
    f32 = np.concatenate(parts).astype(np.float32)
    ties = []
    for d in FLOAT_TYPES:  # float64 ties and near-ties of every type (float64 -> float16 is one rounding)
        bits = np.arange(1 << (16 if d in (DType.FLOAT16, DType.BFLOAT16) else 4 if d == DType.FLOAT4E2M1 else 8),
                         dtype=np.uint32)
        vals = np.unique(NT_decode_numpy(bits, d))
        vals = vals[np.isfinite(vals)].astype(np.float64)
        ties.append((vals[1:] + vals[:-1]) / 2)
    hmid = np.unique(np.concatenate(ties))
    f64 = np.concatenate([hmid, hmid + 2.0**-40 * np.abs(hmid), hmid - 2.0**-40 * np.abs(hmid),
                          rng.standard_normal(50_000) * 1e3, [1e300, -1e300, 1e-300]])
    return f32, f64


def NT_decode_numpy(bits: np.ndarray, d: DType) -> np.ndarray:
    """What ml_dtypes makes of the bit patterns ``bits`` of type ``d`` (float32)."""
    container = np.uint16 if NT.storage_ctype(d) == "uint16_t" else np.uint8
    return bits.astype(container).view(d.numpy).astype(np.float32)


def _program(tmp: Path) -> str:
    """A C program running every conversion helper over files of inputs (one output file per test)."""
    tests: List[str] = []
    for d in FLOAT_TYPES:
        n = 1 << (16 if d in (DType.FLOAT16, DType.BFLOAT16) else 4 if d == DType.FLOAT4E2M1 else 8)
        dec, _, _ = NT.decode_expr("b", d)
        tests.append(f"    {{ FILE* o = fopen(\"dec_{d.name}.bin\", \"wb\"); for (uint32_t b = 0; b < {n}u; ++b) "
                     f"{{ float v = {dec}; fwrite(&v, 4, 1, o); }} fclose(o); }}")
        for sat in (0, 1):
            for src, var in (("f32", "xf[i]"), ("f64", "xd[i]")):
                enc, _ = NT.encode_expr(var, True, d, saturate=bool(sat))
                cnt = "nf" if src == "f32" else "nd"
                tests.append(f"    {{ FILE* o = fopen(\"enc_{d.name}_{sat}_{src}.bin\", \"wb\"); "
                             f"for (long i = 0; i < {cnt}; ++i) {{ uint32_t v = {enc}; fwrite(&v, 4, 1, o); }} "
                             f"fclose(o); }}")
    for sat in (0, 1):
        for mode in ("up", "down", "nearest"):
            for src, var, cnt in (("f32", "xf[i]", "nf"), ("f64", "xd[i]", "nd")):
                enc, _ = NT.encode_expr(var, True, DType.FLOAT8E8M0, saturate=bool(sat), round_mode=mode)
                tests.append(f"    {{ FILE* o = fopen(\"enc_E8M0_{sat}_{mode}_{src}.bin\", \"wb\"); "
                             f"for (long i = 0; i < {cnt}; ++i) {{ uint32_t v = {enc}; fwrite(&v, 4, 1, o); }} "
                             f"fclose(o); }}")
    dec, _, _ = NT.decode_expr("b", DType.FLOAT8E8M0)
    tests.append(f"    {{ FILE* o = fopen(\"dec_E8M0.bin\", \"wb\"); for (uint32_t b = 0; b < 256u; ++b) "
                 f"{{ float v = {dec}; fwrite(&v, 4, 1, o); }} fclose(o); }}")
    for d in INT_TYPES:
        dec, _, _ = NT.decode_expr("b", d)
        enc, _ = NT.encode_expr("xf[i]", True, d)
        enci, _ = NT.encode_expr("(int64_t)(i - 300)", False, d)
        tests.append(f"    {{ FILE* o = fopen(\"dec_{d.name}.bin\", \"wb\"); for (uint32_t b = 0; b < 256u; ++b) "
                     f"{{ int32_t v = {dec}; fwrite(&v, 4, 1, o); }} fclose(o); }}")
        tests.append(f"    {{ FILE* o = fopen(\"enc_{d.name}.bin\", \"wb\"); for (long i = 0; i < nf; ++i) "
                     f"{{ uint32_t v = {enc}; fwrite(&v, 4, 1, o); }} fclose(o); }}")
        tests.append(f"    {{ FILE* o = fopen(\"enci_{d.name}.bin\", \"wb\"); for (long i = 0; i < 600; ++i) "
                     f"{{ uint32_t v = {enci}; fwrite(&v, 4, 1, o); }} fclose(o); }}")
    helpers = "\n".join(K.HELPERS[n] for n in ("d2f", "nf_dec", "nf_enc", "e8m0_dec", "e8m0_enc", "ni_dec", "ni_enc_f"))
    src = "\n".join([
        "#include <math.h>", "#include <stdint.h>", "#include <stdio.h>", "#include <stdlib.h>", "", helpers,
        "static float xf[1 << 21];", "static double xd[1 << 20];", "",
        "int main(void)", "{",
        '    FILE* f = fopen("in_f32.bin", "rb");', "    if (!f) return 2;",
        "    const long nf = (long)fread(xf, 4, sizeof xf / 4, f);", "    fclose(f);",
        '    f = fopen("in_f64.bin", "rb");', "    if (!f) return 2;",
        "    const long nd = (long)fread(xd, 8, sizeof xd / 8, f);", "    fclose(f);",
        *tests, "    return 0;", "}", ""])
    (tmp / "conv.c").write_text(src)
    prog = str(tmp / "conv")
    subprocess.run([CC, *WARN_FLAGS, *SANITIZE_FLAGS, "-O1", str(tmp / "conv.c"), "-o", prog, "-lm"], check=True,
                   capture_output=True, text=True)
    return prog


@pytest.fixture(scope="module")
def conversions(tmp_path_factory) -> Tuple[Path, np.ndarray, np.ndarray]:
    tmp = tmp_path_factory.mktemp("narrow-conv")
    f32, f64 = _encode_values()
    assert f32.size <= 1 << 21 and f64.size <= 1 << 20
    f32.tofile(tmp / "in_f32.bin")
    f64.tofile(tmp / "in_f64.bin")
    prog = _program(tmp)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.run([prog], cwd=tmp, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return tmp, f32, f64


def _same_float(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Bit-identical, or both NaN (NaN payloads are not part of the contract)."""
    got, ref = got.astype(np.float32), ref.astype(np.float32)
    return (got.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(got) & np.isnan(ref))


@pytest.mark.parametrize("d", FLOAT_TYPES + [DType.FLOAT8E8M0], ids=lambda d: d.name)
def test_decode_every_bit_pattern(conversions, d: DType) -> None:
    tmp, _, _ = conversions
    name = "E8M0" if d == DType.FLOAT8E8M0 else d.name
    got = np.fromfile(tmp / f"dec_{name}.bin", np.float32)
    ref = NT_decode_numpy(np.arange(got.size, dtype=np.uint32), d)
    ok = _same_float(got, ref)
    assert ok.all(), f"{d.name}: bits {np.flatnonzero(~ok)[:8]} decode to {got[~ok][:8]}, ml_dtypes {ref[~ok][:8]}"


def _reference_encode(x: np.ndarray, d: DType, sat: int) -> np.ndarray:
    """The ONNX reference Cast (onnx.reference.ops.op_cast): saturate_cast for float8 with saturate=1."""
    if sat and d in NT.SATURATING:
        with np.errstate(invalid="ignore", over="ignore"):
            y = nh.saturate_cast(x, d.numpy)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            y = x.astype(d.numpy)
    return NT.bit_patterns(y, d)


@pytest.mark.parametrize("sat", [0, 1])
@pytest.mark.parametrize("d", FLOAT_TYPES, ids=lambda d: d.name)
def test_encode_floats(conversions, d: DType, sat: int) -> None:
    tmp, f32, f64 = conversions
    for src, x in (("f32", f32), ("f64", f64)):
        got = np.fromfile(tmp / f"enc_{d.name}_{sat}_{src}.bin", np.uint32)
        ref = _reference_encode(x, d, sat).astype(np.uint32)
        gd, rd = (NT_decode_numpy(a, d) for a in (got, ref))
        ok = (got == ref) | (np.isnan(gd) & np.isnan(rd))  # any NaN for NaN
        bad = np.flatnonzero(~ok)
        assert not bad.size, (f"{d.name} sat={sat} from {src}: {bad.size} differ, e.g. {x[bad[:6]]} -> "
                              f"{[hex(v) for v in got[bad[:6]]]}, reference {[hex(v) for v in ref[bad[:6]]]}")


@pytest.mark.parametrize("sat", [0, 1])
@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
def test_encode_e8m0(conversions, mode: str, sat: int) -> None:
    tmp, f32, f64 = conversions
    for src, x in (("f32", f32), ("f64", f64)):
        got = np.fromfile(tmp / f"enc_E8M0_{sat}_{mode}_{src}.bin", np.uint32)
        with np.errstate(over="ignore"):
            ref = nh.to_float8e8m0(x, bool(sat), mode).view(np.uint8).astype(np.uint32)
        bad = np.flatnonzero(got != ref)
        assert not bad.size, f"{mode} sat={sat} {src}: {x[bad[:6]]} -> {got[bad[:6]]}, reference {ref[bad[:6]]}"


@pytest.mark.parametrize("d", INT_TYPES, ids=lambda d: d.name)
def test_int_types(conversions, d: DType) -> None:
    tmp, f32, _ = conversions
    bits, signed = NT.INT_FORMATS[d]
    # storage: ml_dtypes keeps the two's complement bits in the low bits, the upper bits zero
    vals = np.arange(-(1 << (bits - 1)) if signed else 0, (1 << (bits - 1)) if signed else 1 << bits)
    assert np.array_equal(vals.astype(d.numpy).view(np.uint8), vals & ((1 << bits) - 1))
    dec = np.fromfile(tmp / f"dec_{d.name}.bin", np.int32)  # every byte; upper bits are ignored
    assert np.array_equal(dec, np.arange(256, dtype=np.uint8).view(d.numpy).astype(np.int32))
    enc = np.fromfile(tmp / f"enc_{d.name}.bin", np.uint32)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = NT.bit_patterns(f32.astype(d.numpy), d).astype(np.uint32)
    bad = np.flatnonzero(enc != ref)
    assert not bad.size, f"{d.name}: {f32[bad[:6]]} -> {enc[bad[:6]]}, ml_dtypes {ref[bad[:6]]}"
    enci = np.fromfile(tmp / f"enci_{d.name}.bin", np.uint32)
    ints = np.arange(600, dtype=np.int64) - 300
    assert np.array_equal(enci, (ints & ((1 << bits) - 1)).astype(np.uint32))  # integers wrap


# --- models through the C target --------------------------------------------------------------------------

def _compile_run(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> Tuple[List, dict]:
    """Compile to C (-O2), build with sanitizers (-Wall -Wextra -Werror), run: (outputs, report)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code = compile_to_c(str(path), str(tmp_path / "out"), name="model")
    prog = build(str(tmp_path / "out"), code.report, opt="-O1", sanitize=True)
    return run_binary(prog, code.report, feeds), code.report


def _run(tmp_path: Path, model: onnx.ModelProto, feeds: Dict[str, np.ndarray], *, rtol: float = 0.0,
         atol: float = 0.0, exact: bool = True) -> dict:
    """Compile, build and run (:func:`_compile_run`), compare with onnxruntime; returns the report."""
    got, report = _compile_run(tmp_path, model, feeds)
    ref = reference_outputs(str(tmp_path / "m.onnx"), feeds)
    for t, g, r in zip(report["outputs"], got, ref):
        assert g.dtype == r.dtype, (t["name"], g.dtype, r.dtype)
        if exact:
            assert np.array_equal(NT.bit_patterns(g, DType.from_numpy(g.dtype)),
                                  NT.bit_patterns(r, DType.from_numpy(r.dtype))), (g, r)
        else:
            c = compare(t["name"], g.astype(np.float32), r.astype(np.float32), rtol=rtol, atol=atol, max_ulp=0)
            assert c.ok, f"{t['name']}: {c}"
    return report


def _model(nodes: List[onnx.NodeProto], inputs: Sequence[Tuple[str, int, Sequence[int]]],
           outputs: Sequence[Tuple[str, int]], inits: Sequence[onnx.TensorProto] = (), opset: int = 21) -> onnx.ModelProto:
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                     [h.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)], ir_version=10)


def test_float16_model_matches_onnxruntime(tmp_path: Path) -> None:
    """float16 weights and I/O: MatMul + Add + Relu + Transpose, computed in float32 and rounded per op."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 5)) * 0.5).astype(np.float16)
    b = rng.standard_normal(5).astype(np.float16)
    model = _model([h.make_node("MatMul", ["x", "w"], ["m"]), h.make_node("Add", ["m", "b"], ["a"]),
                    h.make_node("Relu", ["a"], ["r"]), h.make_node("Transpose", ["r"], ["y"], perm=[1, 0])],
                   [("x", TP.FLOAT16, [3, 8])], [("y", TP.FLOAT16)], [nh.from_array(w, "w"), nh.from_array(b, "b")])
    x = rng.standard_normal((3, 8)).astype(np.float16)
    report = _run(tmp_path, model, {"x": x}, rtol=1e-3, atol=1e-3, exact=False)
    assert report["inputs"][0]["dtype"] == "float16" and report["outputs"][0]["dtype"] == "float16"
    from edgec.backends.c.verify import random_inputs

    feed = random_inputs(report, rng)["x"]  # what `edgec verify` feeds: normal values, not zeros
    assert feed.dtype == np.float16 and float(np.std(feed.astype(np.float32))) > 0.1
    header = (tmp_path / "out" / "model.h").read_text()
    assert "const uint16_t* x" in header and "uint16_t* y" in header and "bit patterns" in header
    # a float16 constant moved by Concat (no computation): written as bit patterns, -0 and NaN payload kept
    c = np.array([[-0.0, 0.1, 65504, 6e-8]], np.float16)
    c.view(np.uint16)[0, 2] = 0x7E01
    # ... and Gather, Slice, Where (data movement: bit patterns moved as they are, NaN payloads kept)
    def i64(name: str, v: List[int]) -> onnx.TensorProto:
        return nh.from_array(np.array(v, np.int64), name)

    m1 = _model([h.make_node("Concat", ["x", "c"], ["y"], axis=0),
                 h.make_node("Gather", ["y", "idx"], ["g"], axis=0),
                 h.make_node("Slice", ["g", "st", "en", "ax"], ["s"]),
                 h.make_node("Less", ["s", "zero"], ["neg"]),
                 h.make_node("Where", ["neg", "s", "zero"], ["w"])],
                [("x", TP.FLOAT16, [2, 4])], [("y", TP.FLOAT16), ("w", TP.FLOAT16)],
                [nh.from_array(c, "c"), i64("idx", [2, 0, 2]), i64("st", [1]), i64("en", [4]), i64("ax", [1]),
                 nh.from_array(np.float16(0), "zero")])
    _run(tmp_path / "concat", m1, {"x": rng.standard_normal((2, 4)).astype(np.float16)})
    src = (tmp_path / "concat" / "out" / "model.c").read_text()
    assert "0x8000" in src and "0x7e01" in src
    # each op result is rounded once to float16: bit-exact with numpy (onnxruntime's float16 Add is too;
    # its float16 Mul is not always correctly rounded, so numpy is the reference here)
    m2 = _model([h.make_node("Add", ["x", "b"], ["y"]), h.make_node("Mul", ["y", "y"], ["z"])],
                [("x", TP.FLOAT16, [3, 5])], [("y", TP.FLOAT16), ("z", TP.FLOAT16)], [nh.from_array(b, "b")])
    x2 = rng.standard_normal((3, 5)).astype(np.float16) * 100
    y, z = _compile_run(tmp_path / "add", m2, {"x": x2})[0]
    y_ref = (x2.astype(np.float32) + b.astype(np.float32)).astype(np.float16)
    with np.errstate(over="ignore"):
        z_ref = (y_ref.astype(np.float32) ** 2).astype(np.float16)
    assert np.array_equal(y.view(np.uint16), y_ref.view(np.uint16))
    assert np.array_equal(z.view(np.uint16), z_ref.view(np.uint16))
    assert np.array_equal(y, reference_outputs(str(tmp_path / "add" / "m.onnx"), {"x": x2})[0])


def test_bfloat16_model(tmp_path: Path) -> None:
    """bfloat16 I/O (onnxruntime has no CPU bfloat16 Mul): compared with the same model in float32
    with each result rounded to bfloat16."""
    rng = np.random.default_rng(4)
    c = rng.standard_normal(6).astype(ml_dtypes.bfloat16)
    model = _model([h.make_node("Mul", ["x", "c"], ["m"]), h.make_node("Cast", ["m"], ["y"], to=TP.FLOAT),
                    h.make_node("Neg", ["m"], ["z"])],
                   [("x", TP.BFLOAT16, [2, 6])], [("y", TP.FLOAT), ("z", TP.BFLOAT16)],
                   [nh.from_array(c, "c")])
    x = rng.standard_normal((2, 6)).astype(ml_dtypes.bfloat16)
    (y, z), _ = _compile_run(tmp_path, model, {"x": x})
    m = (x.astype(np.float32) * c.astype(np.float32)).astype(ml_dtypes.bfloat16)
    assert y.dtype == np.float32 and z.dtype == ml_dtypes.bfloat16
    assert np.array_equal(y, m.astype(np.float32)) and np.array_equal(z.view(np.uint16), (-m).view(np.uint16))


def test_int4_dequantize_linear(tmp_path: Path) -> None:
    """int4 weights (per-axis scale and zero point) dequantized and used by a float MatMul."""
    rng = np.random.default_rng(5)
    q = rng.integers(-8, 8, (4, 3)).astype(ml_dtypes.int4)
    s = np.array([0.5, 0.25, 2.0], np.float32)
    z = np.array([1, -2, 0], ml_dtypes.int4)
    model = _model([h.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=1),
                    h.make_node("MatMul", ["x", "w"], ["y"])],
                   [("x", TP.FLOAT, [2, 4])], [("y", TP.FLOAT)],
                   [nh.from_array(q, "q"), nh.from_array(s, "s"), nh.from_array(z, "z")])
    _run(tmp_path, model, {"x": rng.standard_normal((2, 4)).astype(np.float32)}, rtol=1e-6, atol=1e-6,
         exact=False)
    # int4 graph input and output (onnxruntime takes no int4 arrays: the ONNX reference checks it)
    m2 = _model([h.make_node("DequantizeLinear", ["q", "s"], ["f"], axis=1),
                 h.make_node("QuantizeLinear", ["f", "s2"], ["y"], output_dtype=TP.INT4)],
                [("q", TP.INT4, [4, 3])], [("y", TP.INT4)],
                [nh.from_array(s, "s"), nh.from_array(np.float32(0.75), "s2")])
    from onnx.reference import ReferenceEvaluator

    (y,), _ = _compile_run(tmp_path / "q", m2, {"q": q})
    (ref,) = ReferenceEvaluator(m2).run(None, {"q": q})
    assert y.dtype == ml_dtypes.int4 and np.array_equal(y.astype(np.int8), ref.astype(np.int8))
    assert len(set(y.astype(np.int8).reshape(-1).tolist())) > 3  # not all clipped
    # an int4 constant moved as it is: one byte per element in the weights (and in the report)
    m3 = _model([h.make_node("Concat", ["q", "c"], ["y"], axis=0)], [("q", TP.INT4, [4, 3])], [("y", TP.INT4)],
                [nh.from_array(np.array([[-8, -1, 7]], ml_dtypes.int4), "c")])
    (y,), report = _compile_run(tmp_path / "c", m3, {"q": q})
    assert np.array_equal(y.astype(np.int8), np.concatenate([q, [[-8, -1, 7]]]).astype(np.int8))
    assert report["weights"]["bytes"] == 3
    assert "0x8, 0xf, 0x7" in (tmp_path / "c" / "out" / "model.c").read_text()


def test_weights_are_bit_exact() -> None:
    """The literal writer emits narrow constants as their stored bit patterns."""
    vals = np.array([0.1, -0.0, 65504, np.nan, 1e-7], np.float16)
    assert NT.bit_patterns(vals, DType.FLOAT16).tolist() == vals.view(np.uint16).tolist()
    assert NT.bit_patterns(np.array([-1, 7, -8], ml_dtypes.int4), DType.INT4).tolist() == [0xF, 7, 8]
    assert NT.bit_patterns(np.array([-2, 1], ml_dtypes.int2), DType.INT2).tolist() == [2, 1]


def test_unsupported_narrow_case_is_a_clear_error(tmp_path: Path) -> None:
    """An op whose output type comes from an attribute it does not know how to widen: one line, node and op."""
    from edgec.backends.c.legalize_types import legalize_types
    from edgec.frontend.onnx_import import from_proto

    model = _model([h.make_node("Multinomial", ["x"], ["y"], dtype=TP.FLOAT16)],
                   [("x", TP.FLOAT, [1, 3])], [("y", TP.FLOAT16)], opset=21)
    m = from_proto(model, None)
    m.graph.outputs[0].type = type(m.graph.outputs[0].type)(DType.FLOAT16, (1, 1))
    with pytest.raises(UnsupportedModelError, match=r"node '.*' \(onnx::Multinomial\).*float16") as e:
        legalize_types(m)
    assert "\n" not in str(e.value)


def test_legalize_pass_rewrites_float16_nodes() -> None:
    """The `legalize-c-types` pass: computing nodes read and write float32, data movement keeps float16,
    the graph output keeps its name and float16 type, float16 constants are converted at compile time."""
    import edgec
    from edgec.backends.c.legalize_types import narrow_values
    from edgec.frontend.onnx_import import from_proto

    b = np.array([1, 2, 3], np.float16)
    model = _model([h.make_node("Add", ["x", "b"], ["a"]), h.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
                    h.make_node("Relu", ["t"], ["y"])],
                   [("x", TP.FLOAT16, [2, 3])], [("y", TP.FLOAT16)], [nh.from_array(b, "b")])
    m = from_proto(model, None)
    stats = edgec.optimize(m, opt_level=None, pipeline="legalize-c-types")
    assert stats  # the pass ran and reported
    ops = {n.op_type: n for n in m.graph}
    assert ops["Add"].output(0).type.dtype == DType.FLOAT and ops["Relu"].input(0).type.dtype == DType.FLOAT
    assert ops["Transpose"].input(0).type.dtype == DType.FLOAT16  # data movement stays narrow
    assert ops["Add"].input(1).is_constant() and ops["Add"].input(1).type.dtype == DType.FLOAT
    out = m.graph.outputs[0]
    assert out.name == "y" and out.type.dtype == DType.FLOAT16 and out.producer.op_type == "Cast"
    assert not narrow_values(m)
