"""ringtrain.torch: a drop-in for horovod.torch over ringtrain's own ring-allreduce.

    import ringtrain.torch as hvd        # was: import horovod.torch as hvd
    hvd.init()
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)

CPU tensors reach the C engine without copies (tensors.py). Modules: mpi_ops.py (collectives,
handles, Adasum, sparse), functions.py (the differentiable collectives), optimizer.py
(DistributedOptimizer), state.py (parameter and optimizer-state broadcast), objects.py,
compression.py, sync_batch_norm.py, elastic.py (hvd.elastic). The numpy core never imports torch; this package is the
optional extra ringtrain[torch]."""
from ..errors import RingtrainError
from ..process_sets import global_process_set
from ..runtime import (cross_rank, cross_size, is_initialized, local_rank, local_size, mpi_comm, rank, shutdown,
                       size)
from .compression import Compression
from .functions import (allgather, allreduce, alltoall, broadcast, grouped_allgather, grouped_allreduce,
                        grouped_reducescatter, reducescatter)
from .mpi_ops import (Adasum, Average, Max, Min, ProcessSet, Product, Sum, add_process_set, allgather_async, allreduce_,
                      allreduce_async, allreduce_async_, alltoall_async, barrier, broadcast_, broadcast_async,
                      broadcast_async_, grouped_allgather_async, grouped_allreduce_, grouped_allreduce_async,
                      grouped_allreduce_async_, grouped_reducescatter_async, join, poll, reducescatter_async,
                      remove_process_set, sparse_allreduce_async, start_timeline, stop_timeline, synchronize)
from .objects import allgather_object, broadcast_object
from .optimizer import DistributedOptimizer
from .state import broadcast_optimizer_state, broadcast_parameters
from .sync_batch_norm import SyncBatchNorm
from . import elastic

# Horovod raises HorovodInternalError when a collective fails; ringtrain's equivalent.
HorovodInternalError = RingtrainError


def init(comm=None, process_sets=None):
    """Start ringtrain (Horovod's signature: comm is an mpi4py communicator or None)."""
    from .. import runtime

    runtime.init(comm, process_sets=process_sets or ())


# Build and controller queries: ringtrain runs on MPI only, on the CPU.
def mpi_built():
    return True


def mpi_enabled():
    return True


def mpi_threads_supported():
    return True


def gloo_built():
    return False


def gloo_enabled():
    return False


def nccl_built():
    return 0


def ccl_built():
    return False


def ddl_built():
    return False


def cuda_built():
    return False


def rocm_built():
    return False


def sycl_built():
    return False
