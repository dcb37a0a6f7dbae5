"""Process layout: init(), shutdown() and who-am-I queries.

ringtrain works on its own duplicate of the communicator it is given (COMM_WORLD by default), so
its messages never match a user's own MPI traffic. MPI is started lazily, at init(), so that
importing ringtrain (say on a Spark driver) does not start an MPI singleton."""
import atexit
import dataclasses
import logging
import os
import socket
import sys
import time

from .config import Config
from .errors import NotInitializedError, ProgressTimeoutError, RingtrainError

log = logging.getLogger("ringtrain")


@dataclasses.dataclass
class Runtime:
    comm: object          # mpi4py Comm: ringtrain's private duplicate
    handle: int           # its Fortran handle, what the C core takes
    rank: int
    size: int
    local_comm: object    # ranks on this host
    cross_comm: object    # ranks with the same local rank, one per host
    config: Config
    core: object          # the C extension module, ringtrain._core
    engine: object = None # the background engine (engine/engine.py)
    heartbeat_comm: object = None  # the liveness thread's own communicator (csrc/liveness.c)


_runtime = None
_dying_of_exception = False


def _mpi():
    import mpi4py

    # The background engine drives MPI from its own thread.
    mpi4py.rc.thread_level = "multiple"
    from mpi4py import MPI

    return MPI


def load_core():
    """The C extension. mpi4py must load the MPI library first: the extension links libmpi by
    soname and so resolves to the very library mpi4py chose (the mpich wheel's, or MPI4PY_LIBMPI)."""
    _mpi()
    from . import _core

    return _core


def _set_log_level(level):
    """Horovod's --log-level: the level, and a handler when none would show it (Python's last
    resort handler shows warnings and worse only)."""
    log.setLevel(level)
    if not log.handlers and logging.getLevelName(level) < logging.WARNING:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("ringtrain %(levelname)s: %(message)s"))
        log.addHandler(handler)


def init(comm=None, process_sets=(), **settings):
    """Start ringtrain on `comm` (an mpi4py communicator; default COMM_WORLD).

    process_sets: ProcessSet objects to register now (every rank passes the same list).
    Other keyword arguments are settings (see ringtrain.config.Config); they override
    RINGTRAIN_* environment variables. Calling init() again after shutdown() starts afresh;
    calling it while initialised is a no-op, as in Horovod."""
    global _runtime
    config = Config.from_sources(settings)  # validate before touching MPI
    if _runtime is not None:
        return
    MPI = _mpi()
    _core = load_core()
    base = MPI.COMM_WORLD if comm is None else comm
    mine = base.Dup()
    mine.Set_errhandler(MPI.ERRORS_RETURN)
    local = mine.Split_type(MPI.COMM_TYPE_SHARED, key=mine.Get_rank())
    cross = mine.Split(color=local.Get_rank(), key=mine.Get_rank())
    if config.log_level:
        _set_log_level(config.log_level)
    if mine.Get_rank() == 0:
        for notice in config.notices:  # HOROVOD_* variables: what became of them, said once
            log.warning("ringtrain: %s", notice)
    _runtime = Runtime(
        comm=mine,
        handle=mine.py2f(),
        rank=mine.Get_rank(),
        size=mine.Get_size(),
        local_comm=local,
        cross_comm=cross,
        config=config,
        core=_core,
    )
    _start_liveness(_runtime, MPI)
    from .engine.engine import Engine

    _runtime.engine = Engine(_runtime, config, process_sets)
    _install_exit_hooks()
    if log.isEnabledFor(logging.INFO):
        changed = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                   if f.compare and getattr(config, f.name) != f.default}
        log.info("rank %d of %d (local rank %d of %d) on %s; settings changed from the defaults: %s",
                 _runtime.rank, _runtime.size, local.Get_rank(), local.Get_size(), socket.gethostname(),
                 changed or "none")


def _start_liveness(runtime, MPI):
    """The progress deadline, and the heartbeats that let a stalled wait tell a rank that has
    stopped from one that is only slow. The heartbeat thread calls MPI beside the engine, which
    needs MPI_THREAD_MULTIPLE; without it a stalled wait gives up at the deadline without naming
    a culprit."""
    timeout = runtime.config.progress_timeout
    runtime.core.set_progress_timeout(timeout)
    if runtime.size > 1 and timeout > 0 and MPI.Query_thread() == MPI.THREAD_MULTIPLE:
        runtime.heartbeat_comm = runtime.comm.Dup()
        # a period well inside the deadline; a rank is "stopped" after half of it in silence
        runtime.core.liveness_start(runtime.heartbeat_comm.py2f(), min(1.0, timeout / 8), timeout / 2)


