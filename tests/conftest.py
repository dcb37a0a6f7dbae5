"""Shared by the whole suite: the header names the versions of the core dependencies that this
run resolved, so a failure caused by a new release is obvious from the log."""
import importlib.metadata

CORE_DEPENDENCIES = ("mpi4py", "mpich", "numpy", "numba", "pyspark", "cloudpickle", "ml_dtypes", "torch")


def pytest_report_header(config):
    versions = []
    for name in CORE_DEPENDENCIES:
        try:
            versions.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "ringtrain dependencies: " + " ".join(versions)
