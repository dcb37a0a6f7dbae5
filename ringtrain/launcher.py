"""Run a plain Python function on N ranks: ringtrain.run(fn, ...) and @ringtrain.distributed.

Called from a plain Python process, it starts N local workers under mpiexec, runs the function
on every rank with ringtrain initialised, streams their output with rank prefixes, and returns
rank 0's value (or every rank's, in rank order). A worker's exception is raised here, carrying
the remote rank and traceback. Called inside an MPI job, it just runs the function in place."""
import functools
import os
import pickle
import shutil
import sys
import tempfile

from . import runtime
from .errors import RingtrainError
from .pickling import dumps_call

BACKENDS = ("mpi", "spark", "auto")


class RemoteError(RingtrainError):
    """A rank raised inside a function started by ringtrain.run / @distributed."""

    def __init__(self, rank, type_name, message, remote_traceback):
        super().__init__(f"rank {rank} raised {type_name}: {message}\n\nTraceback on rank {rank}:\n{remote_traceback}")
        self.rank = rank
        self.type_name = type_name
        self.remote_traceback = remote_traceback


def inside_mpi_job():
    """Started by an MPI launcher, or part of an initialised job of several ranks. A plain
    process that called init() by itself is a job of one: it still starts workers."""
    if any(v in os.environ for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
        return True
    return runtime.is_initialized() and runtime.size() > 1


def run(fn, args=(), kwargs=None, np=2, backend="mpi", all_ranks=False, env=None, timeout=None):
    """Run fn(*args, **kwargs) on `np` ranks; return rank 0's value (all_ranks=True: a list)."""
    kwargs = dict(kwargs or {})
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if not isinstance(np, int) or isinstance(np, bool) or np < 1:
        raise ValueError(f"np={np!r} must be a positive int")
    if backend == "spark" and not inside_mpi_job():
        from . import spark

        values = spark.run(fn, args, kwargs, num_proc=np, env=env)
        return values if all_ranks else values[0]
    if inside_mpi_job():
        runtime.init()
        value = fn(*args, **kwargs)
        from .objects import allgather_object

        return allgather_object(value) if all_ranks else value
    return _launch(fn, args, kwargs, np, all_ranks, env, timeout)


def _launch(fn, args, kwargs, np, all_ranks, env, timeout):
    from .launch.job import run_job

    job_dir = tempfile.mkdtemp(prefix="ringtrain-run-")  # 0700: only this user reads the pickles
    try:
        with open(os.path.join(job_dir, "function.pkl"), "wb") as f:
            f.write(dumps_call(fn, args, kwargs))
        job_env = dict(os.environ if env is None else env)
        job_env.setdefault("PYTHONUNBUFFERED", "1")
        # Functions are pickled by reference to their module where they have one: the workers
        # must be able to import what the caller can (as multiprocessing's spawn does).
        paths = [os.path.abspath(p) for p in sys.path if p] + [os.getcwd()]
        job_env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, job_env.get("PYTHONPATH")]))
        result = run_job(np, [sys.executable, "-m", "ringtrain.launch.worker", job_dir], env=job_env,
                         timeout=timeout)
        records = {}
        for rank in range(np):
            path = os.path.join(job_dir, f"result-{rank}.pkl")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    records[rank] = pickle.load(f)
        errors = sorted(r for r, rec in records.items() if rec[0] == "error")
        if errors:
            rank = result.failed_rank if result.failed_rank in errors else errors[0]
            _, type_name, message, text, pickled = records[rank]
            cause = None
            if pickled is not None:
                try:
                    cause = pickle.loads(pickled)
                except Exception:  # noqa: BLE001
                    cause = None
            raise RemoteError(rank, type_name, message, text) from cause
        if result.returncode != 0 or len(records) != np:
            raise RingtrainError(f"ringtrain.run: the job did not finish: {result.failure_report()}")
        values = [records[r][1] for r in range(np)]
        return values if all_ranks else values[0]
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _active_spark_session():
    import sys as _sys

    if "pyspark" not in _sys.modules:  # never import Spark just to find it is not in use
        return False
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() is not None


def distributed(np=2, backend="auto", all_ranks=False, env=None, timeout=None):
    """Decorator: calling the function runs it on `np` ranks (see run()). backend="spark" runs
    them as a Spark barrier job on the active SparkSession; "auto" picks Spark when a
    SparkSession is active, local mpiexec otherwise."""
    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            chosen = backend
            if backend == "auto":
                chosen = "spark" if _active_spark_session() else "mpi"
            return run(fn, args, kwargs, np=np, backend=chosen, all_ranks=all_ranks, env=env, timeout=timeout)
        return call
    return wrap
