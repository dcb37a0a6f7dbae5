"""Samples per second of the digits example's training step on 1 rank and on 2 ranks (one host),
each rank with the same per-rank batch (weak scaling), started with ringtrain.run itself.

    python bench/scaling.py [--model mlp|cnn] [--batch-size 32 128]

The same step is run twice in each job: with ringtrain's DistributedOptimizer, and with the
gradients averaged by mpi4py's Allreduce instead (each started as it is produced, Iallreduce,
all waited for before the update: what a careful mpi4py user writes). The speedups are compared:
ringtrain's should be within 10% of mpi4py's (issue 12). Each rank is pinned to one BLAS thread,
so 1 rank uses one core and 2 ranks use two."""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import machine_line, print_table  # noqa: E402

import ringtrain as rt  # noqa: E402


class MpiAveraging:
    """The DistributedOptimizer interface (grad_ready, step) with mpi4py doing the averaging."""

    def __init__(self, optimizer):
        from mpi4py import MPI

        self.MPI, self.comm, self.optimizer = MPI, MPI.COMM_WORLD, optimizer
        self.grads, self.requests = [None] * len(optimizer.params), []

    def grad_ready(self, index, grad):
        self.grads[index] = grad
        self.requests.append(self.comm.Iallreduce(self.MPI.IN_PLACE, grad, op=self.MPI.SUM))

    def step(self):
        self.MPI.Request.Waitall(self.requests)
        self.requests = []
        scale = 1.0 / self.comm.size
        for g in self.grads:
            g *= scale
        self.optimizer.step(self.grads)


def throughput(model_name, batch_size, averaging, steps=300, warmup=30):
    import time

    import numpy as np

    from digits_model import MODELS, load_data, softmax_cross_entropy
    from ringtrain.train.optimizers import SGD

    x_train, _, y_train, _ = load_data()
    x_train, y_train = rt.shard(x_train, y_train, seed=0)
    model = MODELS[model_name](0)
    rt.broadcast_parameters(model.params)
    sgd = SGD(model.params, lr=0.01, momentum=0.9)
    opt = rt.DistributedOptimizer(sgd) if averaging == "ringtrain" else MpiAveraging(sgd)
    rng = np.random.default_rng(rt.rank())
    batches = [rng.integers(0, len(x_train), batch_size) for _ in range(32)]

    def step(i):
        b = batches[i % len(batches)]
        _, d = softmax_cross_entropy(model.logits(x_train[b]), y_train[b])
        model.backward(d, on_grad=opt.grad_ready)
        opt.step()

    for i in range(warmup):
        step(i)
    rt.barrier()
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    rt.barrier()
    return steps * batch_size * rt.size() / (time.perf_counter() - started)


def both(model_name, batch_size, repeats=3):
    """Samples/s of each averaging, the best of `repeats` alternating runs (noise hits both)."""
    best = {"ringtrain": 0.0, "mpi4py": 0.0}
    for _ in range(repeats):
        for averaging in best:
            best[averaging] = max(best[averaging], throughput(model_name, batch_size, averaging))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    print(f"# {machine_line()}; model {args.model}; weak scaling (same batch per rank)", flush=True)
    rows = []
    for batch_size in args.batch_size:
        rates = {}
        for np_ in (1, 2):  # one job per rank count, both averagings alternating inside it
            rates[np_] = rt.run(both, (args.model, batch_size), np=np_)
        one, two = rates[1], rates[2]
        speedup = {k: two[k] / one[k] for k in one}
        rows.append([args.model, batch_size, f"{one['ringtrain']:,.0f}", f"{two['ringtrain']:,.0f}",
                     f"{speedup['ringtrain']:.2f}x", f"{one['mpi4py']:,.0f}", f"{two['mpi4py']:,.0f}",
                     f"{speedup['mpi4py']:.2f}x", f"{speedup['ringtrain'] / speedup['mpi4py']:.2f}"])
        print(f"# batch {batch_size} done", file=sys.stderr, flush=True)
    print_table(["model", "batch per rank", "ringtrain 1 rank samples/s", "ringtrain 2 ranks", "ringtrain speedup",
                 "mpi4py 1 rank", "mpi4py 2 ranks", "mpi4py speedup", "speedup ratio rt/mpi4py"], rows)


if __name__ == "__main__":
    main()
