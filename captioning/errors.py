"""User-facing errors.

A :class:`CaptioningError` is a mistake the user can fix (a missing file, a corrupt image, an unreadable
annotation file, a bad argument value). The CLI prints its message as one line and exits non-zero; any other
exception is a bug and keeps its traceback.
"""


class CaptioningError(Exception):
    """An error caused by the user's input, reported as one line naming the file and the problem."""


class ConfigError(CaptioningError, ValueError):
    """A configuration value out of range (a model setting, a flag): one line from the CLI, a ValueError in Python."""
