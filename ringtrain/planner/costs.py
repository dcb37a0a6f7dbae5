"""The one cost model of ringtrain's communication: what the planner (`rt.plan`) predicts with
and what the sparse-gradient chooser (`sparse_allreduce(method="auto")`) decides with.

Model (p ranks, n bytes; S = segment_bytes; one message costs alpha, a byte on the wire beta, a
byte reduced gamma, a byte copied into or out of a fusion buffer `copy`):

    ring allreduce (n > small_allreduce_threshold): reduce-scatter + allgather, each of p-1 steps
        sends one block of n/p bytes cut into ceil(n/(p S)) pipelined segments
        T = 2(p-1) ceil(n/(p S)) alpha + 2(p-1)/p n beta + (p-1)/p n gamma
    recursive doubling (small n): k = floor(log2 p) exchanges of the whole buffer, plus a fold
        in and out when p is not a power of two (r = 1 then, else 0)
        T = (k + 2r)(alpha + n beta) + (k + r) n gamma
    shared memory (one host, n > small_allreduce_threshold, csrc/shm_allreduce.c): copies in,
        a reduction of one slice per rank, copies out, in pieces with flag waits between them;
        measured as a whole on the job's own host: T = shm_alpha + n shm_beta
    hierarchical (several hosts with ranks_per_host = l > 1 each): shared memory inside each
        host, and each local rank's region (n/l bytes) crosses hosts in a ring of one rank per
        host: T = shm_alpha + n shm_beta + ring(n/l, hosts)
    the sparse methods (sparse_allreduce(method="auto")): each collective's call costs an engine
        round and a tensor; bytes as the collectives above move them, and the local work
        (zeroing, scattering, merging rows) at the copy cost per byte
    a training step: the engine's round (a fixed cost plus its 8-byte negotiation allreduce),
        a cost per tensor, then the fusion groups that executor.plan_fusion forms from the
        gradients (the same function the engine uses), each one allreduce plus, for a group of
        several tensors, 2 n copy for packing and unpacking; and what a DistributedOptimizer
        step costs beyond the collectives' model, per byte (`step_overhead`) and per tensor,
        calibrated on two fixed gradient lists. It allreduces out of place, and the new output
        arrays' first touch (page faults) can cost more than the wire on a VM.

Extrapolating to other p assumes the same per-message and per-byte costs, and hosts with the
measured number of ranks each: measure on the machines (and the kind of link) the real job
will use (planner/measure.py)."""
import dataclasses
import math

import numpy as np

from ..engine.executor import plan_fusion

NEGOTIATION_BYTES = 8                      # the engine's per-round bit-vector allreduce
SMALL_CANDIDATES = [1 << s for s in range(6, 23)]                  # 64 B .. 4 MB


