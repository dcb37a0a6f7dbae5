"""measure_network() under however many ranks run this file: one fit, the same on every rank."""
import numpy as np
import pytest

import ringtrain as rt
from ringtrain.planner.costs import Network
from ringtrain.planner.measure import measure_network


def test_measure_network_fits_the_job_it_runs_on():
    if rt.size() == 1:
        with pytest.raises(ValueError, match="at least 2 ranks"):
            measure_network()
        return
    network = measure_network(repeats=3, warmup_seconds=0.0)
    assert isinstance(network, Network) and network.ranks == rt.size()
    # each coefficient is at least 0 (a noisy fit may pin one at 0), and the model prices bytes
    assert min(network.alpha, network.beta, network.gamma, network.round_seconds, network.tensor_seconds) >= 0
    assert network.copy > 0 and network.step_tensor_overhead >= 0
    assert network.allreduce_seconds(16 << 20, rt.size()) > network.allreduce_seconds(64 << 10, rt.size()) > 0
    # every timing was the slowest rank's, so every rank fitted the same numbers
    mine = np.array([network.alpha, network.beta, network.gamma, network.round_seconds, network.tensor_seconds,
                     network.step_overhead, network.step_tensor_overhead])
    assert (rt.allgather(mine[None]) == mine).all()
    kinds = {what.split(" of ")[0] for what, *_ in network.samples}
    assert kinds == {"recursive doubling allreduce", "ring allreduce", "ring allgather", "engine step",
                     "DistributedOptimizer step"}
    # collectives still work afterwards: the measurement's communicator is gone, the engine's names do not clash
    assert rt.allreduce(np.ones(3), op=rt.Sum).tolist() == [rt.size()] * 3
