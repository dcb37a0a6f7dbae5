"""Shared by the whole suite: the header names the versions of the core dependencies that this
run resolved, so a failure caused by a new release is obvious from the log."""
import importlib.metadata

import pytest

CORE_DEPENDENCIES = ("mpi4py", "mpich", "numpy", "numba", "pyspark", "cloudpickle", "ml_dtypes", "torch")


def pytest_report_header(config):
    versions = []
    for name in CORE_DEPENDENCIES:
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "ringtrain dependencies: " + " ".join(versions)


@pytest.fixture(scope="session")
def cluster():
    """Three emulated hosts (h1, h2, h3) for the whole session, removed at its end. Not root: the
    tests that need them fail and say why (CI runs as root)."""
    from emulated_hosts import EmulatedCluster, NotRoot

    try:
        made = EmulatedCluster(3)
    except NotRoot as exc:
        pytest.fail(str(exc))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="session")
def spark_standalone(cluster):
    """A Spark standalone master on h1 and a worker (2 cores) on h1 and on h2, for the session."""
    from emulated_hosts import SparkStandalone

    made = SparkStandalone(cluster, hosts=["h1", "h2"])
    try:
        yield made
    finally:
        made.close()
