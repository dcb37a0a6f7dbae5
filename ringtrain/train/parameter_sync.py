"""Making the ranks agree: every rank takes root_rank's parameters and optimizer state, and a
metric averaged over the ranks (numpy)."""
import numpy as np

from .. import collectives
from ..object_collectives import broadcast_object
from ..process_sets import global_process_set
from ..reduce_ops import Average


def _named(params):
    if isinstance(params, dict):
        return list(params.items())
    params = list(params)
    if params and isinstance(params[0], tuple):
        return params
    return [(f"param.{i}", p) for i, p in enumerate(params)]


def broadcast_parameters(params, root_rank=0, process_set=global_process_set):
    """Overwrite every rank's parameters with root_rank's, in place (a list, a dict, or
    (name, array) pairs). All broadcasts are in flight at once."""
    handles = [collectives.broadcast_async_(p, root_rank, name=f"broadcast_parameters.{name}",
                                            process_set=process_set) for name, p in _named(params)]
    for h in handles:
        collectives.synchronize(h)


def broadcast_optimizer_state(optimizer, root_rank=0, process_set=global_process_set):
    """Make every rank's optimizer state (step counts, momentum buffers, ...) root_rank's."""
    state = optimizer.state_dict()
    arrays = []

    def collect(node, path):
        if isinstance(node, dict):
            for key in sorted(node):
                collect(node[key], f"{path}/{key}")
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                collect(item, f"{path}/{i}")
        elif isinstance(node, np.ndarray):
            arrays.append((path, node))

    collect(state, "optimizer")
    broadcast_parameters(arrays, root_rank, process_set)
    scalars = broadcast_object({k: v for k, v in state.items() if not isinstance(v, (dict, list, np.ndarray))},
                               root_rank)
    state.update(scalars)
    optimizer.load_state_dict(state)


def metric_average(value, name=None, process_set=global_process_set):
    """The mean of a scalar (or array) metric over the ranks."""
    result = collectives.allreduce(np.asarray(value, dtype=np.float64), op=Average, name=name,
                                   process_set=process_set)
    return float(result) if np.ndim(value) == 0 else result
