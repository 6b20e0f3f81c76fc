"""The pass manager: runs a pipeline on a model, calling instruments around every pass.

    pm = PassManager(parse_pipeline("dce,toposort"), instruments=[Timing()])
    changed = pm.run(model)

or, from the debugging flags in one struct (as MLIR's PassManagerOptions)::

    pm = PassManager.with_options(pipeline, PassManagerOptions(print_ir_after_all=True))
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import List, Optional, Sequence, Union

from ..errors import EdgecError, PassFailure
from .base import Pass, PassContext
from .instruments import CrashReproducer, DumpDir, Instrument, PrintIR, Statistics, Timing, VerifyEach
from .pipeline import Element, Pipeline, Repeat, parse_pipeline

__all__ = ["PassManager", "PassManagerOptions"]


@dataclass
class PassManagerOptions:
    """Every debugging flag of the pass manager (the CLI maps its flags onto this)."""

    verify_each: bool = True
    #: also verify after passes that report no change (tests: catches a pass that changes the IR
    #: but says it did not; by default an unchanged IR is not verified again)
    verify_unchanged: bool = False
    print_ir_before: Sequence[str] = ()
    print_ir_after: Sequence[str] = ()
    print_ir_before_all: bool = False
    print_ir_after_all: bool = False
    print_ir_after_change: bool = False
    ir_dump_dir: Optional[str] = None
    timing: bool = False
    pass_statistics: bool = False
    crash_reproducer: Optional[str] = None
    elide_limit: Optional[int] = 16
    #: CLI flags needed to rerun a reproducer before / after the `opt` command (plugins, ...).
    rerun_group_flags: Sequence[str] = ()
    rerun_opt_flags: Sequence[str] = ()

    def instruments(self) -> List[Instrument]:
        """The instruments these options ask for.

        Before-hooks run in list order and after-hooks in reverse, so timing (last) measures only
        the pass, and verification (first) runs after the dumps of the IR a pass left.
        """
        out: List[Instrument] = []
        if self.verify_each:
            out.append(VerifyEach(always=self.verify_unchanged))
        if self.crash_reproducer:
            opt_flags = list(self.rerun_opt_flags) + ([] if self.verify_each else ["--no-verify-each"])
            out.append(CrashReproducer(self.crash_reproducer, group_flags=self.rerun_group_flags, opt_flags=opt_flags))
        if (self.print_ir_before or self.print_ir_after or self.print_ir_before_all or self.print_ir_after_all
                or self.print_ir_after_change):
            out.append(PrintIR(before=self.print_ir_before, after=self.print_ir_after,
                               before_all=self.print_ir_before_all, after_all=self.print_ir_after_all,
                               after_change=self.print_ir_after_change, elide_limit=self.elide_limit))
        if self.ir_dump_dir:
            out.append(DumpDir(self.ir_dump_dir, elide_limit=self.elide_limit))
        if self.pass_statistics:
            out.append(Statistics())
        if self.timing:
            out.append(Timing())
        return out


class PassManager:
    """Runs a :class:`Pipeline`; ``run`` returns whether any pass changed the model."""

    def __init__(self, pipeline: Union[Pipeline, str], *, instruments: Sequence[Instrument] = (),
                 ctx: Optional[PassContext] = None) -> None:
        self.pipeline = parse_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
        self.instruments = list(instruments)
        self.ctx = ctx or PassContext()

    @classmethod
    def with_options(cls, pipeline: Union[Pipeline, str], options: PassManagerOptions,
                     ctx: Optional[PassContext] = None) -> "PassManager":
        """A manager with the instruments ``options`` ask for."""
        return cls(pipeline, instruments=options.instruments(), ctx=ctx)

    def run(self, model) -> bool:
        """Run the pipeline on ``model`` in place."""
        ctx = self.ctx
        ctx.pipeline = str(self.pipeline)
        for inst in self.instruments:
            inst.before_pipeline(model, ctx)
        changed = self._run_items(self.pipeline.items, [], model)
        for inst in reversed(self.instruments):
            inst.after_pipeline(model, ctx)
        return changed

    # --- driver ---------------------------------------------------------------------------------
    def _run_items(self, items: Sequence[Element], rest: List[Element], model) -> bool:
        changed = False
        for i, item in enumerate(items):
            after = list(items[i + 1:]) + rest
            if isinstance(item, Repeat):
                changed |= self._run_repeat(item, after, model)
            else:
                changed |= self._run_pass(item, after, model)
        return changed

    def _run_repeat(self, group: Repeat, rest: List[Element], model) -> bool:
        changed = False
        for _ in range(group.max_iters):
            if not self._run_items(group.body.items, rest, model):
                return changed
            changed = True
        self.ctx.warn(f"{group} did not reach a fixed point within {group.max_iters} iterations")
        return changed

    def _run_pass(self, p: Pass, rest: List[Element], model) -> bool:
        ctx = self.ctx
        ctx.current = p
        ctx.remaining = Pipeline([p, *rest])
        try:
            for inst in self.instruments:
                inst.before_pass(p, model)
            changed = bool(p.run(model, ctx))
            for inst in reversed(self.instruments):  # after-hooks unwind in reverse (as MLIR)
                inst.after_pass(p, model, changed)
            return changed
        except Exception as exc:  # noqa: BLE001 - every failure of a pass is reported naming it
            failure = as_pass_failure(p, exc)
            notes = []
            for inst in reversed(self.instruments):
                note = inst.after_failed(p, model, failure)
                if note:
                    notes.append(note)
            if notes:
                code = failure.exit_code
                failure = PassFailure(f"{failure.message}; {'; '.join(notes)}")
                failure.exit_code = code
            raise failure from exc
        finally:
            ctx.current = None


def as_pass_failure(p: Pass, exc: BaseException) -> PassFailure:
    """A one-line PassFailure for an exception raised while pass ``p`` ran."""
    if isinstance(exc, PassFailure):
        return exc
    if isinstance(exc, EdgecError):
        failure = PassFailure(f"pass '{p.name}' failed: {exc}")
        failure.exit_code = exc.exit_code
        return failure
    where = _node_in_traceback(exc.__traceback__)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return PassFailure(f"pass '{p.name}' failed{where}: {detail}")


def _node_in_traceback(tb: Optional[TracebackType]) -> str:
    """`` on node 'name' (onnx::Op)`` for the innermost frame that held a Node in a local, or ''."""
    from ..ir import Node

    found = ""
    for frame, _ in traceback.walk_tb(tb):
        for name in ("node", "n", "op"):
            v = frame.f_locals.get(name)
            if isinstance(v, Node):
                found = f" on node '{v.name}' ({v.qualified_op})"
                break
        else:
            for v in frame.f_locals.values():
                if isinstance(v, Node):
                    found = f" on node '{v.name}' ({v.qualified_op})"
                    break
    return found
