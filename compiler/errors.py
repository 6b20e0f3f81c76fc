"""Errors that edgec reports to users as one line and a non-zero exit code."""

from __future__ import annotations


class EdgecError(Exception):
    """Base of every error meant for the user: one line, exit code ``exit_code``."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, whatever the message held
        return " ".join(self.message.split())


class ModelLoadError(EdgecError):
    """The model file is missing, malformed, truncated or unsafe."""


class UnsupportedModelError(EdgecError):
    """The model is well-formed but uses something edgec does not support (opset, op, dtype)."""


class VerificationError(EdgecError):
    """The IR breaks an invariant (SSA, order, types, scoping)."""


class IRParseError(EdgecError):
    """Textual IR that does not parse."""


class PipelineError(EdgecError):
    """A pass pipeline that does not parse, names an unknown pass or has bad options."""


class PassFailure(EdgecError):
    """A pass raised or left the IR broken; names the pass."""


class PluginError(EdgecError):
    """A plugin that does not load or registers a pass name twice."""


class CalibrationError(EdgecError):
    """Calibration data that is missing, malformed or does not match the model; bad statistics (NaN/Inf)."""
