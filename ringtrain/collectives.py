"""The collective operations, with Horovod's names and semantics.

Each call validates its arguments completely (type, dtype, layout, op, root, splits) before
anything is queued, so bad input raises on the rank that has it and leaves all buffers
untouched. Then it becomes a Request for the background engine (engine/engine.py); the *_async
variants return its Handle, the plain calls wait for it. Names are optional: unnamed calls get
deterministic names (the n-th unnamed allreduce on a process set has the same name on every
member, from a bounded set of names that recur step after step: requests.unnamed_name). The grouped_* calls always return lists, one-tensor groups included."""
import math

import numpy as np

from . import runtime
from .engine import adasum
from .dtypes import BOOL_CODE
from .engine.executor import split_rows
from .reduce_ops import Adasum, Average, Max, Min, Product, ReduceOp, Sum, as_op
from .process_sets import ProcessSet, global_process_set
from .engine.requests import Handle, Request, UnnamedName, request_name, unnamed_source
from .errors import RingtrainError
from .tensors import as_array

_PLAIN_NUMBERS = (int, float)
_ELEMENTWISE_OPS = (Sum, Average, Min, Max, Product)  # by their C codes (the lane recognizes these objects)


def _check_reduction(op, code, prescale_factor, postscale_factor):
    """(op, prescale, postscale) validated. The common case (a ReduceOp, factors of 1) takes a
    few hundred nanoseconds: this runs on every small allreduce, where it is the latency."""
    if (
        type(op) is ReduceOp
        and type(prescale_factor) in _PLAIN_NUMBERS
        and type(postscale_factor) in _PLAIN_NUMBERS
        and prescale_factor == 1
        and postscale_factor == 1
        and not (op is Average and code == BOOL_CODE)
    ):
        return op, 1.0, 1.0
    op = as_op(op)
    if op == Average and code == BOOL_CODE:
        raise ValueError("op=Average is not defined for dtype bool; use Sum (logical or) or Min/Max")
    for arg, value in (("prescale_factor", prescale_factor), ("postscale_factor", postscale_factor)):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise TypeError(f"{arg}={value!r} must be a real number")
        if not math.isfinite(value):
            raise ValueError(f"{arg}={value!r} must be finite")
        if value != 1 and code == BOOL_CODE:
            raise ValueError(f"{arg}={value!r} cannot scale a bool tensor")
    return op, float(prescale_factor), float(postscale_factor)


def _check_rows(array, arg, collective):
    if array.ndim == 0:
        raise ValueError(f"{arg} of {collective} must have at least one dimension (got a 0-d array)")


def _engine_and_state(process_set, caller):
    """(engine, set state) for a process set this rank belongs to."""
    engine = runtime.current(caller).engine
    if type(process_set) is not ProcessSet and not isinstance(process_set, ProcessSet):
        raise TypeError(f"process_set={process_set!r} must be a ringtrain.ProcessSet")
    state = engine.sets.get(process_set.process_set_id)
    if state is None:  # not registered, or not a member: the set says which
        state = process_set._state(caller)
    return engine, state


def _tensors(tensors, writable, caller):
    """Validated arrays and their dtype code: the grouped_* calls take a list, the others one tensor."""
    if caller.startswith("grouped_"):
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise ValueError(f"{caller} needs at least one tensor")
        arrays = [as_array(t, f"tensors[{i}]", writable) for i, t in enumerate(tensors)]
        codes = {code for _, code in arrays}
        if len(codes) > 1:
            raise TypeError(f"{caller}: all tensors of a group must share one dtype, got "
                            f"{sorted({str(a.dtype) for a, _ in arrays})}")
        return [a for a, _ in arrays], arrays[0][1]
    array, code = as_array(tensors, writable=writable)
    return [array], code


def _submit(engine, request, wait):
    handle = engine.submit(request)
    return engine.wait(handle) if wait else handle


