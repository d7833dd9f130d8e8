"""The configuration's error type, in a module of its own so that the value checks and the merge share it."""
from __future__ import annotations


class ConfigError(ValueError):
    """An unknown or malformed configuration key/value."""
