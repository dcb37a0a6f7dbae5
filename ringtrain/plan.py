"""The cost model and advisor: `rt.plan(...)` and `ringtrain plan`.

Measure: `measure_network()` runs on every rank of a real job (mpiexec, `rt.run`, or
`ringtrain.spark.run`) and times short collectives: ringtrain's own C algorithms on a private
communicator, and the engine's per-round and per-tensor costs through the public API. It fits
the parameters of the model below by least squares, relative error weighted.

Model (p ranks, n bytes; S = segment_bytes; one message costs alpha, a byte on the wire beta, a
byte reduced gamma, a byte copied into or out of a fusion buffer `copy`):

    ring allreduce (n > small_allreduce_threshold): reduce-scatter + allgather, each of p-1 steps
        sends one block of n/p bytes cut into ceil(n/(p S)) pipelined segments
        T = 2(p-1) ceil(n/(p S)) alpha + 2(p-1)/p n beta + (p-1)/p n gamma
    recursive doubling (small n): k = floor(log2 p) exchanges of the whole buffer, plus a fold
        in and out when p is not a power of two (r = 1 then, else 0)
        T = (k + 2r)(alpha + n beta) + (k + r) n gamma
    a training step: the engine's round (a fixed cost plus its 8-byte negotiation allreduce),
        a cost per tensor, then the fusion groups that executor.plan_fusion forms from the
        gradients (the same function the engine uses), each one allreduce plus, for a group of
        several tensors, 2 n copy for packing and unpacking; and what a DistributedOptimizer
        step costs beyond the collectives' model, per byte (`step_overhead`) and per tensor,
        calibrated on two fixed gradient lists. It allreduces out of place, and the new output
        arrays' first touch (page faults) can cost more than the wire on a VM.

Predict: step(p) = compute + communication(p), with no overlap of the two (gradients handed
over after the backward pass; overlapping them with DistributedOptimizer.grad_ready can only
make the real step shorter). Weak scaling: every rank keeps its batch, so the scaling
efficiency is step(1) / step(p) and the throughput p * batch / step(p).

Advise: the largest p whose efficiency stays at or above `min_efficiency`, the per-rank batch
that would reach it at each p (compute taken as proportional to the batch), the fusion
threshold (the smallest candidate within 2% of the best predicted communication time) and the
small/large algorithm threshold (where recursive doubling stops beating the ring).

Extrapolating to other p assumes the same per-message and per-byte costs: measure on the
machines (and the kind of link) the real job will use."""
import dataclasses
import math
import statistics
import time

import numpy as np

from .executor import plan_fusion

NEGOTIATION_BYTES = 8                      # the engine's per-round bit-vector allreduce
FUSION_CANDIDATES = [0] + [1 << s for s in range(20, 29)]          # off, 1 MB .. 256 MB
SMALL_CANDIDATES = [1 << s for s in range(6, 23)]                  # 64 B .. 4 MB
RING_SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
RECURSIVE_DOUBLING_SIZES = [8, 64, 512, 4 << 10, 32 << 10]
ENGINE_TENSOR_COUNTS = [1, 8, 32, 96]
# Two calibration steps (not the model's gradients): a spread of sizes, 10.9 MB in float32, and
# many small tensors, 512 KB; together they separate a cost per byte from a cost per tensor.
CALIBRATION_SIZES = [1 << 21, 1 << 19, 1 << 17, 1 << 15, 1 << 13, 1 << 11, 1 << 9, 1 << 7]
CALIBRATION_SMALL_SIZES = [1 << 10] * 128
CALIBRATIONS = [CALIBRATION_SIZES, CALIBRATION_SMALL_SIZES]


