"""ringtrain.spark with real pyspark barrier stages in local[2] and local[3]."""
import os
import shutil
import sys
import time

import numpy as np
import psutil
import pytest

import ringtrain as rt
from ringtrain.errors import RingtrainError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))


def spark_session(master, **conf):
    if shutil.which("java") is None:
        pytest.fail("Spark needs Java, which is missing: install Java 17 (apt-get install openjdk-17-jre-headless)")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers must import ringtrain
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(master).appName("ringtrain-tests").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4"))
    for key, value in conf.items():
        spark = spark.config(key.replace("_", "."), value)
    spark = spark.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@pytest.fixture(scope="module", params=["local[2]", "local[3]"])
def spark(request):
    session = spark_session(request.param)
    yield session
    session.stop()


def slots(spark):
    return spark.sparkContext.defaultParallelism


def test_results_in_rank_order_and_allreduce_equals_numpy(spark, capsys):
    import ringtrain.spark

    n = slots(spark)

    def fn(scale):
        data = np.random.default_rng(rt.rank()).standard_normal(1001)
        print(f"rank {rt.rank()} reporting", flush=True)
        return rt.rank(), rt.size(), rt.allreduce(data * scale, op=rt.Sum)

    results = ringtrain.spark.run(fn, args=(2.0,), num_proc=n)
    expected = sum(np.random.default_rng(q).standard_normal(1001) * 2.0 for q in range(n))
    assert [r[:2] for r in results] == [(q, n) for q in range(n)]
    for _, _, total in results:
        np.testing.assert_allclose(total, expected, rtol=1e-12)
    out = capsys.readouterr().out
    for q in range(n):  # every rank's output reached the driver, with its rank
        assert f"[{q}]: rank {q} reporting" in out


def test_a_rank_that_raises_fails_the_job_with_its_traceback(spark):
    import ringtrain.spark

    def fn():
        if rt.rank() == 1:
            raise ValueError("bad shard on rank one")
        rt.barrier()

    with pytest.raises(rt.RemoteError) as info:
        ringtrain.spark.run(fn, num_proc=slots(spark))
    assert info.value.rank == 1 and "ValueError: bad shard on rank one" in str(info.value)
    assert 'raise ValueError("bad shard on rank one")' in info.value.remote_traceback


def test_a_failed_rank_ends_the_job_even_when_hydra_does_not_notice(spark):
    import ringtrain.spark

    def fn():
        import subprocess
        if rt.rank() == 1:
            # a helper process holding the rank's output open: hydra then never ends the job
            # (plain mpiexec waits for ever), so only ringtrain's own watchdog can stop rank 0
            subprocess.Popen(["sleep", "75"], close_fds=False)  # outlasts the bound below, then ends
            raise ValueError("bad shard on rank one")
        rt.barrier()

    started = time.monotonic()
    with pytest.raises(rt.RemoteError) as info:
        ringtrain.spark.run(fn, num_proc=slots(spark))
    assert info.value.rank == 1 and "ValueError: bad shard on rank one" in str(info.value)
    assert time.monotonic() - started < 60


def test_a_rank_that_exits_hard_fails_the_job_and_leaves_no_process(spark):
    import ringtrain.spark

    marker = f"ringtrain-spark-hard-exit-{os.getpid()}"

    def crash():
        import time as t
        if rt.rank() == 0:
            os._exit(3)
        t.sleep(60)

    started = time.monotonic()
    with pytest.raises(RingtrainError, match="the Spark barrier stage failed"):
        ringtrain.spark.run(crash, num_proc=slots(spark), env={"RINGTRAIN_TEST_MARKER": marker})
    assert time.monotonic() - started < 60
    time.sleep(1)
    survivors = [p for p in psutil.process_iter(["environ"]) if _has_marker(p, marker)]
    assert not survivors, f"processes survived: {[p.pid for p in survivors]}"


def _has_marker(process, marker):
    try:
        return (process.info.get("environ") or {}).get("RINGTRAIN_TEST_MARKER") == marker
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def test_too_few_slots_is_a_clear_error_not_a_wait(spark):
    import ringtrain.spark

    started = time.monotonic()
    with pytest.raises(RingtrainError, match=r"free task slots|Barrier|barrier"):
        ringtrain.spark.run(lambda: rt.rank(), num_proc=slots(spark) + 2, start_timeout=10)
    assert time.monotonic() - started < 90


def test_decorator_with_the_spark_backend(spark):
    @rt.distributed(np=2, backend="spark", all_ranks=True)
    def ranks():
        return rt.rank()

    assert ranks() == [0, 1]


def test_dataframe_training_learns(spark):
    import ringtrain.spark
    from spark_submit_digits import digits_dataframe, train

    accuracies = ringtrain.spark.run(train, df=digits_dataframe(spark), num_proc=slots(spark))
    assert len(set(accuracies)) == 1  # one model on every rank
    assert accuracies[0] >= 0.95, accuracies


def test_a_notebook_cell_function_fails_with_its_source_line(spark):
    """A function defined in a notebook-like cell (no file behind it) travels by value; the
    driver's error still shows the line that raised on the rank."""
    import linecache
    import textwrap

    import ringtrain.spark

    name = "<ringtrain-spark-cell>"
    source = textwrap.dedent("""
        def train():
            if rt.rank() == 1:
                raise ValueError("bad shard in a cell")
            rt.barrier()
    """)
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    namespace = {"rt": rt}
    exec(compile(source, name, "exec"), namespace)
    try:
        with pytest.raises(rt.RemoteError) as info:
            ringtrain.spark.run(namespace["train"], num_proc=slots(spark))
    finally:
        linecache.cache.pop(name, None)
    assert f'File "{name}", line 4, in train' in info.value.remote_traceback
    assert 'raise ValueError("bad shard in a cell")' in info.value.remote_traceback
