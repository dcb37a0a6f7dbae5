"""Shared pieces of the size-agnostic collective tests: per-rank inputs that every rank can
regenerate for every other rank (so the numpy reference needs no communication), the numpy
reference reductions, and tolerances per dtype."""
import contextlib

import numpy as np

import ringtrain as rt
from ringtrain import runtime

ALL_DTYPES = [np.float16, rt.bfloat16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]
ALL_OPS = [rt.Sum, rt.Average, rt.Min, rt.Max, rt.Product]
DTYPE_IDS = [np.dtype(d).name for d in ALL_DTYPES]


def is_float(dtype):
    return np.dtype(dtype).kind == "f" or np.dtype(dtype) == rt.bfloat16


def lengths(size):
    """0, 1, N-1, N+1, a length either side of the small-message threshold, and large lengths
    that do not divide by N (they also span several pipeline segments)."""
    return sorted({0, 1, max(size - 1, 0), size + 1, 1000, 4099, 100_003, 300_007})


def rank_input(dtype, shape, rank, seed=0):
    """Rank `rank`'s input. Values are small so integer sums and products cannot overflow."""
    rng = np.random.default_rng([seed, rank, int(np.prod(shape, dtype=np.int64)), np.dtype(dtype).num])
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype == np.uint8:
        return rng.integers(0, 4, shape).astype(dtype)
    if dtype.kind == "i":
        return rng.integers(-3, 4, shape).astype(dtype)
    # floats in [0.5, 2): products of up to 4 stay well inside float16's range
    return (rng.random(shape) * 1.5 + 0.5).astype(dtype)


def reference_reduce(op, arrays, dtype, prescale=1.0, postscale=1.0):
    """numpy's answer for op over the ranks' arrays, in float64 for floats."""
    dtype = np.dtype(dtype)
    n = len(arrays)
    if dtype == np.bool_:
        stack = np.stack(arrays)
        return (stack.any(0) if op in (rt.Sum, rt.Max) else stack.all(0)).astype(dtype)
    if is_float(dtype):
        stack = np.stack([a.astype(np.float64) * prescale for a in arrays])
    else:
        stack = np.stack([(a.astype(np.float64) * prescale).astype(dtype).astype(np.int64) for a in arrays])
    if op == rt.Sum:
        result = stack.sum(0)
    elif op == rt.Min:
        result = stack.min(0)
    elif op == rt.Max:
        result = stack.max(0)
    elif op == rt.Product:
        result = stack.prod(0)
    elif is_float(dtype):
        result = stack.sum(0) / n
    else:  # integer Average: exact division truncating toward zero
        total = stack.sum(0)
        result = np.sign(total) * (np.abs(total) // n)
    if postscale != 1.0:
        result = result * postscale
        if not is_float(dtype):
            result = np.trunc(result)
    return result.astype(np.float64) if is_float(dtype) else result.astype(dtype)


def assert_matches(result, expected, dtype, size, what=""):
    dtype = np.dtype(dtype)
    assert result.dtype == dtype, f"{what}: dtype {result.dtype} != {dtype}"
    assert result.shape == expected.shape, f"{what}: shape {result.shape} != {expected.shape}"
    if is_float(dtype):
        # float16/bfloat16 round each partial result once: up to size-1 roundings, plus scaling
        ulp = {np.dtype(np.float16): 2.0**-10, rt.bfloat16: 2.0**-7, np.dtype(np.float32): 2.0**-23,
               np.dtype(np.float64): 2.0**-52}[dtype]
        np.testing.assert_allclose(result.astype(np.float64), expected, rtol=ulp * (size + 2), atol=0, err_msg=what)
    else:
        np.testing.assert_array_equal(result, expected, err_msg=what)


@contextlib.contextmanager
def tuned(**settings):
    """Run with other algorithm settings (e.g. force the ring, tiny segments), then restore.
    Every rank changes them between the same two collectives, so they agree."""
    tuning = runtime.current("tuned").engine.tuning
    saved = {field: getattr(tuning, field) for field in settings}
    tuning.update(settings)
    try:
        yield
    finally:
        tuning.update(saved)


# Algorithm settings every reduction test runs under. The default on one host is shared
# memory at every size (the ranks of these jobs share a host); the others turn it off.
NO_SHARED_MEMORY = {"shared_memory_threshold": 1 << 62, "hierarchical_threshold": 1 << 62}
MODES = {
    "default": {},
    "ring-small-segments": {"small_allreduce_threshold": 0, "segment_bytes": 1000, **NO_SHARED_MEMORY},
    "recursive-doubling": {"small_allreduce_threshold": 1 << 30, **NO_SHARED_MEMORY},
}
