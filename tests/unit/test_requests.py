"""What a rank's requests are called and what users read when ranks disagree about one:
ringtrain.engine.requests, without MPI."""
import numpy as np
import pytest

from ringtrain.dtypes import bfloat16
from ringtrain.engine.requests import (
    UNNAMED_WINDOW,
    Request,
    UnnamedName,
    describe,
    mismatch_message,
    request_name,
    unnamed_name,
    zeros_like_signature,
)
from ringtrain.reduce_ops import ReduceOp

FLOAT32, FLOAT64 = 2, 3  # dtype codes (ringtrain.dtypes.CODES)


def signature(kind="allreduce", code=FLOAT32, shapes=((4,),), op=ReduceOp.Average, root=-1, pre=1.0, post=1.0):
    return [kind, code, [list(s) for s in shapes], int(op), root, pre, post]


# --- describe: a signature value as a person would write it ------------------------------------
def test_describe_names_dtypes_by_their_numpy_names():
    assert describe("dtype", FLOAT32) == "float32"
    assert describe("dtype", 1) == "bfloat16"
    assert describe("dtype", 9) == "bool"
    assert describe("dtype", -1) == "none"  # control requests carry no tensor


def test_describe_writes_one_shape_as_a_tuple_and_a_group_as_a_list_of_tuples():
    assert describe("shape", [[128, 64]]) == "(128, 64)"
    assert describe("shape", [[3]]) == "(3,)"
    assert describe("shape", [[2], [3, 4]]) == "[(2,), (3, 4)]"
    assert describe("shape", []) == "[]"  # a barrier has no tensors


def test_describe_names_ops_and_leaves_numbers_as_they_are():
    assert describe("op", 0) == "Sum"
    assert describe("op", 5) == "Adasum"
    assert describe("root rank", 2) == "2"
    assert describe("prescale factor", 0.5) == "0.5"


# --- mismatch_message: the first field on which the ranks disagree ----------------------------
def test_ranks_that_agree_have_no_mismatch():
    same = signature()
    assert mismatch_message("g", {0: same, 1: list(same), 2: list(same)}) is None


def test_a_dtype_mismatch_names_the_tensor_the_ranks_and_both_dtypes():
    text = mismatch_message("grad/fc1", {0: signature(), 1: signature(code=FLOAT64)})
    assert text == "Mismatched allreduce dtypes for 'grad/fc1': rank 0 has float32, but rank 1 has float64"


def test_a_shape_mismatch_writes_the_shapes_as_tuples():
    text = mismatch_message("w", {0: signature(shapes=[(128, 64)]), 1: signature(shapes=[(64, 128)])})
    assert text == "Mismatched allreduce shapes for 'w': rank 0 has (128, 64), but rank 1 has (64, 128)"


def test_a_grouped_shape_mismatch_lists_every_tensor_of_the_group():
    text = mismatch_message("g", {0: signature(shapes=[(2,), (3,)]), 1: signature(shapes=[(2,)])})
    assert text == "Mismatched allreduce shapes for 'g': rank 0 has [(2,), (3,)], but rank 1 has (2,)"


def test_an_op_mismatch_names_the_ops():
    text = mismatch_message("g", {0: signature(op=ReduceOp.Sum), 1: signature(op=ReduceOp.Max)})
    assert text == "Mismatched allreduce ops for 'g': rank 0 has Sum, but rank 1 has Max"


def test_a_root_mismatch_names_the_roots():
    text = mismatch_message("b", {0: signature("broadcast", root=0), 1: signature("broadcast", root=1)})
    assert text == "Mismatched broadcast root ranks for 'b': rank 0 has 0, but rank 1 has 1"


def test_scale_factor_mismatches_name_the_factors():
    pre = mismatch_message("g", {0: signature(pre=1.0), 1: signature(pre=2.0)})
    assert pre == "Mismatched allreduce prescale factors for 'g': rank 0 has 1.0, but rank 1 has 2.0"
    post = mismatch_message("g", {0: signature(post=0.5), 1: signature(post=0.25)})
    assert post == "Mismatched allreduce postscale factors for 'g': rank 0 has 0.5, but rank 1 has 0.25"


def test_a_collective_mismatch_says_what_each_rank_called():
    text = mismatch_message("t", {0: signature("allreduce"), 1: signature("allgather")})
    assert text == "Mismatched collective for 't': rank 0 called allreduce, but rank 1 called allgather"


def test_the_lowest_rank_is_compared_with_the_first_rank_that_differs():
    # the dict's order is not the ranks' order: the text still starts from rank 0
    text = mismatch_message("g", {3: signature(code=FLOAT64), 0: signature(), 2: signature(), 1: signature()})
    assert text == "Mismatched allreduce dtypes for 'g': rank 0 has float32, but rank 3 has float64"


def test_the_first_field_that_differs_is_the_one_reported():
    # dtype comes before shape and op in a signature: a rank that differs in all three is told its dtype
    text = mismatch_message("g", {0: signature(), 1: signature(code=FLOAT64, shapes=[(5,)], op=ReduceOp.Sum)})
    assert text == "Mismatched allreduce dtypes for 'g': rank 0 has float32, but rank 1 has float64"


