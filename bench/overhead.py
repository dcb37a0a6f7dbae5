"""What ringtrain costs one rank: a training step of the digits example's model with
DistributedOptimizer on a 1-rank job, against the plain single-process step, in one run.

    python bench/overhead.py [--model mlp|cnn] [--batch-size 32]"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import numpy as np  # noqa: E402

from common import machine_line, paired_medians, print_table  # noqa: E402
from digits_model import MODELS, load_data, softmax_cross_entropy  # noqa: E402

import ringtrain as rt  # noqa: E402
from ringtrain.train.optimizers import SGD  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    rt.init()
    x_train, _, y_train, _ = load_data()
    rows = []
    print(f"# {machine_line()}; 1 rank; model {args.model}")
    for batch_size in args.batch_size:
        x, y = x_train[:batch_size], y_train[:batch_size]
        plain_model, rt_model = MODELS[args.model](0), MODELS[args.model](0)
        plain = SGD(plain_model.params, lr=0.01, momentum=0.9)
        wrapped = rt.DistributedOptimizer(SGD(rt_model.params, lr=0.01, momentum=0.9))

        def plain_step():
            _, d = softmax_cross_entropy(plain_model.logits(x), y)
            plain.step(plain_model.backward(d))

        def ringtrain_step():
            _, d = softmax_cross_entropy(rt_model.logits(x), y)
            rt_model.backward(d, on_grad=wrapped.grad_ready)
            wrapped.step()

        for fn in (plain_step, ringtrain_step):
            fn()
        t_plain, t_rt = paired_medians([plain_step, ringtrain_step], 200, 15, lambda: None)
        for a, b in zip(plain_model.params, rt_model.params):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the same training, step for step
        rows.append([args.model, batch_size, f"{t_plain * 1e6:.1f}", f"{t_rt * 1e6:.1f}", f"{t_rt / t_plain:.3f}"])
    print_table(["model", "batch", "plain step µs", "ringtrain step µs", "ratio"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
