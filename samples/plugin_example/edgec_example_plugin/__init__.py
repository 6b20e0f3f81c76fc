"""An example edgec plugin: importing it registers its passes (see ``strip_doc_strings``)."""

from . import strip_doc_strings

#: The edgec plugin API this plugin was written for (edgec refuses a different one).
EDGEC_PLUGIN_API = 1

__all__ = ["strip_doc_strings"]