def test_ragged_collectives_may_differ_in_the_first_dimension_only():
    gathered = [Request("allgather", "x", 0, [np.zeros((rows, 3), np.float32)], [], FLOAT32) for rows in (5, 7)]
    assert mismatch_message("x", {0: gathered[0].signature(), 1: gathered[1].signature()}) is None
    text = mismatch_message("x", {0: signature("allgather"), 1: signature("allgather", code=FLOAT64)})
    assert text == "Mismatched allgather dtypes for 'x': rank 0 has float32, but rank 1 has float64"


def test_a_ragged_shape_mismatch_says_the_first_dimension_does_not_count():
    text = mismatch_message("x", {0: signature("alltoall", shapes=[(3,)]), 1: signature("alltoall", shapes=[(4,)])})
    assert text.startswith("Mismatched alltoall shapes (all dimensions but the first) for 'x': rank 0 has ")


def test_a_ragged_shape_mismatch_shows_the_shapes_with_the_first_dimension_free():
    def key(shape):
        return Request("allgather", "x", 0, [np.zeros(shape, np.float32)], [], FLOAT32).signature()

    assert mismatch_message("x", {0: key((5, 3)), 1: key((5, 4))}) == (
        "Mismatched allgather shapes (all dimensions but the first) for 'x': rank 0 has (N, 3), but rank 1 has (N, 4)")
    assert mismatch_message("x", {0: key((5,)), 2: key((5, 1))}) == (
        "Mismatched allgather shapes (all dimensions but the first) for 'x': rank 0 has (N,), but rank 2 has (N, 1)")


# --- names: the user's, or the next from a bounded window per (kind, process set) ---------------
# The counters are module state: each test uses kinds of its own.
def test_unnamed_calls_are_numbered_in_call_order_per_kind():
    assert [unnamed_name("unit.order.a") for _ in range(3)] == ["unit.order.a.noname.0", "unit.order.a.noname.1",
                                                               "unit.order.a.noname.2"]
    assert unnamed_name("unit.order.b") == "unit.order.b.noname.0"  # another kind: its own count
    assert unnamed_name("unit.order.a") == "unit.order.a.noname.3"


def test_unnamed_calls_on_a_process_set_have_their_own_names_and_count():
    assert unnamed_name("unit.sets", 0) == "unit.sets.noname.0"
    assert unnamed_name("unit.sets", 2) == "unit.sets.noname.set2.0"
    assert unnamed_name("unit.sets", 2) == "unit.sets.noname.set2.1"
    assert unnamed_name("unit.sets", 1) == "unit.sets.noname.set1.0"
    assert unnamed_name("unit.sets", 0) == "unit.sets.noname.1"


def test_unnamed_names_recur_after_the_window():
    names = [unnamed_name("unit.window") for _ in range(UNNAMED_WINDOW + 2)]
    assert len(set(names)) == UNNAMED_WINDOW
    assert names[UNNAMED_WINDOW - 1] == f"unit.window.noname.{UNNAMED_WINDOW - 1}"
    assert names[UNNAMED_WINDOW:] == ["unit.window.noname.0", "unit.window.noname.1"]
    assert names[UNNAMED_WINDOW] is names[0]  # the same object, made once


def test_request_name_keeps_a_given_name_and_numbers_a_missing_one():
    assert request_name("unit.request", "grad/fc1") == "grad/fc1"
    assert type(request_name("unit.request", "grad/fc1")) is str
    first = request_name("unit.request", None, 3)
    assert first == "unit.request.noname.set3.0" and isinstance(first, UnnamedName)
    request_name("unit.request", "named", 3)  # a named call takes no number from the window
    assert request_name("unit.request", None, 3) == "unit.request.noname.set3.1"


def test_request_name_refuses_a_name_that_is_not_a_string():
    with pytest.raises(TypeError, match=r"^name=5 must be a str$"):
        request_name("unit.refuse", 5)
    with pytest.raises(TypeError, match=r"^name=b'g' must be a str$"):
        request_name("unit.refuse", b"g")


# --- what a rank that has joined contributes -----------------------------------------------
def test_zeros_like_signature_gives_zeros_of_every_agreed_shape_and_dtype():
    one, two = zeros_like_signature(signature(code=FLOAT64, shapes=[(2, 3), (4,)]))
    assert (one.shape, one.dtype, two.shape, two.dtype) == ((2, 3), np.float64, (4,), np.float64)
    assert not one.any() and not two.any()
    [half] = zeros_like_signature(signature(code=1, shapes=[(5,)]))
    assert half.dtype == bfloat16 and half.shape == (5,) and not half.astype(np.float32).any()
    [scalar] = zeros_like_signature(signature(shapes=[()]))
    assert scalar.shape == () and scalar.dtype == np.float32


def test_a_request_signature_is_what_ranks_must_agree_on():
    array = np.ones((4, 2), np.float32)
    assert Request("allreduce", "g", 0, [array], [array], FLOAT32, ReduceOp.Sum, -1, 0.5, 2.0).signature() == [
        "allreduce", FLOAT32, [[4, 2]], 0, -1, 0.5, 2.0]
    # a ragged collective's first dimension is left out; the number of dimensions stays
    assert Request("allgather", "g", 0, [array], [], FLOAT32).shape_key() == [[2, 2]]
    assert Request("add_process_set", "p", 0, payload=(0, 2)).shape_key() == [[0, 2]]
