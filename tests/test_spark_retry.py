"""Spark's retry of a failed barrier stage restarts the whole MPI job (spark.task.maxFailures)."""
import os

import pytest

import ringtrain as rt
from test_spark import spark_session


@pytest.fixture(scope="module")
def spark_with_retries():
    session = spark_session("local[2,2]")  # spark.task.maxFailures = 2
    yield session
    session.stop()


def flaky(flag):
    if rt.rank() == 1 and not os.path.exists(flag):
        open(flag, "w").close()
        raise RuntimeError("the first attempt fails")
    return rt.rank(), rt.size()


def test_a_failed_attempt_is_retried_as_a_whole_job(spark_with_retries, capsys, tmp_path):
    import ringtrain.spark

    flag = os.path.join(tmp_path, "failed-once")
    assert ringtrain.spark.run(flaky, args=(flag,), num_proc=2) == [(0, 2), (1, 2)]
    assert "Spark retried the whole stage and it succeeded" in capsys.readouterr().err


def test_attempts_stop_at_max_failures(spark_with_retries):
    import ringtrain.spark

    def always_fails():
        raise RuntimeError(f"rank {rt.rank()} always fails")

    # either rank may be reported: the first to fail can end the job before the other writes its error
    with pytest.raises(rt.RemoteError, match=r"rank (\d) raised RuntimeError: rank \1 always fails"):
        ringtrain.spark.run(always_fails, num_proc=2)
