"""(b) The same training, made data-parallel with ringtrain: the lines marked "ringtrain:" are
all that changed from digits_single.py.

    mpiexec -n 2 python examples/digits_distributed.py [--model mlp|cnn] [--average-every TAU]
    ringtrain run -np 2 python examples/digits_distributed.py

--average-every TAU trains with periodic model averaging instead (rt.ModelAveraging): TAU
local steps per rank, then one average of the parameters."""
import argparse
import time

import numpy as np

import ringtrain as rt  # ringtrain:
from digits_model import MODELS, accuracy, load_data, softmax_cross_entropy
from ringtrain.optim import SGD


def train(model_name="mlp", epochs=30, batch_size=32, lr=0.05, seed=0, average_every=0):
    rt.init()  # ringtrain: join the job
    x_train, x_test, y_train, y_test = load_data()
    x_train, y_train = rt.shard(x_train, y_train, seed=seed)  # ringtrain: this rank's share, equal for all
    model = MODELS[model_name](seed + rt.rank())  # (different per rank on purpose ...)
    rt.broadcast_parameters(model.params, root_rank=0)  # ringtrain: ... every rank starts from rank 0's
    if average_every:  # local steps, then the parameters averaged every `average_every` steps
        opt = rt.ModelAveraging(SGD(model.params, lr=lr, momentum=0.9), period=average_every)
    else:
        opt = rt.DistributedOptimizer(SGD(model.params, lr=lr, momentum=0.9))  # ringtrain: averaged gradients
    rng = np.random.default_rng(seed + rt.rank())
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            loss, d_logits = softmax_cross_entropy(model.logits(x_train[batch]), y_train[batch])
            model.backward(d_logits, on_grad=opt.grad_ready)  # ringtrain: each gradient leaves as it is made
            opt.step()
            losses.append(loss)
        if average_every:
            opt.synchronize()  # every rank evaluates the same, averaged model
        loss = rt.metric_average(np.mean(losses), name="loss")  # ringtrain: the whole job's loss
        if rt.rank() == 0:
            print(f"epoch {epoch:3d}/{epochs}  loss {loss:.4f}  "
                  f"held-out acc {accuracy(model, x_test, y_test):.4f}  ({time.perf_counter() - started:.1f}s)",
                  flush=True)
    acc = accuracy(model, x_test, y_test)
    if rt.rank() == 0:
        print(f"final held-out accuracy: {acc:.4f} ({rt.size()} ranks)", flush=True)
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--average-every", type=int, default=0, metavar="TAU",
                        help="average the parameters every TAU local steps instead of every gradient")
    args = parser.parse_args()
    train(args.model, args.epochs, average_every=args.average_every)
