"""Sparse gradients under however many ranks run this file: every method against numpy's
np.add.at over all ranks' gradients (which every rank regenerates without communication),
duplicates within and across ranks, empty gradients, bad input, mismatches, the auto choice,
and DistributedOptimizer with a sparse embedding gradient."""
import logging

import numpy as np
import pytest

import ringtrain as rt
from ringtrain.train.sparse import CostModel, SparseGradient, set_cost_model, sparse_allreduce
from ringtrain.train.sparse_kernels import merge_duplicate_rows, scatter_add_rows

METHODS = ["allgather", "owner", "dense", "auto"]


def rank_gradient(rank, nnz, dense_shape, dtype=np.float32, seed=0, hot_rows=None):
    """Rank `rank`'s gradient. Indices are drawn with replacement from the first `hot_rows`
    rows (all rows by default), so they repeat within a rank and across ranks."""
    rng = np.random.default_rng([seed, rank, nnz, *dense_shape])
    high = dense_shape[0] if hot_rows is None else min(hot_rows, dense_shape[0])
    indices = rng.integers(0, high, nnz) if high else np.zeros(0, np.int64)
    values = rng.standard_normal((nnz, *dense_shape[1:])).astype(dtype)
    return SparseGradient(indices, values, dense_shape)


def reference(grads, op):
    """numpy's dense answer, in float64."""
    dense = np.zeros(grads[0].dense_shape, np.float64)
    for g in grads:
        np.add.at(dense, g.indices, g.values.astype(np.float64))
    return dense / len(grads) if op == rt.Average else dense


def as_dense(result):
    return result if isinstance(result, np.ndarray) else result.to_dense()


@pytest.fixture(autouse=True)
def still_in_step():
    yield
    # every rank took part in the same collectives: a clean one right after still matches up
    assert rt.allreduce(np.ones(3), op=rt.Sum).tolist() == [rt.size()] * 3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("op", [rt.Sum, rt.Average], ids=["sum", "average"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("dense_shape,nnz,hot", [((37, 5), 20, 8), ((1000,), 31, None), ((23, 2, 3), 40, None)],
                         ids=["dups-hot", "1d", "3d"])
def test_every_method_matches_numpy(method, op, dtype, dense_shape, nnz, hot):
    size, rank = rt.size(), rt.rank()
    grads = [rank_gradient(q, nnz + q, dense_shape, dtype, hot_rows=hot) for q in range(size)]
    result = sparse_allreduce(grads[rank], op=op, method=method, name=f"t.{method}.{dense_shape}")
    if method in ("allgather", "owner"):
        assert isinstance(result, SparseGradient) and result.dense_shape == dense_shape
    if method == "dense":
        assert isinstance(result, np.ndarray)
    dense = as_dense(result)
    assert dense.dtype == dtype and dense.shape == dense_shape
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dense, reference(grads, op), rtol=rtol, atol=rtol)


def test_owner_result_is_unique_sorted_and_identical_on_every_rank():
    size, rank = rt.size(), rt.rank()
    shape = (50, 4)
    grads = [rank_gradient(q, 30, shape, hot_rows=12) for q in range(size)]
    result = sparse_allreduce(grads[rank], op=rt.Sum, method="owner", name="t.owner.unique")
    expected_rows = np.unique(np.concatenate([g.indices for g in grads]))
    np.testing.assert_array_equal(result.indices, expected_rows)
    # bitwise the same everywhere: each row is reduced once, by its owner
    np.testing.assert_array_equal(rt.broadcast(result.values, 0, name="t.owner.unique.check"), result.values)


def test_allgather_keeps_every_ranks_pairs_in_rank_order():
    size, rank = rt.size(), rt.rank()
    grads = [rank_gradient(q, 5 + q, (20, 3), hot_rows=4) for q in range(size)]
    result = sparse_allreduce(grads[rank], op=rt.Sum, method="allgather", name="t.allgather.order")
    np.testing.assert_array_equal(result.indices, np.concatenate([g.indices for g in grads]))
    np.testing.assert_array_equal(result.values, np.concatenate([g.values for g in grads]))


@pytest.mark.parametrize("method", METHODS)
def test_empty_gradients(method):
    size, rank = rt.size(), rt.rank()
    shape = (10, 3)
    empty = SparseGradient(np.zeros(0, np.int64), np.zeros((0, 3), np.float32), shape)
    result = sparse_allreduce(empty, method=method, name=f"t.empty.all.{method}")
    np.testing.assert_array_equal(as_dense(result), np.zeros(shape, np.float32))
    # only rank 0 empty; and more ranks than rows (some owners get no rows)
    for rows in (10, 2):
        grads = [empty if q == 0 else rank_gradient(q, 4, (rows, 3)) for q in range(size)]
        grads[0] = SparseGradient(np.zeros(0, np.int64), np.zeros((0, 3), np.float32), (rows, 3))
        result = sparse_allreduce(grads[rank], op=rt.Sum, method=method, name=f"t.empty.some.{method}.{rows}")
        np.testing.assert_allclose(as_dense(result), reference(grads, rt.Sum), rtol=1e-5, atol=1e-6)


def test_indices_out_of_range_raise_before_anything_is_sent():
    values = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"indices\[2\]=7 is out of range for dense_shape=\(7, 2\): rows are 0..6"):
        SparseGradient([0, 6, 7], values, (7, 2))
    with pytest.raises(ValueError, match=r"indices\[1\]=-1 is out of range"):
        SparseGradient([0, -1, 3], values, (7, 2))
    # changed after construction: sparse_allreduce checks again, on every method
    grad = SparseGradient([0, 1, 2], values, (7, 2))
    grad.indices[0] = 100
    for method in METHODS:
        with pytest.raises(ValueError, match=r"indices\[0\]=100 is out of range"):
            sparse_allreduce(grad, method=method, name="t.bad")


