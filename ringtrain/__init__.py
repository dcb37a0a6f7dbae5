"""ringtrain: Horovod-style distributed training with its own ring-allreduce over MPI.

    import ringtrain as rt
    rt.init()
    grad = rt.allreduce(grad, op=rt.Average)

Run under `mpiexec -n N python train.py`. See README.md for the full API table."""
from .collectives import (
    allgather,
    allreduce,
    allreduce_,
    alltoall,
    barrier,
    broadcast,
    broadcast_,
    reducescatter,
)
from .dtypes import bfloat16
from .errors import ConfigurationError, NotInitializedError, RingtrainError
from .objects import allgather_object, broadcast_object
from .ops import Average, Max, Min, Product, ReduceOp, Sum
from .runtime import (
    cross_rank,
    cross_size,
    init,
    is_initialized,
    local_rank,
    local_size,
    mpi_comm,
    rank,
    shutdown,
    size,
)

__version__ = "0.1.0"
