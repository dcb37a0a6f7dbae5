"""horovod.torch's DistributedOptimizer: wraps a torch optimizer so that step() applies gradients
averaged over the ranks.

A hook on each parameter (register_post_accumulate_grad_hook) starts that gradient's allreduce
the moment backward() has accumulated it, so communication overlaps the rest of the backward
pass; step() (or synchronize()) waits for what is still in flight. As in Horovod, the wrapper
is an instance of a subclass of the wrapped optimizer's class built over the same param_groups,
so state_dict(), param_groups and isinstance checks behave as before.

Semantics follow Horovod 0.28: backward_passes_per_step=k lets gradients accumulate locally for
k backward passes before they are communicated (they are summed, not divided by k);
gradient_predivide_factor=f divides by f before the sum and by size/f after it; parameters
that got no gradient on this rank are reduced as zeros, so every rank submits the same
tensors; sparse gradients go through sparse_allreduce_async unless sparse_as_dense=True."""
import collections
import contextlib
import warnings

import torch

from ..process_sets import global_process_set
from . import mpi_ops
from .compression import Compression
from .mpi_ops import Adasum, Average, synchronize


class _DistributedOptimizer(torch.optim.Optimizer):
    def __init__(self, params, named_parameters, compression, backward_passes_per_step=1, op=Average,
                 gradient_predivide_factor=1.0, sparse_as_dense=False, process_set=global_process_set):
        super(self.__class__, self).__init__(params)
        self._compression = compression
        self.op = op
        self.gradient_predivide_factor = gradient_predivide_factor
        self.sparse_as_dense = sparse_as_dense
        self.process_set = process_set
        self._parameter_names = self._names(named_parameters)
        self.backward_passes_per_step = backward_passes_per_step
        params = [p for group in self.param_groups for p in group["params"]]
        self._allreduce_delay = {p: backward_passes_per_step for p in params}
        self._handles = {}
        self._synchronized = False
        self._should_synchronize = True
        self._requires_update = {p for p in params if p.requires_grad}
        # Only members of the process set communicate; the others step on their local gradients.
        self._hooks = ([p.register_post_accumulate_grad_hook(self._gradient_ready) for p in self._requires_update]
                       if process_set.included() else [])

    def _names(self, named_parameters):
        if named_parameters is not None:
            named_parameters = list(named_parameters)
        else:
            # The same names on every rank, from the order of the parameter groups.
            named_parameters = [(f"allreduce.noname.{i}.{j}", p) for i, group in enumerate(self.param_groups)
                                for j, p in enumerate(group["params"])]
        if any(not isinstance(pair, tuple) or len(pair) != 2 for pair in named_parameters):
            raise ValueError("named_parameters should be a sequence of (name, parameter) tuples, "
                             "usually model.named_parameters()")
        duplicates = sorted(n for n, count in collections.Counter(name for name, _ in named_parameters).items()
                            if count > 1)
        if duplicates:
            raise ValueError(f"Parameter names in named_parameters must be unique; duplicated: {duplicates}")
        named = {p: name for name, p in named_parameters}
        unnamed = [p for group in self.param_groups for p in group["params"] if p not in named]
        if unnamed:
            raise ValueError(f"named_parameters was specified, but {len(unnamed)} of the optimizer's parameters "
                             "were not named (pass every parameter of the model, e.g. model.named_parameters())")
        return named

    def set_backward_passes_per_step(self, passes):
        self.backward_passes_per_step = passes
        for p in self._allreduce_delay:
            self._allreduce_delay[p] = passes

    def _gradient_ready(self, p):
        if p in self._handles and self._handles[p][0] is not None and self._allreduce_delay[p] <= 0:
            raise AssertionError("Gradients were computed more than backward_passes_per_step times before call "
                                 "to step(). Increase backward_passes_per_step to accumulate gradients locally.")
        self._allreduce_delay[p] -= 1
        handle = context = None
        if self._allreduce_delay[p] == 0:
            handle, context = self._allreduce_grad_async(p)
        self._handles[p] = (handle, context)

    def _allreduce_grad_async(self, p):
        if p.grad is None:  # this rank's loss did not reach p: it contributes zeros
            p.grad = torch.zeros_like(p)
        name = "DistributedOptimizer." + self._parameter_names[p]
        tensor = p.grad
        if tensor.is_sparse:
            if not self.sparse_as_dense:
                return mpi_ops.sparse_allreduce_async(tensor, name=name, op=self.op, process_set=self.process_set), None
            tensor = tensor.to_dense()
        compressed, context = self._compression.compress(tensor)
        prescale = postscale = 1.0
        if self.op == Average and self.gradient_predivide_factor != 1.0:
            prescale, postscale = 1.0 / self.gradient_predivide_factor, self.gradient_predivide_factor
        handle = mpi_ops._allreduce_async("allreduce", compressed, compressed is p.grad, name, self.op, prescale,
                                          postscale, self.process_set)
        return handle, context

    def synchronize(self):
        """Wait for every gradient's allreduce (starting those that have not started) and put the
        results into p.grad."""
        if not self.process_set.included():
            self._synchronized = True
            return
        for p in sorted(self._requires_update - set(self._handles), key=self._parameter_names.get):
            self._handles[p] = self._allreduce_grad_async(p)
        for p, (handle, context) in list(self._handles.items()):
            if handle is None:
                self._handles[p] = self._allreduce_grad_async(p)
        # Name order: sparse gradients are reduced when waited on, so every rank must wait in one order.
        for p in sorted(self._handles, key=self._parameter_names.get):
            handle, context = self._handles[p]
            output = synchronize(handle)
            self._allreduce_delay[p] = self.backward_passes_per_step
            if p.grad.is_sparse:
                reduced = self._compression.decompress(output, context)
                if not reduced.is_sparse:
                    reduced = reduced.to_sparse()
                p.grad.zero_().add_(reduced)  # sparse tensors have no set_()
            elif output is not p.grad:
                p.grad.set_(self._compression.decompress(output, context))
        self._handles.clear()
        self._synchronized = True

    @contextlib.contextmanager
    def skip_synchronize(self):
        """For code that calls synchronize() itself (e.g. to clip gradients) before step()."""
        self._should_synchronize = False
        try:
            yield
        finally:
            self._should_synchronize = True

    def step(self, closure=None):
        if self._should_synchronize:
            if self._synchronized:
                warnings.warn("optimizer.step() called without optimizer.skip_synchronize() context after "
                              "optimizer.synchronize(). This can cause training slowdown. You may want to consider "
                              "using optimizer.skip_synchronize() context if you use optimizer.synchronize() in "
                              "your code.")
            self.synchronize()
        self._synchronized = False
        return super(self.__class__, self).step(closure)

    def zero_grad(self, set_to_none=True):
        if self._handles:
            raise AssertionError("optimizer.zero_grad() was called after loss.backward() but before "
                                 "optimizer.step() or optimizer.synchronize(). This is prohibited as it can cause "
                                 "a race condition.")
        return super(self.__class__, self).zero_grad(set_to_none)


def DistributedOptimizer(optimizer, named_parameters=None, compression=Compression.none, backward_passes_per_step=1,
                         op=Average, gradient_predivide_factor=1.0, num_groups=0, groups=None, sparse_as_dense=False,
                         process_set=global_process_set):
    """Wrap a torch.optim optimizer so that its gradients are averaged over the ranks (Horovod's
    arguments; num_groups/groups are accepted, and grouping is left to Tensor Fusion)."""
    if not isinstance(backward_passes_per_step, int) or backward_passes_per_step < 1:
        raise ValueError(f"backward_passes_per_step={backward_passes_per_step!r} must be a positive int")
    if gradient_predivide_factor != 1.0 and op != Average:
        raise ValueError("gradient_predivide_factor not supported with op != Average")
    if op is not Adasum:
        op = mpi_ops._op(op, None)
    cls = type(optimizer.__class__.__name__, (optimizer.__class__,), dict(_DistributedOptimizer.__dict__))
    return cls(optimizer.param_groups, named_parameters, compression, backward_passes_per_step, op,
               gradient_predivide_factor, sparse_as_dense, process_set)
