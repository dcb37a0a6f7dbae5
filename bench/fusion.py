"""Tensor Fusion on ResNet-50's gradients: 161 float32 tensors, 25.6 M parameters, submitted
asynchronously in reverse layer order as a backward pass would, then synchronised. One run
compares, on the same ranks:

  fused       ringtrain with the default fusion threshold (64 MB)
  unfused     ringtrain with fusion_threshold = 0 (161 separate allreduces)
  persistent  fused, each tensor's allreduce made once with allreduce_init and start()ed each
              step (what DistributedOptimizer does with its gradient buffers)
  persistent unfused  the same with fusion_threshold = 0
  MPI single  one MPI_Allreduce (mpi4py) of one buffer of the same total size

The same for the 132 ResNet-50 tensors under 1 MB, and for 400 tensors of 4 KB (issue 12's
case of many small gradients), and a latency row: a synchronous 4-byte allreduce through the
engine against MPI_Allreduce. Started with `ringtrain run -H` it measures across hosts too.

    python bench/fusion.py        # relaunches itself under mpiexec -n 2"""
from common import ensure_mpi, machine_line, paired_medians, print_table

ensure_mpi(2)

import sys  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import ringtrain as rt  # noqa: E402
from ringtrain import runtime  # noqa: E402


def resnet50_gradient_shapes():
    """(name, shape) of every trainable tensor of torchvision's resnet50, in forward order."""
    shapes = [("conv1.weight", (64, 3, 7, 7)), ("bn1.weight", (64,)), ("bn1.bias", (64,))]
    inplanes = 64
    for layer, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}"
            for i, (cin, cout, k) in enumerate([(inplanes, planes, 1), (planes, planes, 3), (planes, planes * 4, 1)], 1):
                shapes += [(f"{prefix}.conv{i}.weight", (cout, cin, k, k)),
                           (f"{prefix}.bn{i}.weight", (cout,)), (f"{prefix}.bn{i}.bias", (cout,))]
            if block == 0:
                shapes += [(f"{prefix}.downsample.0.weight", (planes * 4, inplanes, 1, 1)),
                           (f"{prefix}.downsample.1.weight", (planes * 4,)), (f"{prefix}.downsample.1.bias", (planes * 4,))]
            inplanes = planes * 4
    shapes += [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]
    return shapes


def main():
    rt.init()
    comm = MPI.COMM_WORLD
    engine = runtime.current("bench").engine
    shapes = resnet50_gradient_shapes()
    grads = [(name, np.full(shape, 0.5, dtype=np.float32)) for name, shape in shapes]
    total = sum(g.size for _, g in grads)
    assert len(grads) == 161 and total == 25_557_032, (len(grads), total)
    backward = list(reversed(grads))
    flat = np.zeros(total, dtype=np.float32)
    if rt.rank() == 0:
        print(f"# {machine_line()}; {rt.size()} ranks; {len(grads)} tensors, {total / 1e6:.1f} M parameters "
              f"({total * 4 / 1e6:.0f} MB)", flush=True)

    def step(tensors, threshold):
        def run():
            engine.tuning.fusion_threshold = threshold  # every rank changes it between the same steps
            handles = [rt.allreduce_async_(g, name=name) for name, g in tensors]
            for h in handles:
                rt.synchronize(h)
        return run

    def persistent_step(tensors, threshold):
        made = [rt.allreduce_init(g, name=f"{name}.persistent.{threshold}") for name, g in tensors]  # checked once

        def run():
            engine.tuning.fusion_threshold = threshold
            handles = [p.start() for p in made]
            for h in handles:
                rt.synchronize(h)
        return run

    small = [(name, g) for name, g in backward if g.nbytes < 1 << 20]
    tiny = [(name, np.zeros(1, dtype=np.float32)) for name, _ in backward]
    flat_small = np.zeros(sum(g.size for _, g in small), dtype=np.float32)
    many = [(f"small.{i}", np.full(1024, 0.5, dtype=np.float32)) for i in range(400)]
    flat_many = np.zeros(400 * 1024, dtype=np.float32)
    rows = []
    for label, tensors, buffer, repeats in (("all 161 tensors (102 MB), ms", backward, flat, 7),
                                            (f"the {len(small)} tensors under 1 MB "
                                             f"({flat_small.nbytes / 1e6:.1f} MB), ms", small, flat_small, 21),
                                            ("400 tensors of 4 KB (1.6 MB), ms", many, flat_many, 21)):
        fused, unfused = step(tensors, 64 << 20), step(tensors, 0)
        persistent = persistent_step(tensors, 64 << 20)
        persistent_unfused = persistent_step(tensors, 0)
        single = lambda b=buffer: comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)  # noqa: E731
        steps = [fused, unfused, persistent, persistent_unfused, single]
        for fn in steps:  # warm-up: the first negotiation fills the response cache, the second teaches the
            fn()          # persistent allreduces their bits
            fn()
        t_fused, t_unfused, t_persistent, t_persistent_unfused, t_single = paired_medians(steps, 1, repeats,
                                                                                          comm.Barrier)
        rows.append([label, f"{t_fused * 1e3:.2f}", f"{t_unfused * 1e3:.2f}", f"{t_persistent * 1e3:.2f}",
                     f"{t_persistent_unfused * 1e3:.2f}", f"{t_single * 1e3:.2f}", f"{t_unfused / t_fused:.2f}x",
                     f"{t_persistent_unfused / t_persistent:.2f}x", f"{t_fused / t_single:.2f}",
                     f"{t_persistent / t_single:.2f}"])
    # Engine overhead per step: the same 161 names with 1-element tensors, negotiated from the cache.
    overhead = step(tiny, 64 << 20)
    overhead()
    (t_overhead,) = paired_medians([overhead], 1, 21, comm.Barrier)
    one = np.ones(1, dtype=np.float32)
    t_small_rt, t_small_mpi = paired_medians(
        [lambda: rt.allreduce_(one, name="latency"), lambda: comm.Allreduce(MPI.IN_PLACE, one, op=MPI.SUM)],
        500, 9, comm.Barrier)
    if rt.rank() == 0:
        print_table(["gradients", "ringtrain fused", "ringtrain unfused", "fused, persistent (allreduce_init)",
                     "unfused, persistent", "one MPI_Allreduce (same bytes)", "fused speedup vs unfused",
                     "persistent: fused speedup vs unfused", "fused / MPI single", "persistent / MPI single"], rows)
        print()
        print_table(["what", "ringtrain", "MPI_Allreduce", "ratio"],
                    [["sync 4-byte allreduce, µs", f"{t_small_rt * 1e6:.1f}", f"{t_small_mpi * 1e6:.1f}",
                      f"{t_small_rt / t_small_mpi:.2f}"]])
        print()
        print(f"negotiation and engine overhead per step (161 named tensors of 4 bytes, cached): "
              f"{t_overhead * 1e3:.2f} ms, {t_overhead / len(tiny) * 1e6:.1f} µs per tensor")
        sys.stdout.flush()
    rt.shutdown()


if __name__ == "__main__":
    main()
