"""Small numpy optimizers with the interface DistributedOptimizer wraps:

    opt.params               the parameter arrays (float32, updated in place)
    opt.step(grads)          apply one update from one gradient per parameter
    opt.state_dict() / opt.load_state_dict(state)

The updates are numba kernels (ringtrain/train/optimizer_kernels.py) over each parameter's flat buffer."""
import numpy as np

from . import optimizer_kernels


def _flat(array, what):
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        raise TypeError(f"{what} must be a C-contiguous float32 array, got {array.dtype}")
    return array.reshape(-1)


class Optimizer:
    def __init__(self, params):
        self.params = list(params)
        for i, p in enumerate(self.params):
            _flat(p, f"params[{i}]")
        self.steps = 0

    def step(self, grads):
        if len(grads) != len(self.params):
            raise ValueError(f"step() got {len(grads)} gradients for {len(self.params)} parameters")
        self.steps += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            g = np.ascontiguousarray(g, dtype=np.float32)
            if g.shape != p.shape:
                raise ValueError(f"grads[{i}] has shape {g.shape}, params[{i}] has {p.shape}")
            self._update(i, p.reshape(-1), g.reshape(-1))

    def state_dict(self):
        return {"steps": self.steps, "buffers": {name: [b.copy() for b in bufs] for name, bufs in self._buffers().items()}}

    def load_state_dict(self, state):
        self.steps = int(state["steps"])
        for name, bufs in self._buffers().items():
            for target, source in zip(bufs, state["buffers"][name]):
                target[...] = source


class SGD(Optimizer):
    """SGD with momentum, Nesterov momentum and weight decay (PyTorch's formulation)."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay
        self.velocity = [np.zeros(p.size, dtype=np.float32) for p in self.params]

    def _buffers(self):
        return {"velocity": self.velocity}

    def _update(self, i, p, g):
        optimizer_kernels.sgd_update(p, g, self.velocity[i], np.float32(self.lr), np.float32(self.momentum), self.nesterov,
                           np.float32(self.weight_decay))


class Adam(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr, (self.beta1, self.beta2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m = [np.zeros(p.size, dtype=np.float32) for p in self.params]
        self.v = [np.zeros(p.size, dtype=np.float32) for p in self.params]

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def _update(self, i, p, g):
        optimizer_kernels.adam_update(p, g, self.m[i], self.v[i], np.float32(self.lr), np.float32(self.beta1),
                            np.float32(self.beta2), np.float32(self.eps), np.float32(self.steps),
                            np.float32(self.weight_decay))
