"""User-facing errors: one clear line, no stack trace (the CLI prints them and exits 2)."""


class ThinkrlError(Exception):
    """An error caused by the user's input or environment, not by a bug in thinkrl."""


class ConfigError(ThinkrlError):
    """A config file or override names an unknown field or holds a bad value."""


class DataError(ThinkrlError):
    """A dataset cannot be found or one of its rows is malformed."""


class ModelNotFoundError(ThinkrlError):
    """A model or tokenizer is neither on disk nor reachable (we run offline)."""
