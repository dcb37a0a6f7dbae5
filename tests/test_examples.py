"""The examples really learn: the distributed script on 2 ranks reaches the single-process
script's held-out accuracy (at least 95%), and so does the decorator version."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def final_accuracy(output):
    return float(re.search(r"final held-out accuracy: ([0-9.]+)", output).group(1))


def run(*argv):
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_distributed_matches_single_process_accuracy(model):
    single = run(sys.executable, os.path.join(EXAMPLES, "digits_single.py"), "--model", model)
    distributed = run(sys.executable, "-m", "ringtrain", "run", "-np", "2", "python",
                      os.path.join(EXAMPLES, "digits_distributed.py"), "--model", model)
    assert len(re.findall(r"\[0\]: epoch +\d+/30 +loss", distributed)) == 30, "rank 0 did not report each epoch"
    assert not re.findall(r"\[1\]: epoch", distributed), "only rank 0 reports"
    a, b = final_accuracy(single), final_accuracy(distributed)
    assert a >= 0.95 and b >= 0.95, (a, b)
    assert abs(a - b) <= 0.02, f"single {a:.4f} vs 2 ranks {b:.4f}"


def test_decorator_example_from_the_repository_root():
    out = run(sys.executable, os.path.join(EXAMPLES, "digits_decorator.py"))
    accuracy = float(re.search(r"decorator returned rank 0's held-out accuracy: ([0-9.]+)", out).group(1))
    assert accuracy >= 0.95
