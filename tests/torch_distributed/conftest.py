"""The torch suite runs under the same job fixture and abort-on-failure hook as the numpy suites
(tests/distributed/conftest.py), loaded from there rather than copied."""
import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")

_spec = importlib.util.spec_from_file_location(
    "ringtrain_distributed_conftest", os.path.join(os.path.dirname(__file__), os.pardir, "distributed", "conftest.py"))
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

ringtrain_job = _shared.ringtrain_job
pytest_runtest_logreport = _shared.pytest_runtest_logreport
