"""Project exceptions: every message names what is wrong and what was expected.

The CLI prints a ``MetarecError`` without a traceback and exits non-zero; anything else is a bug.
"""

from __future__ import annotations


class MetarecError(Exception):
    """Base class for errors a user can act on."""


class DataError(MetarecError):
    """A data file or dataset is missing, malformed or unsuitable for the requested operation."""


class ConfigError(MetarecError):
    """A configuration value or command-line argument is invalid."""


class CheckpointError(MetarecError):
    """A checkpoint is missing, corrupt or does not match the data it is used with."""
