"""The cost model against real training steps: for a few gradient sets and compute times, the
step time `rt.plan` predicts next to the step time measured on the same job; then the fusion
threshold the planner recommends next to a sweep of the real setting.

    python bench/plan.py [--only ResNet] [--no-sweep]   # relaunches itself under mpiexec -n 2 (BENCH_NP=3 for 3)
    sudo python bench/multihost.py --only plan   # 2 emulated hosts x 1 rank, links at 10 and 1 Gbit/s

Each row of the first table is ringtrain.planner.validate.validate(): fit the model on the job
(measure_network), time the real step (compute, then DistributedOptimizer.step with SGD) on one
rank and on all, predict the all-rank step from the one-rank step; three rounds in turn, the
median round is shown. The sweep times the same steps with the engine's fusion threshold set to
each candidate in turn (every rank at once, between steps) and predicts each with the model."""
import argparse
import statistics
import time

from common import ensure_mpi, machine_line, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402

import ringtrain as rt  # noqa: E402
from fusion import resnet50_gradient_shapes  # noqa: E402
from ringtrain.planner.advise import Plan  # noqa: E402
from ringtrain.planner.measure import measure_network  # noqa: E402
from ringtrain.planner.validate import validate  # noqa: E402
from ringtrain.runtime import current  # noqa: E402

SMALL_MODEL = [1_000_000, 250_000, 4_000, 100, 500_000, 64, 2_000_000]  # the sizes tests/test_plan.py validates
RESNET = [int(np.prod(shape)) for _, shape in reversed(resnet50_gradient_shapes())]
WORKLOADS = [
    ("7 tensors, 15 MB (the test's)", SMALL_MODEL, 0.005),
    ("7 tensors, 15 MB", SMALL_MODEL, 0.020),
    ("200 x 10K floats, 8 MB", [10_000] * 200, 0.005),
    ("ResNet-50: 161 tensors, 102 MB", RESNET, 0.100),
]
SWEEP = [("200 x 10K floats, 8 MB", [10_000] * 200), ("ResNet-50: 161 tensors, 102 MB", RESNET)]
THRESHOLDS = [0, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]


def human(nbytes):
    return "off" if nbytes == 0 else f"{nbytes >> 20} MB"


def sweep_fusion(sizes, steps=12, warmup=3):
    """Median step (communication only: in place of the compute, nothing) at each threshold,
    thresholds taking turns step after step; the slowest rank's."""
    live = current("bench/plan.py")
    grads = [np.random.default_rng(0).standard_normal(n).astype(np.float32) for n in sizes]
    params = [np.zeros(n, np.float32) for n in sizes]
    opt = rt.DistributedOptimizer(rt.optim.SGD(params, lr=1e-6),
                                  named_parameters=[(f"sweep.{len(sizes)}.{i}", p) for i, p in enumerate(params)])
    samples = {t: [] for t in THRESHOLDS}
    original = live.engine.tuning.fusion_threshold
    try:
        for step in range(warmup + steps):
            for threshold in THRESHOLDS:
                rt.barrier()  # nothing in flight on any rank: every rank changes the setting between steps
                live.engine.tuning.update({"fusion_threshold": threshold})
                rt.barrier()
                start = time.perf_counter()
                opt.step(grads)
                if step >= warmup:
                    samples[threshold].append(time.perf_counter() - start)
    finally:
        rt.barrier()
        live.engine.tuning.update({"fusion_threshold": original})
    mine = np.array([statistics.median(samples[t]) for t in THRESHOLDS])
    return rt.allreduce(mine, op=rt.Max, name=f"sweep.result.{len(sizes)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="only the workloads whose name contains this")
    parser.add_argument("--no-sweep", action="store_true", help="skip the fusion-threshold sweep")
    args = parser.parse_args()
    rt.init()
    rank = rt.rank()
    if rank == 0:
        print(f"# {machine_line()}; {rt.size()} ranks", flush=True)
    rows = []
    for name, sizes, compute in WORKLOADS:
        if args.only and args.only not in name:
            continue
        v = validate(sizes, compute, rounds=3)
        rows.append([name, f"{compute * 1e3:.0f}", f"{v.one_rank_step * 1e3:.2f}", f"{v.predicted_step * 1e3:.2f}",
                     f"{v.measured_step * 1e3:.2f}", f"{v.ratio:.2f}",
                     f"{(v.predicted_step - v.one_rank_step) * 1e3:.2f}", f"{(v.measured_step - v.one_rank_step) * 1e3:.2f}"])
        if rank == 0:
            print(f"# {name}: done ({v.network.describe()})", flush=True)
    if rank == 0:
        print_table(["gradients", "compute ms", "one-rank step ms", "predicted step ms", "measured step ms",
                     "predicted/measured", "predicted comm ms", "measured comm ms"], rows)

    network = None if args.no_sweep else measure_network()
    sweep_rows = []
    for name, sizes in [] if args.no_sweep else SWEEP:
        measured = sweep_fusion(sizes)
        plan = Plan(network, tuple(sizes), 4, 1e-3, 1, 0.75, rt.size())
        predicted = [network.step_communication_seconds(plan.sizes_bytes, rt.size(), fusion_threshold=t)
                     for t in THRESHOLDS]
        advice = plan.recommended_fusion_threshold()
        best = THRESHOLDS[int(np.argmin(measured))]
        at_advice = measured[THRESHOLDS.index(advice)] if advice in THRESHOLDS else float("nan")
        sweep_rows.append([name, " / ".join(f"{human(t)} {m * 1e3:.1f}" for t, m in zip(THRESHOLDS, measured)),
                           " / ".join(f"{p * 1e3:.1f}" for p in predicted), human(advice), human(best),
                           f"{at_advice / measured.min():.2f}"])
        if rank == 0:
            print(f"# fusion sweep {name}: done", flush=True)
    if rank == 0 and sweep_rows:
        print_table(["gradients", "measured step ms at each threshold", "predicted ms (same order)",
                     "recommended", "best measured", "step at recommended / best"], sweep_rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
