"""(b) torch_digits_single.py made data-parallel exactly as one does it with Horovod; the one
change from a Horovod script is the import line. Lines marked "hvd:" are the Horovod additions.

    mpiexec -n 2 python examples/torch_digits_distributed.py
    ringtrain run -np 2 python examples/torch_digits_distributed.py"""
import argparse

import torch
import torch.nn.functional as F

import ringtrain.torch as hvd  # the one change: was `import horovod.torch as hvd`
from torch_digits_single import accuracy, load_data, make_model


def train(epochs=20, batch_size=32, lr=0.01, seed=0):
    hvd.init()  # hvd:
    torch.manual_seed(seed + hvd.rank())  # different per rank on purpose: the broadcast below fixes it
    x_train, x_test, y_train, y_test = load_data()
    x_train, y_train = x_train[hvd.rank()::hvd.size()], y_train[hvd.rank()::hvd.size()]  # hvd: this rank's shard
    steps = hvd.allreduce(torch.tensor(len(x_train)), op=hvd.Min).item()  # hvd: the same step count everywhere
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr * hvd.size())  # hvd: scale lr with the ranks
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())  # hvd:
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # hvd: start from rank 0's weights
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)  # hvd:
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x_train))[:steps]
        total = 0.0
        for start in range(0, steps, batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        loss = hvd.allreduce(torch.tensor(total / steps), name="epoch.loss")  # hvd: the job's mean loss
        if hvd.rank() == 0:
            print(f"epoch {epoch:3d}/{epochs}  loss {loss.item():.4f}  "
                  f"held-out acc {accuracy(model, x_test, y_test):.4f}", flush=True)
    acc = accuracy(model, x_test, y_test)
    if hvd.rank() == 0:
        print(f"final held-out accuracy: {acc:.4f} ({hvd.size()} ranks)", flush=True)
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args.epochs)
