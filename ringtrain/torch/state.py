"""Making every rank start from the same model and optimizer state (Horovod's
broadcast_parameters and broadcast_optimizer_state). Tensors are broadcast in place, all in
flight at once; the optimizer's plain-Python options and counters travel as one object."""
import collections

import torch

from ..process_sets import global_process_set
from ..train import parameter_sync
from . import mpi_ops
from .objects import broadcast_object
from .tensors import to_numpy


def broadcast_parameters(params, root_rank, process_set=global_process_set):
    """Overwrite each tensor of `params` with root_rank's, in place. `params` is a state_dict (or
    any mapping of name -> tensor) or a sequence of (name, tensor) pairs such as
    model.named_parameters()."""
    if isinstance(params, collections.abc.Mapping):
        params = sorted(params.items())
    elif isinstance(params, collections.abc.Iterable):
        params = list(params)
    if not isinstance(params, list) or any(not isinstance(pair, tuple) or len(pair) != 2 for pair in params):
        raise ValueError("params must be a dict (e.g. model.state_dict()) or (name, tensor) pairs "
                         "(e.g. model.named_parameters())")
    for name, p in params:
        if p is not None and not isinstance(p, torch.Tensor):
            raise ValueError(f"params['{name}'] is a {type(p).__name__}, not a tensor")
    # The numpy core's broadcast_parameters, on views of the tensors' memory; it counts root_rank
    # within the process set, Horovod globally.
    parameter_sync.broadcast_parameters([(name, to_numpy(p.data, f"params['{name}']")) for name, p in params
                                         if p is not None],
                                        root_rank=mpi_ops._set_rank(process_set, root_rank), process_set=process_set)


def broadcast_optimizer_state(optimizer, root_rank, process_set=global_process_set):
    """Make every rank's optimizer state (per-parameter buffers and step counts) and options
    (lr, momentum, betas, ...) root_rank's. A rank whose optimizer has no state yet takes one
    step with zero gradients first to create it, as Horovod does, so every rank holds the same
    tensors to receive into."""
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ValueError("cannot broadcast torch.optim.LBFGS state")
    if not optimizer.state_dict()["state"]:
        _create_state(optimizer)
    state_dict = optimizer.state_dict()
    # Options and non-tensor state entries: one object from the root, types preserved.
    plain = {
        "groups": [{k: v for k, v in group.items() if k != "params"} for group in state_dict["param_groups"]],
        "state": {pid: {k: v for k, v in entry.items() if not torch.is_tensor(v)}
                  for pid, entry in state_dict["state"].items()},
    }
    plain = broadcast_object(plain, root_rank, name="broadcast_optimizer_state.options", process_set=process_set)
    for group, options in zip(optimizer.param_groups, plain["groups"]):
        group.update(options)
    # Tensor entries: in place (state_dict() holds the optimizer's own tensors), named by position.
    tensors = []
    index_to_param = {i: p for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    for pid in sorted(state_dict["state"]):
        live = optimizer.state[index_to_param[pid]]
        for key in sorted(state_dict["state"][pid]):
            value = live.get(key)
            if torch.is_tensor(value):
                tensors.append((f"{pid}.{key}", value))
            elif key in plain["state"].get(pid, {}):
                live[key] = plain["state"][pid][key]
    broadcast_parameters([(f"optimizer_state.{name}", t) for name, t in tensors], root_rank, process_set)


def _create_state(optimizer):
    """One step with zero gradients, skipping the allreduce of a DistributedOptimizer."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
    base = optimizer.__class__.__mro__[1] if hasattr(optimizer, "_parameter_names") else optimizer.__class__
    base.step(optimizer)
