"""edgec: a graph-level compiler for edge and ASIC inference."""
__version__ = "0.1.0"
