"""allgather, broadcast, reducescatter and alltoall against numpy, for every dtype."""
import numpy as np
import pytest

import ringtrain as rt
from harness import ALL_DTYPES, ALL_OPS, DTYPE_IDS, MODES, assert_matches, rank_input, reference_reduce, tuned


def rows_of(rank, size, pattern):
    """Ragged first dimensions, including ranks with zero rows."""
    return {"ragged": (rank * 3 + 1) % 4, "even": 2, "large": 20_011 + rank * 7, "empty": 0}[pattern]


@pytest.mark.parametrize("pattern", ["ragged", "even", "large", "empty"])
@pytest.mark.parametrize("trailing", [(), (3,), (2, 5)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
def test_allgather_concatenates_in_rank_order(dtype, trailing, pattern):
    size = rt.size()
    inputs = [rank_input(dtype, (rows_of(q, size, pattern), *trailing), q) for q in range(size)]
    with tuned(segment_bytes=4096):
        result = rt.allgather(inputs[rt.rank()])
    np.testing.assert_array_equal(result, np.concatenate(inputs))
    assert result.dtype == np.dtype(dtype)


@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
def test_broadcast_from_every_root(dtype, in_place):
    size, rank = rt.size(), rt.rank()
    for shape in [(0,), (1,), (size + 1,), (3, 4), (100_003,)]:
        for root in range(size):
            mine = rank_input(dtype, shape, rank, seed=root)
            original = mine.copy()
            expected = rank_input(dtype, shape, root, seed=root)
            with tuned(segment_bytes=8192):
                if in_place:
                    assert rt.broadcast_(mine, root_rank=root) is mine
                    result = mine
                else:
                    result = rt.broadcast(mine, root_rank=root)
                    np.testing.assert_array_equal(mine, original)
            np.testing.assert_array_equal(result, expected, err_msg=f"root={root} shape={shape}")


DTYPE_OPS = [
    pytest.param(dtype, op, id=f"{name}-{op.name}")
    for dtype, name in zip(ALL_DTYPES, DTYPE_IDS)
    for op in ALL_OPS
    if not (op == rt.Average and np.dtype(dtype) == np.bool_)
]


@pytest.mark.parametrize("dtype,op", DTYPE_OPS)
def test_reducescatter_gives_each_rank_its_rows(dtype, op):
    size, rank = rt.size(), rt.rank()
    for rows in sorted({0, 1, max(size - 1, 0), size + 1, 2 * size + 3, 10_007}):
        inputs = [rank_input(dtype, (rows, 3), q) for q in range(size)]
        full = reference_reduce(op, inputs, dtype)
        base, extra = divmod(rows, size)  # Horovod's rule: lower ranks take the extra rows
        counts = [base + (q < extra) for q in range(size)]
        start = sum(counts[:rank])
        for mode, settings in MODES.items():
            with tuned(**settings):
                result = rt.reducescatter(inputs[rank], op=op)
            assert result.shape == (counts[rank], 3)
            assert_matches(result, full[start : start + counts[rank]], dtype, size, f"{mode} rows={rows}")


def test_reducescatter_scaling():
    size = rt.size()
    inputs = [rank_input(np.float64, (size * 4 + 1, 2), q) for q in range(size)]
    full = reference_reduce(rt.Average, inputs, np.float64, prescale=2.0, postscale=0.25)
    counts = [len(c) for c in np.array_split(np.arange(size * 4 + 1), size)]
    start = sum(counts[: rt.rank()])
    result = rt.reducescatter(inputs[rt.rank()], op=rt.Average, prescale_factor=2.0, postscale_factor=0.25)
    assert_matches(result, full[start : start + counts[rt.rank()]], np.float64, size)


def splits_for(sender, size):
    return [(sender + receiver) % 3 for receiver in range(size)]


@pytest.mark.parametrize("trailing", [(), (4,)], ids=["1d", "2d"])
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=DTYPE_IDS)
def test_alltoall_with_splits(dtype, trailing):
    size, rank = rt.size(), rt.rank()
    inputs = [rank_input(dtype, (sum(splits_for(q, size)), *trailing), q) for q in range(size)]
    output, received = rt.alltoall(inputs[rank], splits=splits_for(rank, size))
    pieces = []
    for sender in range(size):
        offsets = np.concatenate([[0], np.cumsum(splits_for(sender, size))])
        pieces.append(inputs[sender][offsets[rank] : offsets[rank + 1]])
    np.testing.assert_array_equal(output, np.concatenate(pieces))
    np.testing.assert_array_equal(received, [splits_for(q, size)[rank] for q in range(size)])


def test_alltoall_without_splits_divides_evenly():
    size, rank = rt.size(), rt.rank()
    rows = size + 1
    inputs = [np.arange(rows * 2, dtype=np.int32).reshape(rows, 2) + 1000 * q for q in range(size)]
    output, received = rt.alltoall(inputs[rank])
    counts = [len(c) for c in np.array_split(np.arange(rows), size)]
    start = sum(counts[:rank])
    np.testing.assert_array_equal(output, np.concatenate([x[start : start + counts[rank]] for x in inputs]))
    np.testing.assert_array_equal(received, [counts[rank]] * size)


def test_barrier_and_objects():
    size, rank = rt.size(), rt.rank()
    rt.barrier()
    for root in range(size):
        value = {"from": root, "fn": (lambda k: k * root)} if rank == root else None
        got = rt.broadcast_object(value, root_rank=root)
        assert got["from"] == root and got["fn"](2) == 2 * root
    gathered = rt.allgather_object({"rank": rank, "payload": "x" * (rank * 1000)})
    assert [g["rank"] for g in gathered] == list(range(size))
    assert [len(g["payload"]) for g in gathered] == [q * 1000 for q in range(size)]


def test_process_layout():
    size, rank = rt.size(), rt.rank()
    assert rt.is_initialized()
    assert 0 <= rank < size
    # every rank of these tests runs on this one host
    assert rt.local_size() == size and rt.local_rank() == rank
    assert rt.cross_size() == 1 and rt.cross_rank() == 0
    assert rt.allgather_object(rank) == list(range(size))
