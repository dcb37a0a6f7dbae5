"""The one cost model (ringtrain/planner/costs.py), without MPI: the algorithms' terms, shared
memory and the hierarchical allreduce, and the sparse chooser's estimates."""
import math

import pytest

from ringtrain.planner.costs import Network, ring_terms
from ringtrain.sparse import CostModel, choose_method, set_cost_model

MB = 1 << 20


def shm_network(ranks_per_host=2):
    # alpha 10 us, beta 1 ns/B, gamma 0.5 ns/B; shared memory 20 us + 0.25 ns/B
    return Network(ranks=2, alpha=10e-6, beta=1e-9, gamma=0.5e-9, copy=0.1e-9, round_seconds=30e-6,
                   tensor_seconds=2e-6, step_overhead=0.0, step_tensor_overhead=0.0,
                   small_allreduce_threshold=8 << 10, segment_bytes=MB, fusion_threshold=64 * MB,
                   ranks_per_host=ranks_per_host, shm_alpha=20e-6, shm_beta=0.25e-9)


def test_inside_one_host_large_allreduces_cost_what_shared_memory_costs():
    network = shm_network()
    assert network.allreduce_seconds(16 * MB, 2) == pytest.approx(20e-6 + 16 * MB * 0.25e-9)
    # at or under the small threshold, recursive doubling still runs: one exchange of n bytes
    assert network.allreduce_seconds(4096, 2) == pytest.approx(10e-6 + 4096 * 1e-9 + 4096 * 0.5e-9)


def test_across_hosts_each_local_rank_carries_its_region_over_a_ring_of_hosts():
    network = shm_network(ranks_per_host=2)
    n = 16 * MB
    messages, sent, reduced = ring_terms(n // 2, 2, MB)  # 2 hosts, a region of n/2 bytes each
    expected = 20e-6 + n * 0.25e-9 + messages * 10e-6 + sent * 1e-9 + reduced * 0.5e-9
    assert network.allreduce_seconds(n, 4) == pytest.approx(expected)


def test_without_a_shared_memory_measurement_the_ring_is_the_model():
    network = Network(2, 10e-6, 1e-9, 0.5e-9, 0.1e-9, 0.0, 0.0, 0.0, 0.0, 8 << 10, MB, 64 * MB)
    messages, sent, reduced = ring_terms(16 * MB, 2, MB)
    assert network.allreduce_seconds(16 * MB, 2) == pytest.approx(messages * 10e-6 + sent * 1e-9 + reduced * 0.5e-9)


def test_the_small_threshold_advice_compares_doubling_with_the_path_that_would_run():
    # shared memory's fixed cost is low: doubling stops paying off early
    assert shm_network().small_allreduce_crossover(2) < 64 << 10
    slow_shm = Network(2, 10e-6, 1e-9, 0.5e-9, 0.1e-9, 0.0, 0.0, 0.0, 0.0, 8 << 10, MB, 64 * MB,
                       ranks_per_host=2, shm_alpha=1e-3, shm_beta=0.25e-9)
    assert slow_shm.small_allreduce_crossover(2) > shm_network().small_allreduce_crossover(2)


def old_rates_estimate(nnz_per_rank, num_rows, row_bytes, p, latency=50e-6, bandwidth=2e9, memory=5e9):
    """The sparse chooser's own model before it became a Network, formula for formula."""
    total, busiest = float(sum(nnz_per_rank)), float(max(nnz_per_rank))
    pair = row_bytes + 8
    distinct = num_rows * -math.expm1(-total / num_rows)
    dense_bytes = num_rows * row_bytes
    share = (p - 1) / p
    return {
        "dense": latency + 2 * share * dense_bytes / bandwidth + 2 * dense_bytes / memory,
        "allgather": 2 * latency + share * total * pair / bandwidth + total * pair / memory,
        "owner": 4 * latency + share * (busiest + distinct) * pair / bandwidth
        + (4 * 2 * busiest + distinct) * pair / memory,
    }


@pytest.mark.parametrize("nnz,rows,row_bytes,p", [([1000, 1000], 100_000, 512, 2), ([90_000] * 4, 100_000, 512, 4),
                                                  ([2, 2], 100_000, 512, 2), ([2000] * 64, 100_000, 512, 64),
                                                  ([0, 5, 17], 1000, 64, 3)])
def test_three_rates_give_the_estimates_the_chooser_always_made(nnz, rows, row_bytes, p):
    estimates = CostModel(latency=50e-6, bandwidth=2e9, memory_bandwidth=5e9).sparse_allreduce_seconds(nnz, rows,
                                                                                                       row_bytes, p)
    for method, seconds in old_rates_estimate(nnz, rows, row_bytes, p).items():
        assert estimates[method] == pytest.approx(seconds, rel=1e-12), method


def test_the_chooser_picks_by_density_overlap_and_size():
    model = CostModel()
    row_bytes = 128 * 4
    # most rows on every rank of 4: the allreduce of the array wins
    assert choose_method(model, [90_000] * 4, 100_000, row_bytes, 4)[0] == "dense"
    # 1% of an embedding per rank: a sparse method, far cheaper than dense
    method, costs = choose_method(model, [1000, 1000], 100_000, row_bytes, 2)
    assert method in ("allgather", "owner") and costs["dense"] > 5 * costs[method]
    # many ranks whose rows overlap: owner sends each distinct row back once, allgather all copies
    assert choose_method(model, [2000] * 64, 100_000, row_bytes, 64)[0] == "owner"
    # tiny gradients: fewest collectives (allgather)
    assert choose_method(model, [2, 2], 100_000, row_bytes, 2)[0] == "allgather"


def test_a_measured_network_changes_the_choice_where_it_should():
    # a slow wire and fast memory favour sending fewer bytes: owner over allgather at 8 ranks of overlapping rows
    slow_link = Network(8, 20e-6, 8e-9, 0.2e-9, 0.05e-9, 40e-6, 2e-6, 0.0, 0.0, 8 << 10, MB, 64 * MB)
    assert choose_method(slow_link, [20_000] * 8, 100_000, 512, 8)[0] == "owner"


def test_set_cost_model_takes_a_network_and_nothing_else():
    with pytest.raises(TypeError, match="not a ringtrain.planner.costs.Network"):
        set_cost_model({"latency": 1e-5})
    with pytest.raises(ValueError, match="bandwidth=0 must be a positive number"):
        CostModel(bandwidth=0)
