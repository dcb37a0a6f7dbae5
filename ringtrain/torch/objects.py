"""broadcast_object / allgather_object for ringtrain.torch: the core's (ringtrain.object_collectives), with
Horovod's root rank, which is a global rank even inside a process set."""
from .. import object_collectives as objects
from ..process_sets import global_process_set
from .mpi_ops import _set_rank


def broadcast_object(obj, root_rank=0, name=None, process_set=global_process_set):
    """root_rank's `obj` (root_rank is a global rank) on every rank of the set."""
    return objects.broadcast_object(obj, _set_rank(process_set, root_rank), name=name or "broadcast_object",
                                    process_set=process_set)


def allgather_object(obj, name=None, process_set=global_process_set):
    """Every rank's `obj`, in rank order of the set."""
    return objects.allgather_object(obj, name=name or "allgather_object", process_set=process_set)
