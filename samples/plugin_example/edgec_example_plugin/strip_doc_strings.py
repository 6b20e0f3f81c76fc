"""``strip-doc-strings``: remove documentation strings from a model to make it smaller."""

from __future__ import annotations

from edgec.ir import Model
from edgec.passmanager import Pass, PassContext, register_pass


@register_pass
class StripDocStrings(Pass):
    """Remove doc strings from graphs, nodes, values, attributes and functions.

    Option ``keep-model-doc`` keeps the model's own doc string (the one tools show as the
    model description).
    """

    name = "strip-doc-strings"
    opt_level = 2

    keep_model_doc: bool = False

    def run(self, model: Model, ctx: PassContext) -> bool:
        removed = 0
        holders = []
        if not self.keep_model_doc:
            holders.append(model)
        for f in model.functions.values():
            holders.append(f)
        for graph in model.all_graphs():
            holders.append(graph)
            holders.extend(graph.values())
            holders.extend(graph.outputs)
            for node in graph:
                holders.append(node)
                holders.extend(node.attrs.values())
        seen = set()
        for obj in holders:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if getattr(obj, "doc_string", ""):
                obj.doc_string = ""
                removed += 1
        if removed:
            ctx.stat("doc-strings-removed", removed)
        return removed > 0
