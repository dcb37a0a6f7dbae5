"""Samples per second of the digits example's training step on 1 rank and on 2 ranks (one host),
each rank with the same per-rank batch (weak scaling), started with ringtrain.run itself.

    python bench/scaling.py [--model mlp|cnn] [--batch-size 32 128]

Each rank is pinned to one BLAS thread, so 1 rank uses one core and 2 ranks use two."""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import machine_line, print_table  # noqa: E402

import ringtrain as rt  # noqa: E402


def throughput(model_name, batch_size, steps=300, warmup=30):
    import time

    import numpy as np

    from digits_model import MODELS, load_data, softmax_cross_entropy
    from ringtrain.optim import SGD

    x_train, _, y_train, _ = load_data()
    x_train, y_train = rt.shard(x_train, y_train, seed=0)
    model = MODELS[model_name](0)
    rt.broadcast_parameters(model.params)
    opt = rt.DistributedOptimizer(SGD(model.params, lr=0.01, momentum=0.9))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    print(f"# {machine_line()}; model {args.model}; weak scaling (same batch per rank)", flush=True)
    rows = []
    for batch_size in args.batch_size:
        one = rt.run(throughput, (args.model, batch_size), np=1)
        two = rt.run(throughput, (args.model, batch_size), np=2)
        rows.append([args.model, batch_size, f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}x", f"{two / one / 2:.0%}"])
        print(f"# batch {batch_size} done", file=sys.stderr, flush=True)
    print_table(["model", "batch per rank", "1 rank samples/s", "2 ranks samples/s", "speedup", "efficiency"], rows)


if __name__ == "__main__":
    main()
