"""Sparse (embedding-style) gradients and the three ways to reduce them across ranks (Parallax).

A SparseGradient says "these rows of a dense_shape array, with these values": an embedding
lookup's gradient touches only the rows of the batch's tokens. sparse_allreduce reduces one
across the ranks by one of three methods:

  "allgather"  every rank gathers every rank's (index, row) pairs: Horovod's way. Duplicates
               stay in the result. Cheap when the gradients are tiny; grows with size x nnz.
  "owner"      rank k owns a contiguous shard of rows (row r belongs to r * size // rows).
               Each rank merges its own duplicates, sends each row to its owner (alltoallv),
               owners merge and reduce what they received, and the reduced rows are gathered
               back. The result has unique sorted indices. Wins when ranks touch the same rows.
  "dense"      scatter into a zero array and allreduce it: the right choice once the rows cover
               a good part of the array.
  "auto"       one of the three, from the measured nnz of every rank and a cost model.

Every call first allgathers a few int64s per rank (nnz, method, dtype, op, dense_shape). So a
mismatch between ranks is a clear ValueError on every rank instead of a hang, and "auto" is
decided on the first rank of the set, from numbers all ranks share, and broadcast: all ranks run
the same method. Its estimates come from the planner's network model (ringtrain.planner.costs).

Only Sum and Average are defined: a row absent on a rank counts as zeros there."""
import logging
import math

import numpy as np

from .. import collectives
from ..reduce_ops import Average, Sum, as_op
from ..process_sets import global_process_set
from ..engine.requests import unnamed_name
from ..planner.costs import Network
from .sparse_kernels import merge_duplicate_rows, scatter_add_rows

log = logging.getLogger("ringtrain.sparse")

METHODS = ("allgather", "owner", "dense", "auto")
_VALUE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_DIMS = 8
_META_LEN = 5 + _MAX_DIMS  # nnz, method, dtype, op, ndim, dense_shape padded with -1
_logged_choice = {}  # tensor name -> the method last logged for it


class SparseGradient:
    """indices (nnz,) ints, values (nnz, *dense_shape[1:]) float32/float64, dense_shape.

    Row indices[k] of the dense gradient gets values[k]; repeated indices add up. Bad input is
    a TypeError/ValueError here, and again in sparse_allreduce, before anything is sent."""

    __slots__ = ("indices", "values", "dense_shape")

    def __init__(self, indices, values, dense_shape):
        try:
            dense_shape = tuple(int(d) for d in dense_shape)
        except (TypeError, ValueError):
            raise TypeError(f"dense_shape={dense_shape!r} must be a sequence of ints") from None
        indices, values = np.asarray(indices), np.asarray(values)
        if indices.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
        self.indices = np.ascontiguousarray(indices, dtype=np.int64)
        self.values = np.ascontiguousarray(values)
        self.dense_shape = dense_shape
        self.validate()

    @classmethod
    def _trusted(cls, indices, values, dense_shape):
        """A result this module built itself: already valid, skip the O(nnz) checks."""
        grad = object.__new__(cls)
        grad.indices, grad.values, grad.dense_shape = indices, values, dense_shape
        return grad

    def validate(self):
        shape, idx, values = self.dense_shape, self.indices, self.values
        if not 1 <= len(shape) <= _MAX_DIMS or min(shape) < 0:
            raise ValueError(f"dense_shape={shape} must have 1 to {_MAX_DIMS} non-negative dimensions")
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-d, got shape {idx.shape}")
        if values.dtype not in _VALUE_DTYPES:
            raise TypeError(f"values have dtype {values.dtype}; sparse gradients take float32 or float64")
        if values.shape != (len(idx), *shape[1:]):
            raise ValueError(f"values have shape {values.shape}, but {len(idx)} indices into dense_shape={shape} "
                             f"need {(len(idx), *shape[1:])}")
        if len(idx):
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= shape[0]:
                bad = low if low < 0 else high
                position = int(np.flatnonzero(idx == bad)[0])
                raise ValueError(f"indices[{position}]={bad} is out of range for dense_shape={shape}: "
                                 f"rows are 0..{shape[0] - 1}")

    @property
    def nnz(self):
        return len(self.indices)

    @property
    def dtype(self):
        return self.values.dtype

    def rows(self):
        """values as a 2-D (nnz, row_width) view, the layout the kernels take."""
        return self.values.reshape(len(self.indices), _row_width(self.dense_shape))

    def to_dense(self, out=None):
        """The dense array (duplicates added up); into `out` (zeroed here) if given."""
        if out is None:
            out = np.zeros(self.dense_shape, dtype=self.values.dtype)
        else:
            out[...] = 0
        scatter_add_rows(out.reshape(self.dense_shape[0], -1), self.indices, self.rows())
        return out

    def coalesce(self):
        """The same gradient with unique, sorted indices (duplicates summed)."""
        indices, rows = merge_duplicate_rows(self.indices, self.rows())
        return SparseGradient._trusted(indices, rows.reshape(len(indices), *self.dense_shape[1:]), self.dense_shape)

    def __repr__(self):
        return f"SparseGradient(nnz={self.nnz}, dense_shape={self.dense_shape}, dtype={self.values.dtype})"


