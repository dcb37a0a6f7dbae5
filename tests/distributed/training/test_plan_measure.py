"""measure_network() under however many ranks run this file: one fit, the same on every rank."""
import numpy as np
import pytest

import ringtrain as rt
from ringtrain.planner.costs import Network
from ringtrain.planner.measure import measure_network
from ringtrain.runtime import current


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
                     network.step_overhead, network.step_tensor_overhead, network.shm_alpha, network.shm_beta])
    assert (rt.allgather(mine[None]) == mine).all()
    kinds = {what.split(" of ")[0] for what, *_ in network.samples}
    expected = {"recursive doubling allreduce", "ring allreduce", "ring allgather", "engine step",
                "DistributedOptimizer step"}
    # a job on one host with shared memory (the default) also fits the shared-memory allreduce
    one_host = current("test").engine.sets[0].shared_memory == "one host"
    assert kinds == expected | ({"shared-memory allreduce"} if one_host else set())
    if one_host:
        assert network.ranks_per_host == rt.size() and network.shm_beta > 0
        assert network.allreduce_seconds(16 << 20, rt.size()) == network.shm_alpha + (16 << 20) * network.shm_beta
    # collectives still work afterwards: the measurement's communicator is gone, the engine's names do not clash
    assert rt.allreduce(np.ones(3), op=rt.Sum).tolist() == [rt.size()] * 3
