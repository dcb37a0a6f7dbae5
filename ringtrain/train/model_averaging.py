"""Periodic model averaging (SparkNet; also called local SGD): each rank takes `period` optimizer
steps on its own gradients, then the parameters are averaged over the ranks with one grouped
(fused) allreduce. Communication drops by a factor of `period` against averaging every
gradient, which is what matters on a slow or high-latency link; the price is that the ranks'
models drift apart between averages, so convergence per step can be somewhat slower."""
import numpy as np

from .. import collectives
from ..reduce_ops import Average
from ..process_sets import global_process_set


class ModelAveraging:
    """Wraps an optimizer (ringtrain.optim.SGD/Adam or anything with .params, .step(grads),
    .state_dict()) as DistributedOptimizer does, with the same step()/grad_ready() interface.

    step(grads) applies the local gradients at once; every `period`-th call it then averages the
    parameters over the ranks and returns True. synchronize() averages now (call it before
    evaluating or saving, so that every rank holds the same model). The optimizer's own state
    (momentum, Adam moments) stays local, as in SparkNet. Start every rank from the same
    parameters (broadcast_parameters), or the first average mixes unrelated models."""

    def __init__(self, optimizer, period=8, name="ModelAveraging", process_set=global_process_set):
        if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
            raise ValueError(f"period={period!r} must be a positive int")
        self.optimizer = optimizer
        self.period = int(period)
        self.name = name
        self.process_set = process_set
        self.local_steps = 0      # steps since the last average
        self.averages = 0         # how many averages have run
        self._grads = [None] * len(optimizer.params)

    @property
    def params(self):
        return self.optimizer.params

    def grad_ready(self, index, grad):
        """Keep parameter `index`'s gradient for the next step() (nothing to send per step)."""
        self._grads[index] = grad

    def step(self, grads=None):
        if grads is None:
            missing = [i for i, g in enumerate(self._grads) if g is None]
            if missing:
                raise ValueError(f"step() without grads, but gradients {missing[:5]} were never given to grad_ready()")
            grads, self._grads = self._grads, [None] * len(self._grads)
        self.optimizer.step(grads)
        self.local_steps += 1
        if self.local_steps < self.period:
            return False
        self.synchronize()
        return True

    def synchronize(self):
        """Average the parameters over the ranks now, in place, if any local step was taken
        since the last average. Every rank must call it at the same point."""
        if self.local_steps == 0:
            return
        self.local_steps = 0
        self.averages += 1
        if self.process_set.size() > 1:
            collectives.grouped_allreduce_(self.optimizer.params, op=Average, name=f"{self.name}.params",
                                           process_set=self.process_set)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)
