"""ringtrain: Horovod-style distributed training with its own ring-allreduce over MPI.

    import ringtrain as rt
    rt.init()
    grad = rt.allreduce(grad, op=rt.Average)

Run under `mpiexec -n N python train.py`. See README.md for the full API table.

Layers, from the top: this package's modules are the public face (collectives, process_sets,
reduce_ops, dtypes, tensors, errors, config, runtime); engine/ negotiates and runs them (down to
the C core, csrc/); train/ builds training on the public face; planner/ predicts; spark/ and
torch/ are bindings; launch/ starts jobs."""
import sys

from .collectives import (
    add_process_set,
    allgather,
    allgather_async,
    allreduce,
    allreduce_,
    allreduce_async,
    allreduce_async_,
    PersistentAllreduce,
    allreduce_init,
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
from .dtypes import bfloat16
from .engine.requests import Handle, StallError
from .errors import ConfigurationError, NotInitializedError, ProgressTimeoutError, RemoteError, RingtrainError
from .launch.run_function import distributed, run
from .object_collectives import allgather_object, broadcast_object
from .planner.advise import plan  # rt.plan(...): the advisor; the planner's modules are ringtrain.planner.*
from .process_sets import ProcessSet, global_process_set
from .reduce_ops import Adasum, Average, Max, Min, Product, ReduceOp, Sum
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
from .train import elastic, optimizers as optim, sparse
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.compression import Compression, Compressor
from .train.data_sharding import shard
from .train.distributed_optimizer import DistributedOptimizer
from .train.model_averaging import ModelAveraging
from .train.model_parallel import ColumnParallelLinear, RowParallelLinear
from .train.parameter_sync import broadcast_optimizer_state, broadcast_parameters, metric_average
from .train.sparse import SparseGradient, sparse_allreduce

# The module paths users import from (README, examples): `from ringtrain.optim import SGD`,
# `ringtrain.elastic`, `ringtrain.sparse`. They live in train/ now; these names keep them working.
sys.modules.update({f"{__name__}.optim": optim, f"{__name__}.elastic": elastic, f"{__name__}.sparse": sparse})

__version__ = "0.1.0"
