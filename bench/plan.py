"""The cost model against real training steps: for a few gradient sets and compute times, the
step time `rt.plan` predicts next to the step time measured on the same job.

    python bench/plan.py          # relaunches itself under mpiexec -n 2 (BENCH_NP=3 for 3)

Each row is ringtrain.planner.validate.validate(): fit the model on the job (measure_network), time the real
step (compute, then DistributedOptimizer.step with SGD) on one rank and on all, predict the
all-rank step from the one-rank step; three rounds in turn, the median round is shown."""
from common import ensure_mpi, machine_line, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402

import ringtrain as rt  # noqa: E402
from fusion import resnet50_gradient_shapes  # noqa: E402
from ringtrain.planner.validate import validate  # noqa: E402

SMALL_MODEL = [1_000_000, 250_000, 4_000, 100, 500_000, 64, 2_000_000]  # the sizes tests/test_plan.py validates
WORKLOADS = [
    ("7 tensors, 15 MB (the test's)", SMALL_MODEL, 0.005),
    ("7 tensors, 15 MB", SMALL_MODEL, 0.020),
    ("200 x 10K floats, 8 MB", [10_000] * 200, 0.005),
    ("ResNet-50: 161 tensors, 102 MB", [int(np.prod(shape)) for _, shape in reversed(resnet50_gradient_shapes())], 0.100),
]


def main():
    rt.init()
    rank = rt.rank()
    if rank == 0:
        print(f"# {machine_line()}; {rt.size()} ranks", flush=True)
    rows = []
    for name, sizes, compute in WORKLOADS:
        v = validate(sizes, compute, rounds=3)
        rows.append([name, f"{compute * 1e3:.0f}", f"{v.one_rank_step * 1e3:.2f}", f"{v.predicted_step * 1e3:.2f}",
                     f"{v.measured_step * 1e3:.2f}", f"{v.ratio:.2f}",
                     f"{(v.predicted_step - v.one_rank_step) * 1e3:.2f}", f"{(v.measured_step - v.one_rank_step) * 1e3:.2f}"])
        if rank == 0:
            print(f"# {name}: done ({v.network.describe()})", flush=True)
    if rank == 0:
        print_table(["gradients", "compute ms", "one-rank step ms", "predicted step ms", "measured step ms",
                     "predicted/measured", "predicted comm ms", "measured comm ms"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
