"""DistributedOptimizer, parameter/optimizer-state broadcast and SyncBatchNorm, against the same
training done by torch in one process on the whole batch."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import ringtrain.torch as hvd
from torch_harness import rank_tensor


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def batches(rank, steps, per_rank=4):
    """Every rank's batch for every step, regenerable anywhere."""
    return [(rank_tensor(rank, (per_rank, 6), torch.float32, seed=100 + s) - 1.25,
             rank_tensor(rank, (per_rank, 3), torch.float32, seed=200 + s)) for s in range(steps)]


def reference_training(opt_class, steps, **options):
    """One process, the union of all ranks' batches: the mean loss over ranks of each rank's mean
    loss is what averaged gradients minimise."""
    model = make_model()
    opt = opt_class(model.parameters(), **options)
    data = [batches(r, steps) for r in range(hvd.size())]
    for s in range(steps):
        opt.zero_grad()
        loss = sum(F.mse_loss(model(data[r][s][0]), data[r][s][1]) for r in range(hvd.size())) / hvd.size()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("opt_class,options", [(torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
                                               (torch.optim.Adam, dict(lr=0.01))], ids=["SGD", "Adam"])
def test_distributed_optimizer_matches_one_process(opt_class, options):
    steps = 5
    model = make_model(seed=hvd.rank())  # different on purpose: broadcast fixes it
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(opt_class(model.parameters(), **options),
                                   named_parameters=model.named_parameters())
    assert isinstance(opt, opt_class)
    for x, y in batches(hvd.rank(), steps):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    expected = reference_training(opt_class, steps, **options)
    for (name, p), q in zip(model.named_parameters(), expected.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_hooks_start_allreduces_during_backward():
    model = make_model()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters())
    x, y = batches(hvd.rank(), 1)[0]
    F.mse_loss(model(x), y).backward()
    assert len(opt._handles) == len(list(model.parameters()))  # all in flight before step()
    opt.step()
    assert not opt._handles


def test_backward_passes_per_step_and_predivide():
    model = make_model()
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters(), backward_passes_per_step=2,
                                   gradient_predivide_factor=2.0)
    data = batches(hvd.rank(), 2)
    opt.zero_grad()
    for x, y in data:
        F.mse_loss(model(x), y).backward()
    assert len([h for h, _ in opt._handles.values() if h is not None]) == len(list(model.parameters()))
    opt.synchronize()
    # Horovod sums the passes and averages over the ranks
    ref = make_model()
    hvd.broadcast_parameters(ref.state_dict(), root_rank=0)
    for r in range(hvd.size()):
        for x, y in batches(r, 2):
            (F.mse_loss(ref(x), y) / hvd.size()).backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    with opt.skip_synchronize():
        opt.step()
    with pytest.raises(AssertionError):
        F.mse_loss(model(data[0][0]), data[0][1]).backward()
        F.mse_loss(model(data[0][0]), data[0][1]).backward()
        F.mse_loss(model(data[0][0]), data[0][1]).backward()
    opt.synchronize()


def test_synchronize_then_step_warns_once():
    model = make_model()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters())
    x, y = batches(hvd.rank(), 1)[0]
    F.mse_loss(model(x), y).backward()
    opt.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert len(caught) == 1 and "skip_synchronize" in str(caught[0].message)


def test_named_parameter_checks():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1)
    with pytest.raises(ValueError, match="unique"):
        hvd.DistributedOptimizer(opt, named_parameters=list(a.named_parameters()) + list(b.named_parameters()))
    with pytest.raises(ValueError, match="not named"):
        hvd.DistributedOptimizer(opt, named_parameters=list(a.named_parameters()))
    unnamed = hvd.DistributedOptimizer(torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters()}],
                                                       lr=0.1))
    names = set(unnamed._parameter_names.values())
    assert len(names) == 4 and hvd.allgather_object(names) == [names] * hvd.size()


def test_missing_gradients_are_reduced_as_zeros():
    """Ranks whose loss does not reach a parameter still take part in its allreduce."""
    model = make_model()
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters())
    x, _ = batches(hvd.rank(), 1)[0]
    out = model[0](x).sum() if hvd.rank() % 2 else model(x).sum()
    opt.zero_grad()
    out.backward()
    opt.step()
    last = model[2].weight.detach().clone()
    assert all(torch.equal(last, other) for other in hvd.allgather_object(last))