def test_other_bad_input_raises_before_anything_is_sent():
    grad = SparseGradient([0, 1], np.ones((2, 2), np.float32), (4, 2))
    with pytest.raises(ValueError, match=r"op=Max is not defined for sparse gradients"):
        sparse_allreduce(grad, op=rt.Max)
    with pytest.raises(ValueError, match=r"method='ring' must be one of"):
        sparse_allreduce(grad, method="ring")
    with pytest.raises(TypeError, match=r"grad must be a ringtrain.SparseGradient, got ndarray"):
        sparse_allreduce(np.ones(3))
    with pytest.raises(ValueError, match=r"values have shape \(2, 3\), but 2 indices into dense_shape=\(4, 2\)"):
        SparseGradient([0, 1], np.ones((2, 3), np.float32), (4, 2))
    with pytest.raises(TypeError, match=r"indices must be integers"):
        SparseGradient([0.0, 1.0], np.ones((2, 2), np.float32), (4, 2))
    with pytest.raises(TypeError, match=r"values have dtype int64"):
        SparseGradient([0, 1], np.ones((2, 2), np.int64), (4, 2))


@pytest.mark.skipif("rt.size() == 1", reason="a mismatch needs two ranks")
@pytest.mark.parametrize("method", METHODS)
def test_mismatched_dense_shape_is_an_error_on_every_rank(method):
    rank = rt.rank()
    grad = rank_gradient(rank, 3, (10 + (rank == 1), 4))
    with pytest.raises(ValueError, match=r"Mismatched dense_shape in sparse allreduce of 't.mismatch': "
                                         r"rank 0 had \(10, 4\), but rank 1 had \(11, 4\)"):
        sparse_allreduce(grad, method=method, name="t.mismatch")


@pytest.mark.skipif("rt.size() == 1", reason="a mismatch needs two ranks")
def test_mismatched_method_and_dtype_are_errors_on_every_rank():
    rank = rt.rank()
    grad = rank_gradient(rank, 3, (10, 4))
    with pytest.raises(ValueError, match=r"Mismatched method .*: rank 0 had owner, but rank 1 had dense"):
        sparse_allreduce(grad, method="dense" if rank == 1 else "owner", name="t.mismatch.method")
    grad = rank_gradient(rank, 3, (10, 4), np.float64 if rank == 1 else np.float32)
    with pytest.raises(ValueError, match=r"Mismatched dtype .*: rank 0 had float32, but rank 1 had float64"):
        sparse_allreduce(grad, name="t.mismatch.dtype")


@pytest.mark.skipif("rt.size() == 1", reason="a disagreement needs two ranks")
def test_auto_runs_the_first_ranks_choice_when_the_ranks_models_differ():
    # the other ranks' model makes one collective call the only cost (dense); the first rank's
    # default picks a sparse method at 0.1% density, and every rank runs that one
    size, rank = rt.size(), rt.rank()
    shape = (100_000, 16)
    grads = [rank_gradient(q, 100, shape) for q in range(size)]
    if rank > 0:
        set_cost_model(CostModel(latency=1.0, bandwidth=1e18, memory_bandwidth=1e18))
    try:
        result = sparse_allreduce(grads[rank], method="auto", name="t.auto.models_differ")
    finally:
        set_cost_model(CostModel())
    np.testing.assert_allclose(as_dense(result), reference(grads, rt.Average), rtol=1e-5, atol=1e-6)
    kinds = rt.allgather_object("dense" if isinstance(result, np.ndarray) else "sparse")
    assert kinds == ["sparse"] * size