def _ring_messages(nbytes, ranks, segment_bytes):
    block = -(-nbytes // ranks)
    return (ranks - 1) * max(1, -(-block // segment_bytes))


def _doubling_steps(ranks):
    """(messages, reductions) of recursive doubling on `ranks` ranks."""
    k = int(math.floor(math.log2(ranks)))
    fold = 1 if ranks > (1 << k) else 0
    return k + 2 * fold, k + fold


def ring_terms(nbytes, ranks, segment_bytes):
    """(messages, bytes sent, bytes reduced) of a ring allreduce, per rank."""
    share = (ranks - 1) / ranks * nbytes
    return 2 * _ring_messages(nbytes, ranks, segment_bytes), 2 * share, share


def allgather_terms(nbytes, ranks, segment_bytes):
    """(messages, bytes sent, bytes reduced) of a ring allgather of n bytes in total."""
    return _ring_messages(nbytes, ranks, segment_bytes), (ranks - 1) / ranks * nbytes, 0.0


def alltoall_terms(busiest_bytes, ranks):
    """(messages, bytes sent, bytes reduced) of a pairwise alltoall whose busiest rank holds
    `busiest_bytes` spread evenly over the ranks."""
    return ranks - 1, (ranks - 1) / ranks * busiest_bytes, 0.0


def doubling_terms(nbytes, ranks):
    messages, reductions = _doubling_steps(ranks)
    return messages, messages * nbytes, reductions * nbytes


class _Gradient:
    """What executor.plan_fusion reads of an engine item: its fusion key and its size."""

    __slots__ = ("nbytes",)
    fusion_key = "allreduce"
    tensors = (None,)

    def __init__(self, nbytes):
        self.nbytes = nbytes


@dataclasses.dataclass(frozen=True)
class Network:
    """The fitted costs of one job's ranks and links (seconds per message / per byte)."""

    ranks: int                        # the job size it was measured on
    alpha: float                      # one point-to-point message
    beta: float                       # one byte sent
    gamma: float                      # one byte reduced
    copy: float                       # one byte copied into or out of a fusion buffer
    round_seconds: float              # an engine round, beyond its negotiation allreduce
    tensor_seconds: float             # each tensor in a round
    step_overhead: float              # a DistributedOptimizer step per gradient byte, beyond the collectives' model
    step_tensor_overhead: float       # ... and per gradient tensor
    small_allreduce_threshold: int    # the settings it was measured with
    segment_bytes: int
    fusion_threshold: int
    ranks_per_host: int = 1           # the measured job's layout
    shm_alpha: float = 0.0            # a shared-memory allreduce inside a host: fixed cost ...
    shm_beta: float = 0.0             # ... and per byte (0: not measured, the ring is the model)
    fit_error: float = 0.0            # largest relative error of the fit over the samples
    samples: tuple = ()               # (what, bytes, measured s, fitted s)

    @classmethod
    def from_rates(cls, latency=50e-6, bandwidth=2e9, memory_bandwidth=5e9, ranks=2):
        """A network given by three rates instead of a measurement: `latency` per collective
        call, `bandwidth` bytes per second on a rank's link, `memory_bandwidth` bytes per second
        of local work. The defaults are the sparse chooser's (this repository's 2-rank
        measurements on one host); ringtrain.sparse.CostModel(...) is this."""
        for arg, value in (("latency", latency), ("bandwidth", bandwidth), ("memory_bandwidth", memory_bandwidth)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{arg}={value!r} must be a positive number")
        return cls(ranks, 0.0, 1.0 / bandwidth, 0.0, 1.0 / memory_bandwidth, float(latency), 0.0, 0.0, 0.0,
                   8 << 10, 1 << 20, 64 << 20)

    def _seconds(self, terms):
        messages, sent, reduced = terms
        return messages * self.alpha + sent * self.beta + reduced * self.gamma

    @property
    def call_seconds(self):
        """What one collective call costs the engine, beyond its messages: a round and a tensor."""
        return self.round_seconds + self.tensor_seconds

    def allreduce_seconds(self, nbytes, ranks, small_allreduce_threshold=None):
        """One allreduce of n bytes on `ranks` ranks, with the algorithm ringtrain would pick."""
        if ranks <= 1 or nbytes <= 0:
            return 0.0
        small = self.small_allreduce_threshold if small_allreduce_threshold is None else small_allreduce_threshold
        if nbytes <= small:
            return self._seconds(doubling_terms(nbytes, ranks))
        if self.shm_beta > 0 and self.ranks_per_host > 1:
            local = min(ranks, self.ranks_per_host)
            hosts = -(-ranks // local)
            inside = self.shm_alpha + nbytes * self.shm_beta
            if hosts == 1:
                return inside
            return inside + self._seconds(ring_terms(-(-nbytes // local), hosts, self.segment_bytes))
        return self._seconds(ring_terms(nbytes, ranks, self.segment_bytes))

    def allgather_seconds(self, total_bytes, ranks):
        """An allgather whose result holds `total_bytes` (the ring's terms)."""
        return 0.0 if ranks <= 1 else self._seconds(allgather_terms(total_bytes, ranks, self.segment_bytes))

    def alltoall_seconds(self, busiest_bytes, ranks):
        return 0.0 if ranks <= 1 else self._seconds(alltoall_terms(busiest_bytes, ranks))

    def sparse_allreduce_seconds(self, nnz_per_rank, num_rows, row_bytes, ranks):
        """{method: seconds} of sparse_allreduce's three methods for a gradient of `num_rows`
        rows of `row_bytes`, of which each rank holds nnz_per_rank[r] (with an int64 index each).

        Rows are assumed spread uniformly, so T rows drawn over all ranks hit about
        rows * (1 - exp(-T / rows)) distinct ones; skewed (hot-row) data has fewer, which
        favours "owner" further than this estimate does."""
        total, busiest = float(sum(nnz_per_rank)), float(max(nnz_per_rank))
        pair = row_bytes + 8
        distinct = num_rows * -math.expm1(-total / num_rows) if num_rows else 0.0
        dense_bytes = num_rows * row_bytes
        call = self.call_seconds
        return {
            # one allreduce of the array; zeroing and scattering write and read it
            "dense": call + self.allreduce_seconds(dense_bytes, ranks) + 2 * dense_bytes * self.copy,
            # two allgathers (indices, rows): every rank receives every pair
            "allgather": 2 * call + self.allgather_seconds(total * 8, ranks)
            + self.allgather_seconds(total * row_bytes, ranks) + total * pair * self.copy,
            # two alltoalls to the rows' owners, two allgathers of the merged rows; the merge
            # sorts own and received rows (counted as 4 copies)
            "owner": 4 * call + self.alltoall_seconds(busiest * 8, ranks) + self.alltoall_seconds(busiest * row_bytes, ranks)
            + self.allgather_seconds(distinct * 8, ranks) + self.allgather_seconds(distinct * row_bytes, ranks)
            + (4 * 2 * busiest + distinct) * pair * self.copy,
        }

    def step_communication_seconds(self, sizes_bytes, ranks, fusion_threshold=None,
                                   small_allreduce_threshold=None, in_place=False):
        """Averaging one step's gradients (`sizes_bytes`, in the order they are handed over).
        in_place=False is a DistributedOptimizer step, with its calibrated step_overhead; True
        counts the collectives alone."""
        if ranks <= 1 or not sizes_bytes:
            return 0.0  # one rank averages nothing (DistributedOptimizer's shortcut)
        threshold = self.fusion_threshold if fusion_threshold is None else fusion_threshold
        total = (self.round_seconds + self.allreduce_seconds(NEGOTIATION_BYTES, ranks, small_allreduce_threshold)
                 + self.tensor_seconds * len(sizes_bytes))
        if not in_place:
            total += self.step_overhead * sum(sizes_bytes) + self.step_tensor_overhead * len(sizes_bytes)
        for group in plan_fusion([_Gradient(n) for n in sizes_bytes], threshold, self.segment_bytes):
            nbytes = sum(g.nbytes for g in group)
            total += self.allreduce_seconds(nbytes, ranks, small_allreduce_threshold)
            if len(group) > 1:
                total += 2 * nbytes * self.copy
        return total

    def small_allreduce_crossover(self, ranks):
        """The largest candidate size up to which recursive doubling beats the large-message path."""
        best = 0
        for size in SMALL_CANDIDATES:
            if self._seconds(doubling_terms(size, ranks)) > self.allreduce_seconds(size, ranks, small_allreduce_threshold=0):
                break
            best = size
        return best

    def describe(self):
        return (f"alpha {self.alpha * 1e6:.2f} us/message, beta {self.beta * 1e9:.3f} ns/byte "
                f"({1e-9 / self.beta if self.beta else float('inf'):.2f} GB/s), gamma {self.gamma * 1e9:.3f} ns/byte, "
                f"copy {self.copy * 1e9:.3f} ns/byte, engine {self.round_seconds * 1e6:.1f} us/round + "
                f"{self.tensor_seconds * 1e6:.1f} us/tensor, step overhead {self.step_overhead * 1e9:+.3f} ns/byte "
                f"{self.step_tensor_overhead * 1e6:+.1f} us/tensor"
                + (f", shared memory {self.shm_alpha * 1e6:.1f} us + {self.shm_beta * 1e9:.3f} ns/byte "
                   f"({self.ranks_per_host} ranks per host)" if self.shm_beta > 0 else "")
                + f" (measured on {self.ranks} ranks; fit error {self.fit_error:.0%})")


def parameter_sizes(model):
    """Element counts of a model's parameters: a list of sizes, numpy arrays (or a dict of
    them), an object with `.params` (ringtrain's numpy models and optimizers), or a torch
    module (anything whose `.parameters()` yields objects with `.numel()`; torch is not imported)."""
    if hasattr(model, "parameters") and callable(model.parameters):
        return [int(p.numel()) for p in model.parameters() if getattr(p, "requires_grad", True)]
    if hasattr(model, "params"):
        model = model.params
    if isinstance(model, dict):
        model = list(model.values())
    if isinstance(model, np.ndarray) or not hasattr(model, "__iter__"):
        raise TypeError(f"cannot read parameter sizes from {type(model).__name__}: pass a list of sizes, "
                        "numpy arrays, an object with .params, or a torch module")
    sizes = []
    for i, item in enumerate(model):
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            size = int(item)
        elif hasattr(item, "size") and hasattr(item, "shape"):
            size = int(np.prod(item.shape))
        else:
            raise TypeError(f"parameter {i}: {item!r} is neither a size nor an array")
        if size < 1:
            raise ValueError(f"parameter {i} has size {size}: sizes must be positive")
        sizes.append(size)
    if not sizes:
        raise ValueError("the model has no parameters")
    return sizes
