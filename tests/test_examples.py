"""The README's example really learns when trained on 2 ranks."""
import os
import re
import sys

from ringtrain.launch import run_mpiexec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_digits_example_learns_on_two_ranks():
    run = run_mpiexec(2, [sys.executable, os.path.join(ROOT, "examples", "train_digits.py")], timeout=600,
                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert run.ok, run.output[-4000:]
    assert "training on 2 rank(s)" in run.output
    assert len(re.findall(r"epoch +\d+/\d+ +loss", run.output)) >= 5, "progress was not printed each few epochs"
    accuracy = float(re.search(r"final held-out accuracy: ([0-9.]+)", run.output).group(1))
    assert accuracy >= 0.95, run.output[-2000:]
