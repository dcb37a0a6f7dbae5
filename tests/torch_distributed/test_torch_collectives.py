"""ringtrain.torch collectives against torch computations of the same thing, on any number of
ranks, for every dtype (float16 and bfloat16 included)."""
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

import ringtrain.torch as hvd
from ringtrain import runtime
from torch_harness import ALL_DTYPES, INT_DTYPES, all_inputs, assert_close, even_odd_sets, \
    rank_tensor, recursive_doubling_sum, reference, ring_order_sum, shared_memory_sum

SHAPES = [(17,), (5, 7), (3, 4, 5), (1000, 3)]
OPS = [hvd.Sum, hvd.Average, hvd.Min, hvd.Max, hvd.Product]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=repr)
def test_allreduce_every_dtype_and_op(dtype, op):
    if dtype == torch.bool and op == hvd.Average:  # refused before anything is sent
        with pytest.raises(ValueError, match="op=Average is not defined for dtype bool"):
            hvd.allreduce(torch.ones(3, dtype=torch.bool), op=op)
        return
    for shape in SHAPES:  # bool: Sum/Max are logical or, Min/Product logical and
        inputs = all_inputs(shape, dtype, seed=3)
        result = hvd.allreduce(inputs[hvd.rank()], op=op)
        assert_close(result, reference(op, inputs, dtype), dtype, f"{op!r} {shape}")


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_allreduce_in_place_is_zero_copy(dtype):
    """The core reduces the tensor's own storage: the in-place result is at the same address and
    the out-of-place input is untouched."""
    op = hvd.Max if dtype == torch.bool else hvd.Sum
    inputs = all_inputs((33, 3), dtype, seed=4)
    mine = inputs[hvd.rank()].clone()
    address = mine.data_ptr()
    out = hvd.allreduce_(mine, op=op)
    assert out is mine and mine.data_ptr() == address
    assert_close(mine, reference(op, inputs, dtype), dtype)
    assert torch.equal(inputs[hvd.rank()], rank_tensor(hvd.rank(), (33, 3), dtype, seed=4))


def test_tensor_views_share_memory_for_every_dtype():
    from ringtrain.torch.tensors import from_numpy, to_numpy

    for dtype in ALL_DTYPES:
        t = rank_tensor(0, (4, 5), dtype)
        array = to_numpy(t)
        assert array.ctypes.data == t.data_ptr() and array.nbytes == t.numel() * t.element_size(), dtype
        back = from_numpy(array)
        assert back.dtype == dtype and back.data_ptr() == t.data_ptr() and torch.equal(back, t)


def test_horovod_average_argument_and_defaults():
    inputs = all_inputs((6,), torch.float64, seed=5)
    mine = inputs[hvd.rank()]
    with pytest.warns(DeprecationWarning):
        summed = hvd.allreduce(mine, average=False)
    assert_close(summed, reference(hvd.Sum, inputs, torch.float64), torch.float64)
    assert_close(hvd.allreduce(mine), reference(hvd.Average, inputs, torch.float64), torch.float64)
    with pytest.raises(ValueError):
        hvd.allreduce(mine, average=True, op=hvd.Sum)
    # Horovod's positional order for allreduce_: (tensor, average, name, op)
    counter = torch.IntTensor([1])
    hvd.allreduce_(counter, None, "positional.counter", hvd.Sum)
    assert int(counter) == hvd.size()


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.float16, torch.float32, torch.float64], ids=str)
def test_prescale_and_postscale(dtype):
    """Horovod: integers scale in float64 and truncate; float16 scales in float32."""
    factor = 0.37
    inputs = [t * 50 if not dtype.is_floating_point else t for t in all_inputs((4, 9), dtype, seed=6)]
    work = torch.float64 if not dtype.is_floating_point else (torch.float32 if dtype == torch.float16 else dtype)
    pre = hvd.allreduce(inputs[hvd.rank()], op=hvd.Sum, prescale_factor=factor)
    scaled = [(t.to(work) * factor).to(dtype) for t in inputs]
    assert_close(pre, reference(hvd.Sum, scaled, dtype), dtype, "prescale")
    post = hvd.allreduce(inputs[hvd.rank()], op=hvd.Sum, postscale_factor=factor)
    expected = (reference(hvd.Sum, inputs, dtype).to(torch.float64) * factor)
    expected = expected if dtype.is_floating_point else torch.trunc(expected)
    assert_close(post, expected, dtype, "postscale")


