"""Measuring the cost model's parameters on a real job: `measure_network()` runs on every rank
(mpiexec, `rt.run`, or `ringtrain.spark.run`) and times short collectives: ringtrain's own C
algorithms on a private communicator, and through the public API the engine's per-round and
per-tensor costs and, on one host, the shared-memory allreduce. It fits the parameters of planner.costs.Network by least squares, relative
error weighted. `time_training_steps()` times real DistributedOptimizer steps, on one rank and
on all, for the calibration and for validation."""
import dataclasses
import statistics
import time

import numpy as np

from .costs import Network, allgather_terms, doubling_terms, parameter_sizes, ring_terms

RING_SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
RECURSIVE_DOUBLING_SIZES = [8, 64, 512, 4 << 10, 32 << 10]
ENGINE_TENSOR_COUNTS = [1, 8, 32, 96]
SHARED_MEMORY_SIZES = [256 << 10, 1 << 20, 4 << 20, 16 << 20]
# Two calibration steps (not the model's gradients): a spread of sizes, 10.9 MB in float32, and
# many small tensors, 512 KB; together they separate a cost per byte from a cost per tensor.
CALIBRATION_SIZES = [1 << 21, 1 << 19, 1 << 17, 1 << 15, 1 << 13, 1 << 11, 1 << 9, 1 << 7]
CALIBRATION_SMALL_SIZES = [1 << 10] * 128
CALIBRATIONS = [CALIBRATION_SIZES, CALIBRATION_SMALL_SIZES]


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
    from .. import collectives, runtime
    from ..dtypes import CODES
    from ..reduce_ops import Sum

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
        names = [f"ringtrain.planner.engine.{k}.{i}" for i in range(k)]

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

    fitted = [network._seconds(row) for row in rows]
    samples = [(what, nbytes, float(t), f) for (what, nbytes), t, f in zip(labels, slowest, fitted)]
    samples += [(f"engine step of {k} tensors", 4 * k, float(t),
                 network.step_communication_seconds([4] * k, ranks, in_place=True))
                for k, t in zip(ENGINE_TENSOR_COUNTS, engine_times)]

    # A job on one host allreduces large buffers through shared memory (csrc/shm_allreduce.c),
    # not the ring: timed through the public API, as a training step calls it.
    if live.engine.sets[0].shared_memory == "one host":
        def shm_allreduce(nbytes):
            buf = np.zeros(nbytes // 4, np.float32)
            name = f"ringtrain.planner.shared_memory.{nbytes}"
            return (lambda: collectives.allreduce_(buf, op=Sum, name=name)), _iterations(nbytes)

        shm_times = _slowest(live.comm, _interleaved_medians([shm_allreduce(n) for n in SHARED_MEMORY_SIZES], repeats,
                                                             live.comm, collectives.barrier, warmup_seconds / 4))
        shm_alpha, shm_beta = _non_negative_least_squares([(1.0, n) for n in SHARED_MEMORY_SIZES], shm_times)
        network = dataclasses.replace(network, ranks_per_host=ranks, shm_alpha=float(shm_alpha),
                                      shm_beta=float(shm_beta))
        samples += [("shared-memory allreduce", n, float(t), network.allreduce_seconds(n, ranks))
                    for n, t in zip(SHARED_MEMORY_SIZES, shm_times)]

    # Last, a whole DistributedOptimizer step on a spread of gradient sizes (a fixed calibration
    # set, not the model's) against the same step on one rank: see calibrated().
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
    from .. import collectives, runtime
    from ..train.distributed_optimizer import DistributedOptimizer
    from ..train.optimizers import SGD

    live = runtime.current("time_training_step")
    workloads = [parameter_sizes(sizes) for sizes in workloads]
    rng = np.random.default_rng(seed)
    alone = [collectives.add_process_set([r]) for r in range(live.size)]
    try:
        runs = []  # (gradients, optimizer, samples) for each workload, on one rank and on all
        for w, sizes in enumerate(workloads):
            grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
            names = [(f"ringtrain.planner.step.{w}.{i}", None) for i in range(len(sizes))]
            for process_set in (alone[live.rank], collectives.global_process_set):
                sgd = SGD([np.zeros(n, np.float32) for n in sizes], lr=1e-6)
                runs.append((grads, DistributedOptimizer(sgd, named_parameters=names, process_set=process_set), []))
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
