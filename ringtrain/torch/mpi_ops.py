"""horovod.torch's collectives over ringtrain's core, without autograd (functions.py adds it).

Each call converts the tensors to numpy views (tensors.py), maps Horovod's arguments onto the
core's (`average=` -> op, a global root rank -> the rank inside the process set, alltoall's
splits tensor), and submits through ringtrain.collectives, which validates, negotiates and
runs everything. What is left here is what Horovod does differently at the edge:

* handles: the core's Handle, with a `finish` that turns its result into torch tensors. A
  second in-flight operation with the same name is a ValueError at once, on the rank that made
  it (Horovod's behaviour), rather than a failed handle later.
* Adasum is the core's op (ringtrain.collectives: an allgather, then the rows combined in
  Horovod's recursive-halving order; like Horovod's CPU Adasum it needs a power-of-two set).
* sparse_allreduce_async: through ringtrain.sparse, its cost model choosing the method.
* unnamed operations are numbered per (kind, process set), so that calls some ranks make on a
  set they belong to cannot shift the names of later calls on other sets."""
import warnings

import numpy as np
import torch

from ..engine import adasum
from .. import collectives as core, runtime
from ..reduce_ops import Adasum, Average, Max, Min, Product, Sum, as_op
from ..process_sets import ProcessSet as _CoreProcessSet, global_process_set
from ..engine.requests import Handle, unnamed_name
from .tensors import contiguous, from_numpy, to_numpy


class ProcessSet(_CoreProcessSet):
    """horovod.torch's ProcessSet: size() answers on every rank (members or not), and rank() is
    -1 on a rank outside the set, where the core's ProcessSet raises."""

    def size(self):
        if self.ranks is not None and self.process_set_id is not None:
            return len(self.ranks)
        return super().size()

    def rank(self):
        if self.ranks is not None and self.process_set_id is not None and not self.included():
            return -1
        return super().rank()


def _claim(name, process_set, kind):
    """The name to submit under (validated; unnamed calls get the core's recurring names). A name
    already in flight is the core's ValueError (engine.submit), raised before anything is sent."""
    if not isinstance(process_set, _CoreProcessSet):
        raise TypeError(f"process_set={process_set!r} must be a ringtrain.torch.ProcessSet")
    if name is None:
        return unnamed_name(kind, process_set.process_set_id)
    if not isinstance(name, str):
        raise TypeError(f"name={name!r} must be a str")
    return name


def _track(handle, finish):
    """The core's handle, returning torch tensors (finish)."""
    handle.finish = finish
    return handle


def _tensor_list(outputs):
    return [from_numpy(o) for o in outputs]


def poll(handle):
    """True once the operation behind `handle` has finished."""
    return _handle(handle, "poll").ready()


def synchronize(handle):
    """Wait for `handle` and return its output (torch tensors), or raise its error."""
    if handle.__class__ is Handle and handle.done and handle.deferred is None and handle.error is None:
        finish = handle.finish  # (most handles of a step: a round completed them)
        return handle.result if finish is None else finish(handle.result)
    return _handle(handle, "synchronize").wait()


def _handle(handle, caller):
    if not isinstance(handle, Handle):
        raise TypeError(f"{caller}() takes the handle that a *_async call returned, got {handle!r}")
    return handle


def _op(op, average):
    """Horovod's op/average pair as one op (average= is deprecated there too)."""
    if op is not None and average is not None:
        raise ValueError("The op parameter supersedes average. Please provide only one of them.")
    if average is not None:
        warnings.warn("Parameter `average` has been replaced with `op` and will be removed in a future version",
                      DeprecationWarning, stacklevel=3)
        return Average if average else Sum
    if op is None:
        return Average
    return as_op(op)


def _set_rank(process_set, global_rank, arg="root_rank"):
    """Horovod gives root ranks as global ranks, also inside a process set; the core counts
    within the set."""
    if isinstance(global_rank, torch.Tensor):
        global_rank = int(global_rank)
    if process_set.ranks is None:
        return global_rank
    if global_rank not in process_set.ranks:
        raise ValueError(f"{arg}={global_rank} is not a member of {process_set!r}")
    return process_set.ranks.index(global_rank)


# --- allreduce ------------------------------------------------------------------------------
_ALLREDUCE_SUBMIT = {(False, False): core.allreduce_async, (False, True): core.allreduce_async_,
                     (True, False): core.grouped_allreduce_async, (True, True): core.grouped_allreduce_async_}