def _row_width(dense_shape):
    return math.prod(dense_shape[1:])


def CostModel(latency=50e-6, bandwidth=2e9, memory_bandwidth=5e9):
    """The chooser's model given by three rates (seconds per collective call, link and memory
    bytes per second): a planner Network (ringtrain.planner.costs), the one cost model that
    rt.plan predicts with. The defaults are this repository's 2-rank measurements on one host
    (bench/RESULTS.md: ~30 us per small synchronous allreduce, ring bus bandwidth ~2 GB/s at
    1-4 MB); on a real network lower `bandwidth` and raise `latency`, or pass a measured one:
    set_cost_model(ringtrain.planner.measure.measure_network())."""
    return Network.from_rates(latency, bandwidth, memory_bandwidth)


def choose_method(network, nnz_per_rank, num_rows, row_bytes, size):
    """(the cheapest method, {method: estimated seconds}) under `network`."""
    costs = network.sparse_allreduce_seconds(nnz_per_rank, num_rows, row_bytes, size)
    return min(costs, key=costs.get), costs


default_cost_model = CostModel()


def set_cost_model(model):
    """Replace the network model "auto" decides with: a Network (measure_network() on the job,
    or CostModel(latency=..., bandwidth=..., memory_bandwidth=...)). The first rank of each
    process set decides with its model and tells the others, so the ranks never disagree."""
    global default_cost_model
    if not isinstance(model, Network):
        raise TypeError(f"{model!r} is not a ringtrain.planner.costs.Network (make one with "
                        "ringtrain.sparse.CostModel(...) or ringtrain.planner.measure.measure_network())")
    default_cost_model = model


def _check_arguments(grad, op, method):
    if not isinstance(grad, SparseGradient):
        raise TypeError(f"grad must be a ringtrain.SparseGradient, got {type(grad).__name__}")
    grad.validate()
    op = as_op(op)
    if op not in (Sum, Average):
        raise ValueError(f"op={op.name} is not defined for sparse gradients; use Sum or Average")
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {', '.join(map(repr, METHODS))}")
    return op


def _metadata(grad, op, method):
    meta = np.full(_META_LEN, -1, dtype=np.int64)
    meta[:5] = grad.nnz, METHODS.index(method), grad.values.dtype.num, int(op), len(grad.dense_shape)
    meta[5:5 + len(grad.dense_shape)] = grad.dense_shape
    return meta


def _check_agreement(everyone, name):
    """Raise the same ValueError on every rank if the ranks disagree on anything but nnz."""
    def shape(row):
        return tuple(int(d) for d in row[5:5 + row[4]])

    fields = (("dense_shape", shape),
              ("method", lambda row: METHODS[row[1]]),
              ("dtype", lambda row: _dtype_name(row[2])),
              ("op", lambda row: as_op(int(row[3])).name))
    for field, read in fields:
        values = [read(row) for row in everyone]
        for rank, value in enumerate(values):
            if value != values[0]:
                raise ValueError(f"Mismatched {field} in sparse allreduce of {name!r}: rank 0 had {values[0]}, "
                                 f"but rank {rank} had {value}")


def _dtype_name(num):
    for dtype in _VALUE_DTYPES:
        if dtype.num == num:
            return dtype.name
    return f"dtype #{num}"


