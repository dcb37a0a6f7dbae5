"""The shared-memory allreduce (csrc/shm_allreduce.c) on the one host these jobs run on: which
sets use it, its segment's life in /dev/shm, and its results against numpy with pieces far
smaller than the default, so every piece boundary, empty slice and buffer alternation is hit.
(test_allreduce.py runs every dtype x op through it at the default settings, and through the
ring and recursive doubling with it turned off.)"""
import os

import numpy as np
import pytest

import ringtrain as rt
from ringtrain import runtime
from ringtrain.dtypes import CODES
from harness import ALL_DTYPES, ALL_OPS, assert_matches, rank_input, reference_reduce

SHARED_MEMORY, HIERARCHICAL = 3, 4  # csrc/ringtrain.h rt_algorithm


def segments_of_this_job():
    """Our segments still named in /dev/shm (they are unlinked as soon as every local rank mapped them)."""
    from mpi4py import MPI

    pids = MPI.COMM_WORLD.allgather(os.getpid())
    return [f for f in os.listdir("/dev/shm") if any(f.startswith(f"ringtrain-{pid}-") for pid in pids)]


def test_the_global_set_reduces_through_shared_memory_and_leaves_no_name_in_dev_shm():
    live = runtime.current("test")
    state = live.engine.sets[0]
    on = rt.size() > 1 and live.config.shared_memory
    assert state.shared_memory == ("one host" if on else "off")
    x = np.arange(10_001, dtype=np.float32)  # (above the small-message threshold: recursive doubling below)
    algorithm = live.core.allreduce(state.handle, x, x, CODES[np.dtype(np.float32)], int(rt.Sum), 1.0, 1.0,
                                    *live.engine.tuning.allreduce_args)
    assert algorithm == (SHARED_MEMORY if on else 2 if rt.size() > 1 else 0)  # (2: the ring)
    np.testing.assert_array_equal(x, np.arange(10_001, dtype=np.float32) * rt.size())
    assert segments_of_this_job() == []


@pytest.fixture(scope="module")
def tiny_pieces():
    """A communicator of the job's ranks with a segment of 192-byte pieces: a 1000-element
    tensor crosses dozens of pieces, and with 3-4 ranks some slices of a piece are empty."""
    live = runtime.current("test")
    comm = live.comm.Dup()
    mode = live.core.shm_attach(comm.py2f(), 192, True, False)[0]
    yield comm.py2f(), mode
    live.core.shm_detach(comm.py2f())
    comm.Free()


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=[np.dtype(d).name for d in ALL_DTYPES])
def test_tiny_pieces_match_numpy_and_agree_bitwise(tiny_pieces, dtype):
    handle, mode = tiny_pieces
    size, rank = rt.size(), rt.rank()
    assert mode == (1 if size > 1 else 0)
    core = runtime.current("test").core
    for op in ALL_OPS:
        if op == rt.Average and np.dtype(dtype) == np.bool_:
            continue
        for n in (1, size + 1, 47, 1000, 3001):
            inputs = [rank_input(dtype, (n,), q, seed=5) for q in range(size)]
            expected = reference_reduce(op, inputs, dtype)
            out = np.empty_like(inputs[rank])
            algorithm = core.allreduce(handle, inputs[rank], out, CODES[np.dtype(dtype)], int(op), 1.0, 1.0,
                                       0, 1 << 20, 0, 0)
            assert algorithm == (SHARED_MEMORY if size > 1 else 0)
            assert_matches(out, expected, dtype, size, f"{op.name} n={n}")
            gathered = rt.allgather(out.view(np.uint8).reshape(1, -1), name=f"tiny.{np.dtype(dtype).name}.{op.name}.{n}")
            assert all(np.array_equal(row, gathered[0]) for row in gathered), f"ranks differ: {op.name} n={n}"


def test_a_process_set_of_some_ranks_gets_its_own_segment():
    size, rank = rt.size(), rt.rank()
    if size < 3:
        pytest.skip("needs 3 ranks for a set of two that leaves one out")  # (runs under mpiexec -n 3 and 4)
    members = [0, size - 1]
    pair = rt.add_process_set(members)
    try:
        if rank in members:
            state = runtime.current("test").engine.sets[pair.process_set_id]
            assert state.shared_memory == ("one host" if runtime.current("test").config.shared_memory else "off")
            for n in (7, 100_003):
                inputs = [rank_input(np.float64, (n,), q, seed=9) for q in members]
                result = rt.allreduce(inputs[members.index(rank)], op=rt.Sum, process_set=pair)
                assert_matches(result, reference_reduce(rt.Sum, inputs, np.float64), np.float64, 2, f"n={n}")
        # the global set's segment is still in step after the pair's calls
        total = rt.allreduce(np.full(70_001, rank, np.int64), op=rt.Sum)
        assert (total == size * (size - 1) // 2).all()
    finally:
        rt.remove_process_set(pair)
    assert segments_of_this_job() == []


def test_tiny_pieces_allgather_broadcast_and_reducescatter_match_numpy(tiny_pieces):
    """The steps the other collectives are built from inside a host (csrc/shm_regions.c), with
    blocks of different sizes (some empty) spanning many pieces."""
    handle, _ = tiny_pieces
    size, rank = rt.size(), rt.rank()
    core = runtime.current("test").core
    for dtype in (np.float32, np.int8, np.float64):
        code = CODES[np.dtype(dtype)]
        blocks = [rank_input(dtype, ((q * 397) % 1001,), q, seed=21) for q in range(size)]  # rank 0's is empty
        out = np.zeros(sum(b.size for b in blocks), dtype)
        start = sum(b.size for b in blocks[:rank])
        out[start:start + blocks[rank].size] = blocks[rank]
        core.allgatherv(handle, out, np.array([b.nbytes for b in blocks], np.int64), 1 << 20)
        np.testing.assert_array_equal(out, np.concatenate(blocks))
        for root in range(size):
            buf = rank_input(dtype, (2001,), rank, seed=22)
            core.broadcast(handle, buf, root, 1 << 20)
            np.testing.assert_array_equal(buf, rank_input(dtype, (2001,), root, seed=22))
        counts = np.array([(q * 211 + 5) % 700 for q in range(size)], np.int64)
        inputs = [rank_input(dtype, (int(counts.sum()),), q, seed=23) for q in range(size)]
        mine = np.empty(int(counts[rank]), dtype)
        core.reduce_scatter(handle, inputs[rank], mine, counts, code, int(rt.Sum), 1.0, 1.0, 1 << 20)
        lo = int(counts[:rank].sum())
        expected = reference_reduce(rt.Sum, [x[lo:lo + mine.size] for x in inputs], dtype)
        assert_matches(mine, expected, dtype, size, f"reducescatter {np.dtype(dtype).name}")
