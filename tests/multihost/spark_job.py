"""A Spark driver on h1 of the emulated cluster, for test_multihost.py.

    python spark_job.py MASTER_URL SCENARIO [ARG]

Scenarios: layout (ringtrain.spark.run and @rt.distributed(backend="spark") on 4 ranks), fail
(rank 3, on h2, raises), feed (a DataFrame with uneven partitions), killed (rank 3 is killed
with SIGKILL in the first attempt; ARG is a flag file on a shared path), launch (ARG trivial
jobs of 4 ranks, timed; ARG2 ranks if given). Prints one JSON line with what happened."""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ringtrain as rt  # noqa: E402
import ringtrain.spark  # noqa: E402
from layout_job import check_layout_and_collectives  # noqa: E402


def spark_session(master):
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(master).appName("ringtrain-multihost")
             .config("spark.driver.host", os.environ.get("RINGTRAIN_DRIVER_HOST", "h1"))
             .config("spark.ui.enabled", "false").config("spark.executor.cores", "2")
             .config("spark.cores.max", "4").config("spark.executor.memory", "1g")
             # the executors import this test's modules as a user's would ship them (pyFiles)
             .config("spark.executorEnv.PYTHONPATH", os.path.dirname(os.path.abspath(__file__)))
             .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def killed_in_first_attempt(flag):
    if rt.rank() == 3 and not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return check_layout_and_collectives()


def rows_of_my_partition():
    count = total = 0
    for batch in ringtrain.spark.partition():
        count += len(batch["x"])
        total += int(batch["x"].sum())
    return {"rank": rt.rank(), "rows": count, "sum": total}


def trivial():
    import numpy as np

    return float(rt.allreduce(np.ones(1), op=rt.Sum, name="trivial")[0])


def main(master, scenario, arg=None, ranks="4"):
    spark = spark_session(master)
    out = {}
    try:
        if scenario == "layout":
            out["run"] = ringtrain.spark.run(check_layout_and_collectives, num_proc=4)

            @rt.distributed(np=4, backend="spark", all_ranks=True)
            def decorated():
                return check_layout_and_collectives()

            out["decorated"] = decorated()
        elif scenario == "fail":
            try:
                ringtrain.spark.run(check_layout_and_collectives, num_proc=4, env={"RINGTRAIN_TEST_FAIL_RANK": "3"})
            except rt.RemoteError as exc:
                out = {"rank": exc.rank, "type_name": exc.type_name, "traceback": exc.remote_traceback}
        elif scenario == "feed":
            sizes = [1, 9, 0, 23, 4, 2, 7]  # uneven, and more input partitions than ranks
            rows = [(i,) for i in range(sum(sizes))]
            df = spark.createDataFrame(rows, ["x"]).coalesce(len(sizes))
            out["ranks"] = ringtrain.spark.run(rows_of_my_partition, num_proc=4, df=df)
            out["expected_rows"], out["expected_sum"] = len(rows), sum(r[0] for r in rows)
        elif scenario == "killed":
            out["run"] = ringtrain.spark.run(killed_in_first_attempt, args=(arg,), num_proc=4)
        elif scenario == "launch":
            times, n = [], int(ranks)
            for i in range(int(arg)):
                started = time.perf_counter()
                assert ringtrain.spark.run(trivial, num_proc=n, verbose=False) == [float(n)] * n
                times.append(time.perf_counter() - started)
                print(f"launch {i + 1}/{arg}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
            out["seconds"] = times
    finally:
        spark.stop()
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
