"""The collective operations on numpy-compatible tensors, with Horovod's names and semantics.

Every function validates its arguments completely (type, dtype, layout, op, root, splits)
before the first message is sent, so bad input raises on the rank that has it and leaves all
buffers untouched. The communication itself is ringtrain's own C code (csrc/), which releases
the GIL while it runs."""
import math

import numpy as np

from . import runtime
from .dtypes import BOOL_CODE
from .ops import Average, ReduceOp, Sum, as_op
from .tensors import as_array


_PLAIN_NUMBERS = (int, float)


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


def allreduce(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0):
    """Reduce `tensor` over all ranks; returns a new array.

    The result is op(prescale_factor * tensor on each rank) * postscale_factor; Average divides
    by the number of ranks (integers: exact division truncating toward zero). float16 and
    bfloat16 compute every partial result in float32."""
    rt = runtime.current("allreduce")
    array, code = as_array(tensor)
    op, pre, post = _check_reduction(op, code, prescale_factor, postscale_factor)
    out = np.empty_like(array)
    cfg = rt.config
    rt.core.allreduce(rt.handle, array, out, code, op, pre, post, cfg.small_allreduce_threshold, cfg.segment_bytes)
    return out


def allreduce_(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0):
    """In-place allreduce: `tensor` is overwritten with the result and returned."""
    rt = runtime.current("allreduce_")
    array, code = as_array(tensor, writable=True)
    op, pre, post = _check_reduction(op, code, prescale_factor, postscale_factor)
    cfg = rt.config
    rt.core.allreduce(rt.handle, array, array, code, op, pre, post, cfg.small_allreduce_threshold, cfg.segment_bytes)
    return tensor


def _allgather_metadata(rt, array, code):
    """Every rank's (rows, dtype code, row elements, ndim), checked for consistency.

    The trailing dimensions must agree for the blocks to form one array; since this exchange is
    needed anyway to learn the row counts, disagreement is reported here on every rank."""
    mine = np.array([array.shape[0], code, int(np.prod(array.shape[1:])), array.ndim], dtype=np.int64)
    table = np.empty((rt.size, 4), dtype=np.int64)
    table[rt.rank] = mine
    rt.core.allgatherv(rt.handle, table, np.full(rt.size, mine.nbytes, dtype=np.int64), rt.config.segment_bytes)
    for column, what in ((1, "dtypes"), (3, "numbers of dimensions"), (2, "row sizes (trailing dimensions)")):
        values = table[:, column]
        if (values != values[0]).any():
            other = int(np.argmax(values != values[0]))
            raise _mismatch("allgather", what, 0, values[0], other, values[other], column == 1)
    return table[:, 0]


def _mismatch(collective, what, rank_a, value_a, rank_b, value_b, is_dtype=False):
    from .dtypes import SUPPORTED
    from .errors import RingtrainError

    if is_dtype:
        value_a, value_b = SUPPORTED[int(value_a)], SUPPORTED[int(value_b)]
    return RingtrainError(
        f"Mismatched {collective} {what}: rank {rank_a} has {value_a}, but rank {rank_b} has {value_b}"
    )


def allgather(tensor, name=None):
    """Concatenate every rank's tensor along the first dimension, in rank order.
    The first dimension may differ between ranks; the others must match."""
    rt = runtime.current("allgather")
    array, code = as_array(tensor)
    _check_rows(array, "tensor", "allgather")
    rows = _allgather_metadata(rt, array, code)
    row_bytes = array.itemsize * int(np.prod(array.shape[1:]))
    out = np.empty((int(rows.sum()), *array.shape[1:]), dtype=array.dtype)
    start = int(rows[: rt.rank].sum())
    out[start : start + array.shape[0]] = array
    rt.core.allgatherv(rt.handle, out, rows * row_bytes, rt.config.segment_bytes)
    return out


