"""The advisor: `rt.plan(...)` and `ringtrain plan`.

Predict: step(p) = compute + communication(p), with no overlap of the two (gradients handed
over after the backward pass; overlapping them with DistributedOptimizer.grad_ready can only
make the real step shorter). Weak scaling: every rank keeps its batch, so the scaling
efficiency is step(1) / step(p) and the throughput p * batch / step(p).

Advise: the largest p whose efficiency stays at or above `min_efficiency`, the per-rank batch
that would reach it at each p (compute taken as proportional to the batch), the fusion
threshold (the smallest candidate within 2% of the best predicted communication time) and the
small/large algorithm threshold (where recursive doubling stops beating the ring).
"""
import dataclasses
import math

from .costs import Network, parameter_sizes
from .measure import measure_network

FUSION_CANDIDATES = [0] + [1 << s for s in range(20, 29)]          # off, 1 MB .. 256 MB


@dataclasses.dataclass(frozen=True)
class Plan:
    network: Network
    sizes: tuple                 # parameters' element counts, in the order gradients are ready
    bytes_per_element: int
    compute_seconds: float       # one step on one rank
    batch_size: int              # per rank
    min_efficiency: float
    max_workers: int

    @property
    def sizes_bytes(self):
        return [n * self.bytes_per_element for n in self.sizes]

    def communication_seconds(self, ranks):
        return self.network.step_communication_seconds(self.sizes_bytes, ranks)

    def step_seconds(self, ranks):
        return self.compute_seconds + self.communication_seconds(ranks)

    def efficiency(self, ranks):
        return self.step_seconds(1) / self.step_seconds(ranks)

    def samples_per_second(self, ranks):
        return ranks * self.batch_size / self.step_seconds(ranks)

    @property
    def largest_worthwhile_workers(self):
        """The largest N (up to max_workers) whose efficiency is still at least min_efficiency."""
        worthwhile = [n for n in range(1, self.max_workers + 1) if self.efficiency(n) >= self.min_efficiency]
        return max(worthwhile) if worthwhile else 1

    def batch_for_efficiency(self, ranks):
        """The per-rank batch at which `ranks` reach min_efficiency, compute growing with the batch."""
        comm = self.communication_seconds(ranks)
        if comm == 0:
            return None  # no communication: any batch is fully efficient
        per_sample = self.compute_seconds / self.batch_size
        target = self.min_efficiency
        return math.ceil(comm * target / (1 - target) / per_sample)

    def recommended_fusion_threshold(self, ranks=None):
        """The fusion_threshold to use on `ranks` ranks (default: the measured job's size)."""
        ranks = ranks or self.network.ranks
        times = {t: self.network.step_communication_seconds(self.sizes_bytes, ranks, fusion_threshold=t)
                 for t in FUSION_CANDIDATES}
        best = min(times.values())
        # the smallest buffer within 2% of the best; 0 (fusion off) only when no buffer is
        return next(t for t in FUSION_CANDIDATES[1:] + [0] if times[t] <= 1.02 * best)

    def recommended_small_allreduce_threshold(self, ranks=None):
        return self.network.small_allreduce_crossover(ranks or self.network.ranks)

    def workers_shown(self):
        shown = {1, self.network.ranks, self.largest_worthwhile_workers, self.max_workers}
        shown |= {1 << i for i in range(1, 31) if 1 << i <= self.max_workers}
        return sorted(shown)

    def table(self):
        lines = [f"network: {self.network.describe()}",
                 f"model: {len(self.sizes)} tensors, {sum(self.sizes):,} parameters "
                 f"({sum(self.sizes_bytes) / 1e6:.1f} MB of gradients); one-rank step {self.compute_seconds * 1e3:.2f} ms "
                 f"at batch {self.batch_size} per rank",
                 "",
                 f"| workers | step ms | communication ms | efficiency | samples/s | batch/rank for {self.min_efficiency:.0%} |",
                 "|---|---|---|---|---|---|"]
        for n in self.workers_shown():
            lines.append(f"| {n} | {self.step_seconds(n) * 1e3:.2f} | {self.communication_seconds(n) * 1e3:.2f} | "
                         f"{self.efficiency(n):.0%} | {self.samples_per_second(n):,.0f} | {self.batch_for_efficiency(n) or '-'} |")
        best = self.largest_worthwhile_workers
        lines += ["",
                  f"largest worthwhile number of workers (efficiency >= {self.min_efficiency:.0%}, up to "
                  f"{self.max_workers}): {best}",
                  f"recommended on {self.network.ranks} ranks: fusion_threshold {_human(self.recommended_fusion_threshold())}"
                  f" (RINGTRAIN_FUSION_THRESHOLD), small_allreduce_threshold "
                  f"{_human(self.recommended_small_allreduce_threshold())} (RINGTRAIN_SMALL_ALLREDUCE_THRESHOLD)"]
        if best != self.network.ranks and best > 1:
            lines.append(f"recommended on {best} ranks: fusion_threshold {_human(self.recommended_fusion_threshold(best))}, "
                         f"small_allreduce_threshold {_human(self.recommended_small_allreduce_threshold(best))}")
        return "\n".join(lines)


def _human(nbytes):
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale}{unit}"
    return str(nbytes)


def _check_plan_inputs(compute_seconds, batch_size, np, min_efficiency, max_workers, bytes_per_element):
    if not isinstance(compute_seconds, (int, float)) or isinstance(compute_seconds, bool) or not compute_seconds > 0 \
            or not math.isfinite(compute_seconds):
        raise ValueError(f"compute_seconds={compute_seconds!r} must be a positive number (one step on one rank)")
    for arg, value in (("batch_size", batch_size), ("np", np), ("max_workers", max_workers),
                       ("bytes_per_element", bytes_per_element)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg}={value!r} must be a positive int")
    if np < 2:
        raise ValueError(f"np={np} must be at least 2: measuring the network needs two ranks")
    if not 0 < min_efficiency < 1:
        raise ValueError(f"min_efficiency={min_efficiency!r} must be between 0 and 1")


def plan(model, compute_seconds, batch_size, np=2, network=None, backend="mpi", min_efficiency=0.75,
         max_workers=64, bytes_per_element=4, timeout=300):
    """Predict step time and scaling efficiency for data-parallel training of `model`.

    model: a list of parameter sizes, numpy arrays, an object with .params, or a torch module.
    compute_seconds: one training step on one rank (forward, backward and update) at
    batch_size samples. The network is measured on a new job of `np` ranks (backend "mpi" or
    "spark"); inside a job every rank must call plan() and the job itself is measured. Pass
    `network=` (a Network from measure_network) to skip the measurement. Returns a Plan;
    print(plan.table()) for the summary."""
    _check_plan_inputs(compute_seconds, batch_size, np, min_efficiency, max_workers, bytes_per_element)
    sizes = parameter_sizes(model)
    if network is None:
        from ..launch.run_function import run

        network = run(measure_network, np=np, backend=backend, timeout=timeout)
    elif not isinstance(network, Network):
        raise TypeError(f"network={network!r} must be a ringtrain.planner.costs.Network (from measure_network())")
    return Plan(network, tuple(sizes), bytes_per_element, float(compute_seconds), batch_size, min_efficiency,
                max_workers)
