"""Textual pass pipelines: ``fold-constants,fuse{patterns=conv-bn,conv-relu},repeat{max-iters=10}(a,b)``.

Grammar::

    pipeline := [element (',' element)*]
    element  := NAME ['{' options '}']                 a pass
              | 'repeat' ['{' options '}'] '(' pipeline ')'   a fixed-point group
    options  := option (',' option)*
    option   := KEY '=' VALUE | VALUE                  a bare VALUE continues the previous option as a list
    VALUE    := bare text without , { } ( ) = " and spaces  |  "quoted \\" text"

``str(parse_pipeline(text))`` prints the canonical form (default options omitted), and parsing it
again gives an equal pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Union

from ..errors import PipelineError
from .base import Pass
from .registry import PassRegistry, get_registry

__all__ = ["Pipeline", "Repeat", "parse_pipeline", "DEFAULT_MAX_ITERS"]

DEFAULT_MAX_ITERS = 20


@dataclass
class Repeat:
    """A fixed-point group: run ``body`` until no pass in it reports a change, at most ``max_iters`` times."""

    body: "Pipeline"
    max_iters: int = DEFAULT_MAX_ITERS

    def __str__(self) -> str:
        opts = "" if self.max_iters == DEFAULT_MAX_ITERS else "{max-iters=%d}" % self.max_iters
        return f"repeat{opts}({self.body})"


Element = Union[Pass, Repeat]


@dataclass
class Pipeline:
    """An ordered list of passes and fixed-point groups."""

    items: List[Element] = field(default_factory=list)

    def __str__(self) -> str:
        return ",".join(str(i) for i in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Element]:
        return iter(self.items)

    def passes(self) -> Iterator[Pass]:
        """Every pass instance, groups flattened, in order."""
        for item in self.items:
            if isinstance(item, Repeat):
                yield from item.body.passes()
            else:
                yield item

    def without(self, names: Sequence[str]) -> "Pipeline":
        """A copy with every pass called one of ``names`` removed (empty groups dropped)."""
        out: List[Element] = []
        for item in self.items:
            if isinstance(item, Repeat):
                body = item.body.without(names)
                if body.items:
                    out.append(Repeat(body, item.max_iters))
            elif item.name not in names:
                out.append(item)
        return Pipeline(out)

    def __add__(self, other: "Pipeline") -> "Pipeline":
        return Pipeline(self.items + other.items)


# --- parser -------------------------------------------------------------------------------------

_PUNCT = ",{}()="
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass
class _Tok:
    kind: str  # "word", "string", one of _PUNCT, or "end"
    text: str
    col: int  # 1-based


def _lex(text: str) -> List[_Tok]:
    toks: List[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _PUNCT:
            toks.append(_Tok(c, c, i + 1))
            i += 1
        elif c == '"':
            start, i, buf = i, i + 1, []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise _error(text, start + 1, "a closing '\"' for the string that starts here")
            toks.append(_Tok("string", "".join(buf), start + 1))
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in _PUNCT and text[i] != '"':
                i += 1
            toks.append(_Tok("word", text[start:i], start + 1))
    toks.append(_Tok("end", "", n + 1))
    return toks


def _error(text: str, col: int, expected: str, got: Optional[_Tok] = None) -> PipelineError:
    found = ""
    if got is not None:
        found = ", found end of text" if got.kind == "end" else f", found '{got.text}'"
    return PipelineError(f"bad pipeline at column {col}: expected {expected}{found}: \"{text}\"")


class _Parser:
    def __init__(self, text: str, registry: PassRegistry) -> None:
        self.text = text
        self.registry = registry
        self.toks = _lex(text)
        self.pos = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.pos]

    def expect(self, kind: str, what: str) -> _Tok:
        t = self.tok
        if t.kind != kind:
            raise _error(self.text, t.col, what, t)
        self.pos += 1
        return t

    def parse(self) -> Pipeline:
        if self.tok.kind == "end":
            return Pipeline()
        pipe = self.pipeline(closing="end")
        self.expect("end", "',' or the end of the pipeline")
        return pipe

    def pipeline(self, closing: str) -> Pipeline:
        items = [self.element()]
        while self.tok.kind == ",":
            self.pos += 1
            items.append(self.element())
        if self.tok.kind != closing:
            raise _error(self.text, self.tok.col, "','" + (" or ')'" if closing == ")" else " or the end of the pipeline"), self.tok)
        return Pipeline(items)

    def element(self) -> Element:
        t = self.tok
        if t.kind != "word" or not set(t.text) <= _NAME_CHARS:
            raise _error(self.text, t.col, "a pass name", t)
        self.pos += 1
        options = self.options() if self.tok.kind == "{" else {}
        if t.text == "repeat":
            return self.repeat(t, options)
        if self.tok.kind == "(":
            raise _error(self.text, self.tok.col, "',' (only 'repeat' takes a '(' group)", self.tok)
        if t.text not in self.registry:
            raise PipelineError(f"unknown pass '{t.text}' at column {t.col}{self.registry.suggest(t.text)}")
        cls = self.registry.get(t.text).cls
        try:
            return cls.from_options(options)
        except PipelineError as e:
            raise PipelineError(f"{e} (at column {t.col})") from None

    def repeat(self, t: _Tok, options: Dict[str, List[str]]) -> Repeat:
        max_iters = DEFAULT_MAX_ITERS
        for key, values in options.items():
            if key != "max-iters":
                raise PipelineError(f"'repeat' has no option '{key}' (its options: max-iters) (at column {t.col})")
            if len(values) != 1 or not values[0].isdigit() or int(values[0]) < 1:
                raise PipelineError(f"'repeat' option max-iters needs a positive integer, got '{','.join(values)}' (at column {t.col})")
            max_iters = int(values[0])
        self.expect("(", "'(' and the passes to repeat")
        if self.tok.kind == ")":
            raise _error(self.text, self.tok.col, "a pass name", self.tok)
        body = self.pipeline(closing=")")
        self.expect(")", "')'")
        return Repeat(body, max_iters)

    def options(self) -> Dict[str, List[str]]:
        self.expect("{", "'{'")
        opts: Dict[str, List[str]] = {}
        last: Optional[str] = None
        if self.tok.kind == "}":  # `name{}`
            self.pos += 1
            return opts
        while True:
            t = self.tok
            if t.kind not in ("word", "string"):
                raise _error(self.text, t.col, "an option (key=value)", t)
            self.pos += 1
            if self.tok.kind == "=":
                if t.kind != "word":
                    raise _error(self.text, t.col, "an option name", t)
                self.pos += 1
                if t.text in opts:
                    raise PipelineError(f"option '{t.text}' is given twice (at column {t.col})")
                v = self.tok
                if v.kind in ("word", "string"):
                    self.pos += 1
                    opts[t.text] = [v.text]
                elif v.kind in (",", "}"):
                    opts[t.text] = [""]
                else:
                    raise _error(self.text, v.col, "a value", v)
                last = t.text
            else:  # a bare value continues the previous option as a list
                if last is None:
                    raise _error(self.text, self.tok.col, "'=' after the option name", self.tok)
                opts[last].append(t.text)
            if self.tok.kind == ",":
                self.pos += 1
                continue
            self.expect("}", "',' or '}'")
            return opts


def parse_pipeline(text: str, registry: Optional[PassRegistry] = None) -> Pipeline:
    """Parse pipeline text (see the module docstring); errors are PipelineErrors with a column."""
    return _Parser(text or "", registry or get_registry()).parse()