# --- allreduce ------------------------------------------------------------------------------
def _allreduce(kind, tensors, op, name, prescale_factor, postscale_factor, process_set, in_place, wait):
    engine, state = _engine_and_state(process_set, kind)
    if kind == "allreduce":  # (the latency of a small allreduce is mostly these checks)
        array, code = as_array(tensors, writable=in_place)
        arrays = [array]
    else:
        arrays, code = _tensors(tensors, in_place, kind)
    op, pre, post = _check_reduction(op, code, prescale_factor, postscale_factor)
    if op is Adasum:
        handle = _adasum(engine, state, kind, arrays, code, request_name(kind, name, state.id), pre, post, in_place)
        result = engine.wait(handle) if wait else handle
        return tensors if wait and in_place else result
    outputs = arrays if in_place else [np.empty_like(a) for a in arrays]
    name = request_name(kind, name, state.id)
    if wait and kind == "allreduce":  # the steady state: one C call in this thread (Engine.allreduce_now)
        done = engine.allreduce_now(state, name, array, outputs[0], code, int(op), pre, post)
        if done is not None:
            if state.id == 0 and array.nbytes:
                _teach_call(engine, state, name, array, code, int(op), pre, post)
            return tensors if in_place else done
    request = Request("allreduce", name, state.id, arrays, outputs, code, int(op), -1, pre,
                      post, grouped=kind.startswith("grouped_"))
    if not wait and kind == "allreduce" and state.id == 0 and array.nbytes:
        return _submit_call(engine, request, array)
    result = _submit(engine, request, wait)
    if wait and in_place:
        return tensors
    return result


def allreduce(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
              process_set=global_process_set):
    """Reduce `tensor` over the ranks of the process set; returns a new array.

    The result is op(prescale_factor * tensor on each rank) * postscale_factor; Average divides
    by the number of ranks in the set (integers: exact division truncating toward zero).
    float16 and bfloat16 compute every partial result in float32."""
    return _allreduce_sync_call(tensor, op, name, prescale_factor, postscale_factor, process_set, False)


def allreduce_(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
               process_set=global_process_set):
    """In-place allreduce: `tensor` is overwritten with the result and returned."""
    return _allreduce_sync_call(tensor, op, name, prescale_factor, postscale_factor, process_set, True)


def _allreduce_sync(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place):
    """allreduce(_) in Python: every check, then the steady path (Engine.allreduce_now) or a Request."""
    return _allreduce("allreduce", tensor, op, name, prescale_factor, postscale_factor, process_set, in_place, True)


def _allreduce_async(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place):
    """allreduce_async(_) in Python: every check, then a Request (see _submit_call)."""
    return _allreduce("allreduce", tensor, op, name, prescale_factor, postscale_factor, process_set, in_place, False)


# What allreduce(_) and allreduce_async(_) call: the Python paths above until a call has made a
# lane entry, then the C lane's calls (csrc/persistent_lane.c: lane_allreduce, lane_allreduce_async).
# They take a training loop's steady state in C (a tensor whose name and signature the engine has
# taught its cache bit) and hand every other call, with its name, to the Python path.
_allreduce_sync_call = _allreduce_sync
_allreduce_async_call = _allreduce_async
LANE_CALLS_LIMIT = 8192  # names remembered for the lane (twice the response cache): then it starts afresh


def _call_entry(engine, name, array, code, op, pre, post):
    """The lane's entry for calls of `name` with this signature (a new one if the name had none
    or another signature; not yet stored), the lane's C calls switched on."""
    global _allreduce_sync_call, _allreduce_async_call
    entry = engine.lane_calls.get(name)
    if entry is not None and entry.code == code and entry.op == op and entry.prescale == pre and \
            entry.postscale == post and entry.shape == array.shape:
        return entry
    core = engine.runtime.core
    if _allreduce_async_call is not core.lane_allreduce_async:
        core.lane_configure(_start_slowly, Handle, _allreduce_async, _allreduce_sync, global_process_set,
                            _ELEMENTWISE_OPS, *unnamed_source("allreduce", 0))
        _allreduce_sync_call, _allreduce_async_call = core.lane_allreduce, core.lane_allreduce_async
    if len(engine.lane_calls) >= LANE_CALLS_LIMIT:
        engine.lane_calls.clear()
    return core.LaneEntry(array, array, code, op, pre, post, name, 0, engine, None, engine.lane_generation, True)


def _teach_call(engine, state, name, array, code, op, pre, post):
    """After a synchronous call the steady path completed: its name's lane entry learns the bit,
    so that the next call with this signature is lane_allreduce's alone."""
    memo = state.bit_memo.get((name, code, array.shape, op, pre, post))
    if memo is None or memo[0] != state.cache.generation:
        return
    entry = _call_entry(engine, name, array, code, op, pre, post)
    entry.bit, entry.bit_generation = memo[1], memo[0]
    engine.lane_calls[name] = entry


