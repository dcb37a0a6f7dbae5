"""broadcast_object / allgather_object: small Python objects, pickled with cloudpickle (so
lambdas and locally defined classes work) and sent as uint8 tensors over ringtrain's own
collectives. The bytes travel only inside the MPI job, between its own ranks."""
import cloudpickle
import numpy as np
import pickle

from . import runtime
from .collectives import allgather, broadcast_


def broadcast_object(obj, root_rank=0, name=None):
    """root_rank's `obj` on every rank."""
    rt = runtime.current("broadcast_object")
    if rt.rank == root_rank:
        payload = np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8)
        length = np.array([payload.size], dtype=np.int64)
    else:
        payload, length = None, np.zeros(1, dtype=np.int64)
    broadcast_(length, root_rank)
    if payload is None:
        payload = np.empty(int(length[0]), dtype=np.uint8)
    else:
        payload = payload.copy()
    broadcast_(payload, root_rank)
    return obj if rt.rank == root_rank else pickle.loads(payload.tobytes())


def allgather_object(obj, name=None):
    """A list of every rank's `obj`, in rank order."""
    runtime.current("allgather_object")
    payload = np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8)
    sizes = allgather(np.array([payload.size], dtype=np.int64))
    data = allgather(payload)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [pickle.loads(data[bounds[i] : bounds[i + 1]].tobytes()) for i in range(len(sizes))]