def _allreduce_async(kind, tensors, in_place, name, op, prescale_factor, postscale_factor, process_set):
    if kind == "allreduce":
        return _allreduce_async_call(tensors, op, name, prescale_factor, postscale_factor, process_set, in_place)
    name = _claim(name, process_set, kind)
    items = list(tensors)
    if not in_place:
        items = [contiguous(t) for t in items]
    arrays = [to_numpy(t, f"tensors[{i}]") for i, t in enumerate(items)]
    handle = _ALLREDUCE_SUBMIT[True, in_place](arrays, op=op, name=name, prescale_factor=prescale_factor,
                                               postscale_factor=postscale_factor, process_set=process_set)
    return _track(handle, (lambda _: tensors) if in_place else _tensor_list)


def _allreduce_now(tensor, in_place, name, op, prescale_factor, postscale_factor, process_set):
    """A synchronous allreduce of one tensor through the core's synchronous call, so that a
    cached tensor takes the engine's steady path (one C call, no handle) as the numpy API does."""
    return _allreduce_now_call(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place)


def _allreduce_async_one(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place):
    """allreduce_async(_) of one tensor in Python: the numpy view (tensors.py) submitted through
    the core's call. What lane_torch_allreduce_async does not take goes here, with its name."""
    op = _op(op, None)
    name = _claim(name, process_set, "allreduce")
    array = to_numpy(tensor if in_place else contiguous(tensor))
    handle = _ALLREDUCE_SUBMIT[False, in_place](array, op=op, name=name, prescale_factor=prescale_factor,
                                                postscale_factor=postscale_factor, process_set=process_set)
    _learn(name, tensor, array, process_set)
    return _track(handle, (lambda _: tensor) if in_place else from_numpy)


def _allreduce_now_one(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place):
    """allreduce(_) of one tensor in Python (what lane_torch_allreduce does not take)."""
    op = _op(op, None)
    name = _claim(name, process_set, "allreduce")
    array = to_numpy(tensor if in_place else contiguous(tensor))
    call = core.allreduce_ if in_place else core.allreduce
    result = call(array, op=op, name=name, prescale_factor=prescale_factor, postscale_factor=postscale_factor,
                  process_set=process_set)
    _learn(name, tensor, array, process_set)
    return tensor if in_place else from_numpy(result)


# What allreduce(_) and allreduce_async(_) of one tensor call: the Python paths above until the
# core's lane has an entry for a call, then the lane's C calls (csrc/persistent_lane.c), which
# take a tensor that the name's last call reduced (the same tensor object over the same memory)
# without numpy(), Python frames or a closure, and hand anything else to the Python paths.
_allreduce_async_call = _allreduce_async_one
_allreduce_now_call = _allreduce_now_one


def _learn(name, tensor, array, process_set):
    """The lane's entry for `name` remembers that `array` views `tensor` (set 0's calls only)."""
    global _allreduce_async_call, _allreduce_now_call
    if process_set is not global_process_set or not array.nbytes:
        return
    c_calls = runtime.current("allreduce").core
    if _allreduce_async_call is not c_calls.lane_torch_allreduce_async:
        c_calls.lane_configure_torch(torch.Tensor, _allreduce_async_one, _allreduce_now_one, from_numpy)
    if c_calls.lane_learn_source(name, tensor, array):
        _allreduce_async_call, _allreduce_now_call = c_calls.lane_torch_allreduce_async, c_calls.lane_torch_allreduce


def allreduce_async(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                    process_set=global_process_set):
    return _allreduce_async_call(tensor, (Average if op is None else op) if average is None else _op(op, average), name,
                                 prescale_factor, postscale_factor, process_set, False)


def allreduce_async_(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                     process_set=global_process_set):
    return _allreduce_async_call(tensor, (Average if op is None else op) if average is None else _op(op, average), name,
                                 prescale_factor, postscale_factor, process_set, True)


def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
               process_set=global_process_set):
    """In-place allreduce: `tensor` holds the result and is returned."""
    return _allreduce_now_call(tensor, (Average if op is None else op) if average is None else _op(op, average), name,
                               prescale_factor, postscale_factor, process_set, True)


def grouped_allreduce_async(tensors, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                            process_set=global_process_set):
    return _allreduce_async("grouped_allreduce", tensors, False, name, _op(op, average), prescale_factor,
                            postscale_factor, process_set)


def grouped_allreduce_async_(tensors, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                             process_set=global_process_set):
    return _allreduce_async("grouped_allreduce", tensors, True, name, _op(op, average), prescale_factor,
                            postscale_factor, process_set)


