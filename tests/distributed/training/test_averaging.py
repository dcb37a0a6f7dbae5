"""ModelAveraging under however many ranks run this file: local steps in between, and every
`period` steps the parameters become the mean of the ranks' local models (numpy reference)."""
import numpy as np
import pytest

import ringtrain as rt


def local_gradient(rank, step, shapes):
    rng = np.random.default_rng([rank, step])
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


@pytest.mark.parametrize("period", [1, 3])
def test_parameters_are_the_mean_of_the_local_models_every_period_steps(period):
    size, rank = rt.size(), rt.rank()
    shapes = [(300_000,), (7, 3), (1,)]  # one tensor above a pipeline segment, two fused
    start = [np.random.default_rng(9).standard_normal(s).astype(np.float32) for s in shapes]

    def sgd(params):
        return rt.optim.SGD(params, lr=0.1, momentum=0.5)

    mine = [p.copy() for p in start]
    opt = rt.ModelAveraging(sgd(mine), period=period, name=f"test_averaging.{period}")
    # reference: every rank's local optimizer, replayed here, averaged by numpy
    replicas = [[p.copy() for p in start] for _ in range(size)]
    local = [sgd(params) for params in replicas]
    for step in range(2 * period + 1):
        averaged = opt.step(local_gradient(rank, step, shapes))
        for q in range(size):
            local[q].step(local_gradient(q, step, shapes))
        assert averaged == ((step + 1) % period == 0)
        if averaged:
            for i in range(len(shapes)):
                mean = np.mean([replicas[q][i] for q in range(size)], axis=0)
                for q in range(size):
                    replicas[q][i][...] = mean
        for i in range(len(shapes)):
            np.testing.assert_allclose(mine[i], replicas[rank][i], rtol=1e-5, atol=1e-6)
    # between averages the ranks' models differ; synchronize() makes them one
    if period > 1:
        assert len(set(rt.allgather_object(float(mine[1].sum())))) == size
    opt.synchronize()
    gathered = rt.allgather(mine[1][None])
    assert all(np.array_equal(gathered[q], mine[1]) for q in range(size))
    assert opt.local_steps == 0


def test_grad_ready_then_step_and_bad_period():
    params = [np.zeros(4, np.float32)]
    opt = rt.ModelAveraging(rt.optim.SGD(params, lr=1.0), period=2, name="test_averaging.grad_ready")
    with pytest.raises(ValueError, match=r"gradients \[0\] were never given"):
        opt.step()
    opt.grad_ready(0, np.ones(4, np.float32))
    assert opt.step() is False
    np.testing.assert_array_equal(params[0], -np.ones(4))
    opt.grad_ready(0, np.full(4, float(rt.rank()), np.float32))
    assert opt.step() is True  # every rank: -1 - rank, averaged
    np.testing.assert_allclose(params[0], -1 - np.mean(range(rt.size())))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"period=.* must be a positive int"):
            rt.ModelAveraging(rt.optim.SGD([np.zeros(1, np.float32)], lr=1.0), period=bad)
