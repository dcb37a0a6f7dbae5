"""broadcast_object / allgather_object for ringtrain.torch: Horovod's signatures, with a name
and a process set. Objects are cloudpickled (as in ringtrain.objects) and travel as uint8
tensors over ringtrain's own collectives, only between the ranks of this MPI job."""
import pickle

import cloudpickle
import numpy as np
import torch

from .. import runtime
from ..process_sets import global_process_set
from . import mpi_ops


def broadcast_object(obj, root_rank=0, name=None, process_set=global_process_set):
    """root_rank's `obj` (root_rank is a global rank) on every rank of the set."""
    base = name or "broadcast_object"
    is_root = runtime.rank() == root_rank
    payload = np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8) if is_root else None
    length = torch.tensor([0 if payload is None else payload.size], dtype=torch.int64)
    mpi_ops.broadcast_(length, root_rank, name=f"{base}.length", process_set=process_set)
    data = torch.from_numpy(payload.copy()) if is_root else torch.empty(int(length[0]), dtype=torch.uint8)
    mpi_ops.broadcast_(data, root_rank, name=f"{base}.data", process_set=process_set)
    return obj if is_root else pickle.loads(data.numpy().tobytes())


def allgather_object(obj, name=None, process_set=global_process_set):
    """Every rank's `obj`, in rank order of the set."""
    base = name or "allgather_object"
    payload = torch.from_numpy(np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8).copy())
    sizes = mpi_ops.synchronize(mpi_ops.allgather_async(torch.tensor([payload.numel()], dtype=torch.int64),
                                                        name=f"{base}.sizes", process_set=process_set))
    data = mpi_ops.synchronize(mpi_ops.allgather_async(payload, name=f"{base}.data", process_set=process_set)).numpy()
    bounds = np.concatenate([[0], np.cumsum(sizes.numpy())])
    return [pickle.loads(data[bounds[i]:bounds[i + 1]].tobytes()) for i in range(len(bounds) - 1)]
