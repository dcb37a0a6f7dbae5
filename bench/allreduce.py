"""allreduce float32, 4 B to 64 MB: ringtrain against MPICH's MPI_Allreduce (through mpi4py),
side by side in one run on the same ranks and buffers.

    python bench/allreduce.py            # relaunches itself under mpiexec -n 2 (BENCH_NP=3 for 3)
    python bench/allreduce.py --sweep    # ring vs recursive doubling per size: sets the threshold
    python bench/allreduce.py --out-of-place [--named]   # rt.allreduce(x) vs np.empty_like + Allreduce(x, out)

By default both sides run in place on a preallocated buffer (ringtrain.allreduce_ /
MPI_IN_PLACE), so neither pays for allocation; --out-of-place compares rt.allreduce(x), which
returns a new array, with a fresh np.empty_like(x) filled by MPI_Allreduce(x, out). Calls are
unnamed unless --named; repetitions alternate between the two so machine noise hits both.
Bus bandwidth = 2(p-1)/p * bytes / time, the convention of nccl-tests and the Horovod paper."""
import argparse
import sys

from common import ensure_mpi, human_bytes, machine_line, median_seconds, paired_medians, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import ringtrain as rt  # noqa: E402
from ringtrain import runtime  # noqa: E402


def plan(nbytes):
    """(iterations, repeats) so each size takes a fraction of a second."""
    if nbytes <= 64 * 1024:
        return 1000, 7
    if nbytes <= 4 << 20:
        return 20, 9
    return 3, 7


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweep", action="store_true", help="compare ringtrain's two algorithms per size")
    parser.add_argument("--out-of-place", action="store_true", help="rt.allreduce vs empty_like + Allreduce(x, out)")
    parser.add_argument("--named", action="store_true", help="give ringtrain's calls a name")
    parser.add_argument("--min-bytes", type=int, default=4)
    parser.add_argument("--max-bytes", type=int, default=64 << 20)
    args = parser.parse_args()

    rt.init()
    comm = MPI.COMM_WORLD
    p, rank = rt.size(), rt.rank()
    sizes = [4 << (2 * i) for i in range(13) if args.min_bytes <= 4 << (2 * i) <= args.max_bytes]  # 4 B, 16 B, ... 64 MB
    sync = comm.Barrier
    live = runtime.current("bench")
    base = live.config
    rows = []
    if rank == 0:
        print(f"# {machine_line()}; {p} ranks; MPI: {MPI.Get_library_version().splitlines()[0]}; "
              f"{'out of place' if args.out_of_place else 'in place'}, {'named' if args.named else 'unnamed'}",
              flush=True)
    for nbytes in sizes:
        buf = np.zeros(nbytes // 4, dtype=np.float32)
        iterations, repeats = plan(nbytes)
        if args.sweep:
            times = {}
            for name, threshold in (("recursive doubling", 1 << 40), ("ring", 0)):
                live.config = type(base)(**{**base.__dict__, "small_allreduce_threshold": threshold})
                times[name] = median_seconds(lambda: rt.allreduce_(buf, op=rt.Sum), iterations, repeats, sync)
            live.config = base
            rows.append([human_bytes(nbytes), f"{times['recursive doubling'] * 1e6:.1f}", f"{times['ring'] * 1e6:.1f}",
                         "recursive doubling" if times["recursive doubling"] < times["ring"] else "ring"])
        else:
            name = f"bench.{nbytes}" if args.named else None
            if args.out_of_place:
                def mpi_call():
                    out = np.empty_like(buf)
                    comm.Allreduce(buf, out, op=MPI.SUM)
                    return out
                calls = [mpi_call, lambda: rt.allreduce(buf, op=rt.Sum, name=name)]
            else:
                calls = [lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM),
                         lambda: rt.allreduce_(buf, op=rt.Sum, name=name)]
            t_mpi, t_rt = paired_medians(calls, iterations, 3 * repeats, sync)
            factor = 2 * (p - 1) / p
            algorithm = "rec. doubling" if nbytes <= base.small_allreduce_threshold else "ring"
            rows.append([human_bytes(nbytes), algorithm, f"{t_mpi * 1e6:.1f}", f"{t_rt * 1e6:.1f}",
                         f"{t_rt / t_mpi:.2f}", f"{factor * nbytes / t_mpi / 1e9:.2f}", f"{factor * nbytes / t_rt / 1e9:.2f}",
                         f"{t_mpi / t_rt:.2f}"])
        if rank == 0:
            print(f"# {human_bytes(nbytes)} done", file=sys.stderr, flush=True)
    if rank == 0:
        if args.sweep:
            print_table(["size", "rec. doubling µs", "ring µs", "faster"], rows)
        else:
            print_table(["size", "ringtrain algorithm", "MPI_Allreduce µs", "ringtrain µs", "latency ratio rt/MPI",
                         "MPI busbw GB/s", "ringtrain busbw GB/s", "busbw ratio rt/MPI"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
