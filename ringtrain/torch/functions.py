"""The differentiable collectives: horovod.torch's allreduce, allgather, broadcast, alltoall and
reducescatter (and their grouped forms) as torch.autograd.Functions over mpi_ops.py.

The gradients are Horovod's:
* allreduce: the same allreduce (op and scale factors) of the incoming gradient;
* allgather: the Average allreduce of the gradient, then this rank's rows of it;
* broadcast: the Average allreduce of the gradient on the root, zeros elsewhere;
* alltoall: an alltoall of the gradient back along the received splits;
* reducescatter: the allgather of the gradient, times the set size for Sum, times the scale
  factors (which is what Horovod computes)."""
import torch

from .. import runtime
from ..process_sets import global_process_set
from . import mpi_ops
from .compression import Compression
from .mpi_ops import Average, Sum, synchronize


class _Allreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, op, prescale_factor, postscale_factor, process_set):
        ctx.args = (op, prescale_factor, postscale_factor, process_set)
        return mpi_ops._allreduce_now(tensor, False, name, op, prescale_factor, postscale_factor, process_set)

    @staticmethod
    def backward(ctx, grad):
        op, pre, post, process_set = ctx.args
        reduced = mpi_ops._allreduce_now(grad, False, None, op, pre, post, process_set)
        return reduced, None, None, None, None, None


class _GroupedAllreduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, op, prescale_factor, postscale_factor, process_set, *tensors):
        ctx.args = (op, prescale_factor, postscale_factor, process_set)
        return tuple(synchronize(mpi_ops._allreduce_async("grouped_allreduce", tensors, False, name, op,
                                                          prescale_factor, postscale_factor, process_set)))

    @staticmethod
    def backward(ctx, *grads):
        op, pre, post, process_set = ctx.args
        reduced = synchronize(mpi_ops._allreduce_async("grouped_allreduce", grads, False, None, op, pre, post,
                                                       process_set))
        return (None,) * 5 + tuple(reduced)


def _my_rows(grad, first_dims, process_set):
    """This rank's rows of a gathered gradient, averaged over the ranks first."""
    reduced = synchronize(mpi_ops._allreduce_async("allreduce", grad, False, None, Average, 1.0, 1.0, process_set))
    me = process_set.rank()
    start = int(sum(first_dims[:me]))
    return reduced.narrow(0, start, int(first_dims[me]))


def _first_dims(tensors, process_set):
    """Every rank's first dimension of each tensor: one allgather of a small int64 tensor."""
    mine = torch.tensor([[t.shape[0] for t in tensors]], dtype=torch.int64)
    return synchronize(mpi_ops.allgather_async(mine, process_set=process_set))  # [ranks, tensors]


class _Allgather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, process_set):
        ctx.process_set = process_set
        ctx.dim0 = tensor.shape[0] if tensor.dim() else None
        return synchronize(mpi_ops.allgather_async(tensor, name=name, process_set=process_set))

    @staticmethod
    def backward(ctx, grad):
        dims = _first_dims([grad.new_empty(ctx.dim0)], ctx.process_set)[:, 0].tolist()
        return _my_rows(grad, dims, ctx.process_set), None, None


class _GroupedAllgather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, process_set, *tensors):
        ctx.process_set = process_set
        ctx.dims0 = [t.shape[0] for t in tensors]
        return tuple(synchronize(mpi_ops.grouped_allgather_async(tensors, name=name, process_set=process_set)))

    @staticmethod
    def backward(ctx, *grads):
        dims = _first_dims([g.new_empty(d) for g, d in zip(grads, ctx.dims0)], ctx.process_set)
        return (None, None) + tuple(_my_rows(g, dims[:, i].tolist(), ctx.process_set) for i, g in enumerate(grads))


class _Broadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, root_rank, name, process_set):
        ctx.root, ctx.process_set = root_rank, process_set
        return synchronize(mpi_ops.broadcast_async(tensor, root_rank, name=name, process_set=process_set))

    @staticmethod
    def backward(ctx, grad):
        reduced = synchronize(mpi_ops._allreduce_async("allreduce", grad, False, None, Average, 1.0, 1.0,
                                                       ctx.process_set))
        if runtime.rank() != ctx.root:
            reduced = torch.zeros_like(reduced)
        return reduced, None, None, None


