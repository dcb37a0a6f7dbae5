"""Bad input raises TypeError/ValueError naming the argument and value, before any message is
sent, and leaves the caller's data as it was. Every rank passes the same bad input, so if any
call did communicate the ranks would fall out of step and the next collective would fail."""
import numpy as np
import pytest

import ringtrain as rt


@pytest.fixture(autouse=True)
def still_in_step():
    yield
    # Nothing may have been sent: a clean collective right after must still match up.
    assert rt.allreduce(np.ones(3), op=rt.Sum).tolist() == [rt.size()] * 3


def test_non_contiguous_array():
    a = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2]
    before = a.copy()
    for call in (rt.allreduce, rt.allreduce_, rt.allgather, lambda t: rt.broadcast(t, 0), rt.reducescatter):
        with pytest.raises(ValueError, match=r"tensor is not C-contiguous \(shape \(4, 3\), strides \(20, 8\)\)"):
            call(a)
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("dtype", [np.complex64, np.uint16, np.dtype(">f4"), np.float128 if hasattr(np, "float128") else object, object])
def test_unsupported_dtype(dtype):
    a = np.zeros(4, dtype=dtype)
    with pytest.raises(TypeError, match=r"tensor has dtype .* which ringtrain does not support"):
        rt.allreduce(a)
    with pytest.raises(TypeError, match=r"tensor has dtype"):
        rt.alltoall(a)


def test_not_an_array():
    with pytest.raises(TypeError, match=r"tensor must be an array .* got list"):
        rt.allreduce([1.0, 2.0])
    with pytest.raises(TypeError, match=r"got NoneType"):
        rt.broadcast(None, 0)


def test_root_out_of_range():
    a = np.arange(4.0)
    size = rt.size()
    for root in (-1, size, size + 5):
        with pytest.raises(ValueError, match=rf"root_rank={root} is out of range: there are {size} ranks"):
            rt.broadcast_(a, root_rank=root)
    with pytest.raises(TypeError, match=r"root_rank='0' must be an int"):
        rt.broadcast(a, root_rank="0")
    np.testing.assert_array_equal(a, np.arange(4.0))


def test_bad_splits():
    size = rt.size()
    a = np.arange(size * 2 + 1, dtype=np.int64)
    good = [2] * size
    good[0] += 1
    with pytest.raises(ValueError, match=rf"splits=.* add up to {sum(good) + 1}, but the first dimension of tensor is {len(a)}"):
        rt.alltoall(a, splits=[good[0] + 1] + good[1:])
    with pytest.raises(ValueError, match=rf"has {size + 1} entries, but there are {size} ranks"):
        rt.alltoall(a, splits=good + [0])
    with pytest.raises(ValueError, match="negative"):
        rt.alltoall(a, splits=[len(a) + 1] + [-1] + [0] * (size - 2) if size > 1 else [-1])
    with pytest.raises(TypeError, match="must be a 1-d sequence of ints"):
        rt.alltoall(a, splits=[1.5] * size)


def test_bad_op_and_scale_factors():
    a = np.arange(4.0)
    with pytest.raises(ValueError, match=r"op=7 is not a reduction op; use one of Sum, Average, Min, Max, Product"):
        rt.allreduce(a, op=7)
    with pytest.raises(ValueError, match=r"op='mean' is not a reduction op"):
        rt.allreduce(a, op="mean")
    with pytest.raises(ValueError, match="op=Average is not defined for dtype bool"):
        rt.allreduce(np.ones(3, dtype=bool), op=rt.Average)
    with pytest.raises(TypeError, match=r"prescale_factor='2' must be a real number"):
        rt.allreduce(a, prescale_factor="2")
    with pytest.raises(ValueError, match=r"postscale_factor=nan must be finite"):
        rt.allreduce_(a, postscale_factor=float("nan"))
    np.testing.assert_array_equal(a, np.arange(4.0))


def test_zero_dimensional_gather():
    with pytest.raises(ValueError, match="tensor of allgather must have at least one dimension"):
        rt.allgather(np.float32(3.0).reshape(()))


def test_read_only_in_place():
    a = np.arange(4.0)
    a.flags.writeable = False
    with pytest.raises(ValueError, match="tensor is read-only"):
        rt.allreduce_(a)
    with pytest.raises(ValueError, match="tensor is read-only"):
        rt.broadcast_(b"abcd", 0)
