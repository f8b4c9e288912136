"""Error types with one-line, user-facing messages.

Every error the user can cause (bad rule file, unknown model, unreadable checkpoint, bad data...) is raised as a
:class:`PfconvertError` subclass whose message says what is wrong, where, and how to fix it. The CLI prints the message
on stderr and exits non-zero, without a traceback (set ``PFCONVERT_DEBUG=1`` to see one).
"""

from __future__ import annotations

__all__ = [
    "PfconvertError",
    "RuleError",
    "ModelError",
    "CheckpointError",
    "ConversionError",
    "ArtifactError",
    "OutputExistsError",
    "DataError",
    "TrainingError",
    "ExportError",
    "ExportExistsError",
    "BackendError",
    "UsageError",
    "one_line",
]


class PfconvertError(Exception):
    """Base class of all errors that are the user's to fix."""


class RuleError(PfconvertError):
    """A rule file is missing, malformed, or asks for something impossible."""


class ModelError(PfconvertError):
    """A model name is unknown or a model cannot be built."""


class CheckpointError(PfconvertError):
    """A checkpoint cannot be read or does not fit the model."""


class ConversionError(PfconvertError):
    """A matched layer cannot be replaced as the rule asks, or the converted model fails its checks."""


class ArtifactError(PfconvertError):
    """An artifact directory is missing, incomplete, or would be overwritten."""


class OutputExistsError(ArtifactError):
    """An output (an artifact folder, a rule file, a plot...) exists and replacing it was not asked for: choose
    another path or pass ``--overwrite`` (``overwrite=True``). An :class:`ArtifactError`, as such refusals were
    before this class."""


class DataError(PfconvertError):
    """A dataset is missing, empty, or corrupt."""


class TrainingError(PfconvertError):
    """Training cannot start or has to stop (e.g. a non-finite loss)."""


class ExportError(PfconvertError):
    """A model cannot be exported, or the export does not compute what the PyTorch model computes."""


class ExportExistsError(OutputExistsError, ExportError):
    """An export's output file exists (an :class:`OutputExistsError` that is also an :class:`ExportError`, which
    exports raised before this class)."""


class BackendError(PfconvertError):
    """A backend or runtime name is unknown, or the backend is not available on this machine (a package to install,
    no GPU)."""


class UsageError(PfconvertError, TypeError):
    """A library function was called with an argument of the wrong type (also a :class:`TypeError`)."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of ``str(exc)`` (at most ``limit`` characters), else the exception's type name.

    Library and third-party exceptions often carry multi-line messages (compiler logs, tracer dumps); wrapped into a
    :class:`PfconvertError`, only this line is shown.
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
