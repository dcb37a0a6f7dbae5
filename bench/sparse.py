"""Sparse gradient exchange: an embedding of 100,000 x 128 float32 rows of which each rank's step
touches 1% (1,000 distinct rows). Reduces the same gradients by "dense" (scatter + ring
allreduce of the 51 MB array), "allgather" (Horovod's way), "owner" (sharded owner reduction)
and "auto", side by side in one run, on 2 and then 3 ranks.

    python bench/sparse.py [--ranks 2 3] [--rows 100000] [--dim 128] [--density 0.01]

Two row patterns: "uniform" (each rank's rows anywhere in the table) and "overlapping" (every
rank's rows drawn from the same hottest 2% of the table, as frequent tokens are).
Times are per call of sparse_allreduce (median of alternating repetitions); "dense+opt" and
"auto+opt" add the SGD update on the whole embedding (DistributedOptimizer.step). "auto" decides
with the planner's network model fitted on the job (measure_network); the table also says what
the default three rates (CostModel()) would pick, and which method was fastest."""
import argparse
import logging
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import machine_line, print_table  # noqa: E402

METHODS = ["dense", "allgather", "owner", "auto"]


def rotated_medians(fns, iterations, repeats, sync):
    """Median seconds per call of each function. Each repetition starts with the next function
    in turn, so no method always runs right after the 51 MB dense one (whose cache and page
    traffic slows whatever follows it)."""
    import statistics
    import time

    samples = [[] for _ in fns]
    for r in range(repeats):
        for k in range(len(fns)):
            i = (r + k) % len(fns)
            sync()
            start = time.perf_counter()
            for _ in range(iterations):
                fns[i]()
            samples[i].append((time.perf_counter() - start) / iterations)
    return [statistics.median(s) for s in samples]


def gradients(rank, rows, dim, density, pattern, count=4):
    import numpy as np

    from ringtrain.train.sparse import SparseGradient

    rng = np.random.default_rng([rank, 7])
    nnz = max(1, int(rows * density))
    pool = rows if pattern == "uniform" else min(rows, 2 * nnz)
    return [SparseGradient(rng.choice(pool, nnz, replace=False), rng.standard_normal((nnz, dim), dtype=np.float32),
                           (rows, dim)) for _ in range(count)]


def measure(args):
    import numpy as np

    import ringtrain as rt
    from ringtrain.planner.measure import measure_network
    from ringtrain.train.sparse import CostModel, choose_method, set_cost_model, sparse_allreduce

    rt.init()
    size, rank = rt.size(), rt.rank()
    # the one cost model, fitted on this job (the planner's), next to the default three rates
    measured_model = measure_network(calibrate=False)
    set_cost_model(measured_model)  # "auto" below decides with the fitted model
    if rank == 0:
        print(f"# measured network: {measured_model.describe()}", flush=True)
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="# %(name)s: %(message)s", stream=sys.stdout)
    rows = []
    for pattern in ("uniform", "overlapping"):
        grads = gradients(rank, args.rows, args.dim, args.density, pattern)
        calls = {}
        for method in METHODS:
            def call(method=method, box=[0]):
                box[0] += 1
                sparse_allreduce(grads[box[0] % len(grads)], method=method, name=f"bench.{pattern}.{method}")
            calls[method] = call
        for call in calls.values():  # warm up: numba compiles, buffers grow
            call()
        if rank == 0:
            print(f"# {size} ranks, {pattern}: timing {', '.join(METHODS)} ...", flush=True)
        times = dict(zip(METHODS, rotated_medians(list(calls.values()), args.iterations, args.repeats, rt.barrier)))

        # the whole step: exchange + SGD on the embedding, dense vs auto
        steps = {}
        for method in ("dense", "auto"):
            embedding = [np.zeros((args.rows, args.dim), np.float32)]
            opt = rt.DistributedOptimizer(rt.optim.SGD(embedding, lr=0.1), sparse_method=method,
                                          named_parameters=[(f"bench.{pattern}.{method}.step", embedding[0])])

            def step(opt=opt, box=[0]):
                box[0] += 1
                opt.step([grads[box[0] % len(grads)]])
            step()
            steps[method] = step
        step_times = dict(zip(steps, rotated_medians(list(steps.values()), args.iterations, args.repeats, rt.barrier)))

        nnz = [g.nnz for g in grads[:1]] * size
        picked, _ = choose_method(CostModel(), nnz, args.rows, args.dim * 4, size)
        picked_measured, _ = choose_method(measured_model, nnz, args.rows, args.dim * 4, size)
        fastest = min(("allgather", "owner", "dense"), key=times.get)
        rows.append([size, pattern, *(f"{times[m] * 1e3:.2f}" for m in METHODS), picked, picked_measured, fastest,
                     f"{times[picked_measured] / times[fastest]:.2f}",
                     f"{times['dense'] / times['auto']:.1f}x", f"{step_times['dense'] * 1e3:.1f}",
                     f"{step_times['auto'] * 1e3:.1f}", f"{step_times['dense'] / step_times['auto']:.1f}x"])
    set_cost_model(CostModel())
    if rank == 0:
        print_table(["ranks", "rows", "dense ms", "allgather ms", "owner ms", "auto ms", "default rates would pick",
                     "auto picked (measured model)", "fastest measured", "measured pick / fastest",
                     "dense/auto", "dense+opt ms", "auto+opt ms", "step dense/auto"], rows)
    rt.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--density", type=float, default=0.01)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return measure(args)
    sys.path.insert(0, os.path.join(HERE, ".."))
    from ringtrain.launch import find_mpiexec

    print(f"# {machine_line()}; embedding {args.rows} x {args.dim} float32, {args.density:.1%} of rows per rank "
          f"per step; shared machine", flush=True)
    for ranks in args.ranks:
        command = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
                   *sys.argv[1:]]
        print(f"# running: {' '.join(command)}", flush=True)
        subprocess.run(command, check=True, timeout=900)


if __name__ == "__main__":
    main()
