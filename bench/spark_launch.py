"""Start-up cost of a trivial 2-rank job on Spark local[2]: ringtrain.spark.run against pyspark's
TorchDistributor (when torch, pandas and pyarrow are installed), measured in the same script on
the same SparkSession. Each job does one tiny allreduce and returns.

    python bench/spark_launch.py [--repeats 5]"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from common import machine_line, print_table  # noqa: E402


def ringtrain_job():
    import numpy as np

    import ringtrain as rt

    return float(rt.allreduce(np.ones(1), op=rt.Sum)[0])


def torch_job():
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    t = torch.ones(1)
    dist.all_reduce(t)
    dist.destroy_process_group()
    return float(t[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from pyspark.sql import SparkSession

    import ringtrain.spark

    spark = (SparkSession.builder.master("local[2]").appName("ringtrain-launch-bench")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        from pyspark.ml.torch.distributor import TorchDistributor
        import pandas  # noqa: F401 - TorchDistributor needs them
        import pyarrow  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        TorchDistributor = None
        print(f"# TorchDistributor unavailable ({exc}); timing ringtrain only", flush=True)
    contenders = {"ringtrain.spark.run": lambda: ringtrain.spark.run(ringtrain_job, num_proc=2, verbose=False)}
    if TorchDistributor is not None:
        contenders["TorchDistributor"] = lambda: TorchDistributor(num_processes=2, local_mode=False,
                                                                  use_gpu=False).run(torch_job)
    for fn in contenders.values():  # warm-up: Spark's Python workers, imports
        fn()
    times = {name: [] for name in contenders}
    for i in range(args.repeats):
        for name, fn in contenders.items():  # alternate, so drift hits both
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
        print(f"# round {i + 1}/{args.repeats}", file=sys.stderr, flush=True)
    print(f"# {machine_line()}; Spark local[2], 2 processes, one tiny allreduce; {args.repeats} runs each")
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = [[name, f"{medians[name]:.2f}", f"{min(times[name]):.2f}", f"{max(times[name]):.2f}"] for name in contenders]
    print_table(["launcher", "median s", "min s", "max s"], rows)
    if "TorchDistributor" in medians:
        print(f"\nringtrain / TorchDistributor = {medians['ringtrain.spark.run'] / medians['TorchDistributor']:.2f} "
              "(target: at most 0.33)")
    spark.stop()


if __name__ == "__main__":
    main()
