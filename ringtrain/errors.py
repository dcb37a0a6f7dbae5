"""Exception classes. Bad arguments are plain TypeError/ValueError subclasses so callers can
catch them the usual way; failures of the distributed job are RingtrainError."""


class RingtrainError(RuntimeError):
    """A collective failed after communication started (an MPI error, a mismatch between ranks)."""


class NotInitializedError(ValueError):
    """A ringtrain function that needs init() was called before init() or after shutdown()."""


class ConfigurationError(ValueError):
    """A setting (init() keyword or RINGTRAIN_* environment variable) has an invalid value."""


class RemoteError(RingtrainError):
    """A rank raised inside a function started by ringtrain.run / @distributed / ringtrain.spark.run."""

    def __init__(self, rank, type_name, message, remote_traceback):
        super().__init__(f"rank {rank} raised {type_name}: {message}\n\nTraceback on rank {rank}:\n{remote_traceback}")
        self.rank = rank
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class ProgressTimeoutError(RingtrainError):
    """A collective (or a negotiation round) saw no progress for RINGTRAIN_PROGRESS_TIMEOUT seconds
    and a rank it waits on has stopped (no heartbeat), is stuck outside ringtrain, or the ranks
    wait on each other in a cycle. The job cannot continue: its MPI state is no longer in step."""


class HostsUpdatedInterrupt(Exception):
    """Raised by an elastic commit() when the launcher's host discovery script offers other hosts:
    the commit is persisted, and @ringtrain.elastic.run ends every rank so that the launcher starts
    the job again on the new hosts (Horovod's name; not an error)."""