def test_fp16_compression_and_sparse_embeddings():
    model = make_model()
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters(), compression=hvd.Compression.fp16)
    x, y = batches(hvd.rank(), 1)[0]
    F.mse_loss(model(x), y).backward()
    opt.step()
    for sparse_as_dense in (False, True):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = hvd.DistributedOptimizer(torch.optim.SparseAdam(list(emb.parameters()), lr=0.1),
                                       sparse_as_dense=sparse_as_dense)
        emb(torch.tensor([[1, 2, 4], [hvd.rank(), 3, 9]])).sum().backward()
        expected = torch.zeros(10, 3)
        for r in range(hvd.size()):
            for i in [1, 2, 4, r, 3, 9]:
                expected[i] += 1.0 / hvd.size()
        opt.synchronize()
        torch.testing.assert_close(emb.weight.grad.to_dense(), expected)
        with opt.skip_synchronize():
            opt.step()


def test_broadcast_optimizer_state_and_options():
    model = make_model(seed=hvd.rank())
    options = dict(lr=0.1 * (hvd.rank() + 1), betas=(0.8, 0.9) if hvd.rank() else (0.9, 0.99))
    base = torch.optim.Adam(model.parameters(), **options)
    if hvd.rank() == 0:  # only the root has state; the others create theirs to receive into
        x, y = batches(0, 1)[0]
        F.mse_loss(model(x), y).backward()
        base.step()
        base.zero_grad()
    opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    state = opt.state_dict()
    everyone = hvd.allgather_object(state)
    for other in everyone:
        assert other["param_groups"][0]["lr"] == 0.1 and other["param_groups"][0]["betas"] == (0.9, 0.99)
        assert type(other["param_groups"][0]["betas"]) is tuple
        for pid, entry in state["state"].items():
            for key, value in entry.items():
                assert torch.equal(value, other["state"][pid][key]), (pid, key)


def test_broadcast_parameters_accepts_named_parameters():
    model = make_model(seed=hvd.rank())
    hvd.broadcast_parameters(model.named_parameters(), root_rank=0)
    ref = make_model(seed=0)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 4, 4)])
def test_sync_batch_norm_equals_batch_norm_on_the_whole_batch(shape):
    size, rank = hvd.size(), hvd.rank()
    inputs = [rank_tensor(r, shape, torch.float64, seed=300) * (r + 1) for r in range(size)]
    sync_bn = hvd.SyncBatchNorm(shape[1]).double()
    bn = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)](shape[1]).double()
    for m in (sync_bn, bn):
        with torch.no_grad():
            m.weight.copy_(torch.linspace(0.5, 1.5, shape[1]))
            m.bias.copy_(torch.linspace(-1, 1, shape[1]))
    mine = inputs[rank].clone().requires_grad_()
    everything = torch.cat(inputs).requires_grad_()
    out = sync_bn(mine)
    full = bn(everything)
    rows = shape[0]
    torch.testing.assert_close(out, full[rank * rows:(rank + 1) * rows])
    torch.testing.assert_close(sync_bn.running_mean, bn.running_mean)
    torch.testing.assert_close(sync_bn.running_var, bn.running_var)
    weights = torch.cat([rank_tensor(r, shape, torch.float64, seed=301) for r in range(size)])
    (out * weights[rank * rows:(rank + 1) * rows]).sum().backward()
    (full * weights).sum().backward()
    torch.testing.assert_close(mine.grad, everything.grad[rank * rows:(rank + 1) * rows])
    torch.testing.assert_close(hvd.allreduce(sync_bn.weight.grad, op=hvd.Sum), bn.weight.grad)
    torch.testing.assert_close(hvd.allreduce(sync_bn.bias.grad, op=hvd.Sum), bn.bias.grad)
    sync_bn.eval()
    bn.eval()
    torch.testing.assert_close(sync_bn(inputs[rank]), bn(inputs[rank]))


def test_adasum_optimizer_combines_each_gradient():
    size = hvd.size()
    if size & (size - 1):
        pytest.skip("Adasum needs a power-of-two number of ranks")
    model = make_model()
    opt = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                   named_parameters=model.named_parameters(), op=hvd.Adasum)
    x, y = batches(hvd.rank(), 1)[0]
    F.mse_loss(model(x), y).backward()
    opt.synchronize()
    per_rank = []
    for r in range(size):  # every rank's local gradients, recomputed here
        local = make_model()
        xr, yr = batches(r, 1)[0]
        F.mse_loss(local(xr), yr).backward()
        per_rank.append([p.grad.double().flatten() for p in local.parameters()])
    for i, p in enumerate(model.parameters()):
        level = [grads[i] for grads in per_rank]
        while len(level) > 1:  # Horovod's pairwise Adasum, in recursive-halving order
            level = [(1 - a.dot(b) / (2 * a.dot(a))) * a + (1 - a.dot(b) / (2 * b.dot(b))) * b
                     for a, b in zip(level[::2], level[1::2])]
        torch.testing.assert_close(p.grad.double().flatten(), level[0], rtol=1e-5, atol=1e-7)
    with opt.skip_synchronize():
        opt.step()