def grouped_allreduce_(tensors, average=None, name=None, op=None, prescale_factor=1.0, postscale_factor=1.0,
                       process_set=global_process_set):
    return synchronize(grouped_allreduce_async_(tensors, average, name, op, prescale_factor, postscale_factor,
                                                process_set))


adasum_reference = adasum.combine  # kept under this name for the binding's tests


# --- allgather ------------------------------------------------------------------------------
def allgather_async(tensor, name=None, process_set=global_process_set):
    name = _claim(name, process_set, "allgather")
    handle = core.allgather_async(to_numpy(contiguous(tensor)), name=name, process_set=process_set)
    return _track(handle, from_numpy)


def grouped_allgather_async(tensors, name=None, process_set=global_process_set):
    name = _claim(name, process_set, "grouped_allgather")
    arrays = [to_numpy(contiguous(t), f"tensors[{i}]") for i, t in enumerate(tensors)]
    handle = core.grouped_allgather_async(arrays, name=name, process_set=process_set)
    return _track(handle, _tensor_list)


# --- broadcast ------------------------------------------------------------------------------
def _broadcast_async(tensor, root_rank, name, process_set, in_place):
    name = _claim(name, process_set, "broadcast")
    root = _set_rank(process_set, root_rank)
    if in_place:
        handle = core.broadcast_async_(to_numpy(tensor), root, name=name, process_set=process_set)
        return _track(handle, lambda _: tensor)
    handle = core.broadcast_async(to_numpy(contiguous(tensor)), root, name=name, process_set=process_set)
    return _track(handle, from_numpy)


def broadcast_async(tensor, root_rank, name=None, process_set=global_process_set):
    return _broadcast_async(tensor, root_rank, name, process_set, False)


def broadcast_async_(tensor, root_rank, name=None, process_set=global_process_set):
    return _broadcast_async(tensor, root_rank, name, process_set, True)


def broadcast_(tensor, root_rank, name=None, process_set=global_process_set):
    """In-place broadcast: `tensor` becomes root_rank's (a global rank, as in Horovod)."""
    return synchronize(broadcast_async_(tensor, root_rank, name, process_set))


# --- alltoall -------------------------------------------------------------------------------
def _splits(splits, size, rows):
    if splits is None:
        if rows % size:
            raise ValueError(f"alltoall without splits divides the first dimension evenly, but {rows} rows do not "
                             f"divide by {size} ranks; pass splits")
        return None
    if isinstance(splits, torch.Tensor):
        if splits.dtype.is_floating_point or splits.dtype.is_complex or splits.dtype == torch.bool:
            raise ValueError(f"splits must hold integers (torch.int32 in Horovod), got {splits.dtype}")
        return splits.detach().cpu().numpy().astype(np.int64)
    values = np.asarray(splits)
    if values.dtype.kind not in "iu":
        raise ValueError(f"splits={splits!r} must hold integers")
    return values.astype(np.int64)


def alltoall_async(tensor, splits=None, name=None, process_set=global_process_set):
    """synchronize() returns (output, received_splits)."""
    name = _claim(name, process_set, "alltoall")
    tensor = contiguous(tensor)
    if tensor.dim() == 0:
        raise ValueError("alltoall needs a tensor with at least one dimension")
    send = _splits(splits, process_set.size(), tensor.shape[0])
    handle = core.alltoall_async(to_numpy(tensor), splits=send, name=name, process_set=process_set)

    def finish(result):
        output, received = result
        return from_numpy(output), torch.from_numpy(np.asarray(received, dtype=np.int32))

    return _track(handle, finish)


# --- reducescatter --------------------------------------------------------------------------
def _reducescatter_async(kind, tensors, name, op, prescale_factor, postscale_factor, process_set):
    if op is Adasum:
        raise NotImplementedError(f"{kind} does not support op=Adasum (nor does Horovod's)")
    name = _claim(name, process_set, kind)
    grouped = kind.startswith("grouped")
    if grouped:
        arrays = [to_numpy(contiguous(t), f"tensors[{i}]") for i, t in enumerate(tensors)]
        handle = core.grouped_reducescatter_async(arrays, op=op, name=name, prescale_factor=prescale_factor,
                                                  postscale_factor=postscale_factor, process_set=process_set)
        return _track(handle, _tensor_list)
    handle = core.reducescatter_async(to_numpy(contiguous(tensors)), op=op, name=name, prescale_factor=prescale_factor,
                                      postscale_factor=postscale_factor, process_set=process_set)
    return _track(handle, from_numpy)