def _submit_call(engine, request, array):
    """Submit an asynchronous allreduce of set 0 and remember its signature in the lane's entry
    for the name, which the engine teaches its cache bit: the name's next call with the same
    signature then queues in C. The engine checks first that nothing of the name is in flight,
    in the lane included."""
    name = request.name
    entry = _call_entry(engine, name, array, request.code, request.op, request.prescale, request.postscale)
    request.origin = entry
    handle = engine.submit(request)
    engine.lane_calls[name] = entry
    entry.adopt(handle)
    return handle


def allreduce_async(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                    process_set=global_process_set):
    return _allreduce_async_call(tensor, op, name, prescale_factor, postscale_factor, process_set, False)


def allreduce_async_(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                     process_set=global_process_set):
    return _allreduce_async_call(tensor, op, name, prescale_factor, postscale_factor, process_set, True)


def grouped_allreduce(tensors, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                      process_set=global_process_set):
    """Allreduce a list of tensors (one dtype) as one fused operation; returns a list."""
    return _allreduce("grouped_allreduce", list(tensors), op, name, prescale_factor, postscale_factor,
                      process_set, False, True)


def grouped_allreduce_(tensors, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                       process_set=global_process_set):
    return _allreduce("grouped_allreduce", list(tensors), op, name, prescale_factor, postscale_factor,
                      process_set, True, True)


def grouped_allreduce_async(tensors, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                            process_set=global_process_set):
    return _allreduce("grouped_allreduce", list(tensors), op, name, prescale_factor, postscale_factor,
                      process_set, False, False)


def grouped_allreduce_async_(tensors, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                             process_set=global_process_set):
    return _allreduce("grouped_allreduce", list(tensors), op, name, prescale_factor, postscale_factor,
                      process_set, True, False)


class PersistentAllreduce:
    """An allreduce of the same arrays, checked once and started again and again: what MPI 4's
    MPI_Allreduce_init is to MPI_Allreduce. A training loop's gradient buffers are the same
    arrays every step, and for a small tensor the per-call checks (type, dtype, layout, op,
    scale factors, name, process set) cost as much as the engine's own work; start() skips them
    and hands the buffers to the engine. Made by allreduce_init().

    start() starts the allreduce on the arrays' contents at that moment and returns its Handle:
    the same Handle every time, as an MPI persistent request is the same request (synchronize()
    returns the output). A second start() before the last one completed is refused, as a second
    call under one name is. Once the engine has negotiated the tensor, start() is a C function
    that queues it for the engine's next round (csrc/persistent_lane.c). The arrays stay the
    caller's: keep their shape and dtype, and do not write them while a start() is in flight."""

    __slots__ = ("start", "process_set", "_entry")

    def __init__(self, tensor, output, op, name, prescale_factor, postscale_factor, process_set):
        engine, state = _engine_and_state(process_set, "allreduce_init")
        array, code = as_array(tensor, writable=output is None)
        op, pre, post = _check_reduction(op, code, prescale_factor, postscale_factor)
        if op is Adasum:
            raise ValueError("allreduce_init does not take op=Adasum (its exchange is not one allreduce); "
                             "use allreduce_async_")
        if output is None:
            out = array
        else:
            out, out_code = as_array(output, "output", writable=True)
            if out_code != code or out.shape != array.shape:
                raise ValueError(f"output must have the tensor's shape and dtype: tensor {array.shape} {array.dtype}, "
                                 f"output {out.shape} {out.dtype}")
            if np.shares_memory(out, array) and out is not array:
                raise ValueError("output overlaps tensor without being the same array; pass output=None to reduce "
                                 "in place")
        name = request_name("allreduce_init", name, state.id)
        handle = Handle("allreduce", name, engine=engine)
        handle.done = True  # nothing started yet
        core = runtime.current("allreduce_init").core
        core.lane_configure(_start_slowly, Handle, _allreduce_async, _allreduce_sync, global_process_set,
                            _ELEMENTWISE_OPS, *unnamed_source("allreduce", 0))
        self._entry = core.LaneEntry(array, out, code, int(op), pre, post, name, state.id, engine, handle,
                                     engine.lane_generation)
        self.start = self._entry.start  # the C method itself: no Python frame per start
        self.process_set = process_set

    tensor = property(lambda self: self._entry.tensor, doc="the array reduced")
    output = property(lambda self: self._entry.output, doc="where the result goes (the tensor when in place)")
    name = property(lambda self: self._entry.name)
    engine = property(lambda self: self._entry.engine, doc="the engine it was made for")

    def __repr__(self):
        return f"<ringtrain.PersistentAllreduce {self.name!r} {self.tensor.shape} {self.tensor.dtype}>"


