"""ringtrain: Horovod-style distributed training with its own ring-allreduce over MPI.

    import ringtrain as rt
    rt.init()
    grad = rt.allreduce(grad, op=rt.Average)

Run under `mpiexec -n N python train.py`. See README.md for the full API table."""
from .collectives import (
    add_process_set,
    allgather,
    allgather_async,
    allreduce,
    allreduce_,
    allreduce_async,
    allreduce_async_,
    alltoall,
    alltoall_async,
    barrier,
    broadcast,
    broadcast_,
    broadcast_async,
    broadcast_async_,
    grouped_allgather,
    grouped_allgather_async,
    grouped_allreduce,
    grouped_allreduce_,
    grouped_allreduce_async,
    grouped_allreduce_async_,
    grouped_reducescatter,
    grouped_reducescatter_async,
    join,
    poll,
    reducescatter,
    reducescatter_async,
    remove_process_set,
    start_timeline,
    stop_timeline,
    synchronize,
)
from .process_sets import ProcessSet, global_process_set
from .requests import Handle, StallError
from .dtypes import bfloat16
from .errors import ConfigurationError, NotInitializedError, ProgressTimeoutError, RingtrainError
from . import elastic, optim
from .compression import Compression, Compressor
from .errors import RemoteError
from .launch.run_function import distributed, run
from .training import (
    DistributedOptimizer,
    broadcast_optimizer_state,
    broadcast_parameters,
    load_checkpoint,
    metric_average,
    save_checkpoint,
    shard,
)
from .objects import allgather_object, broadcast_object
from .model_parallel import ColumnParallelLinear, RowParallelLinear
from .plan import plan  # rt.plan(...) is the advisor; `from ringtrain.plan import ...` reaches the module
from .sparse import SparseGradient, sparse_allreduce
from .averaging import ModelAveraging
from .ops import Adasum, Average, Max, Min, Product, ReduceOp, Sum
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