def test_auto_agrees_on_every_rank_and_logs_its_choice_once(caplog):
    size, rank = rt.size(), rt.rank()
    shape = (100_000, 16)
    grads = [rank_gradient(q, 100, shape) for q in range(size)]
    with caplog.at_level(logging.INFO, logger="ringtrain.sparse"):
        for _ in range(3):
            result = sparse_allreduce(grads[rank], method="auto", name="t.auto.embedding")
    np.testing.assert_allclose(as_dense(result), reference(grads, rt.Average), rtol=1e-5, atol=1e-6)
    kind = "dense" if isinstance(result, np.ndarray) else "sparse"
    assert set(rt.allgather_object(kind)) == {kind}
    assert kind == "sparse", "0.1% density must not pick dense"
    lines = [r.getMessage() for r in caplog.records if "t.auto.embedding" in r.getMessage()]
    if rank == 0:
        assert len(lines) == 1 and ("-> allgather" in lines[0] or "-> owner" in lines[0]), lines
    else:
        assert lines == []


def test_kernels_match_numpy():
    rng = np.random.default_rng(3)
    indices = rng.integers(0, 9, 40)
    values = rng.standard_normal((40, 3)).astype(np.float32)
    merged_indices, merged_values = merge_duplicate_rows(indices, values)
    expected_indices = np.unique(indices)
    np.testing.assert_array_equal(merged_indices, expected_indices)
    expected = np.zeros((9, 3), np.float64)
    np.add.at(expected, indices, values)
    np.testing.assert_allclose(merged_values, expected[expected_indices], rtol=1e-5, atol=1e-6)
    dense = np.zeros((9, 3), np.float32)
    scatter_add_rows(dense, indices, values)
    np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-6)


def embedding_gradient(embedding, rank, step, vocab, dim):
    """A toy loss sum(embedding[tokens] * targets): its gradient is `targets` on the token rows."""
    rng = np.random.default_rng([rank, step])
    tokens = rng.integers(0, vocab // 4, 12)  # a hot part of the vocabulary, so rows repeat
    targets = rng.standard_normal((12, dim)).astype(np.float32)
    return SparseGradient(tokens, targets, (vocab, dim))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("passes", [1, 2])
def test_distributed_optimizer_applies_sparse_gradients(method, passes):
    """An embedding (sparse gradient) and a bias (dense) trained together equal one optimizer
    given the dense average of everybody's gradients."""
    size, rank, vocab, dim = rt.size(), rt.rank(), 40, 3
    mine = [np.zeros((vocab, dim), np.float32), np.zeros(dim, np.float32)]
    reference_params = [p.copy() for p in mine]
    opt = rt.DistributedOptimizer(rt.optim.SGD(mine, lr=0.1, momentum=0.9), sparse_method=method,
                                  backward_passes_per_step=passes,
                                  named_parameters=[(f"emb.{method}.{passes}", mine[0]), (f"bias.{method}.{passes}", mine[1])])
    ref = rt.optim.SGD(reference_params, lr=0.1, momentum=0.9)
    for step in range(4):
        for p in range(passes):
            opt.grad_ready(1, np.full(dim, rank + p, np.float32))
            opt.grad_ready(0, embedding_gradient(mine[0], rank, step * passes + p, vocab, dim))
            opt.step()
        dense = [np.zeros((vocab, dim)), np.zeros(dim)]
        for q in range(size):
            for p in range(passes):
                dense[0] += embedding_gradient(None, q, step * passes + p, vocab, dim).to_dense()
                dense[1] += q + p
        ref.step([(d / (size * passes)).astype(np.float32) for d in dense])
    np.testing.assert_allclose(mine[0], reference_params[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mine[1], reference_params[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first", ["sparse", "dense"])
def test_distributed_optimizer_accumulates_sparse_and_dense_passes_of_one_parameter(first):
    size, rank = rt.size(), rt.rank()
    params = [np.zeros((6, 2), np.float32)]
    opt = rt.DistributedOptimizer(rt.optim.SGD(params, lr=1.0), backward_passes_per_step=2,
                                  named_parameters=[(f"mixed.{first}", params[0])])

    def passes(q):
        sparse = SparseGradient([q % 6, 5, 5], np.full((3, 2), q + 1.0), (6, 2))
        dense = np.arange(12, dtype=np.float32).reshape(6, 2) * (q + 1)
        return [sparse, dense] if first == "sparse" else [dense, sparse]

    for grad in passes(rank):
        opt.step([grad])
    expected = np.mean([sum(g if isinstance(g, np.ndarray) else g.to_dense() for g in passes(q)) / 2
                        for q in range(size)], axis=0)
    np.testing.assert_allclose(params[0], -expected, rtol=1e-6)


def test_distributed_optimizer_rejects_a_sparse_gradient_of_the_wrong_shape():
    opt = rt.DistributedOptimizer(rt.optim.SGD([np.zeros((5, 2), np.float32)], lr=0.1))
    with pytest.raises(ValueError, match=r"has dense_shape=\(6, 2\), but the parameter has shape \(5, 2\)"):
        opt.grad_ready(0, SparseGradient([1], np.ones((1, 2), np.float32), (6, 2)))
    with pytest.raises(ValueError, match=r"sparse_method='x' must be one of"):
        rt.DistributedOptimizer(rt.optim.SGD([np.zeros(2, np.float32)], lr=0.1), sparse_method="x")
