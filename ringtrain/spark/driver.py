"""ringtrain.spark.run: the driver's side of a Spark barrier job (after TensorFlowOnSpark's
TFCluster.run and pyspark's TorchDistributor)."""
import pickle
import secrets
import socket
import sys
import threading
import time

from ..errors import RemoteError, RingtrainError
from ..launch.pickling import dumps_call
from ..launch.channel import Server
from .task import barrier_task


def _stage_max_attempts(sc):
    """How many attempts Spark gives a barrier stage: spark.stage.maxConsecutiveAttempts (default
    4). A failed barrier task fails its whole stage attempt, and Spark resubmits the stage until
    this many consecutive attempts have failed; spark.task.maxFailures does not apply to barrier
    stages (measured: plain local[2], whose maxFailures is 1, still runs 4 attempts)."""
    return max(1, int(sc.getConf().get("spark.stage.maxConsecutiveAttempts") or 4))


# A failure no new attempt can mend: the same executors import the same modules every time.
DETERMINISTIC_FAILURES = frozenset({"ImportError", "ModuleNotFoundError"})


def _first_failure(state):
    """The failure report of the rank that failed first (task 0's job service knows it from the
    exit records: the others may only have been stopped because of it), else the lowest rank."""
    exit_ = state["exit"] or {}
    for failure in state["failures"]:
        if failure["rank"] == exit_.get("failed_rank") and failure.get("attempt") == exit_.get("attempt"):
            return failure
    return min(state["failures"], key=lambda f: f["rank"])


def _what_failed(state):
    """What the last failed attempt's task 0 and proxies said, for the driver's error."""
    exit_ = state["exit"]
    if exit_ is None:
        return ""
    said = exit_.get("mpiexec_said", []) + [line for p in state["proxies"] for line in p.get("said", [])]
    said_text = "".join(f"\n    {line}" for line in said if line.strip())
    if exit_.get("ranks_reported", 0) == 0 and exit_.get("failed_rank") is None:
        what = (f" (mpiexec exit status {exit_['status']}: the MPI job never started its ranks"
                f"{'; mpiexec and the proxies said:' + said_text if said_text else ''})")
    elif exit_.get("failed_rank") is not None:
        status = exit_["failed_status"]
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        what = f" (rank {exit_['failed_rank']} {how} without reporting an exception)"
    else:
        what = (f" (mpiexec exit status {exit_['status']}: "
                f"{exit_['ranks'] - exit_['ranks_reported']} rank(s) ended without an exit record)")
    return what