# --- the model --------------------------------------------------------------------------------
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
    fit_error: float = 0.0            # largest relative error of the fit over the samples
    samples: tuple = ()               # (what, bytes, measured s, fitted s)

    def _seconds(self, terms):
        messages, sent, reduced = terms
        return messages * self.alpha + sent * self.beta + reduced * self.gamma

    def allreduce_seconds(self, nbytes, ranks, small_allreduce_threshold=None):
        """One allreduce of n bytes on `ranks` ranks, with the algorithm ringtrain would pick."""
        if ranks <= 1 or nbytes <= 0:
            return 0.0
        small = self.small_allreduce_threshold if small_allreduce_threshold is None else small_allreduce_threshold
        if nbytes <= small:
            return self._seconds(doubling_terms(nbytes, ranks))
        return self._seconds(ring_terms(nbytes, ranks, self.segment_bytes))

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
        """The largest candidate size up to which recursive doubling beats the ring."""
        best = 0
        for size in SMALL_CANDIDATES:
            if self._seconds(doubling_terms(size, ranks)) > self._seconds(ring_terms(size, ranks, self.segment_bytes)):
                break
            best = size
        return best

    def describe(self):
        return (f"alpha {self.alpha * 1e6:.2f} us/message, beta {self.beta * 1e9:.3f} ns/byte "
                f"({1e-9 / self.beta if self.beta else float('inf'):.2f} GB/s), gamma {self.gamma * 1e9:.3f} ns/byte, "
                f"copy {self.copy * 1e9:.3f} ns/byte, engine {self.round_seconds * 1e6:.1f} us/round + "
                f"{self.tensor_seconds * 1e6:.1f} us/tensor, step overhead {self.step_overhead * 1e9:+.3f} ns/byte "
                f"{self.step_tensor_overhead * 1e6:+.1f} us/tensor "
                f"(measured on {self.ranks} ranks; fit error {self.fit_error:.0%})")


# --- measurement ----------------------------------------------------------------------------
def _interleaved_medians(cases, repeats, comm, barrier, warmup_seconds=0.0):
    """Median seconds per call of each case (fn, iterations). The cases take turns, repeat after
    repeat, so a slow stretch of a shared machine lands on all of them alike. A warm-up comes
    first, because the first fraction of a second of a new job runs measurably slower; its
    number of passes is agreed by all ranks (the largest count), since every pass is collective."""
    start = time.perf_counter()
    for fn, _ in cases:
        fn()
    passes = int(warmup_seconds / max(time.perf_counter() - start, 1e-6))
    for _ in range(int(_slowest(comm, [passes])[0]) if warmup_seconds else 0):
        for fn, _ in cases:
            fn()
    samples = [[] for _ in cases]
    for _ in range(repeats):
        for (fn, iterations), out in zip(cases, samples):
            barrier()
            start = time.perf_counter()
            for _ in range(iterations):
                fn()
            out.append((time.perf_counter() - start) / iterations)
    return [statistics.median(s) for s in samples]


def _iterations(nbytes):
    return 100 if nbytes <= 64 << 10 else 10 if nbytes <= 1 << 20 else 3


def _slowest(comm, values):
    """Every rank's timings -> the slowest rank's (a collective is as slow as its last rank)."""
    from mpi4py import MPI

    mine = np.asarray(values, dtype=np.float64)
    out = np.empty_like(mine)
    comm.Allreduce(mine, out, op=MPI.MAX)
    return out


def _non_negative_least_squares(rows, times):
    """Least squares of rows @ x = times in relative error, with x >= 0: solve, pin the
    negative coefficients at zero, solve for the rest (three unknowns: a tiny active set)."""
    a = np.asarray(rows, dtype=np.float64) / np.asarray(times)[:, None]
    b = np.ones(len(times))
    free = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while free:
        solution, *_ = np.linalg.lstsq(a[:, free], b, rcond=None)
        if (solution >= 0).all():
            x[free] = solution
            break
        free = [f for f, s in zip(free, solution) if s >= 0]
    return x