def _start_slowly(entry):
    """A start() the C lane could not queue (csrc/persistent_lane.c): the first one, after the
    response cache changed, while the lane is closed (a timeline, several process sets), or one
    to refuse. Submits a Request whose handle is the entry's own; the engine teaches the entry
    its cache bit when it finds one."""
    if runtime.current("PersistentAllreduce.start").engine is not entry.engine:
        raise RingtrainError(f"persistent allreduce '{entry.name}' was made before ringtrain was shut down or "
                             "re-initialized; make it again with allreduce_init()")
    handle = entry.handle
    if not handle.done:
        raise ValueError(f"persistent allreduce '{entry.name}' was started again before its last start completed "
                         "on this rank; synchronize() its handle first")
    request = Request("allreduce", entry.name, entry.set_id, [entry.tensor], [entry.output], entry.code, entry.op, -1,
                      entry.prescale, entry.postscale)
    handle.done, handle.result, handle.error = False, None, None
    request.handle, request.origin = handle, entry
    try:
        return entry.engine.submit(request)
    except BaseException:
        handle.done = True  # not started: startable again
        raise


def allreduce_init(tensor, output=None, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                   process_set=global_process_set):
    """A PersistentAllreduce of `tensor` into `output` (None: in place), checked now; each
    .start() then runs it with the arrays' current contents and returns a Handle. Every rank
    makes its own and starts it as it would call allreduce_async. Unnamed ones get a name of
    their own now, in the order they are made."""
    return PersistentAllreduce(tensor, output, op, name, prescale_factor, postscale_factor, process_set)


def _adasum(engine, state, kind, arrays, code, name, pre, post, in_place):
    """op=Adasum: each tensor is allgathered (one row per rank) and the rows are combined in
    Horovod's recursive-halving order, in float64 (ringtrain/engine/adasum.py). This costs an
    allgather, not an allreduce, and like Horovod's CPU Adasum needs a power-of-two set."""
    adasum.check(state.size, [a.dtype for a in arrays])
    part_name = UnnamedName if isinstance(name, UnnamedName) else str  # unnamed names keep recurring
    parts = [_submit(engine, Request("allgather", part_name(f"{name}.adasum.{i}"), state.id, [a.reshape(1, -1)], [],
                                     code), False) for i, a in enumerate(arrays)]

    def combine():
        outputs = []
        for array, part in zip(arrays, parts):
            rows = engine.wait(part)
            result = (adasum.combine(rows.astype(np.float64) * pre) * post).reshape(array.shape).astype(array.dtype)
            if in_place:
                array[...] = result
                result = array
            outputs.append(result)
        return outputs if len(outputs) > 1 else outputs[0]

    return Handle("allreduce", name, kind.startswith("grouped_"), engine, parts=parts, deferred=combine)


# --- allgather ------------------------------------------------------------------------------
def _allgather(kind, tensors, name, process_set, wait):
    engine, state = _engine_and_state(process_set, kind)
    arrays, code = _tensors(tensors, False, kind)
    for a in arrays:
        _check_rows(a, "tensor", "allgather")
    request = Request("allgather", request_name(kind, name, state.id), state.id, arrays, [], code,
                      grouped=kind.startswith("grouped_"))
    return _submit(engine, request, wait)


def allgather(tensor, name=None, process_set=global_process_set):
    """Concatenate every rank's tensor along the first dimension, in rank order.
    The first dimension may differ between ranks; the others must match."""
    return _allgather("allgather", tensor, name, process_set, True)


def allgather_async(tensor, name=None, process_set=global_process_set):
    return _allgather("allgather", tensor, name, process_set, False)


