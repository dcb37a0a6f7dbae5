"""Run a plain Python function on N ranks: ringtrain.run(fn, ...) and @ringtrain.distributed.

Called from a plain Python process, it starts N workers under mpiexec (on this host, or on the
hosts given, as horovod.run takes them), runs the function on every rank with ringtrain
initialised, streams their output with rank prefixes, and returns rank 0's value (or every
rank's, in rank order). The function travels to the ranks, and their results back, over the
job's authenticated channel (job.py), so the hosts need not share /tmp. A worker's exception is
raised here, carrying the remote rank and traceback. Called inside an MPI job, it just runs the
function in place."""
import functools
import os
import pickle
import sys

from ringtrain import runtime
from ringtrain.errors import RemoteError, RingtrainError
from ringtrain.launch.pickling import dumps_call

BACKENDS = ("mpi", "spark", "auto")


def inside_mpi_job():
    """Started by an MPI launcher, or part of an initialised job of several ranks. A plain
    process that called init() by itself is a job of one: it still starts workers."""
    if any(v in os.environ for v in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")):
        return True
    return runtime.is_initialized() and runtime.size() > 1


def run(fn, args=(), kwargs=None, np=2, backend="mpi", all_ranks=False, env=None, timeout=None,
        hosts=None, hostfile=None, launcher_command=None, network_interface=None, max_restarts=0):
    """Run fn(*args, **kwargs) on `np` ranks; return rank 0's value (all_ranks=True: a list).

    hosts="h1:2,h2:2" (or hostfile=PATH, one "host[:slots]" per line) places the ranks on those
    hosts through hydra's ssh launcher, or through launcher_command (called like ssh: COMMAND
    HOST COMMAND...); network_interface names the interface the hosts reach each other on. This
    Python, and the function's modules, must be at the same paths on every host.

    max_restarts=N starts a failed job again, up to N times; a function using
    ringtrain.elastic resumes from its last persisted commit (the ranks see RINGTRAIN_RESTART).
    On Spark, retries are Spark's stage attempts (spark.stage.maxConsecutiveAttempts)."""
    kwargs = dict(kwargs or {})
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if not isinstance(np, int) or isinstance(np, bool) or np < 1:
        raise ValueError(f"np={np!r} must be a positive int")
    if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
        raise ValueError(f"max_restarts={max_restarts!r} must be a non-negative int")
    from .job import Hosts

    placement = Hosts.parse(hosts, hostfile, launcher_command, network_interface)
    if placement is not None:
        if backend == "spark":
            raise ValueError("hosts/hostfile place an MPI job; a Spark job runs where Spark puts its tasks")
        placement.check_slots(np)
    if backend == "spark" and not inside_mpi_job():
        from ringtrain import spark

        values = spark.run(fn, args, kwargs, num_proc=np, env=env)
        return values if all_ranks else values[0]
    if inside_mpi_job():
        runtime.init()
        value = fn(*args, **kwargs)
        from ringtrain.object_collectives import allgather_object

        return allgather_object(value) if all_ranks else value
    from .job import with_restarts

    def attempt(restart):
        try:
            return _launch(fn, args, kwargs, np, all_ranks, env, timeout, placement, restart), None
        except RingtrainError as exc:  # RemoteError included
            return exc, str(exc).splitlines()[0]

    outcome = with_restarts(attempt, max_restarts, "ringtrain.run")
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _launch(fn, args, kwargs, np, all_ranks, env, timeout, hosts=None, restart=0):
    from .job import run_job

    job_env = dict(os.environ if env is None else env)
    job_env["RINGTRAIN_RESTART"] = str(restart)
    job_env.setdefault("PYTHONUNBUFFERED", "1")
    # Functions are pickled by reference to their module where they have one: the workers
    # must be able to import what the caller can (as multiprocessing's spawn does).
    paths = [os.path.abspath(p) for p in sys.path if p] + [os.getcwd()]
    job_env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, job_env.get("PYTHONPATH")]))
    result = run_job(np, [sys.executable, "-m", "ringtrain.launch.worker"], env=job_env, hosts=hosts,
                     payload=dumps_call(fn, args, kwargs), timeout=timeout)
    # the records came over the job channel, each frame verified under this job's secret
    records = {rank: pickle.loads(data) for rank, data in result.results.items()}
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


def _active_spark_session():
    import sys as _sys

    if "pyspark" not in _sys.modules:  # never import Spark just to find it is not in use
        return False
    from pyspark.sql import SparkSession

    return SparkSession.getActiveSession() is not None


def distributed(np=2, backend="auto", all_ranks=False, env=None, timeout=None,
                hosts=None, hostfile=None, launcher_command=None, network_interface=None, max_restarts=0):
    """Decorator: calling the function runs it on `np` ranks (see run(), which also explains the
    placement: hosts, hostfile, launcher_command, network_interface). backend="spark" runs them
    as a Spark barrier job on the active SparkSession; "auto" picks Spark when a SparkSession is
    active and no hosts are given, mpiexec otherwise."""
    placement = dict(hosts=hosts, hostfile=hostfile, launcher_command=launcher_command,
                     network_interface=network_interface)

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            chosen = backend
            if backend == "auto":
                chosen = "spark" if _active_spark_session() and not (hosts or hostfile) else "mpi"
            return run(fn, args, kwargs, np=np, backend=chosen, all_ranks=all_ranks, env=env, timeout=timeout,
                       max_restarts=max_restarts, **placement)
        return call
    return wrap