def shutdown():
    """Leave the job: collective, like init(). MPI itself stays up (mpi4py finalises it at exit).

    The closing barrier is not ceremony: a rank that received the last segment of a large
    (rendezvous) message may still owe its sender the protocol's final acknowledgement, which is
    only sent while the receiver is inside MPI. Without it the sender can wait forever while the
    receiver has already gone on to exit."""
    if _runtime is None:
        return
    from .engine.requests import Request, request_name

    engine = _runtime.engine
    if isinstance(engine.failure, ProgressTimeoutError):
        # MPI is no longer in step with the rank that stopped: no collective can end cleanly
        raise RingtrainError(f"cannot shut down cleanly: {engine.failure}")
    if engine.failure is None:
        engine.wait(engine.submit(Request("shutdown", request_name("shutdown", None), 0)))
    engine.stop()
    _runtime.core.barrier(_runtime.handle)
    _release()


def _release():
    global _runtime
    _runtime.core.liveness_stop()  # after the closing barrier: until then a stopped rank is noticed
    for c in (_runtime.heartbeat_comm, _runtime.cross_comm, _runtime.local_comm, _runtime.comm):
        if c is not None:
            c.Free()
    _runtime = None
_dying_of_exception = False


def _install_exit_hooks():
    """Leave cleanly at interpreter exit, unless an exception is killing this rank: then the
    others may never reach the barrier, and exiting is what lets mpiexec end the job."""
    if getattr(_install_exit_hooks, "done", False):
        return
    _install_exit_hooks.done = True
    previous_hook = sys.excepthook

    def note_exception(exc_type, exc, tb):
        global _dying_of_exception
        _dying_of_exception = exc if exc is not None else True
        previous_hook(exc_type, exc, tb)

    sys.excepthook = note_exception
    atexit.register(_at_exit)


def _at_exit():
    global _dying_of_exception
    if _runtime is None:
        return
    if not _dying_of_exception:
        try:
            shutdown()
            return
        except RingtrainError as exc:  # the other ranks wait for something this one never submitted
            sys.stderr.write(f"ringtrain: rank {_runtime.rank}: {type(exc).__module__}.{type(exc).__name__}: {exc}\n")
            _dying_of_exception = exc
    # Dying of an exception (its traceback is already printed). The engine thread may be inside
    # an MPI call that other ranks will never complete, so neither a collective shutdown nor
    # MPI_Finalize is safe: stop the thread if it can stop, then leave with status 1, which
    # makes mpiexec end the job on every rank.
    if isinstance(_dying_of_exception, RingtrainError):
        # The other ranks get their side of this error from the same negotiation (a mismatch,
        # a rank that left): this engine keeps running rounds a moment, so that they can receive
        # and print it before this rank's exit makes mpiexec end the job.
        sys.stderr.flush()
        time.sleep(1.0)
    engine = _runtime.engine
    engine.halt()
    if engine._thread.is_alive():
        engine._thread.join(timeout=1.0)
    sys.stdout.flush()
    sys.stderr.flush()
    if isinstance(engine.failure, ProgressTimeoutError):
        # A stopped rank (SIGSTOP, a hung host) ignores the signals mpiexec ends a job with when a
        # rank exits non-zero, so the job would wait for it for ever; MPI_Abort makes hydra kill
        # every process of the job, that one included. On MPI_COMM_WORLD: MPICH aborts any other
        # communicator by sending its ranks a message, which blocks for ever when the stopped
        # rank's shared-memory queue is full; only COMM_WORLD's abort goes through mpiexec.
        _mpi().COMM_WORLD.Abort(1)
    os._exit(1)


def is_initialized():
    return _runtime is not None


def current(caller):
    """The live runtime, or NotInitializedError naming the function that needed it."""
    if _runtime is None:
        raise NotInitializedError(f"ringtrain.{caller}() was called before ringtrain.init()")
    return _runtime


def rank():
    return current("rank").rank


def size():
    return current("size").size


def local_rank():
    return current("local_rank").local_comm.Get_rank()


def local_size():
    return current("local_size").local_comm.Get_size()


def cross_rank():
    return current("cross_rank").cross_comm.Get_rank()


def cross_size():
    return current("cross_size").cross_comm.Get_size()


def mpi_comm():
    """ringtrain's private communicator (an mpi4py Comm), for code that needs raw MPI."""
    return current("mpi_comm").comm
