"""Runs the size-agnostic suites (tests/collectives, tests/engine) as real MPI jobs of 2, 3 and 4
ranks. Odd sizes matter: they catch chunking bugs that 2 ranks hide. Each job has a deadline and
is killed whole if it overruns; a failure shows each failing rank's report."""
import os
import re
import sys

import pytest

from ringtrain.launch import find_mpiexec, run_mpiexec

HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE_SECONDS = 600


def failing_ranks(output):
    return sorted(set(re.findall(r"FAILED on rank (\d+)", output)))


@pytest.mark.parametrize("suite,ranks", [(suite, ranks) for suite in ("collectives", "engine", "training")
                                         for ranks in (2, 3, 4)] + [("collectives without shared memory", 3),
                                                                    ("collectives without shared memory, odd segments", 3)])
def test_suite_under_mpiexec(suite, ranks):
    """The ranks share this host, so the collectives go through shared memory; the collectives
    run once more with it off, for the ring, the tree and recursive doubling over MPI, and once
    with ring segments of an odd number of bytes (a fusion group's ring packs and unpacks its
    tensors segment by segment, and segments then cut across tensors and elements)."""
    find_mpiexec()  # a missing MPI is an error that says what to install, not a skip
    run = run_mpiexec(
        ranks,
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "faulthandler_timeout=120",
         os.path.join(HERE, "distributed", suite.split()[0])],
        timeout=DEADLINE_SECONDS,
        env=dict(os.environ, PYTHONUNBUFFERED="1",
                 **({"RINGTRAIN_SHARED_MEMORY": "0"} if "without" in suite else {}),
                 **({"RINGTRAIN_SEGMENT_BYTES": "1003"} if "odd segments" in suite else {})),
    )
    if run.timed_out:
        pytest.fail(f"mpiexec -n {ranks} did not finish within {DEADLINE_SECONDS}s and was killed; "
                    f"last output:\n{run.output[-6000:]}")
    assert run.returncode == 0, (
        f"mpiexec -n {ranks} exited with {run.returncode}; failing ranks: {failing_ranks(run.output) or 'unknown'}\n"
        f"{run.output[-8000:]}"
    )
    silent = [rank for rank in range(ranks) if not re.search(r"^\d+ passed", run.rank_output(rank), re.M)]
    assert not silent, f"no pytest summary from ranks {silent}:\n{run.output[-3000:]}"


def test_a_hung_job_is_killed_with_every_process():
    """The runner itself: a deadline kills mpiexec, its proxies and all ranks."""
    import psutil  # in the [test] extra
    marker = "ringtrain-hang-marker-7d1f"
    run = run_mpiexec(3, [sys.executable, "-c", f"import time; time.sleep(300)  # {marker}"], timeout=3)
    assert run.timed_out and run.returncode is None
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"processes survived the kill: {leftovers}"
