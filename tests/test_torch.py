"""ringtrain.torch: the size-agnostic torch suite (tests/torch_distributed) as real MPI jobs of 2
and 3 ranks, each with a deadline (the in-process, one-rank run is pytest's own collection of
that directory); the core never imports torch; the torch digits example learns on 2 ranks."""
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
    code = "import sys, ringtrain, ringtrain.collectives, ringtrain.training; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_torch_digits_example_reaches_95_percent_on_2_ranks():
    run = _run_job(2, [sys.executable, os.path.join(ROOT, "examples", "torch_digits_distributed.py")],
                   cwd=os.path.join(ROOT, "examples"))
    out = run.rank_output(0)
    assert len(re.findall(r"epoch +\d+/20 +loss", out)) == 20, out[-2000:]
    accuracy = float(re.search(r"final held-out accuracy: ([0-9.]+) \(2 ranks\)", out).group(1))
    assert accuracy >= 0.95, out[-2000:]