def measure_network(repeats=9, ring_sizes=RING_SIZES, doubling_sizes=RECURSIVE_DOUBLING_SIZES, warmup_seconds=1.0,
                    calibrate=True):
    """Time short collectives on this job and fit a Network. Collective: every rank calls it,
    inside an initialised job of at least 2 ranks; every rank returns the same Network.
    Takes a few seconds. calibrate=False leaves the step overhead at 0, for a caller that
    times the calibration step itself (validate())."""
    from . import collectives, runtime
    from .dtypes import CODES
    from .ops import Sum

    live = runtime.current("measure_network")
    if live.size < 2:
        raise ValueError("measure_network() needs a job of at least 2 ranks: run it under mpiexec, "
                         "ringtrain.run(..., np=N) or ringtrain.spark.run")
    core, ranks, tuning = live.core, live.size, live.engine.tuning
    code, segment = CODES[np.dtype(np.float32)], tuning.segment_bytes
    # The algorithms alone, on a communicator of our own: nothing else can match its messages.
    comm = live.comm.Dup()
    try:
        handle = comm.py2f()
        labels, rows, cases = [], [], []

        def allreduce(nbytes, small):
            buf = np.zeros(nbytes // 4, np.float32)
            return lambda: core.allreduce(handle, buf, buf, code, int(Sum), 1.0, 1.0, small, segment, 0, 0)

        def allgather(nbytes):
            shares = np.full(ranks, nbytes // ranks, np.int64)
            buf = np.zeros(int(shares.sum()), np.uint8)
            return lambda: core.allgatherv(handle, buf, shares, segment)

        for nbytes in doubling_sizes:
            labels.append(("recursive doubling allreduce", nbytes))
            rows.append(doubling_terms(nbytes, ranks))
            cases.append((allreduce(nbytes, 1 << 30), _iterations(nbytes)))
        for nbytes in ring_sizes:
            labels.append(("ring allreduce", nbytes))
            rows.append(ring_terms(nbytes, ranks, segment))
            cases.append((allreduce(nbytes, 0), _iterations(nbytes)))
            gathered = nbytes // ranks * ranks
            labels.append(("ring allgather", gathered))
            rows.append(allgather_terms(gathered, ranks, segment))
            cases.append((allgather(gathered), _iterations(nbytes)))
        times = _interleaved_medians(cases, repeats, comm, comm.Barrier, warmup_seconds)
        # Packing a fusion buffer: local memory copies, 4 MB in 64 tensors.
        pieces = [np.zeros(16 << 10, np.float32) for _ in range(64)]
        fused = np.zeros(sum(p.size for p in pieces), np.float32)
        times += _interleaved_medians([(lambda: core.pack(fused, pieces), 10)], repeats, comm, comm.Barrier)
        slowest = _slowest(comm, times)
    finally:
        comm.Free()
    copy_per_byte = float(slowest[-1]) / fused.nbytes
    slowest = slowest[:-1]
    alpha, beta, gamma = _non_negative_least_squares(rows, slowest)
    network = Network(ranks, alpha, beta, gamma, copy_per_byte, 0.0, 0.0, 0.0, 0.0, tuning.small_allreduce_threshold,
                      segment, tuning.fusion_threshold)

    # The engine, through the public API as a training step uses it: k small gradients handed
    # over asynchronously, then waited for. What the algorithms do not explain is the engine's.
    def engine_step(k):
        grads = [np.ones(1, np.float32) for _ in range(k)]
        names = [f"ringtrain.plan.engine.{k}.{i}" for i in range(k)]

        def step():
            handles = [collectives.allreduce_async_(g, op=Sum, name=n) for g, n in zip(grads, names)]
            for h in handles:
                collectives.synchronize(h)
        return step, 20

    engine_times = _slowest(live.comm, _interleaved_medians([engine_step(k) for k in ENGINE_TENSOR_COUNTS], repeats,
                                                            live.comm, collectives.barrier, warmup_seconds / 4))
    residual = [t - network.step_communication_seconds([4] * k, ranks, in_place=True)
                for k, t in zip(ENGINE_TENSOR_COUNTS, engine_times)]
    fixed, per_tensor = np.polyfit(ENGINE_TENSOR_COUNTS, residual, 1)[::-1]
    network = dataclasses.replace(network, round_seconds=max(float(fixed), 0.0),
                                  tensor_seconds=max(float(per_tensor), 0.0))

    # Last, a whole DistributedOptimizer step on a spread of gradient sizes (a fixed calibration
    # set, not the model's) against the same step on one rank: see calibrated().
    fitted = [network._seconds(row) for row in rows]
    samples = [(what, nbytes, float(t), f) for (what, nbytes), t, f in zip(labels, slowest, fitted)]
    samples += [(f"engine step of {k} tensors", 4 * k, float(t),
                 network.step_communication_seconds([4] * k, ranks, in_place=True))
                for k, t in zip(ENGINE_TENSOR_COUNTS, engine_times)]
    error = max(abs(f - t) / t for _, _, t, f in samples)
    network = dataclasses.replace(network, fit_error=float(error), samples=tuple(samples))
    if calibrate:
        network = calibrated(network, time_training_steps(CALIBRATIONS, 0.001, steps=repeats + 4, warmup_steps=3))
    return network


def calibrated(network, timings):
    """The network with its step overheads fitted to measured DistributedOptimizer steps of the
    CALIBRATIONS gradient lists, `timings` being their (one-rank, whole-job) step times: what a
    step costs beyond the collectives' model, per byte and per tensor. Per byte, that is its new
    output arrays (it allreduces out of place, and fresh memory costs page faults) and what
    microbenchmarks miss about a real step (caches cold after the update); per tensor, its
    Python bookkeeping. The byte cost may be negative, down to half the collectives' time;
    the tensor cost is at least 0."""
    rows, residuals, model = [], [], []
    for sizes, (one, whole) in zip(CALIBRATIONS, timings):
        sizes_bytes = [4 * n for n in sizes]
        collectives_only = network.step_communication_seconds(sizes_bytes, network.ranks, in_place=True)
        rows.append((sum(sizes_bytes), len(sizes)))
        residuals.append(whole - one - collectives_only)
        model.append(collectives_only)
    per_byte, per_tensor = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(residuals))
    if per_tensor < 0:  # noise: put it all on the bytes of the large calibration
        per_byte, per_tensor = residuals[0] / rows[0][0], 0.0
    per_byte = max(per_byte, -model[0] / 2 / rows[0][0])
    network = dataclasses.replace(network, step_overhead=float(per_byte), step_tensor_overhead=float(per_tensor))
    samples = tuple((f"DistributedOptimizer step of {len(sizes)} tensors, beyond one rank's (calibration)",
                     4 * sum(sizes), float(whole - one),
                     network.step_communication_seconds([4 * n for n in sizes], network.ranks))
                    for sizes, (one, whole) in zip(CALIBRATIONS, timings))
    return dataclasses.replace(network, samples=network.samples + samples)


# --- the model's inputs ----------------------------------------------------------------------
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


# --- prediction and advice -------------------------------------------------------------------
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
        from .launch.run_function import run

        network = run(measure_network, np=np, backend=backend, timeout=timeout)
    elif not isinstance(network, Network):
        raise TypeError(f"network={network!r} must be a ringtrain.plan.Network (from measure_network())")
    return Plan(network, tuple(sizes), bytes_per_element, float(compute_seconds), batch_size, min_efficiency,
                max_workers)


# --- validation: a real training step, to compare with the prediction ------------------------
def time_training_step(sizes, compute_seconds, steps=30, warmup_steps=10, seed=0):
    """Time a data-parallel training step on this job, for comparison with a Plan. Collective.

    A step is `compute_seconds` of waiting (the forward and backward passes, which the model
    takes as given), then DistributedOptimizer.step() with SGD on float32 parameters of
    `sizes`. Returns (one-rank step, whole-job step), medians in seconds, the slowest rank's:
    the same step on a process set of this rank alone (no communication, as on one process),
    and on every rank, measured in alternation so that load on the machine hits both alike."""
    return time_training_steps([sizes], compute_seconds, steps, warmup_steps, seed)[0]


def time_training_steps(workloads, compute_seconds, steps=30, warmup_steps=10, seed=0):
    """time_training_step for several gradient lists at once, their steps taking turns."""
    from . import collectives, runtime, training
    from .optim import SGD

    live = runtime.current("time_training_step")
    workloads = [parameter_sizes(sizes) for sizes in workloads]
    rng = np.random.default_rng(seed)
    alone = [collectives.add_process_set([r]) for r in range(live.size)]
    try:
        runs = []  # (gradients, optimizer, samples) for each workload, on one rank and on all
        for w, sizes in enumerate(workloads):
            grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
            names = [(f"ringtrain.plan.step.{w}.{i}", None) for i in range(len(sizes))]
            for process_set in (alone[live.rank], collectives.global_process_set):
                sgd = SGD([np.zeros(n, np.float32) for n in sizes], lr=1e-6)
                runs.append((grads, training.DistributedOptimizer(sgd, named_parameters=names,
                                                                  process_set=process_set), []))
        for step in range(warmup_steps + steps):
            for grads, opt, samples in runs:
                collectives.barrier()
                start = time.perf_counter()
                time.sleep(compute_seconds)
                opt.step(grads)
                if step >= warmup_steps:  # the first steps negotiate names and warm the caches
                    samples.append(time.perf_counter() - start)
    finally:
        for process_set in reversed(alone):
            collectives.remove_process_set(process_set)
    medians = _slowest(live.comm, [statistics.median(samples) for _, _, samples in runs])
    return [(float(medians[i]), float(medians[i + 1])) for i in range(0, len(medians), 2)]


@dataclasses.dataclass(frozen=True)
class Validation:
    """A prediction next to the measured step it predicts, on the same job."""

    ranks: int
    one_rank_step: float      # measured: the step with no communication (the model's compute)
    predicted_step: float     # the Plan's step time on `ranks`, from that compute
    measured_step: float      # measured: the step on every rank
    network: Network

    @property
    def ratio(self):
        return self.predicted_step / self.measured_step

    def describe(self):
        return (f"validation on {self.ranks} ranks: one-rank step {self.one_rank_step * 1e3:.2f} ms (measured), "
                f"predicted {self.ranks}-rank step {self.predicted_step * 1e3:.2f} ms, measured "
                f"{self.measured_step * 1e3:.2f} ms: predicted/measured = {self.ratio:.2f}")


def validate(sizes, compute_seconds, rounds=3, steps=20):
    """Fit the model and time the real step it predicts, `rounds` times in turn on this job;
    return the round with the median predicted/measured ratio. Collective.

    The prediction takes the measured one-rank step as its compute time, as a user would take
    the step time of their single-process script: both sides then cover the same work."""
    from . import runtime

    sizes = tuple(parameter_sizes(sizes))
    ranks = runtime.current("validate").size
    results = []
    for _ in range(rounds):
        network = measure_network(calibrate=False)
        # The calibration step and the predicted one take turns, so that both see the same load
        # on the machine. The prediction uses only the calibration's timings (and the fit).
        *calibration, (one, whole) = time_training_steps([*CALIBRATIONS, sizes], compute_seconds, steps=steps)
        network = calibrated(network, calibration)
        predicted = Plan(network, sizes, 4, one, 1, 0.75, ranks).step_seconds(ranks)
        results.append(Validation(ranks, one, predicted, whole, network))
    return sorted(results, key=lambda v: v.ratio)[len(results) // 2]
