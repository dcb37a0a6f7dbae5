"""(a) Single-process training on the digits: the script before it is made distributed.

    python examples/digits_single.py [--model mlp|cnn]"""
import argparse
import time

import numpy as np

from digits_model import MODELS, accuracy, load_data, softmax_cross_entropy
from ringtrain.optim import SGD


def train(model_name="mlp", epochs=30, batch_size=32, lr=0.05, seed=0):
    x_train, x_test, y_train, y_test = load_data()
    model = MODELS[model_name](seed)
    opt = SGD(model.params, lr=lr, momentum=0.9)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            loss, d_logits = softmax_cross_entropy(model.logits(x_train[batch]), y_train[batch])
            opt.step(model.backward(d_logits))
            losses.append(loss)
        print(f"epoch {epoch:3d}/{epochs}  loss {np.mean(losses):.4f}  "
              f"held-out acc {accuracy(model, x_test, y_test):.4f}  ({time.perf_counter() - started:.1f}s)", flush=True)
    acc = accuracy(model, x_test, y_test)
    print(f"final held-out accuracy: {acc:.4f}", flush=True)
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    train(args.model, args.epochs)
