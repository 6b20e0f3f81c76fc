"""edgec's built-in passes, one module per pass.

Importing this package registers them; edgec's own distribution declares it as its
``edgec.passes`` entry point (``builtin = "edgec.passes"``), exactly as plugins do.
"""

from . import dce, toposort
from . import infer_shapes

__all__ = ["dce", "toposort", "infer_shapes"]
