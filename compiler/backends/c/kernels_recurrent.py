"""C kernels of the recurrent ONNX ops: LSTM and GRU.

Each node becomes one C function with a static time loop. Per direction and step, the input
projection ``x_t W^T`` and the recurrent product ``H_{t-1} R^T`` of every batch entry go to the
node's scratch buffer (a few [batch, gates * hidden] rows: independent of the sequence length),
then the gates update the state in place. ONNX semantics: ``direction`` forward / reverse /
bidirectional, optional ``B``, constant ``sequence_lens`` (steps past a batch entry's length
leave zeros in ``Y``; ``Y_h`` / ``Y_c`` hold the state after its last valid step; reverse runs
from the entry's last valid step down), ``initial_h`` / ``initial_c``, peepholes ``P``,
``input_forget``, ``clip``, all outputs, ``layout`` 0 and 1, GRU ``linear_before_reset``.
Activations: Sigmoid, Tanh and Relu in any slot; parameterized activations (``activation_alpha``,
``activation_beta``) are rejected.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

from ...ir import Node, Value
from . import kernels as K
from .kernels import KernelContext, NodeCode, flit, unsupported

__all__ = ["gen_lstm", "gen_gru"]

K.HELPERS["rnn_gemm_nt"] = """\
/* Y[M,N] = A[M,K] B[N,K]^T (both row-major, K contiguous): recurrent and input projections. */
static void edgec_rnn_gemm_nt(const float* restrict A, const float* restrict B, float* restrict Y,
                              long M, long N, long K)
{
    for (long i = 0; i < M; ++i) {
        const float* restrict a = A + i * K;
        float* restrict y = Y + i * N;
        for (long j = 0; j < N; ++j) {
            const float* restrict b = B + j * K;
            float s = 0.0f;
            for (long k = 0; k < K; ++k) s += a[k] * b[k];
            y[j] = s;
        }
    }
}
"""

_ACTS = {
    "Sigmoid": lambda v: f"(1.0f / (1.0f + expf(-({v}))))",
    "Tanh": lambda v: f"tanhf({v})",
    "Relu": lambda v: f"fmaxf({v}, 0.0f)",
}


def _s(node: Node, name: str, default: str) -> str:
    v = node.attr(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def _activations(node: Node, defaults: List[str], ndir: int) -> List[List[str]]:
    """Activation names per direction (``defaults`` per direction when the attribute is absent)."""
    if node.attr("activation_alpha", None) or node.attr("activation_beta", None):
        raise unsupported(node, "activation_alpha / activation_beta (parameterized activations)")
    acts = node.attr("activations", None)
    if not acts:
        return [list(defaults) for _ in range(ndir)]
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in acts]
    if len(names) != len(defaults) * ndir:
        raise unsupported(node, f"{len(names)} activations for {ndir} direction(s) (expected {len(defaults) * ndir})")
    out = []
    for d in range(ndir):
        per = names[d * len(defaults):(d + 1) * len(defaults)]
        for a in per:
            if a not in _ACTS:
                raise unsupported(node, f"activation '{a}' (supported: {', '.join(_ACTS)})")
        out.append(per)
    return out


class _Rnn:
    """Shapes, attributes and operand names shared by LSTM and GRU."""

    def __init__(self, node: Node, k: KernelContext, gates: int, opt_inputs: Dict[str, int]) -> None:
        self.node = node
        direction = _s(node, "direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise unsupported(node, f"direction '{direction}'")
        self.dirs = [False, True] if direction == "bidirectional" else [direction == "reverse"]
        nd = len(self.dirs)
        self.layout = int(node.attr("layout", 0))
        if self.layout not in (0, 1):
            raise unsupported(node, f"layout {self.layout}")
        x = k.dims(node.input(0))
        if len(x) != 3:
            raise unsupported(node, f"X must be 3-D (got rank {len(x)})")
        self.S, self.B = (x[0], x[1]) if self.layout == 0 else (x[1], x[0])
        self.I = x[2]
        w = k.dims(node.input(1))
        self.H = int(node.attr("hidden_size", w[1] // gates))
        H = self.H
        if w != (nd, gates * H, self.I) or k.dims(node.input(2)) != (nd, gates * H, H):
            raise unsupported(node, f"W/R shapes {w}/{k.dims(node.input(2))} do not match direction/hidden_size")
        clip = node.attr("clip", None)
        self.clip = float(clip) if clip is not None else None
        if self.clip is not None and not (self.clip > 0 and math.isfinite(self.clip)):
            raise unsupported(node, f"clip {self.clip}")
        # sequence_lens: compile-time lengths
        self.lens: Optional[List[int]] = None
        if len(node.inputs) > 4 and node.input(4) is not None:
            arr = k.need_const(node, 4, "sequence_lens")
            lens = [int(v) for v in arr.reshape(-1)]
            if len(lens) != self.B or any(not 1 <= L <= self.S for L in lens):
                raise unsupported(node, f"sequence_lens {lens} (each must be in [1, {self.S}])")
            if any(L != self.S for L in lens):
                self.lens = lens
        self.ops: List[Value] = []
        self.name: Dict[str, str] = {}
        for key, idx in [("X", 0), ("W", 1), ("R", 2), ("B", 3)] + list(opt_inputs.items()):
            v = node.input(idx) if idx < len(node.inputs) else None
            if v is None:
                continue
            if v not in self.ops:
                self.ops.append(v)
            self.name[key] = f"x{self.ops.index(v)}"
        for key, idx in opt_inputs.items():
            if key in self.name:
                want = (nd, self.B, H) if self.layout == 0 else (self.B, nd, H)
                if key == "P":
                    want = (nd, 3 * H)
                if k.dims(node.input(idx)) != want:
                    raise unsupported(node, f"{key} has shape {k.dims(node.input(idx))} (expected {want})")
        self.outs = [j < len(node.outputs) and node.output(j) is not None for j in range(3)]

    def state_index(self, d: int, b: str) -> str:
        """Offset of row (d, b) in Y_h / Y_c / initial_h / initial_c."""
        nd, H = len(self.dirs), self.H
        return f"({d} * {self.B} + {b}) * {H}" if self.layout == 0 else f"({b} * {nd} + {d}) * {H}"

    def y_index(self, d: int, t: str, b: str) -> str:
        nd, H = len(self.dirs), self.H
        if self.layout == 0:
            return f"(({t} * {nd} + {d}) * {self.B} + {b}) * {H}"
        return f"(({b} * {self.S} + {t}) * {nd} + {d}) * {H}"

    def g_row(self, t: str, b: str) -> str:
        """Row of X for time t, batch b."""
        return f"({t} * {self.B} + {b})" if self.layout == 0 else f"({b} * {self.S} + {t})"

    def clip_expr(self, e: str) -> str:
        if self.clip is None:
            return e
        c = flit(self.clip)
        return f"fminf(fmaxf({e}, -{c}), {c})"

    def prologue(self) -> str:
        body = ""
        if self.lens is not None:
            body += f"    static const long lens[{self.B}] = {{{', '.join(map(str, self.lens))}}};\n"
            if self.outs[0]:
                n = self.S * len(self.dirs) * self.B * self.H
                body += f"    for (long i = 0; i < {n}; ++i) y0[i] = 0.0f; /* steps past a sequence's end */\n"
        return body

    def step_head(self, rev: bool, indent: str) -> str:
        """Sets ``L`` (length of batch entry b), skips inactive entries, sets ``t``."""
        L = "lens[b]" if self.lens is not None else str(self.S)
        t = "L - 1 - s" if rev else "s"
        skip = f"{indent}if (s >= L) continue;\n" if self.lens is not None else ""
        return f"{indent}const long L = {L};\n{indent}(void)L;\n{skip}{indent}const long t = {t};\n{indent}(void)t;\n"

    def init_state(self, key: str, buf: str, d: int) -> str:
        n = self.B * self.H
        if key in self.name:
            src = self.name[key]
            return (f"        for (long b = 0; b < {self.B}; ++b)\n"
                    f"            for (long j = 0; j < {self.H}; ++j) {buf}[b * {self.H} + j] = "
                    f"{src}[{self.state_index(d, 'b')} + j];\n")
        return f"        for (long i = 0; i < {n}; ++i) {buf}[i] = 0.0f;\n"

    def write_state(self, out: int, buf: str, d: int) -> str:
        if not self.outs[out]:
            return ""
        return (f"        for (long b = 0; b < {self.B}; ++b)\n"
                f"            for (long j = 0; j < {self.H}; ++j) y{out}[{self.state_index(d, 'b')} + j] = "
                f"{buf}[b * {self.H} + j];\n")


def gen_lstm(node: Node, k: KernelContext) -> NodeCode:
    r = _Rnn(node, k, 4, {"initial_h": 5, "initial_c": 6, "P": 7})
    acts = _activations(node, ["Sigmoid", "Tanh", "Tanh"], len(r.dirs))
    S, B, I, H = r.S, r.B, r.I, r.H
    G4 = 4 * H
    off_gr = B * G4
    off_h = off_gr + B * G4
    off_c = off_h + B * H
    scratch = off_c + B * H
    inf = int(node.attr("input_forget", 0))
    X, W, R = r.name["X"], r.name["W"], r.name["R"]
    body = r.prologue()
    for d, rev in enumerate(r.dirs):
        f, g, hh = (lambda v, a=a: _ACTS[a](v) for a in acts[d])
        bias = (lambda gate: f" + {r.name['B']}[{d * 8 * H} + {gate} * {H} + j] + {r.name['B']}[{d * 8 * H + 4 * H} + "
                f"{gate} * {H} + j]") if "B" in r.name else (lambda gate: "")
        peep = (lambda gate, cv: f" + {r.name['P']}[{d * 3 * H} + {gate} * {H} + j] * {cv}") if "P" in r.name else \
            (lambda gate, cv: "")
        body += (f"    {{ /* direction {d} ({'reverse' if rev else 'forward'}) */\n"
                 f"        float* restrict G = s0;\n        float* restrict GR = s0 + {off_gr};\n"
                 f"        float* restrict h = s0 + {off_h};\n        float* restrict c = s0 + {off_c};\n"
                 )
        body += r.init_state("initial_h", "h", d) + r.init_state("initial_c", "c", d)
        # gate order i, o, f, c; peepholes i, o, f
        ig = f"g[j] + gr[j]{bias(0)}{peep(0, 'cb[j]')}"
        og = f"g[{H} + j] + gr[{H} + j]{bias(1)}{peep(1, 'cn')}"
        fg = f"g[{2 * H} + j] + gr[{2 * H} + j]{bias(2)}{peep(2, 'cb[j]')}"
        cg = f"g[{3 * H} + j] + gr[{3 * H} + j]{bias(3)}"
        fgate = "1.0f - it" if inf else f(r.clip_expr(fg))
        body += (f"        for (long s = 0; s < {S}; ++s) {{\n"
                 f"            edgec_rnn_gemm_nt(h, {R} + {d * G4 * H}, GR, {B}, {G4}, {H});\n"
                 f"            for (long b = 0; b < {B}; ++b) {{\n" + r.step_head(rev, "                ") +
                 f"                float* restrict g = G + b * {G4};\n"
                 f"                edgec_rnn_gemm_nt({X} + {r.g_row('t', 'b')} * {I}, {W} + {d * G4 * I}, g, 1, {G4}, "
                 f"{I});\n"
                 f"                const float* restrict gr = GR + b * {G4};\n"
                 f"                float* restrict hb = h + b * {H};\n"
                 f"                float* restrict cb = c + b * {H};\n"
                 f"                for (long j = 0; j < {H}; ++j) {{\n"
                 f"                    const float it = {f(r.clip_expr(ig))};\n"
                 f"                    const float ft = {fgate};\n"
                 f"                    const float ct = {g(r.clip_expr(cg))};\n"
                 f"                    const float cn = ft * cb[j] + it * ct;\n"
                 f"                    const float ot = {f(r.clip_expr(og))};\n"
                 f"                    cb[j] = cn;\n"
                 f"                    hb[j] = ot * {hh('cn')};\n"
                 f"                }}\n")
        if r.outs[0]:
            body += (f"                for (long j = 0; j < {H}; ++j) y0[{r.y_index(d, 't', 'b')} + j] = hb[j];\n")
        body += "            }\n        }\n"
        body += r.write_state(1, "h", d) + r.write_state(2, "c", d) + "    }\n"
    macs = len(r.dirs) * S * B * G4 * (I + H)
    return NodeCode(r.ops, body, ["rnn_gemm_nt"], macs=macs, scratch=4 * scratch)


def gen_gru(node: Node, k: KernelContext) -> NodeCode:
    r = _Rnn(node, k, 3, {"initial_h": 5})
    acts = _activations(node, ["Sigmoid", "Tanh"], len(r.dirs))
    S, B, I, H = r.S, r.B, r.I, r.H
    G3 = 3 * H
    lbr = int(node.attr("linear_before_reset", 0))
    off_gr = B * G3
    off_gh = off_gr + B * G3
    off_h = off_gh + B * H
    off_z = off_h + B * H
    off_t = off_z + B * H
    scratch = off_t + B * H
    X, W, R = r.name["X"], r.name["W"], r.name["R"]
    body = r.prologue()
    for d, rev in enumerate(r.dirs):
        f, g = (lambda v, a=a: _ACTS[a](v) for a in acts[d])
        if "B" in r.name:
            wb = lambda gate: f"{r.name['B']}[{d * 6 * H} + {gate} * {H} + j]"  # noqa: E731
            rb = lambda gate: f"{r.name['B']}[{d * 6 * H + 3 * H} + {gate} * {H} + j]"  # noqa: E731
            both = lambda gate: f" + {wb(gate)} + {rb(gate)}"  # noqa: E731
        else:
            wb = rb = lambda gate: "0.0f"  # noqa: E731
            both = lambda gate: ""  # noqa: E731
        zpre = r.clip_expr(f"g[j] + gr[j]{both(0)}")
        rpre = r.clip_expr(f"g[{H} + j] + gr[{H} + j]{both(1)}")
        body += (f"    {{ /* direction {d} ({'reverse' if rev else 'forward'}) */\n"
                 f"        float* restrict G = s0;\n        float* restrict GR = s0 + {off_gr};\n"
                 f"        float* restrict GH = s0 + {off_gh};\n        float* restrict h = s0 + {off_h};\n"
                 f"        float* restrict Z = s0 + {off_z};\n        float* restrict T = s0 + {off_t};\n"
                 f"        (void)GH; (void)Z; (void)T;\n"
                 )
        body += r.init_state("initial_h", "h", d)
        body += (f"        for (long s = 0; s < {S}; ++s) {{\n"
                 f"            edgec_rnn_gemm_nt(h, {R} + {d * G3 * H}, GR, {B}, {G3 if lbr else 2 * H}, {H});\n")
        head = r.step_head(rev, "                ")
        if lbr:
            hpre = r.clip_expr(f"g[{2 * H} + j] + {wb(2)} + rt * (gr[{2 * H} + j] + {rb(2)})")
            body += (f"            for (long b = 0; b < {B}; ++b) {{\n" + head +
                     f"                float* restrict g = G + b * {G3};\n"
                     f"                edgec_rnn_gemm_nt({X} + {r.g_row('t', 'b')} * {I}, {W} + {d * G3 * I}, g, 1, "
                     f"{G3}, {I});\n"
                     f"                const float* restrict gr = GR + b * {G3};\n"
                     f"                float* restrict hb = h + b * {H};\n"
                     f"                for (long j = 0; j < {H}; ++j) {{\n"
                     f"                    const float zt = {f(zpre)};\n"
                     f"                    const float rt = {f(rpre)};\n"
                     f"                    const float ht = {g(hpre)};\n"
                     f"                    hb[j] = (1.0f - zt) * ht + zt * hb[j];\n"
                     f"                }}\n")
        else:
            hpre = r.clip_expr(f"g[{2 * H} + j] + GH[b * {H} + j]{both(2)}")
            # pass 1: z (kept) and r * h (input of the second recurrent product) for every entry
            body += (f"            for (long b = 0; b < {B}; ++b) {{\n" +
                     (f"                if (s >= lens[b]) {{\n"
                      f"                    for (long j = 0; j < {H}; ++j) T[b * {H} + j] = 0.0f;\n"
                      f"                    continue;\n                }}\n" if r.lens is not None else "") +
                     head.replace("if (s >= L) continue;\n", "") +
                     f"                float* restrict g = G + b * {G3};\n"
                     f"                edgec_rnn_gemm_nt({X} + {r.g_row('t', 'b')} * {I}, {W} + {d * G3 * I}, g, 1, "
                     f"{G3}, {I});\n"
                     f"                const float* restrict gr = GR + b * {2 * H};\n"
                     f"                for (long j = 0; j < {H}; ++j) {{\n"
                     f"                    Z[b * {H} + j] = {f(zpre)};\n"
                     f"                    T[b * {H} + j] = {f(rpre)} * h[b * {H} + j];\n"
                     f"                }}\n            }}\n"
                     f"            edgec_rnn_gemm_nt(T, {R} + {2 * H * H + d * G3 * H}, GH, {B}, {H}, {H});\n"
                     f"            for (long b = 0; b < {B}; ++b) {{\n" + head +
                     f"                const float* restrict g = G + b * {G3};\n"
                     f"                float* restrict hb = h + b * {H};\n"
                     f"                for (long j = 0; j < {H}; ++j) {{\n"
                     f"                    const float zt = Z[b * {H} + j];\n"
                     f"                    const float ht = {g(hpre)};\n"
                     f"                    hb[j] = (1.0f - zt) * ht + zt * hb[j];\n"
                     f"                }}\n")
        if r.outs[0]:
            body += f"                for (long j = 0; j < {H}; ++j) y0[{r.y_index(d, 't', 'b')} + j] = hb[j];\n"
        body += "            }\n        }\n"
        body += r.write_state(1, "h", d) + "    }\n"
    macs = len(r.dirs) * S * B * G3 * (I + H)
    return NodeCode(r.ops, body, ["rnn_gemm_nt"], macs=macs, scratch=4 * scratch)


K.GENERATORS[("", "LSTM")] = gen_lstm
K.GENERATORS[("", "GRU")] = gen_gru