def grouped_allgather(tensors, name=None, process_set=global_process_set):
    """Allgather a list of tensors (one dtype) in one ring pass; returns a list."""
    return _allgather("grouped_allgather", list(tensors), name, process_set, True)


def grouped_allgather_async(tensors, name=None, process_set=global_process_set):
    return _allgather("grouped_allgather", list(tensors), name, process_set, False)


# --- broadcast ------------------------------------------------------------------------------
def _check_root(size, root_rank):
    if isinstance(root_rank, bool) or not isinstance(root_rank, (int, np.integer)):
        raise TypeError(f"root_rank={root_rank!r} must be an int")
    if not 0 <= root_rank < size:
        raise ValueError(f"root_rank={root_rank} is out of range: there are {size} ranks (0..{size - 1})")
    return int(root_rank)


def _broadcast(tensor, root_rank, name, process_set, in_place, wait):
    engine, state = _engine_and_state(process_set, "broadcast")
    array, code = as_array(tensor, writable=in_place)
    root = _check_root(state.size, root_rank)
    out = array if in_place else np.empty_like(array)
    request = Request("broadcast", request_name("broadcast", name, state.id), state.id, [array], [out], code, 0, root)
    result = _submit(engine, request, wait)
    return tensor if (wait and in_place) else result


def broadcast(tensor, root_rank, name=None, process_set=global_process_set):
    """Return root_rank's tensor on every rank (a new array). root_rank counts within the set."""
    return _broadcast(tensor, root_rank, name, process_set, False, True)


def broadcast_(tensor, root_rank, name=None, process_set=global_process_set):
    """In-place broadcast: `tensor` is overwritten with root_rank's values and returned."""
    return _broadcast(tensor, root_rank, name, process_set, True, True)


def broadcast_async(tensor, root_rank, name=None, process_set=global_process_set):
    return _broadcast(tensor, root_rank, name, process_set, False, False)


def broadcast_async_(tensor, root_rank, name=None, process_set=global_process_set):
    return _broadcast(tensor, root_rank, name, process_set, True, False)


# --- reducescatter --------------------------------------------------------------------------
def _reducescatter(kind, tensors, op, name, prescale_factor, postscale_factor, process_set, wait):
    engine, state = _engine_and_state(process_set, kind)
    arrays, code = _tensors(tensors, False, kind)
    for a in arrays:
        _check_rows(a, "tensor", "reducescatter")
    op, pre, post = _check_reduction(op, code, prescale_factor, postscale_factor)
    if op is Adasum:
        raise ValueError(f"{kind} does not support op=Adasum (nor does Horovod's); use allreduce")
    request = Request("reducescatter", request_name(kind, name, state.id), state.id, arrays, [], code, int(op), -1, pre,
                      post, grouped=kind.startswith("grouped_"))
    return _submit(engine, request, wait)


def reducescatter(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                  process_set=global_process_set):
    """Reduce `tensor` over the ranks and return this rank's share of the first dimension
    (split as evenly as possible; lower ranks take the extra rows)."""
    return _reducescatter("reducescatter", tensor, op, name, prescale_factor, postscale_factor, process_set, True)


def reducescatter_async(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                        process_set=global_process_set):
    return _reducescatter("reducescatter", tensor, op, name, prescale_factor, postscale_factor, process_set, False)


def grouped_reducescatter(tensors, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                          process_set=global_process_set):
    """Reduce-scatter a list of tensors (one dtype) as one fused operation; returns a list."""
    return _reducescatter("grouped_reducescatter", list(tensors), op, name, prescale_factor, postscale_factor,
                          process_set, True)


def grouped_reducescatter_async(tensors, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0,
                                process_set=global_process_set):
    return _reducescatter("grouped_reducescatter", list(tensors), op, name, prescale_factor, postscale_factor,
                          process_set, False)


# --- alltoall -------------------------------------------------------------------------------
def _check_splits(size, splits, rows):
    if splits is None:
        return split_rows(rows, size)
    try:
        values = np.asarray(splits)
    except Exception:
        values = None
    if values is None or values.ndim != 1 or values.dtype.kind not in "iu":
        raise TypeError(f"splits={splits!r} must be a 1-d sequence of ints, one per rank")
    if len(values) != size:
        raise ValueError(f"splits={splits!r} has {len(values)} entries, but there are {size} ranks")
    if (values < 0).any():
        raise ValueError(f"splits={splits!r} has negative entries")
    if int(values.sum()) != rows:
        raise ValueError(f"splits={splits!r} add up to {int(values.sum())}, but the first dimension of tensor is {rows}")
    return values.astype(np.int64)