# 2 KB, and 60 KB and 600 KB (3 pieces of shared memory) above the 8 KB default threshold
HALF_LENGTHS = {"recursive-doubling": 1001, "ring": 30001, "shared-memory": 300_001}
ORDERS = {"recursive-doubling": recursive_doubling_sum, "ring": ring_order_sum, "shared-memory": shared_memory_sum}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("path", list(HALF_LENGTHS))
def test_half_precision_sums_are_bitwise_the_stated_order(dtype, path):
    """README (Coming from Horovod): a prescale is applied on each rank in float32 and rounded,
    then every addition is done in float32 and rounded, in the order of the algorithm."""
    live = runtime.current("t")
    assert live.config.small_allreduce_threshold == 8 * 1024
    on_one_host = live.engine.sets[0].shared_memory == "one host"
    if path == "shared-memory" and not on_one_host:
        path = "ring"  # (one rank: nothing is added at all)
    tuning = live.engine.tuning
    saved = tuning.shared_memory_threshold
    if path == "ring":  # with shared memory off, as across hosts
        tuning.update({"shared_memory_threshold": 1 << 62})
    try:
        check_half_precision_order(dtype, path, on_one_host)
    finally:
        tuning.update({"shared_memory_threshold": saved})


def check_half_precision_order(dtype, path, on_one_host):
    factor, p = 0.37, hvd.size()
    order = ORDERS[path]
    inputs = all_inputs((HALF_LENGTHS[path],), dtype, seed=11)
    scaled = [(t.to(torch.float32) * factor).to(dtype) for t in inputs]
    expected = order(scaled, dtype)
    mine = inputs[hvd.rank()]
    assert torch.equal(hvd.allreduce(mine, op=hvd.Sum, prescale_factor=factor), expected)
    inplace = mine.clone()
    hvd.allreduce_(inplace, op=hvd.Sum, prescale_factor=factor)
    assert torch.equal(inplace, expected)
    # Average: the sum, then times float32(1 / p), rounded once
    average = hvd.allreduce(mine, op=hvd.Average)
    summed = order(inputs, dtype)
    assert torch.equal(average, (summed.to(torch.float32) * torch.tensor(1.0 / p, dtype=torch.float32)).to(dtype))
    # the check a Horovod user writes, with the same tensor on every rank: at up to 3 ranks no
    # order can change it (x + x is exact), so it holds bitwise
    same = inputs[0]
    if p <= 3:
        assert torch.equal(hvd.allreduce(same, op=hvd.Sum, prescale_factor=factor),
                           (same.to(torch.float32) * factor).to(dtype) * p)
    # reducescatter, rank r keeping block r: inside one host block r is rank r's own values plus
    # the others' in rank order; across hosts, the ring's order
    block = hvd.reducescatter(mine, op=hvd.Sum, prescale_factor=factor)
    n = scaled[0].numel()
    start = sum(n // p + (b < n % p) for b in range(hvd.rank()))
    piece = [t.reshape(-1)[start:start + block.numel()] for t in scaled]
    if on_one_host:
        expected_block = piece[hvd.rank()]
        for q in range(p):
            if q != hvd.rank():
                expected_block = (expected_block.to(torch.float32) + piece[q].to(torch.float32)).to(dtype)
    else:
        expected_block = ring_order_sum(scaled, dtype).reshape(-1)[start:start + block.numel()]
    assert torch.equal(block.reshape(-1), expected_block)


def test_float32_average_is_the_sum_times_float32_of_one_over_p():
    """Horovod's CPU core multiplies by (float)(postscale / size); so does ringtrain: at 3 ranks
    that differs from sum / 3 in the last bit for some elements, bitwise equal to this rule."""
    inputs = all_inputs((10007,), torch.float32, seed=12)
    mine = inputs[hvd.rank()]
    summed = hvd.allreduce(mine, op=hvd.Sum)
    one_over_p = torch.tensor(1.0 / hvd.size(), dtype=torch.float32)
    assert torch.equal(hvd.allreduce(mine, op=hvd.Average), summed * one_over_p)
    assert torch.equal(hvd.allreduce(mine, op=hvd.Average, postscale_factor=3.0),
                       summed * torch.tensor(3.0 / hvd.size(), dtype=torch.float32))
    # fused, the same rule (a fused buffer's sum order follows its own layout: compare like with like)
    grouped_sum = hvd.grouped_allreduce([mine, mine[:5]], op=hvd.Sum)
    for average, total in zip(hvd.grouped_allreduce([mine, mine[:5]], op=hvd.Average), grouped_sum):
        assert torch.equal(average, total * one_over_p)


def test_async_handles_and_fusion():
    tensors = [all_inputs((17, i + 1), torch.float32, seed=i) for i in range(12)]
    handles = [hvd.allreduce_async(t[hvd.rank()], op=hvd.Sum, name=f"fused.{i}") for i, t in enumerate(tensors)]
    in_place = [t[hvd.rank()].clone() for t in tensors]
    handles_ = [hvd.allreduce_async_(t, op=hvd.Sum, name=f"fused_.{i}") for i, t in enumerate(in_place)]
    for i, (h, h_) in enumerate(zip(handles, handles_)):
        expected = reference(hvd.Sum, tensors[i], torch.float32)
        assert_close(hvd.synchronize(h), expected, torch.float32)
        assert hvd.synchronize(h_) is in_place[i]
        assert hvd.poll(h_)
        assert_close(in_place[i], expected, torch.float32)


def test_duplicate_name_in_flight_is_a_value_error():
    t = torch.ones(5)
    # no engine round between the two calls: the first cannot finish before the second is made
    with runtime.current("test").engine._round_lock:
        first = hvd.allreduce_async(t, name="dup.name")
        with pytest.raises(ValueError, match="already in flight"):
            hvd.allreduce_async(t, name="dup.name")
    assert torch.equal(hvd.synchronize(first), torch.ones(5))
    hvd.allreduce(t, name="dup.name")  # reusable once finished


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.float64], ids=str)
def test_grouped_allreduce(dtype):
    inputs = [all_inputs((7, i + 2), dtype, seed=10 + i) for i in range(4)]
    mine = [t[hvd.rank()] for t in inputs]
    results = hvd.grouped_allreduce(mine, op=hvd.Sum)
    for r, t in zip(results, inputs):
        assert_close(r, reference(hvd.Sum, t, dtype), dtype)
    copies = [m.clone() for m in mine]
    assert hvd.grouped_allreduce_(copies, op=hvd.Average) is copies
    for c, t in zip(copies, inputs):
        assert_close(c, reference(hvd.Average, t, dtype), dtype)
    handle = hvd.grouped_allreduce_async(mine, op=hvd.Max)
    for r, t in zip(hvd.synchronize(handle), inputs):
        assert_close(r, reference(hvd.Max, t, dtype), dtype)
    copies = [m.clone() for m in mine]
    hvd.synchronize(hvd.grouped_allreduce_async_(copies, op=hvd.Min))
    for c, t in zip(copies, inputs):
        assert_close(c, reference(hvd.Min, t, dtype), dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_allgather_ragged(dtype):
    rows = [r % 3 + 1 for r in range(hvd.size())]
    inputs = [rank_tensor(r, (rows[r], 3, 2), dtype, seed=20) for r in range(hvd.size())]
    assert torch.equal(hvd.allgather(inputs[hvd.rank()]), torch.cat(inputs))
    assert torch.equal(hvd.synchronize(hvd.allgather_async(inputs[hvd.rank()])), torch.cat(inputs))
    grouped = hvd.grouped_allgather([inputs[hvd.rank()], inputs[hvd.rank()][:, :1]])
    assert torch.equal(grouped[0], torch.cat(inputs)) and torch.equal(grouped[1], torch.cat(inputs)[:, :1])
    grouped = hvd.synchronize(hvd.grouped_allgather_async([inputs[hvd.rank()]]))
    assert torch.equal(grouped[0], torch.cat(inputs))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_broadcast(dtype):
    for root in range(hvd.size()):
        inputs = all_inputs((9, 4), dtype, seed=30 + root)
        mine = inputs[hvd.rank()].clone()
        out = hvd.broadcast(mine, root)
        assert torch.equal(out, inputs[root]) and torch.equal(mine, inputs[hvd.rank()])
        assert hvd.broadcast_(mine, root_rank=root) is mine and torch.equal(mine, inputs[root])
        assert torch.equal(hvd.synchronize(hvd.broadcast_async(inputs[hvd.rank()], root)), inputs[root])
        again = inputs[hvd.rank()].clone()
        assert hvd.synchronize(hvd.broadcast_async_(again, root_rank=root)) is again and torch.equal(again, inputs[root])


def test_alltoall_with_and_without_splits():
    size, rank = hvd.size(), hvd.rank()
    # rank r sends (r + 1) rows to every rank; row values say who sent them
    tensor = torch.full((size * (rank + 1), 2), float(rank))
    splits = torch.tensor([rank + 1] * size, dtype=torch.int32)
    out, received = hvd.alltoall(tensor, splits)
    expected = torch.cat([torch.full((r + 1, 2), float(r)) for r in range(size)])
    assert torch.equal(out, expected) and received.tolist() == [r + 1 for r in range(size)]
    even = torch.arange(size * 2, dtype=torch.float64).reshape(size * 2, 1) + 100 * rank
    out = hvd.alltoall(even)
    assert torch.equal(out, torch.cat([torch.tensor([[2.0 * rank], [2.0 * rank + 1]]) + 100 * r for r in range(size)]))
    out, received = hvd.synchronize(hvd.alltoall_async(tensor, splits))
    assert torch.equal(out, expected)


def test_alltoall_bad_splits_fail_before_communicating():
    size = hvd.size()
    if size > 1:
        with pytest.raises(ValueError, match="divide"):
            hvd.alltoall(torch.empty(size + 1))
    with pytest.raises(ValueError):
        hvd.alltoall(torch.empty(size), torch.empty(size, dtype=torch.float32))
    with pytest.raises(ValueError):
        hvd.alltoall(torch.empty(max(size - 1, 0)), torch.ones(size, dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average], ids=repr)
def test_reducescatter(dtype, op):
    size, rank = hvd.size(), hvd.rank()
    rows = 4 * size + 1  # uneven: lower ranks take the extra row
    inputs = all_inputs((rows, 3), dtype, seed=40)
    full = reference(op, inputs, dtype)
    start = rank * (rows // size) + min(rank, rows % size)
    mine = rows // size + (1 if rank < rows % size else 0)
    assert_close(hvd.reducescatter(inputs[rank], op=op), full[start:start + mine], dtype)
    results = hvd.grouped_reducescatter([inputs[rank], inputs[rank]], op=op)
    for r in results:
        assert_close(r, full[start:start + mine], dtype)
    assert_close(hvd.synchronize(hvd.reducescatter_async(inputs[rank], op=op)), full[start:start + mine], dtype)
    for r in hvd.synchronize(hvd.grouped_reducescatter_async([inputs[rank]], op=op)):
        assert_close(r, full[start:start + mine], dtype)


def test_reducescatter_bad_input():
    with pytest.raises(ValueError):
        hvd.reducescatter(torch.tensor(1.0))
    with pytest.raises(NotImplementedError):
        hvd.reducescatter(torch.ones(4), op=hvd.Adasum)


def test_bad_input_fails_before_communicating():
    with pytest.raises(TypeError, match="torch.Tensor"):
        hvd.allreduce(np.ones(3))
    with pytest.raises(TypeError, match="complex64"):
        hvd.allreduce(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="sparse"):
        hvd.allreduce_async_(torch.ones(3).to_sparse())
    with pytest.raises(TypeError, match="name"):
        hvd.allreduce(torch.ones(3), name=7)
    with pytest.raises(ValueError, match="op="):
        hvd.allreduce(torch.ones(3), op="median")
    with pytest.raises(ValueError, match="root_rank"):
        hvd.broadcast(torch.ones(3), hvd.size())
    with pytest.raises(ValueError, match="contiguous"):
        hvd.allreduce_(torch.ones(4, 4).t())  # in place needs the tensor's own contiguous memory
    t = torch.ones(4, 4).t()  # out of place accepts any layout, as Horovod does
    assert torch.equal(hvd.allreduce(t, op=hvd.Max), t)
    hvd.barrier()  # every rank is still in step


def test_mismatches_raise_on_every_rank():
    if hvd.size() == 1:
        pytest.skip("needs two ranks")
    rank = hvd.rank()
    with pytest.raises(RuntimeError, match="Mismatched"):
        hvd.allreduce(torch.ones(17 + rank))
    with pytest.raises(hvd.HorovodInternalError, match="Mismatched"):
        hvd.allreduce(torch.ones(3, dtype=torch.int32 if rank % 2 else torch.float32))
    with pytest.raises(RuntimeError):
        hvd.broadcast(torch.ones(3), rank)
    with pytest.raises(RuntimeError):
        hvd.allgather(torch.ones(2, 3 + rank))
    hvd.allreduce(torch.ones(2), name="after.mismatch")  # the job goes on


def test_process_sets_with_global_root_ranks():
    everyone = hvd.add_process_set(hvd.ProcessSet(range(hvd.size())))
    assert isinstance(everyone, hvd.ProcessSet) and everyone.size() == hvd.size() and everyone.rank() == hvd.rank()
    assert int(hvd.allreduce(torch.ones(1), op=hvd.Sum, process_set=everyone)) == hvd.size()
    hvd.remove_process_set(everyone)
    sets, mine, members = even_odd_sets()
    try:
        for s in sets:  # Horovod: size() on every rank, rank() is -1 outside the set
            assert s.size() == len(s.ranks)
            assert s.rank() == (s.ranks.index(hvd.rank()) if hvd.rank() in s.ranks else -1)
        inputs = all_inputs((6,), torch.float32, seed=50, ranks=members)
        mine_in = inputs[members.index(hvd.rank())]
        assert_close(hvd.allreduce(mine_in, op=hvd.Sum, process_set=mine), reference(hvd.Sum, inputs, torch.float32),
                     torch.float32)
        assert torch.equal(hvd.allgather(mine_in.view(1, -1), process_set=mine), torch.stack(inputs))
        root = members[-1]  # a global rank, as Horovod takes it
        assert torch.equal(hvd.broadcast(mine_in, root, process_set=mine), inputs[members.index(root)])
        assert hvd.broadcast_object({"root": hvd.rank()}, root_rank=root, process_set=mine) == {"root": root}
        assert hvd.allgather_object(hvd.rank(), process_set=mine) == members
        hvd.barrier(process_set=mine)
    finally:
        for s in reversed(sets):
            hvd.remove_process_set(s)


def test_unnamed_ops_in_process_sets_do_not_shift_global_names():
    """Members of a set make calls on it that other ranks do not make; unnamed global calls
    afterwards must still pair up (names are numbered per process set)."""
    sets, mine, members = even_odd_sets()
    try:
        for _ in range(len(members) + 1):  # a different number of unnamed calls per set
            hvd.allreduce(torch.ones(2), process_set=mine)
            hvd.broadcast(torch.ones(2), members[0], process_set=mine)
    finally:
        for s in reversed(sets):
            hvd.remove_process_set(s)
    for root in range(hvd.size()):
        assert torch.equal(hvd.broadcast(torch.full((2,), float(hvd.rank())), root), torch.full((2,), float(root)))
    assert int(hvd.allreduce(torch.ones(1), op=hvd.Sum)) == hvd.size()


def test_objects_join_barrier_and_queries():
    obj = {"hello": 123, 0: [1, 2]} if hvd.rank() == 0 else {}
    assert hvd.broadcast_object(obj, root_rank=0) == {"hello": 123, 0: [1, 2]}
    assert hvd.allgather_object({"r": hvd.rank()}) == [{"r": r} for r in range(hvd.size())]
    hvd.barrier()
    assert hvd.is_initialized() and hvd.mpi_built() and hvd.mpi_enabled()
    assert not hvd.gloo_built() and not hvd.gloo_enabled() and not hvd.nccl_built() and not hvd.ccl_built()
    assert 0 <= hvd.local_rank() < hvd.local_size() and 0 <= hvd.cross_rank() < hvd.cross_size()
    # join: the last rank keeps reducing while the others have joined; Average divides by all
    last = hvd.size() - 1
    if hvd.rank() != last:
        assert hvd.join() == last
    else:
        t = torch.full((4,), 6.0)
        assert torch.equal(hvd.allreduce(t, name="join.allreduce", op=hvd.Average), t / hvd.size())
        assert hvd.join() == last


def test_sparse_allreduce_matches_dense():
    for i, rows in enumerate([5, 17]):
        dense = [rank_tensor(r, (rows, 4), torch.float32, seed=60 + i) for r in range(hvd.size())]
        dense = [torch.where(t > 1.5, t, torch.zeros_like(t)) for t in dense]
        handle = hvd.sparse_allreduce_async(dense[hvd.rank()].to_sparse(), name=f"sparse.{i}", op=hvd.Average)
        torch.testing.assert_close(handle().to_dense(), torch.stack(dense).mean(0))
    # row-sparse (an embedding gradient: sparse_dim 1) in float16 and float64, unnamed, Sum
    for dtype in (torch.float16, torch.float64):
        dense = [rank_tensor(r, (9, 2, 3), dtype, seed=65) for r in range(hvd.size())]
        dense = [torch.where(t > 1.2, t, torch.zeros_like(t)) for t in dense]
        result = hvd.sparse_allreduce_async(dense[hvd.rank()].to_sparse(1), op=hvd.Sum)()
        assert result.is_sparse and result.dtype == dtype and result.sparse_dim() == 1
        expected = torch.stack([t.double() for t in dense]).sum(0)
        torch.testing.assert_close(result.to_dense().double(), expected, rtol=2e-3, atol=0)


def test_adasum_matches_reference_or_refuses_non_power_of_two():
    size = hvd.size()
    inputs = all_inputs((64,), torch.float64, seed=70)
    if size & (size - 1):
        with pytest.raises(ValueError, match="power-of-two"):
            hvd.allreduce(inputs[hvd.rank()], op=hvd.Adasum)
        return
    result = hvd.allreduce(inputs[hvd.rank()], op=hvd.Adasum)
    # independent torch reference: pairwise a' = (1 - a.b/2|a|^2) a + (1 - a.b/2|b|^2) b, tree order
    level = list(inputs)
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2]):
            dot = torch.dot(a, b)
            nxt.append((1 - dot / (2 * torch.dot(a, a))) * a + (1 - dot / (2 * torch.dot(b, b))) * b)
        level = nxt
    torch.testing.assert_close(result, level[0])
    if size == 2:  # two parallel gradients average, two orthogonal ones add
        v = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
        torch.testing.assert_close(hvd.allreduce(v, op=hvd.Adasum), v)
        w = v if hvd.rank() == 0 else torch.tensor([0.0, 0.0, 3.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(hvd.allreduce(w, op=hvd.Adasum), torch.tensor([1.0, 2.0, 3.0, 1.0],
                                                                                   dtype=torch.float64))


def test_compression_fp16_round_trip():
    for dtype in (torch.float32, torch.float64):
        t = torch.ones(5, 5, dtype=dtype)
        c, ctx = hvd.Compression.fp16.compress(t)
        assert c.dtype == torch.float16 and hvd.Compression.fp16.decompress(c, ctx).dtype == dtype
    for dtype in INT_DTYPES:
        t = torch.ones(3, dtype=dtype)
        c, ctx = hvd.Compression.fp16.compress(t)
        assert c.dtype == dtype and hvd.Compression.fp16.decompress(c, ctx).dtype == dtype
    inputs = all_inputs((40,), torch.float32, seed=80)
    result = hvd.allreduce(inputs[hvd.rank()], op=hvd.Sum, compression=hvd.Compression.fp16)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, reference(hvd.Sum, inputs, torch.float32).float(), rtol=4e-3, atol=0)


def test_timeline():
    # one directory, made by rank 0 (pytest's tmp_path would be cleaned up by every rank at once)
    folder = tempfile.mkdtemp(prefix="ringtrain-torch-timeline-") if hvd.rank() == 0 else None
    path = os.path.join(hvd.broadcast_object(folder, 0), "timeline.json")
    hvd.start_timeline(path, mark_cycles=True)
    hvd.allreduce(torch.ones(3), name="timeline.tensor")
    hvd.stop_timeline()
    if hvd.rank() == 0:
        with open(path) as f:
            assert "timeline.tensor" in json.dumps(json.load(f))
    hvd.barrier()
    if hvd.rank() == 0:
        shutil.rmtree(folder)


def test_synchronize_and_poll_take_only_handles():
    for bad in (None, 3):
        with pytest.raises(TypeError, match=r"synchronize\(\) takes the handle that a \*_async call returned"):
            hvd.synchronize(bad)
        with pytest.raises(TypeError, match=r"poll\(\) takes the handle"):
            hvd.poll(bad)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_a_tensor_called_again_takes_the_lane_and_what_changed_in_it_is_seen(dtype):
    """A training loop's calls: the same tensor objects every step. They
    take the C lane once the engine has taught their names' cache bits (lane_torch_allreduce(_async):
    no numpy(), no Python path), named and unnamed,
    in place and out of place, and give the reference's results. A tensor whose memory, dtype or
    size changed in between goes back through the Python path, and is reduced as it now is."""
    from ringtrain.torch import mpi_ops
    op = hvd.Max if dtype == torch.bool else hvd.Sum
    core = runtime.current("test").core
    python_path = []
    for _ in range(2):  # a tensor negotiated, so that the binding calls the lane (and the lane these Python paths)
        hvd.synchronize(hvd.allreduce_async_(torch.zeros(1), name="lane.first"))
    assert mpi_ops._allreduce_async_call is core.lane_torch_allreduce_async

    def counted(real):
        return lambda *args: python_path.append(args[2]) or real(*args)

    core.lane_configure_torch(torch.Tensor, counted(mpi_ops._allreduce_async_one),
                              counted(mpi_ops._allreduce_now_one), mpi_ops.from_numpy)
    try:
        inputs = all_inputs((5, 7), dtype, seed=11)
        tensors = {key: inputs[hvd.rank()].clone() for key in ("async_", "async", "sync_", "sync")}
        for step in range(4):
            del python_path[:]
            for named in (True, False):
                for key, t in tensors.items():
                    t.copy_(inputs[hvd.rank()])
                    name = f"lane.{dtype}.{key}" if named else None
                    if key == "async_":
                        assert hvd.synchronize(hvd.allreduce_async_(t, op=op, name=name)) is t
                        result = t
                    elif key == "async":
                        result = hvd.synchronize(hvd.allreduce_async(t, op=op, name=name))
                    elif key == "sync_":
                        assert hvd.allreduce_(t, op=op, name=name) is t
                        result = t
                    else:
                        result = hvd.allreduce(t, op=op, name=name)
                    assert result.dtype == dtype and result.shape == (5, 7)
                    assert_close(result, reference(op, inputs, dtype), dtype, f"step {step} {key} named={named}")
            # step 0 negotiates the names, step 1 is the first cache hit: it teaches the bits (unnamed
            # calls have other names each step until their names come round again: UNNAMED_WINDOW)
            # (on one rank a synchronous call needs no negotiation: it is not taught, and stays in Python)
            named_python_path = [name for name in python_path if name.startswith("lane.") and
                                 (hvd.size() > 1 or "async" in name)]
            if step >= 2:
                assert named_python_path == [], f"step {step}: took the Python path: {named_python_path}"
        # what changes a tensor under the lane's feet: the Python path sees it, the results follow
        t = tensors["async_"]
        changes = [("new memory", lambda: setattr(t, "data", inputs[hvd.rank()].clone()), (5, 7), dtype),
                   ("smaller", lambda: t.resize_(4, 7), (4, 7), dtype)]
        if dtype.itemsize == 4 and dtype.is_floating_point:
            changes.append(("same bytes, another dtype", lambda: setattr(t, "data", t.view(torch.int32)), (4, 7),
                            torch.int32))
        for what, change, shape, now in changes:
            change()
            expected_inputs = [x.view(now)[:shape[0]].clone() if now != dtype else x[:shape[0]].clone() for x in inputs]
            t.copy_(expected_inputs[hvd.rank()])
            del python_path[:]
            assert hvd.synchronize(hvd.allreduce_async_(t, op=op, name=f"lane.{dtype}.async_")) is t
            assert python_path == [f"lane.{dtype}.async_"], what
            assert t.shape == shape and t.dtype == now
            assert_close(t, reference(op, expected_inputs, now), now, what)
        # calls queued in the lane when it closes (a timeline starts on rank 0) go on in Python
        for _ in range(2):  # its new signature taught (as at steps 0 and 1)
            hvd.synchronize(hvd.allreduce_async_(t, op=op, name=f"lane.{dtype}.async_"))
        out_of_place = tensors["async"]
        out_of_place.copy_(inputs[hvd.rank()])
        t.copy_(expected_inputs[hvd.rank()])
        engine = runtime.current("test").engine
        del python_path[:]
        with engine._round_lock, tempfile.TemporaryDirectory() as directory:
            handles = [hvd.allreduce_async_(t, op=op, name=f"lane.{dtype}.async_"),
                       hvd.allreduce_async(out_of_place, op=op, name=f"lane.{dtype}.async")]
            assert python_path == [] and core.lane_length() == 2
            engine.start_timeline(os.path.join(directory, "timeline.json"))  # (hvd.start_timeline, its lock held)
        try:
            assert hvd.synchronize(handles[0]) is t
            assert_close(t, reference(op, expected_inputs, now), now, "queued, in place")
            assert_close(hvd.synchronize(handles[1]), reference(op, inputs, dtype), dtype, "queued, out of place")
        finally:
            hvd.stop_timeline()
    finally:
        core.lane_configure_torch(torch.Tensor, mpi_ops._allreduce_async_one, mpi_ops._allreduce_now_one,
                                  mpi_ops.from_numpy)
