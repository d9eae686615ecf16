"""User-facing errors: one clear line saying what is wrong and what to do.

Command-line entry points catch `UserError`, print `error: <message>` on stderr and exit non-zero; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, dataset, checkpoint, config), not a bug in fer-jax."""


class DatasetError(UserError):
    """A dataset is missing or does not have the expected on-disk layout."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, is unsafe, or does not fit the requested architecture."""


class ConfigError(UserError):
    """A configuration key or value is invalid."""