def _alltoall(tensor, splits, name, process_set, wait):
    engine, state = _engine_and_state(process_set, "alltoall")
    array, code = as_array(tensor)
    _check_rows(array, "tensor", "alltoall")
    request = Request("alltoall", request_name("alltoall", name, state.id), state.id, [array], [], code,
                      splits=_check_splits(state.size, splits, array.shape[0]))
    return _submit(engine, request, wait)


def alltoall(tensor, splits=None, name=None, process_set=global_process_set):
    """Send splits[i] rows of `tensor` (in order) to rank i; receive from every rank in rank order.

    Returns (output, received_splits). Without splits the first dimension is divided as in
    reducescatter."""
    return _alltoall(tensor, splits, name, process_set, True)


def alltoall_async(tensor, splits=None, name=None, process_set=global_process_set):
    return _alltoall(tensor, splits, name, process_set, False)


# --- synchronisation ------------------------------------------------------------------------
def barrier(process_set=global_process_set):
    """Block until every rank of the set has called barrier()."""
    engine, state = _engine_and_state(process_set, "barrier")
    _submit(engine, Request("barrier", request_name("barrier", None, state.id), state.id), True)


def join():
    """Declare that this rank has no more data. Until every rank has joined, the others'
    allreduces keep completing with this rank contributing zeros (Average still divides by
    the full number of ranks, as in Horovod). Returns the rank that joined last."""
    engine, state = _engine_and_state(global_process_set, "join")
    return _submit(engine, Request("join", "join", state.id), True)


def poll(handle):
    """True once the operation behind `handle` has finished (successfully or not)."""
    return _handle(handle, "poll").ready()


def synchronize(handle):
    """Wait for `handle` and return its output (alltoall: (output, received_splits); grouped
    ops: a list), or raise the operation's error."""
    if handle.__class__ is Handle and handle.done and handle.deferred is None and handle.finish is None:
        if handle.error is not None:  # (most handles of a step: a round completed them; nothing to wait for)
            raise handle.error
        return handle.result
    runtime.current("synchronize")
    return _handle(handle, "synchronize").wait()


def _handle(handle, caller):
    if not isinstance(handle, Handle):
        raise TypeError(f"{caller}() takes the Handle that a *_async call returned, got {handle!r}")
    return handle


# --- process sets ---------------------------------------------------------------------------
def add_process_set(process_set):
    """Register a ProcessSet (a list of ranks is accepted too). Collective: every rank calls it."""
    if not isinstance(process_set, ProcessSet):
        process_set = ProcessSet(process_set)
    rt = runtime.current("add_process_set")
    bad = [r for r in process_set.ranks if not 0 <= r < rt.size]
    if not process_set.ranks or bad:
        raise ValueError(f"process set ranks {process_set.ranks} must be a non-empty subset of 0..{rt.size - 1}")
    request = Request("add_process_set", request_name("add_process_set", None), 0, payload=tuple(process_set.ranks))
    return process_set._register(_submit(rt.engine, request, True))


def remove_process_set(process_set):
    """Unregister a ProcessSet. Collective: every rank calls it."""
    rt = runtime.current("remove_process_set")
    if process_set.process_set_id in (None, 0):
        raise ValueError(f"{process_set!r} cannot be removed")
    request = Request("remove_process_set", request_name("remove_process_set", None), 0,
                      payload=(process_set.process_set_id,))
    _submit(rt.engine, request, True)
    process_set.process_set_id = None


def start_timeline(path, mark_cycles=False):
    """Start writing a Chrome trace of every collective to `path` (rank 0 writes; call on all
    ranks); mark_cycles adds a CYCLE_START mark at each negotiation round that ran collectives."""
    engine = runtime.current("start_timeline").engine
    with engine._round_lock:
        engine.start_timeline(path, mark_cycles)


def stop_timeline():
    engine = runtime.current("stop_timeline").engine
    with engine._round_lock:
        engine.stop_timeline()
