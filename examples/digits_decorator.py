"""(c) The decorator version: the distributed training function of digits_distributed.py, run
on 2 local ranks from a plain `python` process. Returns rank 0's held-out accuracy.

    python examples/digits_decorator.py [--model mlp|cnn]"""
import argparse
import os
import sys

import ringtrain as rt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_distributed import train  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    accuracy = rt.distributed(np=2)(train)(args.model, args.epochs)
    print(f"decorator returned rank 0's held-out accuracy: {accuracy:.4f}")
