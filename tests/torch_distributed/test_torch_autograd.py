"""Gradients of the differentiable collectives, against what Horovod computes (and, where it is
the same thing, against torch autograd through the equivalent local computation)."""
import pytest
import torch

import ringtrain.torch as hvd
from torch_harness import even_odd_sets, rank_tensor

FLOATS = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average], ids=repr)
def test_allreduce_grad(dtype, op):
    x = rank_tensor(hvd.rank(), (5, 3), dtype).requires_grad_()
    w = rank_tensor(hvd.rank(), (5, 3), dtype, seed=1)
    (hvd.allreduce(x, op=op, prescale_factor=0.5) * w).sum().backward()
    # d/dx of sum(w * op(x)) as Horovod defines it: the same allreduce of the gradient
    weights = [rank_tensor(r, (5, 3), dtype, seed=1) for r in range(hvd.size())]
    expected = torch.stack(weights).sum(0) * 0.5
    if op == hvd.Average:
        expected = expected / hvd.size()
    torch.testing.assert_close(x.grad, expected)


def test_grouped_allreduce_grad():
    xs = [torch.ones(4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    outs = hvd.grouped_allreduce(xs, op=hvd.Sum)
    for o in outs:
        o.backward(torch.ones(4, dtype=torch.float64))
    for x in xs:
        torch.testing.assert_close(x.grad, torch.full((4,), float(hvd.size()), dtype=torch.float64))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_allgather_grad(dtype):
    rows = [r % 3 + 1 for r in range(hvd.size())]
    x = torch.full((rows[hvd.rank()], 2), float(hvd.rank()), dtype=dtype, requires_grad=True)
    gathered = hvd.allgather(x)
    grad = torch.cat([torch.full((rows[r], 2), float(r), dtype=dtype) for r in range(hvd.size())])
    gathered.backward(grad)
    torch.testing.assert_close(x.grad, torch.full((rows[hvd.rank()], 2), float(hvd.rank()), dtype=dtype))
    ys = [x.detach().clone().requires_grad_() for _ in range(2)]
    for g in hvd.grouped_allgather(ys):
        g.backward(grad)
    for y in ys:
        torch.testing.assert_close(y.grad, x.grad)


def test_broadcast_grad():
    for root in range(hvd.size()):
        x = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
        hvd.broadcast(x, root).backward(torch.ones(3, 2, dtype=torch.float64))
        torch.testing.assert_close(x.grad, torch.full((3, 2), 1.0 if hvd.rank() == root else 0.0,
                                                      dtype=torch.float64))


def test_alltoall_grad():
    size, rank = hvd.size(), hvd.rank()
    x = torch.arange(size * (rank + 1) * 2, dtype=torch.float64).reshape(-1, 2).requires_grad_()
    out, _ = hvd.alltoall(x, torch.tensor([rank + 1] * size, dtype=torch.int32))
    # each received row r gets gradient = its sender's rank + 1: back at the sender that is rank + 1
    senders = torch.cat([torch.full((r + 1, 2), r + 1.0, dtype=torch.float64) for r in range(size)])
    out.backward(senders)
    torch.testing.assert_close(x.grad, torch.full_like(x, rank + 1.0))


@pytest.mark.parametrize("op", [hvd.Sum, hvd.Average], ids=repr)
def test_reducescatter_grad(op):
    size = hvd.size()
    x = torch.ones(size * 4, 3, dtype=torch.float64, requires_grad=True)
    hvd.reducescatter(x, op=op).backward(torch.ones(4, 3, dtype=torch.float64))
    torch.testing.assert_close(x.grad, torch.full_like(x, float(size if op == hvd.Sum else 1)))
    ys = [x.detach().clone().requires_grad_() for _ in range(2)]
    for o in hvd.grouped_reducescatter(ys, op=op):
        o.backward(torch.ones(4, 3, dtype=torch.float64))
    for y in ys:
        torch.testing.assert_close(y.grad, x.grad)


def test_grads_in_process_sets():
    sets, mine, members = even_odd_sets()
    try:
        x = torch.ones(4, dtype=torch.float64, requires_grad=True)
        hvd.allreduce(x, op=hvd.Sum, process_set=mine).backward(torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(x.grad, torch.full((4,), float(len(members)), dtype=torch.float64))
    finally:
        for s in reversed(sets):
            hvd.remove_process_set(s)
