"""Model-parallel linear layers under however many ranks run this file: forward outputs and every
gradient equal those of the unsplit layer computed with numpy on one rank."""
import numpy as np
import pytest

import ringtrain as rt
from ringtrain.train.model_parallel import ColumnParallelLinear, RowParallelLinear, feature_slice

# (in, hidden, out): hidden sizes that divide by none of 2, 3, 4 (and 1 < N features for N = 3, 4)
SHAPES = [(5, 7, 3), (6, 11, 2), (4, 1, 3)]
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}


def full_layer(seed, fan_in, fan_out):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out)


def batch(seed, rows, features):
    """The same data on every rank: model parallelism splits the weights, not the samples."""
    return np.random.default_rng(seed).standard_normal((rows, features))


def close(actual, expected, dtype, what):
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gather_output", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_column_parallel_equals_the_unsplit_layer(shape, gather_output, dtype):
    n_in, n_out, _ = shape
    w, b = full_layer(1, n_in, n_out)
    x, dy = batch(2, 9, n_in), batch(3, 9, n_out)
    layer = ColumnParallelLinear(n_in, n_out, gather_output=gather_output, weight=w, bias=b, dtype=dtype)
    mine = feature_slice(n_out, rt.size(), rt.rank())
    assert layer.weight.shape == (n_in, mine.stop - mine.start)

    y = layer.forward(x.astype(dtype))
    dx = layer.backward((dy if gather_output else dy[:, mine]).astype(dtype))

    close(y, (x @ w + b) if gather_output else (x @ w + b)[:, mine], dtype, "output")
    close(dx, dy @ w.T, dtype, "input gradient")
    close(layer.grads[0], (x.T @ dy)[:, mine], dtype, "weight gradient (my columns)")
    close(layer.grads[1], dy.sum(0)[mine], dtype, "bias gradient (my columns)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("input_is_split", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_row_parallel_equals_the_unsplit_layer(shape, input_is_split, dtype):
    _, n_in, n_out = shape
    w, b = full_layer(4, n_in, n_out)
    x, dy = batch(5, 9, n_in), batch(6, 9, n_out)
    layer = RowParallelLinear(n_in, n_out, input_is_split=input_is_split, weight=w, bias=b, dtype=dtype)
    mine = feature_slice(n_in, rt.size(), rt.rank())

    y = layer.forward((x[:, mine] if input_is_split else x).astype(dtype))
    dx = layer.backward(dy.astype(dtype))

    close(y, x @ w + b, dtype, "output")
    close(dx, (dy @ w.T)[:, mine] if input_is_split else dy @ w.T, dtype, "input gradient")
    close(layer.grads[0], (x.T @ dy)[mine], dtype, "weight gradient (my rows)")
    close(layer.grads[1], dy.sum(0), dtype, "bias gradient (whole on every rank)")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_column_then_row_equals_the_unsplit_mlp(shape):
    """The pair with the hidden layer split: x -> relu(x W1 + b1) -> W2 + b2, squared-error loss."""
    n_in, n_hidden, n_out = shape
    (w1, b1), (w2, b2) = full_layer(7, n_in, n_hidden), full_layer(8, n_hidden, n_out)
    x, target = batch(9, 12, n_in), batch(10, 12, n_out)
    first = ColumnParallelLinear(n_in, n_hidden, gather_output=False, weight=w1, bias=b1, dtype=np.float64)
    second = RowParallelLinear(n_hidden, n_out, input_is_split=True, weight=w2, bias=b2, dtype=np.float64)
    mine = feature_slice(n_hidden, rt.size(), rt.rank())

    h = np.maximum(first.forward(x), 0.0)
    y = second.forward(h)
    dy = 2 * (y - target) / len(x)
    dx = first.backward(second.backward(dy) * (h > 0))

    # the same network, unsplit, in numpy
    h_ref = np.maximum(x @ w1 + b1, 0.0)
    y_ref = h_ref @ w2 + b2
    dy_ref = 2 * (y_ref - target) / len(x)
    dh_ref = (dy_ref @ w2.T) * (h_ref > 0)
    tight = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, y_ref, **tight)
    np.testing.assert_allclose(dx, dh_ref @ w1.T, **tight)
    np.testing.assert_allclose(second.grads[0], (h_ref.T @ dy_ref)[mine], **tight)
    np.testing.assert_allclose(second.grads[1], dy_ref.sum(0), **tight)
    np.testing.assert_allclose(first.grads[0], (x.T @ dh_ref)[:, mine], **tight)
    np.testing.assert_allclose(first.grads[1], dh_ref.sum(0)[mine], **tight)


def test_layers_split_within_a_process_set():
    """Two model-parallel groups (halves of the job) run the same layer on different data at once."""
    size, rank = rt.size(), rt.rank()
    half = (size + 1) // 2
    groups = [rt.add_process_set(list(range(half)))]
    if size > half:
        groups.append(rt.add_process_set(list(range(half, size))))
    try:
        index = 0 if rank < half else 1
        group = groups[index]
        w, b = full_layer(11, 6, 5)
        x, dy = batch(12 + index, 4, 6), batch(14 + index, 4, 5)  # each group its own samples
        layer = ColumnParallelLinear(6, 5, process_set=group, weight=w, bias=b, dtype=np.float64,
                                     name="grouped.column")
        np.testing.assert_allclose(layer.forward(x), x @ w + b, rtol=1e-12)
        np.testing.assert_allclose(layer.backward(dy), dy @ w.T, rtol=1e-12)
        mine = feature_slice(5, group.size(), group.rank())
        np.testing.assert_allclose(layer.grads[0], (x.T @ dy)[:, mine], rtol=1e-12)
    finally:
        for group in reversed(groups):
            rt.remove_process_set(group)


def test_seeded_layers_hold_slices_of_one_matrix():
    """Without explicit weights every rank draws the same full matrix and keeps its slice."""
    layer = RowParallelLinear(10, 3, seed=42)
    pieces = rt.allgather(layer.weight)
    full = np.random.default_rng(42).normal(0.0, np.sqrt(2.0 / 10), (10, 3)).astype(np.float32)
    np.testing.assert_array_equal(pieces, full)


def test_bad_shapes_fail_before_any_communication():
    layer = ColumnParallelLinear(4, 3)
    with pytest.raises(ValueError, match=r"input must have shape \(batch, 4\)"):
        layer.forward(np.zeros((2, 5)))
    with pytest.raises(RuntimeError, match="backward\\(\\) before forward\\(\\)"):
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="weight must be the full"):
        RowParallelLinear(4, 3, weight=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="out_features=0"):
        ColumnParallelLinear(4, 0)


def test_ranks_that_disagree_on_the_batch_get_an_error_not_a_hang():
    """A batch that differs between the ranks of a model-parallel group is a clear error on every rank."""
    layer = RowParallelLinear(6, 3, name="mismatch.row")
    x = np.ones((4 + rt.rank(), 6), np.float32)
    if rt.size() == 1:
        assert layer.forward(x).shape == (4, 3)
        return
    with pytest.raises(rt.RingtrainError, match=r"Mismatched allreduce shapes for 'mismatch.row.forward'"):
        layer.forward(x)
    # the group goes on working afterwards
    np.testing.assert_allclose(layer.forward(np.ones((2, 6), np.float32)),
                               np.ones((2, 6)) @ np.random.default_rng(0).normal(0, np.sqrt(2 / 6), (6, 3)), rtol=1e-5)
