"""Per-call cost of the horovod.torch-compatible binding (ringtrain.torch) against the numpy API
(ringtrain) and MPI_Allreduce (mpi4py), side by side in one run on the same ranks.

    python bench/binding.py            # relaunches itself under mpiexec -n 2 (BENCH_NP=3 for 3)

Each row is one way a user calls an allreduce, synchronous or a step of many async calls;
the torch tensor and the numpy array share memory (torch.from_numpy), so both bindings reduce
the same bytes. Issue 12's target: the torch binding within 2x of the numpy API per call."""
import sys

from common import ensure_mpi, machine_line, paired_medians, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mpi4py import MPI  # noqa: E402

import ringtrain as rt  # noqa: E402
import ringtrain.torch as hvd  # noqa: E402

ASYNC_TENSORS = 100


def main():
    hvd.init()
    comm = MPI.COMM_WORLD
    rows = []
    for nbytes in (4, 4096):
        array = np.ones(nbytes // 4, dtype=np.float32)
        tensor = torch.from_numpy(array)
        arrays = [np.ones(nbytes // 4, dtype=np.float32) for _ in range(ASYNC_TENSORS)]
        tensors = [torch.from_numpy(a) for a in arrays]
        names = [f"bench.{nbytes}.{i}" for i in range(ASYNC_TENSORS)]

        def numpy_async_step():
            handles = [rt.allreduce_async_(a, op=rt.Sum, name=n) for a, n in zip(arrays, names)]
            for h in handles:
                rt.synchronize(h)

        def torch_async_step():
            handles = [hvd.allreduce_async_(t, op=hvd.Sum, name=n) for t, n in zip(tensors, names)]
            for h in handles:
                hvd.synchronize(h)

        def mpi_async_step():
            MPI.Request.Waitall([comm.Iallreduce(MPI.IN_PLACE, a, op=MPI.SUM) for a in arrays])

        cases = [
            ("sync, named", lambda: comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM),
             lambda: rt.allreduce_(array, op=rt.Sum, name="bench.sync"),
             lambda: hvd.allreduce_(tensor, op=hvd.Sum, name="bench.sync"), 1000),
            ("sync, unnamed", lambda: comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM),
             lambda: rt.allreduce_(array, op=rt.Sum), lambda: hvd.allreduce_(tensor, op=hvd.Sum), 1000),
            (f"{ASYNC_TENSORS} async then synchronize, per tensor", mpi_async_step, numpy_async_step,
             torch_async_step, 30),
        ]
        for what, mpi_call, numpy_call, torch_call, iterations in cases:
            per = ASYNC_TENSORS if "async" in what else 1
            t_mpi, t_np, t_torch = (t / per for t in paired_medians([mpi_call, numpy_call, torch_call], iterations,
                                                                     15, comm.Barrier))
            rows.append([f"{nbytes} B", what, f"{t_mpi * 1e6:.1f}", f"{t_np * 1e6:.1f}", f"{t_torch * 1e6:.1f}",
                         f"{t_np / t_mpi:.2f}", f"{t_torch / t_np:.2f}"])
            if hvd.rank() == 0:
                print(f"# {nbytes} B, {what} done", file=sys.stderr, flush=True)
    if hvd.rank() == 0:
        print(f"# {machine_line()}; {hvd.size()} ranks; torch {torch.__version__}")
        print_table(["size", "call", "MPI µs", "ringtrain (numpy) µs", "ringtrain.torch µs", "numpy API / MPI",
                     "torch / numpy API"], rows)
    hvd.shutdown()


if __name__ == "__main__":
    main()