def _check_root(rt, root_rank):
    if isinstance(root_rank, bool) or not isinstance(root_rank, (int, np.integer)):
        raise TypeError(f"root_rank={root_rank!r} must be an int")
    if not 0 <= root_rank < rt.size:
        raise ValueError(f"root_rank={root_rank} is out of range: there are {rt.size} ranks (0..{rt.size - 1})")
    return int(root_rank)


def broadcast(tensor, root_rank, name=None):
    """Return root_rank's tensor on every rank (a new array)."""
    rt = runtime.current("broadcast")
    array, _ = as_array(tensor)
    root = _check_root(rt, root_rank)
    out = array.copy() if rt.rank == root else np.empty_like(array)
    rt.core.broadcast(rt.handle, out, root, rt.config.segment_bytes)
    return out


def broadcast_(tensor, root_rank, name=None):
    """In-place broadcast: `tensor` is overwritten with root_rank's values and returned."""
    rt = runtime.current("broadcast_")
    array, _ = as_array(tensor, writable=True)
    root = _check_root(rt, root_rank)
    rt.core.broadcast(rt.handle, array, root, rt.config.segment_bytes)
    return tensor


def split_rows(rows, parts):
    """Horovod's rule: as even as possible, the first rows % parts parts take one extra row."""
    base, extra = divmod(rows, parts)
    return np.array([base + (i < extra) for i in range(parts)], dtype=np.int64)


def reducescatter(tensor, op=Average, name=None, prescale_factor=1.0, postscale_factor=1.0):
    """Reduce `tensor` over all ranks and return this rank's share of the first dimension
    (split as evenly as possible; lower ranks take the extra rows)."""
    rt = runtime.current("reducescatter")
    array, code = as_array(tensor)
    _check_rows(array, "tensor", "reducescatter")
    op, pre, post = _check_reduction(op, code, prescale_factor, postscale_factor)
    rows = split_rows(array.shape[0], rt.size)
    row_elements = int(np.prod(array.shape[1:]))
    out = np.empty((int(rows[rt.rank]), *array.shape[1:]), dtype=array.dtype)
    rt.core.reduce_scatter(rt.handle, array, out, rows * row_elements, code, op, pre, post, rt.config.segment_bytes)
    return out


def _check_splits(rt, splits, rows):
    if splits is None:
        return split_rows(rows, rt.size)
    try:
        values = np.asarray(splits)
    except Exception:
        values = None
    if values is None or values.ndim != 1 or values.dtype.kind not in "iu":
        raise TypeError(f"splits={splits!r} must be a 1-d sequence of ints, one per rank")
    if len(values) != rt.size:
        raise ValueError(f"splits={splits!r} has {len(values)} entries, but there are {rt.size} ranks")
    if (values < 0).any():
        raise ValueError(f"splits={splits!r} has negative entries")
    if int(values.sum()) != rows:
        raise ValueError(f"splits={splits!r} add up to {int(values.sum())}, but the first dimension of tensor is {rows}")
    return values.astype(np.int64)


def alltoall(tensor, splits=None, name=None):
    """Send splits[i] rows of `tensor` (in order) to rank i; receive from every rank in rank order.

    Returns (output, received_splits). Without splits the first dimension is divided as in
    reducescatter."""
    rt = runtime.current("alltoall")
    array, _ = as_array(tensor)
    _check_rows(array, "tensor", "alltoall")
    send_rows = _check_splits(rt, splits, array.shape[0])
    recv_rows = np.empty(rt.size, dtype=np.int64)
    eight = np.full(rt.size, 8, dtype=np.int64)
    rt.core.alltoallv(rt.handle, send_rows, eight, recv_rows, eight)
    row_bytes = array.itemsize * int(np.prod(array.shape[1:]))
    out = np.empty((int(recv_rows.sum()), *array.shape[1:]), dtype=array.dtype)
    rt.core.alltoallv(rt.handle, array, send_rows * row_bytes, out, recv_rows * row_bytes)
    return out, recv_rows


def barrier():
    """Block until every rank has called barrier()."""
    rt = runtime.current("barrier")
    rt.core.barrier(rt.handle)
