"""allreduce float32, 4 B to 64 MB: ringtrain against MPICH's MPI_Allreduce (through mpi4py),
side by side in one run on the same ranks and buffers.

    python bench/allreduce.py            # relaunches itself under mpiexec -n 2 (BENCH_NP=3 for 3)
    python bench/allreduce.py --sweep    # recursive doubling vs ring vs shared memory per size: sets the thresholds
    python bench/allreduce.py --out-of-place [--named]   # rt.allreduce(x) vs np.empty_like + Allreduce(x, out)
    python bench/allreduce.py --named --copy   # and numpy.copyto of the same bytes: one memory copy, the floor

By default both sides run in place on a preallocated buffer (ringtrain.allreduce_ /
MPI_IN_PLACE), so neither pays for allocation; --out-of-place compares rt.allreduce(x), which
returns a new array, with a fresh np.empty_like(x) filled by MPI_Allreduce(x, out). Calls are
unnamed unless --named; repetitions alternate between the two so machine noise hits both.
Bus bandwidth = 2(p-1)/p * bytes / time, the convention of nccl-tests and the Horovod paper."""
import argparse
import sys

from common import ensure_mpi, human_bytes, machine_line, paired_medians, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import ringtrain as rt  # noqa: E402
from ringtrain import runtime  # noqa: E402
from ringtrain.config import _parse_bytes as parse_bytes  # noqa: E402
from ringtrain.engine.executor import ALGORITHM_NAMES  # noqa: E402


def plan(nbytes):
    """(iterations, repeats) so each size takes a fraction of a second."""
    if nbytes <= 64 * 1024:
        return 1000, 7
    if nbytes <= 4 << 20:
        return 20, 9
    return 3, 7


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweep", action="store_true", help="compare ringtrain's algorithms per size")
    parser.add_argument("--out-of-place", action="store_true", help="rt.allreduce vs empty_like + Allreduce(x, out)")
    parser.add_argument("--named", action="store_true", help="give ringtrain's calls a name")
    parser.add_argument("--copy", action="store_true", help="also time numpy.copyto of the same bytes (one memory "
                        "copy: the floor of any allreduce inside a host) alongside")
    parser.add_argument("--pieces", default="", help="with --sweep: shared memory with each of these piece sizes "
                        "(bytes, comma-separated, e.g. 64K,256K,1M) instead of the configured one")
    parser.add_argument("--min-bytes", type=int, default=4)
    parser.add_argument("--max-bytes", type=int, default=64 << 20)
    args = parser.parse_args()

    rt.init()
    comm = MPI.COMM_WORLD
    p, rank = rt.size(), rt.rank()
    sizes = [4 << (2 * i) for i in range(13) if args.min_bytes <= 4 << (2 * i) <= args.max_bytes]  # 4 B, 16 B, ... 64 MB
    sync = comm.Barrier
    live = runtime.current("bench")
    base, core = live.config, live.core
    global_set = live.engine.sets[0]
    rows = []
    if args.sweep:  # the algorithms themselves, each forced on a communicator of its own
        plain = comm.Dup()  # no shared memory: recursive doubling or the ring, by the threshold passed
        contenders = {"recursive doubling": (plain, 1 << 40), "ring": (plain, 0)}
        pieces = [parse_bytes(text) for text in args.pieces.split(",")] if args.pieces else [base.shared_memory_piece_bytes]
        shared = []
        for piece in pieces:  # shared memory from 1 byte up
            shared.append(comm.Dup())
            mode = core.shm_attach(shared[-1].py2f(), piece, True, base.hierarchical_one_leader)[0]
            if mode > 0:
                label = ALGORITHM_NAMES[2 + mode].replace("_ALLREDUCE", "").replace("_", " ").lower()
                contenders[label + (f" {human_bytes(piece)}" if args.pieces else "")] = (shared[-1], 0)
    if rank == 0:
        print(f"# {machine_line()}; {p} ranks; MPI: {MPI.Get_library_version().splitlines()[0]}; "
              f"{'out of place' if args.out_of_place else 'in place'}, {'named' if args.named else 'unnamed'}",
              flush=True)
    for nbytes in sizes:
        buf = np.zeros(nbytes // 4, dtype=np.float32)
        iterations, repeats = plan(nbytes)
        if args.sweep:
            calls = [lambda c=c, t=t: core.allreduce(c.py2f(), buf, buf, 2, int(rt.Sum), 1.0, 1.0, t, base.segment_bytes,
                                                     0, 0)
                     for c, t in contenders.values()]
            times = paired_medians(calls, iterations, repeats, sync)
            rows.append([human_bytes(nbytes)] + [f"{t * 1e6:.1f}" for t in times]
                        + [min(zip(times, contenders))[1]])
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
            if args.copy:
                other = np.ones_like(buf)
                calls.append(lambda: np.copyto(other, buf))
            t_mpi, t_rt, *t_copy = paired_medians(calls, iterations, 3 * repeats, sync)
            factor = 2 * (p - 1) / p
            code = core.allreduce(global_set.handle, buf, buf, 2, int(rt.Sum), 1.0, 1.0,
                                  *live.engine.tuning.allreduce_args)  # the algorithm the calls above ran
            algorithm = ALGORITHM_NAMES[code].replace("_ALLREDUCE", "").replace("_", " ").lower()
            rows.append([human_bytes(nbytes), algorithm, f"{t_mpi * 1e6:.1f}", f"{t_rt * 1e6:.1f}",
                         f"{t_rt / t_mpi:.2f}", f"{factor * nbytes / t_mpi / 1e9:.2f}", f"{factor * nbytes / t_rt / 1e9:.2f}",
                         f"{t_mpi / t_rt:.2f}"] + ([f"{t_copy[0] * 1e6:.1f}", f"{t_rt / t_copy[0]:.2f}"] if args.copy else []))
        if rank == 0:
            print(f"# {human_bytes(nbytes)} done", file=sys.stderr, flush=True)
    if rank == 0:
        if args.sweep:
            print_table(["size"] + [f"{name} µs" for name in contenders] + ["fastest"], rows)
        else:
            print_table(["size", "ringtrain algorithm", "MPI_Allreduce µs", "ringtrain µs", "latency ratio rt/MPI",
                         "MPI busbw GB/s", "ringtrain busbw GB/s", "busbw ratio rt/MPI"]
                        + (["numpy.copyto µs", "ringtrain / copyto"] if args.copy else []), rows)
    if args.sweep:
        for c in shared:
            core.shm_detach(c.py2f())
            c.Free()
        plain.Free()
    rt.shutdown()


if __name__ == "__main__":
    main()
