"""broadcast_object / allgather_object: small Python objects, pickled with cloudpickle (so
lambdas and locally defined classes work) and sent as uint8 tensors over ringtrain's own
collectives. The bytes travel only inside the MPI job, between its own ranks."""
import pickle

import cloudpickle
import numpy as np

from . import runtime
from .collectives import allgather, broadcast_
from .process_sets import global_process_set


def _part(name, part):
    return None if name is None else f"{name}.{part}"


def broadcast_object(obj, root_rank=0, name=None, process_set=global_process_set):
    """root_rank's `obj` on every rank of the set (root_rank counts within the set)."""
    runtime.current("broadcast_object")
    is_root = process_set.rank() == root_rank
    if is_root:
        payload = np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8).copy()
        length = np.array([payload.size], dtype=np.int64)
    else:
        payload, length = None, np.zeros(1, dtype=np.int64)
    broadcast_(length, root_rank, name=_part(name, "length"), process_set=process_set)
    if payload is None:
        payload = np.empty(int(length[0]), dtype=np.uint8)
    broadcast_(payload, root_rank, name=_part(name, "data"), process_set=process_set)
    return obj if is_root else pickle.loads(payload.tobytes())


def allgather_object(obj, name=None, process_set=global_process_set):
    """A list of every rank's `obj`, in rank order of the set."""
    runtime.current("allgather_object")
    payload = np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8)
    sizes = allgather(np.array([payload.size], dtype=np.int64), name=_part(name, "sizes"), process_set=process_set)
    data = allgather(payload, name=_part(name, "data"), process_set=process_set)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [pickle.loads(data[bounds[i]:bounds[i + 1]].tobytes()) for i in range(len(sizes))]