def run(fn, args=(), kwargs=None, num_proc=None, start_timeout=120, env=None, verbose=True, df=None, spark=None):
    """Run fn(*args, **kwargs) on num_proc ranks inside a Spark barrier stage; return every
    rank's value, in rank order.

    num_proc defaults to spark.default.parallelism. A failed attempt is retried as a whole (a new
    barrier stage attempt, a new MPI job) until spark.stage.maxConsecutiveAttempts attempts have
    failed, except an ImportError, which would fail the same way every time: it ends the job at
    once. Every rank's output reaches the driver while
    the job runs, prefixed with the rank (verbose=False keeps it quiet). If a rank raises, this
    raises ringtrain.RemoteError with that rank and its traceback. If the stage cannot get
    num_proc task slots within start_timeout seconds, it is cancelled with a clear error.
    With df (a DataFrame), each rank reads its share of the rows through
    ringtrain.spark.partition()."""
    from pyspark.sql import SparkSession

    spark = spark or SparkSession.getActiveSession()
    if spark is None:
        raise RingtrainError("ringtrain.spark.run needs an active SparkSession (SparkSession.builder...getOrCreate())")
    sc = spark.sparkContext
    num_proc = int(num_proc or sc.defaultParallelism)
    if num_proc < 1:
        raise ValueError(f"num_proc={num_proc} must be at least 1")
    secret = secrets.token_bytes(32)
    job_id = secrets.token_hex(8)
    state = {"started": set(), "failures": [], "exit": None, "proxies": [], "failed_attempts": set()}
    lock = threading.Lock()
    max_attempts = _stage_max_attempts(sc)
    group = f"ringtrain-{job_id}"

    def on_message(message, _data=b"", _reply=None):
        if message.get("job") != job_id:
            return
        kind = message.get("type")
        with lock:
            if kind == "started":
                state["started"].add(message["task"])
            elif kind == "failure":
                state["failures"].append(message)
            elif kind == "exit":
                state["exit"] = message
            elif kind == "proxy":
                state["proxies"].append(message)
            if kind in ("failure", "exit"):
                state["failed_attempts"].add(message.get("attempt", 0))
                deterministic = kind == "failure" and message.get("type_name") in DETERMINISTIC_FAILURES
                if deterministic:
                    state["deterministic"] = True
                if deterministic or len(state["failed_attempts"]) >= max_attempts:
                    # no retry: Spark would only repeat the same failure (or has used its attempts)
                    threading.Thread(target=sc.cancelJobGroup, args=(group,), daemon=True).start()
        if kind == "log" and verbose:
            stream = sys.stdout if message["stream"] == "stdout" else sys.stderr
            stream.write(f"[{message['rank']}]: {message['line']}\n")
            stream.flush()

    driver_host = sc.getConf().get("spark.driver.host") or socket.gethostname()
    # listen on the address the executors reach the driver at, not on every interface
    receiver = Server(secret, on_message, host=socket.gethostbyname(driver_host))
    job = {"id": job_id, "driver": [driver_host, receiver.address[1]], "env": dict(env or {}), "dataframe": df is not None}
    rdd = df.repartition(num_proc).rdd if df is not None else sc.parallelize(range(num_proc), num_proc)
    # The barrier stage feeds a shuffle instead of being the job's last stage: Spark retries a
    # failed barrier *shuffle-map* stage as a whole (new attempt, all tasks, fresh MPI job), while
    # a failed barrier result stage just fails the job (SPARK-25161).
    stage = (rdd.barrier().mapPartitions(barrier_task(job, secret, dumps_call(fn, args, kwargs)))
             .partitionBy(1))
    outcome = {}

    def collect():
        sc.setJobGroup(group, f"ringtrain.spark.run: {num_proc} ranks", interruptOnCancel=True)
        try:
            outcome["records"] = stage.collect()
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=collect, name="ringtrain-spark-job", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    try:
        while thread.is_alive():
            thread.join(0.1)
            if thread.is_alive() and len(state["started"]) < num_proc and time.monotonic() > deadline:
                sc.cancelJobGroup(group)
                thread.join(60)
                raise RingtrainError(
                    f"only {len(state['started'])} of {num_proc} barrier tasks started within {start_timeout:g} s: "
                    f"the job needs {num_proc} free task slots at once (this Spark has "
                    f"spark.default.parallelism={sc.defaultParallelism}); lower num_proc or free executors")
        time.sleep(0.2)  # the last log lines may still be in flight
    finally:
        receiver.close()
    if "error" in outcome and state["failures"]:
        first = _first_failure(state)
        message = first["message"]
        if state.get("deterministic"):
            message += " (not retried: an import error repeats on every attempt)"
        raise RemoteError(first["rank"], first["type_name"], message, first["traceback"])
    if "error" in outcome:
        if "No module named 'ringtrain'" in str(outcome["error"]):
            raise RingtrainError("Spark's Python workers cannot import ringtrain: point PYSPARK_PYTHON (or "
                                 "spark.pyspark.python) at a Python that has ringtrain installed, e.g. "
                                 f"{sys.executable}") from None
        reason = str(outcome["error"]).strip().splitlines()
        detail = next((line for line in reason if "ringtrain:" in line or "Barrier" in line), reason[0] if reason else "")
        raise RingtrainError(f"the Spark barrier stage failed{_what_failed(state)}: {detail.strip()}") \
            from outcome["error"]
    if state["failed_attempts"] and verbose:  # an earlier attempt failed and Spark retried the stage
        if state["failures"]:
            first = _first_failure(state)
            what = f"rank {first['rank']}: {first['type_name']}: {first['message']}"
        else:  # killed without a word: what task 0 saw
            what = _what_failed(state).strip(" ()") or "no rank reported why"
        sys.stderr.write(f"ringtrain.spark: an attempt failed ({what}); Spark retried the whole stage and it "
                         f"succeeded\n")
    # Spark's collect delivered these (its own channel); they were pickled by our ranks.
    values = dict((rank, pickle.loads(data)) for rank, data in outcome["records"])
    missing = sorted(set(range(num_proc)) - set(values))
    if missing:
        raise RingtrainError(f"ranks {missing} returned no result")
    return [values[r][1] for r in range(num_proc)]
