"""allgather, broadcast and reducescatter (float32, 64 KB to 64 MB per call's result) against
MPICH's MPI_Allgather, MPI_Bcast and MPI_Reduce_scatter_block (through mpi4py), side by side in
one run, named, through the public API.

    python bench/collectives.py                           # relaunches itself under mpiexec -n 2
    RINGTRAIN_SHARED_MEMORY=0 python bench/collectives.py # ringtrain's ring and tree over MPI instead

Inside one host ringtrain moves these through the host's shared segment (csrc/shm_regions.c);
with RINGTRAIN_SHARED_MEMORY=0 through the ring allgather and the binomial tree. Sizes are of
the gathered result (allgather), the broadcast buffer and the reducescatter input."""
import sys

from common import ensure_mpi, human_bytes, machine_line, paired_medians, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import ringtrain as rt  # noqa: E402
from ringtrain import runtime  # noqa: E402


def main():
    rt.init()
    comm = MPI.COMM_WORLD
    p, rank = rt.size(), rt.rank()
    path = runtime.current("bench").engine.sets[0].shared_memory
    if rank == 0:
        print(f"# {machine_line()}; {p} ranks; MPI: {MPI.Get_library_version().splitlines()[0]}; "
              f"ringtrain's path inside the host: {'shared memory' if path == 'one host' else 'ring / tree over MPI'}",
              flush=True)
    rows = []
    for nbytes in [64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]:
        count = nbytes // 4 // p * p
        iterations, repeats = (50, 7) if nbytes <= 1 << 20 else (5, 7)
        block = np.ones(count // p, np.float32)
        gathered = np.empty(count, np.float32)
        whole = np.ones(count, np.float32)
        share = np.empty(count // p, np.float32)
        cases = {
            "allgather": (lambda: comm.Allgather(block, gathered), lambda: rt.allgather(block, name="bench.allgather")),
            "broadcast": (lambda: comm.Bcast(whole, root=0), lambda: rt.broadcast_(whole, 0, name="bench.broadcast")),
            "reducescatter": (lambda: comm.Reduce_scatter_block(whole, share, op=MPI.SUM),
                              lambda: rt.reducescatter(whole, op=rt.Sum, name="bench.reducescatter")),
        }
        for kind, (mpi_call, rt_call) in cases.items():
            t_mpi, t_rt = paired_medians([mpi_call, rt_call], iterations, repeats, comm.Barrier)
            rows.append([kind, human_bytes(count * 4), f"{t_mpi * 1e6:.1f}", f"{t_rt * 1e6:.1f}", f"{t_rt / t_mpi:.2f}"])
        if rank == 0:
            print(f"# {human_bytes(nbytes)} done", file=sys.stderr, flush=True)
    if rank == 0:
        rows.sort(key=lambda r: r[0])
        print_table(["collective", "size", "MPI µs", "ringtrain µs", "time ratio rt/MPI"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
