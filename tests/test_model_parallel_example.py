"""examples/model_parallel_digits.py really learns, with the hidden layer split across ranks,
alone (2 ranks: one copy in 2 slices) and combined with data parallelism (4 ranks: 2 x 2)."""
import os
import re
import sys

import pytest

from ringtrain.launch import run_mpiexec

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "model_parallel_digits.py")
DEADLINE_SECONDS = 300


@pytest.mark.parametrize("ranks, epochs, grid", [(2, 30, "1 copies x 2 slices"), (4, 8, "2 copies x 2 slices")])
def test_model_parallel_example_learns(ranks, epochs, grid):
    run = run_mpiexec(ranks, [sys.executable, EXAMPLE, "--epochs", str(epochs)], timeout=DEADLINE_SECONDS,
                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert not run.timed_out, f"killed after {DEADLINE_SECONDS}s:\n{run.output[-3000:]}"
    assert run.returncode == 0, run.output[-3000:]
    out = run.rank_output(0)
    assert len(re.findall(r"^epoch +\d+/", out, re.M)) == epochs, out
    found = re.search(r"final held-out accuracy: ([0-9.]+) \((.*?)\); copies in sync: (\w+)", out)
    assert found, out
    assert float(found.group(1)) >= (0.95 if epochs >= 30 else 0.9), out
    assert found.group(2) == grid and found.group(3) == "True", out
