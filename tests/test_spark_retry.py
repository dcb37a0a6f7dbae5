"""Spark's retry of a failed barrier stage restarts the whole MPI job, up to
spark.stage.maxConsecutiveAttempts attempts; an import error is not retried."""
import os

import pytest

import ringtrain as rt
from test_spark import spark_session


@pytest.fixture(scope="module")
def spark_with_retries():
    # barrier stages ignore spark.task.maxFailures: their attempts are counted by the stage
    session = spark_session("local[2]", spark_stage_maxConsecutiveAttempts="2")
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


def test_attempts_stop_at_max_consecutive_attempts(spark_with_retries, tmp_path):
    import ringtrain.spark

    tries = tmp_path / "tries"

    def always_fails():
        with open(tries, "a") as f:
            f.write(f"{rt.rank()}\n")
        raise RuntimeError(f"rank {rt.rank()} always fails")

    # either rank may be reported: the first to fail can end the job before the other writes its error
    with pytest.raises(rt.RemoteError, match=r"rank (\d) raised RuntimeError: rank \1 always fails"):
        ringtrain.spark.run(always_fails, num_proc=2)
    assert tries.read_text().split().count("0") == 2  # rank 0 ran once per attempt: two attempts


def test_an_import_error_on_the_executors_fails_at_once_naming_their_python(spark_with_retries, tmp_path):
    import sys

    import ringtrain.spark

    tries = tmp_path / "tries"

    def needs_a_missing_module():
        with open(tries, "a") as f:
            f.write(f"{rt.rank()}\n")
        import ringtrain_no_such_module  # noqa: F401

    with pytest.raises(rt.RemoteError) as caught:
        ringtrain.spark.run(needs_a_missing_module, num_proc=2)
    text = str(caught.value)
    assert "raised ModuleNotFoundError: No module named 'ringtrain_no_such_module'" in text
    assert f"Python {sys.executable}" in text and "sys.path [" in text
    assert "not retried: an import error repeats on every attempt" in text
    assert tries.read_text().split().count("0") == 1  # one attempt, not spark.stage.maxConsecutiveAttempts


def train_on_spark(elastic_dir, fail_flag=None):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "elastic"))
    os.environ["RINGTRAIN_ELASTIC_DIR"] = elastic_dir
    from train import train_steps

    return train_steps(20, 3, fail_once=(11, 1, fail_flag) if fail_flag else None).tobytes().hex()


def test_a_stage_retry_resumes_from_the_last_commit(spark_with_retries, tmp_path, capsys):
    import ringtrain.spark

    plain = ringtrain.spark.run(train_on_spark, args=(str(tmp_path / "plain"),), num_proc=2)
    retried = ringtrain.spark.run(train_on_spark, args=(str(tmp_path / "retried"), str(tmp_path / "flag")), num_proc=2)
    assert retried == plain  # steps 10 and 11 recomputed after the retry, from the commit at step 9
    out = capsys.readouterr()
    assert "Spark retried the whole stage and it succeeded" in out.err
    assert "[1]: STARTED at step 9" in out.out  # the retry restored the commit at step 9
    assert "RESUMED" not in out.out  # Spark retries are not launcher restarts: RINGTRAIN_RESTART stays 0
