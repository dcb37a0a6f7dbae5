"""Runs the collective tests on however many ranks this process is one of: in a plain pytest
run that is 1; under tests/test_under_mpiexec.py it is 2, 3 or 4.

Under MPI a failing test on one rank would leave the others waiting in their next collective,
so the first failure prints its report and aborts the whole job: the parent test sees the
failure and every rank's output at once, never a hang."""
import sys

import pytest

import ringtrain as rt


@pytest.fixture(scope="session", autouse=True)
def ringtrain_job():
    rt.init()
    yield
    rt.shutdown()


def pytest_runtest_logreport(report):
    if report.failed and rt.is_initialized() and rt.size() > 1:
        sys.stderr.write(f"\nFAILED on rank {rt.rank()}: {report.nodeid}\n{report.longreprtext}\n")
        sys.stderr.flush()
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)
