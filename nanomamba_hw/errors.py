"""Exception types of nanomamba_hw. Every error the API raises on bad input derives from
:class:`NanoMambaError`, so callers (and the CLIs) can catch ours without catching bugs."""


class NanoMambaError(Exception):
    """Base class of every error nanomamba_hw raises on bad input."""


class AudioError(NanoMambaError):
    """A WAV file that cannot be read or used (missing, not a WAV, empty)."""


class CheckpointError(NanoMambaError):
    """A checkpoint that cannot be loaded."""


class CheckpointNotFoundError(CheckpointError):
    """The checkpoint path does not exist."""


class CorruptCheckpointError(CheckpointError):
    """The file is not a torch checkpoint (not a zip archive, truncated, or unreadable)."""


class UnknownLayoutError(CheckpointError):
    """A readable checkpoint whose keys match neither our format nor a published one."""


class ShapeMismatchError(CheckpointError):
    """A tensor whose shape differs from what the model config requires."""


class NonFiniteWeightError(CheckpointError):
    """A tensor containing NaN or Inf."""
