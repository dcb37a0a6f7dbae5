"""numba kernels for the training side: fused optimizer updates over flat float32 buffers, and
the compression casts. cache=True keeps the compiled code on disk, so the second process start
does not compile again. One pass over memory per update, where numpy would make several."""
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


@numba.njit(cache=True)
def float32_to_bfloat16_bits(src, dst):
    """Round to nearest even; NaN stays a quiet NaN."""
    bits = src.view(np.uint32)
    for i in range(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            dst[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x0040))
        else:
            rounding = np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
            dst[i] = np.uint16((b + rounding) >> np.uint32(16))


@numba.njit(cache=True)
def bfloat16_bits_to_float32(src, dst):
    out = dst.view(np.uint32)
    for i in range(src.size):
        out[i] = np.uint32(src[i]) << np.uint32(16)


@numba.njit(cache=True)
def float32_to_float16(src, dst):
    for i in range(src.size):
        dst[i] = np.float16(src[i])  # IEEE conversion: round to nearest even


@numba.njit(cache=True)
def float16_to_float32(src, dst):
    for i in range(src.size):
        dst[i] = np.float32(src[i])
