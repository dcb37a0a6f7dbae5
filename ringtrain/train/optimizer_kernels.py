"""numba kernels of the optimizers: fused SGD and Adam updates over flat float32 buffers.
cache=True keeps the compiled code on disk, so the second process start does not compile again. One pass over memory per update, where numpy would make several."""
import numba
import numpy as np


@numba.njit(cache=True, fastmath=False)
def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """PyTorch's SGD: v = momentum*v + g (+wd*p); p -= lr * (g + momentum*v if nesterov else v)."""
    for i in range(param.size):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = g + momentum * v if nesterov else v
        param[i] -= lr * g


@numba.njit(cache=True, fastmath=False)
def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay):
    """Adam with bias correction (PyTorch's formulation, L2 weight decay)."""
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    for i in range(param.size):
        g = grad[i] + weight_decay * param[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        param[i] -= lr * (m[i] / c1) / (np.sqrt(v[i] / c2) + eps)
