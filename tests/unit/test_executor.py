"""Which agreed collectives run as one (Tensor Fusion) and how rows are shared out:
ringtrain.engine.executor's pure logic, without MPI. The items are real AgreedCollectives of a
rank that has joined (request None): zeros of the agreed shape."""
import numpy as np

from ringtrain.engine.executor import AgreedCollective, plan_fusion, split_rows
from ringtrain.reduce_ops import ReduceOp

FLOAT32, FLOAT64 = 2, 3
KB = 1024
NO_DIRECT = 1 << 40  # no tensor is large enough to run in place on its own


def item(name, floats=256, kind="allreduce", code=FLOAT32, op=ReduceOp.Average, pre=1.0, post=1.0, shapes=None):
    shapes = shapes or [[floats]]
    return AgreedCollective(name, [kind, code, shapes, int(op), -1, pre, post], None, 0.0)


def names(groups):
    return [[i.name for i in group] for group in groups]


def test_an_agreed_collective_knows_its_size_and_fusion_key():
    a = item("a", floats=256)
    assert a.nbytes == KB and a.fusion_key == (FLOAT32, int(ReduceOp.Average), 1.0, 1.0)
    assert [t.shape for t in a.tensors] == [(256,)] and not a.tensors[0].any()
    assert a.outputs[0].shape == (256,) and a.outputs[0] is not a.tensors[0]
    grouped = item("g", shapes=[[2, 3], [4]], code=FLOAT64)
    assert grouped.nbytes == (6 + 4) * 8
    assert item("b", kind="broadcast").fusion_key is None  # only allreduces fuse


def test_compatible_allreduces_under_the_threshold_run_as_one():
    items = [item(n) for n in "abc"]
    assert names(plan_fusion(items, threshold=3 * KB, direct_bytes=NO_DIRECT)) == [["a", "b", "c"]]


def test_a_run_is_cut_where_the_next_item_would_pass_the_threshold():
    items = [item(n) for n in "abcde"]  # 1 KB each
    assert names(plan_fusion(items, threshold=2 * KB, direct_bytes=NO_DIRECT)) == [["a", "b"], ["c", "d"], ["e"]]
    # exactly at the threshold still fits; one byte short does not
    assert names(plan_fusion(items[:2], threshold=2 * KB - 1, direct_bytes=NO_DIRECT)) == [["a"], ["b"]]


def test_a_zero_threshold_fuses_nothing():
    items = [item(n) for n in "abc"]
    assert names(plan_fusion(items, threshold=0, direct_bytes=NO_DIRECT)) == [["a"], ["b"], ["c"]]


def test_allreduces_that_differ_in_dtype_op_or_scale_are_not_fused():
    items = [item("f32"), item("f64", code=FLOAT64), item("sum", op=ReduceOp.Sum), item("pre", pre=0.5),
             item("post", post=2.0), item("post2", post=2.0)]
    assert names(plan_fusion(items, threshold=64 * KB, direct_bytes=NO_DIRECT)) == [
        ["f32"], ["f64"], ["sum"], ["pre"], ["post", "post2"]]


def test_other_collectives_run_alone_and_cut_a_run_of_allreduces():
    items = [item("a"), item("b"), item("bc", kind="broadcast"), item("ag", kind="allgather"), item("c"), item("d")]
    assert names(plan_fusion(items, threshold=64 * KB, direct_bytes=NO_DIRECT)) == [
        ["a", "b"], ["bc"], ["ag"], ["c", "d"]]


def test_compatible_allreduces_fuse_only_when_consecutive():
    items = [item("a"), item("x", code=FLOAT64), item("b")]
    assert names(plan_fusion(items, threshold=64 * KB, direct_bytes=NO_DIRECT)) == [["a"], ["x"], ["b"]]


def test_a_tensor_of_a_pipeline_segment_or_more_runs_in_place_alone():
    items = [item("small"), item("big", floats=1024), item("small2"), item("small3")]  # big: 4 KB
    assert names(plan_fusion(items, threshold=64 * KB, direct_bytes=4 * KB)) == [["small"], ["big"],
                                                                                ["small2", "small3"]]
    # a group of several tensors is packed whatever its size: it is one call for many
    group = item("group", shapes=[[1024], [1024]])
    assert names(plan_fusion([item("a"), group], threshold=64 * KB, direct_bytes=4 * KB)) == [["a", "group"]]


def test_the_plan_keeps_every_item_in_order():
    kinds = ["allreduce", "allreduce", "broadcast", "allreduce", "allreduce", "allreduce", "alltoall", "allreduce"]
    items = [item(f"t{i}", floats=64, kind=kind) for i, kind in enumerate(kinds)]  # 256 bytes each
    groups = plan_fusion(items, threshold=512, direct_bytes=NO_DIRECT)
    assert [i for group in groups for i in group] == items
    assert names(groups) == [["t0", "t1"], ["t2"], ["t3", "t4"], ["t5"], ["t6"], ["t7"]]


def test_an_empty_round_plans_nothing():
    assert plan_fusion([], threshold=64 * KB, direct_bytes=NO_DIRECT) == []


def test_split_rows_shares_rows_as_evenly_as_possible_first_parts_first():
    assert split_rows(10, 3).tolist() == [4, 3, 3]
    assert split_rows(11, 3).tolist() == [4, 4, 3]
    assert split_rows(9, 3).tolist() == [3, 3, 3]
    assert split_rows(2, 4).tolist() == [1, 1, 0, 0]
    assert split_rows(0, 2).tolist() == [0, 0]
    assert split_rows(7, 1).tolist() == [7]
    assert split_rows(10, 3).dtype == np.int64
