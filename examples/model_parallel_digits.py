"""Digits with data parallelism and model parallelism at once, through process sets.

The job's ranks form a grid: each row is one model-parallel group that holds one copy of the
network, its hidden layer split across the row's ranks; each column is one data-parallel group
(the ranks holding the same slice of the weights, in different copies), which averages its
gradients. With 4 ranks and --model-parallel 2:

    model-parallel groups (a copy of the network each):   [0, 1]  [2, 3]
    data-parallel groups (the same weight slice):          [0, 2]  [1, 3]

    ringtrain run -np 4 python examples/model_parallel_digits.py   # 2 copies x 2 slices
    ringtrain run -np 2 python examples/model_parallel_digits.py   # 1 copy x 2 slices
    ringtrain run -np 2 python examples/model_parallel_digits.py --model-parallel 1   # data parallel only

Network: 64 -> hidden (ColumnParallelLinear, output kept split) -> ReLU -> 10 (RowParallelLinear).
Each rank holds hidden/K of the first layer's columns and of the second layer's rows; the pair
costs one allreduce forward and one backward inside the model-parallel group."""
import argparse
import time

import numpy as np

import ringtrain as rt
from digits_model import accuracy, load_data, softmax_cross_entropy
from ringtrain.optim import SGD


class SplitMLP:
    """The digits MLP with its hidden layer split across a model-parallel process set."""

    def __init__(self, hidden, model_group, seed):
        self.first = rt.ColumnParallelLinear(64, hidden, process_set=model_group, gather_output=False, seed=seed,
                                             name="mlp.fc1")
        self.second = rt.RowParallelLinear(hidden, 10, process_set=model_group, input_is_split=True, seed=seed + 1,
                                           name="mlp.fc2")
        self.params = self.first.params + self.second.params

    def logits(self, x):
        self._h = np.maximum(self.first.forward(x), 0.0)
        return self.second.forward(self._h)

    def backward(self, d_logits):
        d_h = self.second.backward(d_logits) * (self._h > 0)
        self.first.backward(d_h)
        return self.first.grads + self.second.grads


def layout(size, model_parallel):
    """(model-parallel groups, data-parallel groups) as lists of ranks."""
    if model_parallel < 1 or size % model_parallel:
        raise SystemExit(f"--model-parallel {model_parallel} must divide the number of ranks ({size})")
    copies = size // model_parallel
    model_groups = [list(range(c * model_parallel, (c + 1) * model_parallel)) for c in range(copies)]
    data_groups = [list(range(s, size, model_parallel)) for s in range(model_parallel)]
    return model_groups, data_groups


def train(model_parallel=2, hidden=130, epochs=30, batch_size=32, lr=0.05, seed=0):
    rt.init()
    rank, size = rt.rank(), rt.size()
    model_ranks, data_ranks = layout(size, model_parallel)
    # Registering a process set is collective: every rank registers every group.
    model_groups = [rt.add_process_set(ranks) for ranks in model_ranks]
    data_groups = [rt.add_process_set(ranks) for ranks in data_ranks]
    copy, piece = divmod(rank, model_parallel)
    model_group, data_group = model_groups[copy], data_groups[piece]

    x_train, x_test, y_train, y_test = load_data()
    # every copy of the network trains on its own share; the ranks of one copy see the same batches
    x_train, y_train = rt.shard(x_train, y_train, seed=seed, rank=copy, size=len(model_groups))
    model = SplitMLP(hidden, model_group, seed)  # the same seed everywhere: all copies start equal
    opt = rt.DistributedOptimizer(SGD(model.params, lr=lr, momentum=0.9), process_set=data_group)
    rng = np.random.default_rng(seed + copy)
    if rank == 0:
        print(f"{len(model_groups)} data-parallel copies x {model_parallel} model-parallel ranks; "
              f"rank 0 holds {model.first.weight.shape[1]} of {hidden} hidden units", flush=True)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            loss, d_logits = softmax_cross_entropy(model.logits(x_train[batch]), y_train[batch])
            opt.step(model.backward(d_logits))
            losses.append(loss)
        # the copies' losses differ (different data); the ranks inside one copy agree
        loss = rt.metric_average(np.mean(losses), name="loss")
        acc = accuracy(model, x_test, y_test)  # collective inside each copy: every rank evaluates
        if rank == 0:
            print(f"epoch {epoch:3d}/{epochs}  loss {loss:.4f}  held-out acc {acc:.4f}  "
                  f"({time.perf_counter() - started:.1f}s)", flush=True)
    acc = accuracy(model, x_test, y_test)
    # every copy of a slice is still the same: the data-parallel groups averaged each update
    checksums = rt.allgather(np.array([[float(p.sum()) for p in model.params]]), process_set=data_group)
    in_sync = bool(np.allclose(checksums, checksums[0], rtol=1e-6))
    if rank == 0:
        print(f"final held-out accuracy: {acc:.4f} ({len(model_groups)} copies x {model_parallel} slices); "
              f"copies in sync: {in_sync}", flush=True)
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-parallel", type=int, default=2, help="ranks that split one copy of the network")
    parser.add_argument("--hidden", type=int, default=130, help="hidden units (need not divide by the ranks)")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    train(args.model_parallel, args.hidden, args.epochs)
