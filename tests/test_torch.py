"""ringtrain.torch: the size-agnostic torch suite (tests/torch_distributed) as real MPI jobs of 2
and 3 ranks, each with a deadline (the in-process, one-rank run is pytest's own collection of
that directory); the core never imports torch; the Horovod digits script learns under `ringtrain
run` with horovodrun flags at 2 and 3 ranks as well as on one process."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from ringtrain.launch import find_mpiexec, run_mpiexec  # noqa: E402
from test_under_mpiexec import DEADLINE_SECONDS, failing_ranks  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _run_job(ranks, argv, cwd=None):
    find_mpiexec()  # a missing MPI is an error that says what to install, not a skip
    run = run_mpiexec(ranks, argv, timeout=DEADLINE_SECONDS, cwd=cwd,
                      env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    if run.timed_out:
        pytest.fail(f"mpiexec -n {ranks} did not finish within {DEADLINE_SECONDS}s and was killed; "
                    f"last output:\n{run.output[-6000:]}")
    assert run.returncode == 0, (f"mpiexec -n {ranks} exited with {run.returncode}; failing ranks: "
                                 f"{failing_ranks(run.output) or 'unknown'}\n{run.output[-8000:]}")
    return run


@pytest.mark.parametrize("ranks", [2, 3])
def test_torch_suite_under_mpiexec(ranks):
    run = _run_job(ranks, [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-o", "faulthandler_timeout=120", os.path.join(HERE, "torch_distributed")])
    silent = [rank for rank in range(ranks) if not re.search(r"^\d+ passed", run.rank_output(rank), re.M)]
    assert not silent, f"no pytest summary from ranks {silent}:\n{run.output[-3000:]}"


def test_core_never_imports_torch():
    code = "import sys, ringtrain, ringtrain.collectives, ringtrain.train.distributed_optimizer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


HOROVODRUN_FLAGS = ["--fusion-threshold-mb", "32", "--cycle-time-ms", "2", "--cache-capacity", "2048",
                    "--no-stall-check", "--start-timeout", "60", "--log-level", "warning"]


def _final_accuracy(out, ranks):
    assert len(re.findall(r"epoch +\d+/20 +loss", out)) == 20, out[-2000:]
    return float(re.search(rf"final held-out accuracy: ([0-9.]+) \({ranks} ranks\)", out).group(1))


@pytest.fixture(scope="module")
def one_process_accuracy():
    """The Horovod script on one process, no launcher: hvd.init() makes a job of one."""
    run = subprocess.run([sys.executable, "torch_digits_distributed.py"], cwd=os.path.join(ROOT, "examples"),
                         capture_output=True, text=True, timeout=DEADLINE_SECONDS,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    return _final_accuracy(run.stdout, 1)


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_horovod_digits_script_under_ringtrain_run_with_horovodrun_flags(ranks, one_process_accuracy):
    """examples/torch_digits_distributed.py is a horovod.torch script but for its import line;
    launched like horovodrun, it learns as well as on one process (within 1 point)."""
    find_mpiexec()
    run = subprocess.run([sys.executable, "-m", "ringtrain", "run", "-np", str(ranks), *HOROVODRUN_FLAGS,
                          "python", "torch_digits_distributed.py"], cwd=os.path.join(ROOT, "examples"),
                         capture_output=True, text=True, timeout=DEADLINE_SECONDS,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = _final_accuracy("\n".join(line.split(": ", 1)[1] for line in run.stdout.splitlines()
                                         if line.startswith("[0]: ")), ranks)
    assert accuracy >= 0.95 and abs(accuracy - one_process_accuracy) <= 0.01, (accuracy, one_process_accuracy)
