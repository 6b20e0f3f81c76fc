"""An example rewrite pass: recover HardSwish from the x * HardSigmoid(x) form some exporters emit.

It shows edgec's pattern mechanism (``edgec.rewrite``): a declarative pattern over values, a
rewrite function that builds the replacement, and the one driver (``apply_rules``) that applies
it everywhere (subgraphs included), removes what the match left dead and keeps graph outputs'
names.
"""

from __future__ import annotations

import math
from typing import Optional

from edgec.ir import Model, Value
from edgec.passmanager import Pass, PassContext, register_pass
from edgec.rewrite import Match, Op, RewriteRule, Rewriter, Var, apply_rules

__all__ = ["RecoverHardSwish", "HARDSWISH"]


def _is(expected: float):
    return lambda v: v is not None and math.isclose(float(v), expected, rel_tol=1e-6)


#: Mul(x, HardSigmoid(x)) with HardSigmoid's alpha = 1/6 and beta = 0.5, in either operand order.
PATTERN = Op(
    "Mul",
    Var("x"),
    Op("HardSigmoid", Var("x"), attrs={"alpha": _is(1 / 6), "beta": _is(0.5)}),
    commute=True,
)


def _hardswish(m: Match, rw: Rewriter) -> Optional[Value]:
    """Build HardSwish(x); returning None would mean 'does not apply after all'."""
    return rw.op("HardSwish", [m["x"]])


HARDSWISH = RewriteRule("hardswish", PATTERN, _hardswish)


@register_pass
class RecoverHardSwish(Pass):
    """Replace x * HardSigmoid(x; alpha=1/6, beta=0.5) by HardSwish(x) (opset 14 and later)."""

    name = "recover-hardswish"
    opt_level = 2

    def run(self, model: Model, ctx: PassContext) -> bool:
        if (model.opset("") or 0) < 14:  # HardSwish does not exist before opset 14
            return False
        stats = apply_rules(model, [HARDSWISH])
        ctx.stat("hardswish", stats.fired.get("hardswish", 0))
        return stats.changed
