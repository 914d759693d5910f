"""soraflow's exceptions.

Every problem a user can act on is a :class:`SoraflowError` with a one-line message that names
the file, value or limit at fault. The CLI prints that line and exits with status 2, no traceback.
"""


class SoraflowError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, bad config)."""


class InputError(SoraflowError, ValueError):
    """An argument or value out of range: a size, a duration, an empty prompt."""


class UsageError(InputError):
    """A command line that does not parse: an unknown option, a missing or malformed value."""


class VideoError(SoraflowError):
    """A video or image file that is missing, empty, truncated or not a video."""


class CheckpointError(SoraflowError):
    """Weights or a checkpoint that cannot be loaded: missing/unexpected keys, corrupt file."""


class DataError(SoraflowError):
    """A dataset that is missing, empty, or has no usable entries."""