class _Alltoall(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, splits, name, process_set):
        output, received = synchronize(mpi_ops.alltoall_async(tensor, splits, name=name, process_set=process_set))
        ctx.received, ctx.process_set = received, process_set
        ctx.mark_non_differentiable(received)
        return output, received

    @staticmethod
    def backward(ctx, grad, _grad_splits):
        back, _ = synchronize(mpi_ops.alltoall_async(grad, ctx.received, process_set=ctx.process_set))
        return back, None, None, None


def _reducescatter_grad(grad, op, pre, post, process_set):
    gathered = synchronize(mpi_ops.allgather_async(grad, process_set=process_set))
    scale = (process_set.size() if op == Sum else 1) * pre * post
    return gathered * scale if scale != 1 else gathered


class _Reducescatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, name, op, prescale_factor, postscale_factor, process_set):
        ctx.args = (op, prescale_factor, postscale_factor, process_set)
        return synchronize(mpi_ops._reducescatter_async("reducescatter", tensor, name, op, prescale_factor,
                                                        postscale_factor, process_set))

    @staticmethod
    def backward(ctx, grad):
        return (_reducescatter_grad(grad, *ctx.args),) + (None,) * 5


class _GroupedReducescatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, name, op, prescale_factor, postscale_factor, process_set, *tensors):
        ctx.args = (op, prescale_factor, postscale_factor, process_set)
        return tuple(synchronize(mpi_ops._reducescatter_async("grouped_reducescatter", tensors, name, op,
                                                              prescale_factor, postscale_factor, process_set)))

    @staticmethod
    def backward(ctx, *grads):
        return (None,) * 5 + tuple(_reducescatter_grad(g, *ctx.args) for g in grads)


# --- the public calls, with Horovod's signatures ---------------------------------------------
def allreduce(tensor, average=None, name=None, compression=Compression.none, op=None, prescale_factor=1.0,
              postscale_factor=1.0, process_set=global_process_set):
    """A new tensor: op over the ranks of prescale_factor * tensor, times postscale_factor.
    Differentiable. compression (e.g. Compression.fp16) applies on the wire."""
    op = mpi_ops._op(op, average)
    compressed, context = compression.compress(tensor)
    reduced = _Allreduce.apply(compressed, name, op, prescale_factor, postscale_factor, process_set)
    return compression.decompress(reduced, context)


def grouped_allreduce(tensors, average=None, name=None, compression=Compression.none, op=None, prescale_factor=1.0,
                      postscale_factor=1.0, process_set=global_process_set):
    op = mpi_ops._op(op, average)
    pairs = [compression.compress(t) for t in tensors]
    reduced = _GroupedAllreduce.apply(name, op, prescale_factor, postscale_factor, process_set,
                                      *[c for c, _ in pairs])
    return [compression.decompress(r, context) for r, (_, context) in zip(reduced, pairs)]


def allgather(tensor, name=None, process_set=global_process_set):
    """Every rank's tensor concatenated along the first dimension (which may differ by rank)."""
    return _Allgather.apply(tensor, name, process_set)


def grouped_allgather(tensors, name=None, process_set=global_process_set):
    return list(_GroupedAllgather.apply(name, process_set, *tensors))


def broadcast(tensor, root_rank, name=None, process_set=global_process_set):
    """A new tensor holding root_rank's values (root_rank is a global rank, as in Horovod)."""
    return _Broadcast.apply(tensor, root_rank, name, process_set)


def alltoall(tensor, splits=None, name=None, process_set=global_process_set):
    """Send splits[i] rows to the i-th rank of the set. Returns the received rows, and with splits
    given also the received splits (Horovod 0.28's return convention)."""
    output, received = _Alltoall.apply(tensor, splits, name, process_set)
    return output if splits is None else (output, received)


def reducescatter(tensor, name=None, compression=Compression.none, op=Average, prescale_factor=1.0,
                  postscale_factor=1.0, process_set=global_process_set):
    """This rank's share of the first dimension of the reduction over the ranks."""
    op = mpi_ops._op(op, None)
    compressed, context = compression.compress(tensor)
    reduced = _Reducescatter.apply(compressed, name, op, prescale_factor, postscale_factor, process_set)
    return compression.decompress(reduced, context)


def grouped_reducescatter(tensors, name=None, compression=Compression.none, op=Average, prescale_factor=1.0,
                          postscale_factor=1.0, process_set=global_process_set):
    op = mpi_ops._op(op, None)
    pairs = [compression.compress(t) for t in tensors]
    reduced = _GroupedReducescatter.apply(name, op, prescale_factor, postscale_factor, process_set,
                                          *[c for c, _ in pairs])
    return [compression.decompress(r, context) for r, (_, context) in zip(reduced, pairs)]
