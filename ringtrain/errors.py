"""Exception classes. Bad arguments are plain TypeError/ValueError subclasses so callers can
catch them the usual way; failures of the distributed job are RingtrainError."""


class RingtrainError(RuntimeError):
    """A collective failed after communication started (an MPI error, a mismatch between ranks)."""


class NotInitializedError(ValueError):
    """A ringtrain function that needs init() was called before init() or after shutdown()."""


class ConfigurationError(ValueError):
    """A setting (init() keyword or RINGTRAIN_* environment variable) has an invalid value."""
