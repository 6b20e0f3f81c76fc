"""An example edgec plugin: importing it registers its passes (``strip_doc_strings``: a plain pass; ``recover_hardswish``: a pattern rewrite)."""

from . import recover_hardswish, strip_doc_strings

#: The edgec plugin API this plugin was written for (edgec refuses a different one).
EDGEC_PLUGIN_API = 1

__all__ = ["recover_hardswish", "strip_doc_strings"]