def reducescatter_async(tensor, name=None, op=Average, prescale_factor=1.0, postscale_factor=1.0,
                        process_set=global_process_set):
    return _reducescatter_async("reducescatter", tensor, name, _op(op, None), prescale_factor, postscale_factor,
                                process_set)


def grouped_reducescatter_async(tensors, name=None, op=Average, prescale_factor=1.0, postscale_factor=1.0,
                                process_set=global_process_set):
    return _reducescatter_async("grouped_reducescatter", tensors, name, _op(op, None), prescale_factor,
                                postscale_factor, process_set)


# --- sparse ---------------------------------------------------------------------------------
def sparse_allreduce_async(tensor, name=None, op=Average, process_set=global_process_set):
    """Allreduce of a sparse COO tensor through ringtrain.sparse (method "auto": Horovod's
    allgather of indices and values, owner-sharded reduction or dense, whichever its cost model
    picks). The sparse dimensions are flattened into one row index, as ringtrain.sparse wants
    row-sparse gradients. Every rank must wait on its handles in the same order; the result is
    a coalesced sparse tensor."""
    from ..train import sparse

    op = _op(op, None)
    if op not in (Sum, Average):
        raise ValueError(f"sparse_allreduce_async supports op=Sum and op=Average, got {op!r}")
    if not isinstance(tensor, torch.Tensor) or not tensor.is_sparse:
        raise TypeError("sparse_allreduce_async needs a sparse COO torch.Tensor")
    name = _claim(name, process_set, "sparse_allreduce")
    t = tensor.detach().coalesce()
    shape, k = tuple(t.shape), t.sparse_dim()
    row_dims = shape[:k]
    rows = np.ravel_multi_index(t.indices().numpy(), row_dims) if k else np.zeros(t.values().shape[0], np.int64)
    work = torch.float64 if t.dtype == torch.float64 else torch.float32
    values = t.values().to(work).numpy()
    grad = sparse.SparseGradient(rows, values.reshape((-1,) + shape[k:]), (int(np.prod(row_dims)),) + shape[k:])

    def run():
        reduced = sparse.sparse_allreduce(grad, op=op, name=name, process_set=process_set)
        if isinstance(reduced, np.ndarray):  # the "dense" method
            return torch.from_numpy(reduced).reshape(shape).to(t.dtype).to_sparse(k)
        indices = torch.from_numpy(np.stack(np.unravel_index(reduced.indices, row_dims)).astype(np.int64))
        values = torch.from_numpy(np.ascontiguousarray(reduced.values)).to(t.dtype)
        return torch.sparse_coo_tensor(indices, values, shape, check_invariants=False).coalesce()

    engine = runtime.current("sparse_allreduce_async").engine
    return _track(Handle("sparse_allreduce", name, engine=engine, deferred=run), None)


# --- synchronisation and process sets -------------------------------------------------------
def join(device=-1):
    """This rank has no more data (device is accepted for Horovod compatibility; CPU only).
    Returns the rank that joined last, the same on every rank."""
    return core.join()


def barrier(process_set=global_process_set):
    core.barrier(process_set=process_set)


def add_process_set(process_set):
    """Register a ProcessSet (or a list of global ranks) on every rank; returns it."""
    return core.add_process_set(process_set if isinstance(process_set, _CoreProcessSet) else ProcessSet(process_set))


def remove_process_set(process_set):
    core.remove_process_set(process_set)
    return True


def start_timeline(file_path, mark_cycles=False):
    """Write a Chrome trace of every collective to file_path; mark_cycles marks each negotiation
    round that ran collectives (CYCLE_START)."""
    core.start_timeline(file_path, mark_cycles)


def stop_timeline():
    core.stop_timeline()


__all__ = ["Adasum", "Average", "Handle", "Max", "Min", "ProcessSet", "Product", "Sum", "add_process_set",
           "adasum_reference",
           "allgather_async", "allreduce_", "allreduce_async", "allreduce_async_", "alltoall_async", "barrier",
           "broadcast_", "broadcast_async", "broadcast_async_", "global_process_set", "grouped_allgather_async",
           "grouped_allreduce_", "grouped_allreduce_async", "grouped_allreduce_async_",
           "grouped_reducescatter_async", "join", "poll", "reducescatter_async", "remove_process_set",
           "sparse_allreduce_async", "start_timeline", "stop_timeline", "synchronize"]
