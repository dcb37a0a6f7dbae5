"""Data-parallel training of a small numpy MLP on scikit-learn's bundled digits (1,797 8x8
images, no download), with ringtrain averaging the gradients.

    mpiexec -n 2 python examples/train_digits.py          # or any -n; plain `python` is 1 rank

What ringtrain adds to the single-process script is five lines, marked "ringtrain:" below:
init, broadcast the initial parameters, shard the data, average the gradients, average the
reported metrics."""
import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import ringtrain as rt


def init_params(seed, sizes=(64, 128, 10)):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    return params


def forward(params, x):
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1, 0.0)
    logits = h @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return h, p


def loss_and_grads(params, x, y):
    w1, b1, w2, b2 = params
    h, p = forward(params, x)
    n = len(x)
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    d_logits = p
    d_logits[np.arange(n), y] -= 1.0
    d_logits /= n
    d_h = (d_logits @ w2.T) * (h > 0)
    return loss, [x.T @ d_h, d_h.sum(0), h.T @ d_logits, d_logits.sum(0)]


def accuracy(params, x, y):
    return float((forward(params, x)[1].argmax(1) == y).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()

    rt.init()  # ringtrain: join the job
    rank, size = rt.rank(), rt.size()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0,
                                                        stratify=digits.target)
    # ringtrain: each rank trains on its own shard; equal sizes so every rank takes the same steps
    shard = len(x_train) // size
    x_train, y_train = x_train[rank * shard:(rank + 1) * shard], y_train[rank * shard:(rank + 1) * shard]

    params = init_params(seed=rank)  # deliberately different per rank ...
    for p in params:
        rt.broadcast_(p, root_rank=0)  # ringtrain: ... until everyone takes rank 0's
    velocity = [np.zeros_like(p) for p in params]
    flat = np.empty(sum(p.size for p in params), dtype=np.float32)  # one buffer: one allreduce per step

    if rank == 0:
        print(f"training on {size} rank(s): {shard} samples each, batch {args.batch_size} per rank, "
              f"{args.epochs} epochs", flush=True)
    rng = np.random.default_rng(1234 + rank)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(shard)
        losses = []
        for start in range(0, shard - args.batch_size + 1, args.batch_size):
            batch = order[start:start + args.batch_size]
            loss, grads = loss_and_grads(params, x_train[batch], y_train[batch])
            np.concatenate([g.ravel() for g in grads], out=flat)
            rt.allreduce_(flat, op=rt.Average)  # ringtrain: average the gradients over ranks
            offset = 0
            for p, v in zip(params, velocity):
                g = flat[offset:offset + p.size].reshape(p.shape)
                offset += p.size
                v *= 0.9
                v += g
                p -= args.lr * v
            losses.append(loss)
        # ringtrain: metrics averaged over ranks, so rank 0 reports the whole job
        train_loss, train_acc = rt.allreduce(np.array([np.mean(losses), accuracy(params, x_train, y_train)]))
        if rank == 0 and (epoch % 5 == 0 or epoch == 1 or epoch == args.epochs):
            print(f"epoch {epoch:3d}/{args.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
                  f"held-out acc {accuracy(params, x_test, y_test):.4f}  ({time.perf_counter() - started:.1f}s)",
                  flush=True)

    # every rank must hold bitwise the same model
    spread = rt.allreduce(flat, op=rt.Max) - rt.allreduce(flat, op=rt.Min)
    assert not spread.any(), "ranks diverged"
    if rank == 0:
        print(f"final held-out accuracy: {accuracy(params, x_test, y_test):.4f} "
              f"({len(x_test)} images never trained on)", flush=True)
    rt.shutdown()


if __name__ == "__main__":
    main()
