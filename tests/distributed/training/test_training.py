"""Training helpers under however many ranks run this file."""
import os
import tempfile

import numpy as np
import pytest

import ringtrain as rt


def regression_batch(rank, step, batch, dim=6):
    """A deterministic linear-regression batch that any rank can regenerate for any other."""
    rng = np.random.default_rng([rank, step])
    x = rng.standard_normal((batch, dim)).astype(np.float32)
    y = (x @ np.arange(1, dim + 1, dtype=np.float32) + 0.1 * rng.standard_normal(batch)).astype(np.float32)
    return x, y


def gradient(w, b, x, y):
    """Mean squared error's gradient over the batch."""
    err = x @ w + b - y
    return [(2 * x.T @ err / len(x)).astype(np.float32), np.array([2 * err.mean()], dtype=np.float32)]


OPTIMIZERS = {
    "sgd-nesterov": lambda params: rt.optim.SGD(params, lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda params: rt.optim.Adam(params, lr=0.05),
}


@pytest.mark.parametrize("passes", [1, 2])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_n_ranks_with_batch_b_equal_one_rank_with_batch_nb(kind, passes):
    size, rank, b = rt.size(), rt.rank(), 8
    mine = [np.zeros(6, np.float32), np.zeros(1, np.float32)]
    reference = [np.zeros(6, np.float32), np.zeros(1, np.float32)]
    dopt = rt.DistributedOptimizer(OPTIMIZERS[kind](mine), backward_passes_per_step=passes)
    ropt = OPTIMIZERS[kind](reference)
    for step in range(12):
        # `passes` backward passes of b/passes samples each, on every rank ...
        for p in range(passes):
            x, y = regression_batch(rank, step, b)
            part = slice(p * b // passes, (p + 1) * b // passes)
            updated = dopt.step(gradient(mine[0], mine[1][0], x[part], y[part]))
            assert updated == (p == passes - 1)
        # ... equals one optimizer on everybody's samples at once
        xs, ys = zip(*(regression_batch(q, step, b) for q in range(size)))
        ropt.step(gradient(reference[0], reference[1][0], np.concatenate(xs), np.concatenate(ys)))
    np.testing.assert_allclose(mine[0], reference[0], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(mine[1], reference[1], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("compression", [rt.Compression.fp16, rt.Compression.bf16], ids=["fp16", "bf16"])
def test_compressed_gradients_stay_close(compression):
    size, rank = rt.size(), rt.rank()
    params = [np.zeros(1000, np.float32)]
    opt = rt.DistributedOptimizer(rt.optim.SGD(params, lr=1.0), compression=compression)
    grads = [np.random.default_rng(q).standard_normal(1000).astype(np.float32) for q in range(size)]
    opt.step([grads[rank]])
    expected = -np.mean(grads, axis=0)
    bound = 2.0 ** -10 if compression is rt.Compression.fp16 else 2.0 ** -7
    np.testing.assert_allclose(params[0], expected, rtol=bound * (size + 2), atol=bound * 4)


def test_broadcast_parameters_and_optimizer_state():
    rank = rt.rank()
    params = {"w": np.full((3, 2), float(rank), np.float32), "b": np.full(2, float(rank), np.float32)}
    rt.broadcast_parameters(params, root_rank=0)
    assert (params["w"] == 0).all() and (params["b"] == 0).all()
    opt = rt.optim.Adam([np.zeros(4, np.float32)], lr=0.1)
    for _ in range(rank + 1):  # a different state on every rank
        opt.step([np.full(4, rank + 1.0, np.float32)])
    rt.broadcast_optimizer_state(opt, root_rank=0)
    assert opt.steps == 1
    np.testing.assert_allclose(opt.m[0], 0.1 * np.ones(4), rtol=1e-6)  # rank 0's first moment after one step of 1.0


def test_shard_gives_every_rank_the_same_number_of_samples():
    size = rt.size()
    n = 10 * size + 3
    x = np.arange(n)
    mine = rt.shard(x, seed=7)
    counts = rt.allgather(np.array([len(mine)]))
    assert (counts == n // size).all()
    everyone = rt.allgather(mine)
    assert len(set(everyone.tolist())) == len(everyone)  # disjoint
    padded = rt.allgather(rt.shard(x, seed=7, drop_last=False))
    assert len(padded) == -(-n // size) * size and set(padded.tolist()) == set(range(n))  # covers everything
    xs, ys = rt.shard(np.arange(n), np.arange(n) * 2, seed=1)
    assert (ys == 2 * xs).all()


def test_checkpoint_saved_by_rank_zero_and_loaded_everywhere():
    path = rt.broadcast_object(os.path.join(tempfile.gettempdir(), f"ringtrain-ckpt-{os.getpid()}.npz"))
    state = {"epoch": 3 + rt.rank(), "model": {"w": np.full(3, float(rt.rank()))}}
    rt.save_checkpoint(path, state)
    loaded = rt.load_checkpoint(path)
    assert loaded["epoch"] == 3 and (loaded["model"]["w"] == 0).all()
    rt.barrier()
    if rt.rank() == 0:
        os.unlink(path)


def test_metric_average():
    assert rt.metric_average(float(rt.rank())) == pytest.approx((rt.size() - 1) / 2)


@pytest.mark.parametrize("passes", [1, 3])
def test_the_callers_gradients_are_left_as_they_were(passes):
    """The optimizer reduces in buffers of its own, reused every step, never in the caller's arrays."""
    size, rank = rt.size(), rt.rank()
    params = [np.zeros((3, 5), np.float32), np.zeros(7, np.float32)]
    opt = rt.DistributedOptimizer(rt.optim.SGD(params, lr=1.0), backward_passes_per_step=passes)
    for step in range(3):
        for p in range(passes):
            grads = [np.full((3, 5), rank + step + p, np.float32), np.arange(7, dtype=np.float32) * (rank + 1)]
            kept = [g.copy() for g in grads]
            opt.step(grads)
            for g, k in zip(grads, kept):
                np.testing.assert_array_equal(g, k)
    # three updates of lr=1 with the average over ranks and passes
    mean_rank = (size - 1) / 2
    expected0 = -sum(mean_rank + step + (passes - 1) / 2 for step in range(3))
    np.testing.assert_allclose(params[0], np.full((3, 5), expected0, np.float32), rtol=1e-6)
    np.testing.assert_allclose(params[1], -3 * np.arange(7, dtype=np.float32) * (size + 1) / 2, rtol=1e-6)
