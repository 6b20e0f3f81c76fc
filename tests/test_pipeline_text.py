"""Textual pipelines: parsing, canonical printing (round trip) and every error."""

from __future__ import annotations

from typing import List, Literal

import pytest

from edgec.errors import PipelineError
from edgec.passmanager import Pass, PassRegistry, Pipeline, Repeat, get_registry, parse_pipeline, register_pass

REG: PassRegistry = get_registry().copy()


@register_pass(registry=REG)
class Fuse(Pass):
    """Fuse patterns (test pass)."""

    name = "fuse"
    patterns: List[str] = ["conv-bn"]

    def run(self, model, ctx) -> bool:
        return False


@register_pass(registry=REG)
class Quantize(Pass):
    """Quantize (test pass)."""

    name = "quantify"
    bits: int = 8
    per_channel: bool = False
    scheme: Literal["symmetric", "asymmetric"] = "symmetric"
    ratio: float = 0.5
    tag: str = "q"
    axes: List[int] = []

    def run(self, model, ctx) -> bool:
        return False


def parse(text: str) -> Pipeline:
    return parse_pipeline(text, REG)


@pytest.mark.parametrize("text", [
    "",
    "dce",
    "dce,toposort",
    "fuse{patterns=conv-bn,conv-relu},quantify{bits=4,per-channel=true}",
    "repeat(dce,toposort)",
    "repeat{max-iters=10}(fuse,dce),toposort",
    "repeat(repeat{max-iters=2}(dce),toposort)",
    "quantify{scheme=asymmetric,ratio=0.25,axes=0,1}",
    'quantify{tag="a b,c"}',
    'quantify{tag=""}',
    "fuse{patterns=}",
])
def test_round_trip(text: str) -> None:
    p = parse(text)
    assert str(p) == text
    assert parse(str(p)) == p


def test_canonical_form_drops_defaults_and_spaces() -> None:
    p = parse(" dce , quantify{ bits = 8 , per-channel=false }, repeat{max-iters=20}( dce ) ")
    assert str(p) == "dce,quantify,repeat(dce)"
    assert parse(str(p)) == p


def test_options_are_typed() -> None:
    p = parse("fuse{patterns=conv-bn,conv-relu},quantify{bits=4,per-channel=yes,axes=1,2,ratio=1e-2}")
    fuse, quant = p.items
    assert fuse.patterns == ["conv-bn", "conv-relu"]
    assert (quant.bits, quant.per_channel, quant.axes, quant.ratio) == (4, True, [1, 2], 0.01)
    assert quant.option_values()["per-channel"] is True


def test_list_default_not_shared() -> None:
    a, b = parse("fuse,fuse").items
    a.patterns.append("x")
    assert b.patterns == ["conv-bn"]


def test_repeat_structure_and_flatten() -> None:
    p = parse("dce,repeat{max-iters=3}(fuse,toposort)")
    assert isinstance(p.items[1], Repeat) and p.items[1].max_iters == 3
    assert [x.name for x in p.passes()] == ["dce", "fuse", "toposort"]


def test_without_removes_everywhere() -> None:
    p = parse("dce,repeat(dce,fuse),repeat(dce),toposort")
    assert str(p.without(["dce"])) == "repeat(fuse),toposort"


@pytest.mark.parametrize("text, fragment", [
    ("dce,,toposort", "column 5: expected a pass name, found ','"),
    ("dce,", "column 5: expected a pass name, found end of text"),
    (",dce", "column 1: expected a pass name"),
    ("dce toposort", "column 5: expected ',' or the end of the pipeline, found 'toposort'"),
    ("fuse{patterns=a", "column 16: expected ',' or '}', found end of text"),
    ("fuse{=a}", "column 6: expected an option (key=value), found '='"),
    ("fuse{a}", "column 7: expected '=' after the option name, found '}'"),
    ("fuse{patterns==}", "column 15: expected a value, found '='"),
    ("repeat", "column 7: expected '(' and the passes to repeat, found end of text"),
    ("repeat()", "column 8: expected a pass name, found ')'"),
    ("repeat(dce", "column 11: expected ',' or ')', found end of text"),
    ("dce(toposort)", "column 4: expected ',' (only 'repeat' takes a '(' group)"),
    ('quantify{tag="abc}', "column 14: expected a closing '\"'"),
    ("dce)", "column 4: expected ',' or the end of the pipeline, found ')'"),
])
def test_syntax_errors_name_column_and_expectation(text: str, fragment: str) -> None:
    with pytest.raises(PipelineError) as e:
        parse(text)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_pass_lists_close_matches() -> None:
    with pytest.raises(PipelineError, match=r"unknown pass 'dcee' at column 6 \(did you mean: dce\?\)"):
        parse("fuse,dcee")
    with pytest.raises(PipelineError, match=r"unknown pass 'zzzzz' .*edgec passes"):
        parse("zzzzz")


def test_unknown_option_lists_the_options() -> None:
    with pytest.raises(PipelineError, match=r"pass 'quantify' has no option 'bitz' \(its options: bits, per-channel, scheme, ratio, tag, axes\)"):
        parse("quantify{bitz=3}")
    with pytest.raises(PipelineError, match=r"pass 'dce' has no option 'x' \(its options: none\)"):
        parse("dce{x=1}")


@pytest.mark.parametrize("text, fragment", [
    ("quantify{bits=eight}", "option 'bits' of pass 'quantify': expected an integer, got 'eight'"),
    ("quantify{per-channel=maybe}", "expected true or false, got 'maybe'"),
    ("quantify{ratio=half}", "expected a number, got 'half'"),
    ("quantify{scheme=weird}", "'weird' is not one of: symmetric, asymmetric"),
    ("quantify{bits=4,8}", "option 'bits' of pass 'quantify' takes one value, got 2"),
    ("quantify{axes=1,x}", "expected an integer, got 'x'"),
    ("quantify{bits=4,bits=5}", "option 'bits' is given twice"),
    ("repeat{max-iters=0}(dce)", "max-iters needs a positive integer"),
    ("repeat{times=3}(dce)", "'repeat' has no option 'times' (its options: max-iters)"),
])
def test_option_value_errors(text: str, fragment: str) -> None:
    with pytest.raises(PipelineError) as e:
        parse(text)
    assert fragment in str(e.value)


def test_underscore_spelling_accepted_printed_with_hyphen() -> None:
    assert str(parse("quantify{per_channel=true}")) == "quantify{per-channel=true}"