def sparse_allreduce(grad, op=Average, method="auto", name=None, process_set=global_process_set):
    """Reduce a SparseGradient over the ranks of `process_set`.

    Returns a SparseGradient for "allgather" (every rank's pairs, duplicates kept) and "owner"
    (unique sorted indices), a dense ndarray for "dense"; "auto" returns whichever it picked.
    Every rank gets the same result. Every rank must call it with the same name, dense_shape,
    dtype, op and method; nnz may differ (and may be 0)."""
    op = _check_arguments(grad, op, method)
    if name is None:
        name = unnamed_name("sparse_allreduce", process_set.process_set_id)
    size = process_set.size()
    everyone = collectives.allgather(_metadata(grad, op, method)[None, :], name=f"{name}.meta",
                                     process_set=process_set)
    _check_agreement(everyone, name)
    if method == "auto":
        method = _choose(name, everyone[:, 0].tolist(), grad, size, process_set)
    divisor = size if op == Average else 1
    if method == "dense":
        return _dense(grad, op, name, process_set)
    if method == "allgather":
        return _allgather(grad, divisor, name, process_set)
    return _owner(grad, divisor, name, size, process_set)


def _choose(name, nnz_per_rank, grad, size, process_set):
    """The method "auto" runs: decided once, on the set's first rank with its cost model, and
    broadcast, so that ranks whose models differ (set_cost_model on some ranks only) still agree."""
    shape = grad.dense_shape
    decision = np.zeros(1, np.int64)
    if process_set.rank() == 0:
        method, costs = choose_method(default_cost_model, nnz_per_rank, shape[0],
                                      _row_width(shape) * grad.values.itemsize, size)
        decision[0] = METHODS.index(method)
        if _logged_choice.get(name) != method:
            _logged_choice[name] = method
            density = sum(nnz_per_rank) / size / shape[0] if shape[0] else 0.0
            estimates = ", ".join(f"{m} {t * 1e3:.3g} ms" for m, t in sorted(costs.items(), key=lambda kv: kv[1]))
            log.info("sparse gradient %r: %.3g%% of %d rows per rank on %d ranks -> %s (estimated %s)",
                     name, 100 * density, shape[0], size, method, estimates)
    if size > 1:
        collectives.broadcast_(decision, root_rank=0, name=f"{name}.method", process_set=process_set)
    return METHODS[int(decision[0])]


def _dense(grad, op, name, process_set):
    dense = grad.to_dense()
    return collectives.allreduce_(dense, op=op, name=f"{name}.dense", process_set=process_set)


def _allgather(grad, divisor, name, process_set):
    h_indices = collectives.allgather_async(grad.indices, name=f"{name}.indices", process_set=process_set)
    h_values = collectives.allgather_async(grad.values, name=f"{name}.values", process_set=process_set)
    indices, values = collectives.synchronize(h_indices), collectives.synchronize(h_values)
    if divisor != 1:
        values /= divisor
    return SparseGradient._trusted(indices, values, grad.dense_shape)


def _owner(grad, divisor, name, size, process_set):
    shape = grad.dense_shape
    # merge first: a row repeated within the batch crosses the wire once
    indices, rows = merge_duplicate_rows(grad.indices, grad.rows())
    # contiguous shards; indices are sorted now, so each owner's rows are already together
    owners = indices * size // max(shape[0], 1)
    splits = np.bincount(owners, minlength=size)
    h_indices = collectives.alltoall_async(indices, splits, name=f"{name}.route.indices", process_set=process_set)
    h_rows = collectives.alltoall_async(rows, splits, name=f"{name}.route.values", process_set=process_set)
    (received_indices, _), (received_rows, _) = collectives.synchronize(h_indices), collectives.synchronize(h_rows)
    mine, reduced = merge_duplicate_rows(received_indices, received_rows)
    if divisor != 1:
        reduced = reduced / divisor
    # shards are in rank order, so the gathered indices come back sorted and unique
    h_indices = collectives.allgather_async(mine, name=f"{name}.gather.indices", process_set=process_set)
    h_rows = collectives.allgather_async(np.ascontiguousarray(reduced), name=f"{name}.gather.values",
                                         process_set=process_set)
    indices, rows = collectives.synchronize(h_indices), collectives.synchronize(h_rows)
    return SparseGradient._trusted(indices, rows.reshape(len(indices), *shape[1:]), shape)
