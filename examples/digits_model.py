"""The digits models shared by the three example scripts: data, an MLP, and a small CNN whose
convolution is a numba kernel. Plain numpy otherwise; nothing distributed here."""
import numba
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load_data():
    """scikit-learn's bundled 1,797 8x8 digits (no download): 75% train, 25% held out."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.25, random_state=0, stratify=digits.target)


def softmax_cross_entropy(logits, y):
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    d_logits = p
    d_logits[np.arange(n), y] -= 1.0
    return loss, d_logits / n


def _emit(grads, produced, on_grad):
    """Store gradients as the backward pass produces them, handing each over at once."""
    for i, g in produced:
        grads[i] = np.ascontiguousarray(g, dtype=np.float32)
        if on_grad:
            on_grad(i, grads[i])


class MLP:
    """64 -> 128 (ReLU) -> 10."""

    def __init__(self, seed, hidden=128):
        rng = np.random.default_rng(seed)
        self.params = [rng.normal(0, np.sqrt(2 / 64), (64, hidden)).astype(np.float32), np.zeros(hidden, np.float32),
                       rng.normal(0, np.sqrt(2 / hidden), (hidden, 10)).astype(np.float32), np.zeros(10, np.float32)]

    def logits(self, x):
        w1, b1, w2, b2 = self.params
        self._x, self._h = x, np.maximum(x @ w1 + b1, 0.0)
        return self._h @ w2 + b2

    def backward(self, d_logits, on_grad=None):
        """Gradients, last layer first (as a backward pass produces them); on_grad(i, g) is
        called for each the moment it exists."""
        _, _, w2, _ = self.params
        grads = [None] * 4
        _emit(grads, ((3, d_logits.sum(0)), (2, self._h.T @ d_logits)), on_grad)
        d_h = (d_logits @ w2.T) * (self._h > 0)
        _emit(grads, ((1, d_h.sum(0)), (0, self._x.T @ d_h)), on_grad)
        return grads


@numba.njit(cache=True)
def conv3x3_forward(x, w, b, out):
    """x (N, 8, 8), w (C, 3, 3), b (C,) -> out (N, C, 8, 8); zero padding 1."""
    n, height, width = x.shape
    for s in range(n):
        for c in range(w.shape[0]):
            for i in range(height):
                for j in range(width):
                    acc = b[c]
                    for di in range(3):
                        for dj in range(3):
                            ii, jj = i + di - 1, j + dj - 1
                            if 0 <= ii < height and 0 <= jj < width:
                                acc += w[c, di, dj] * x[s, ii, jj]
                    out[s, c, i, j] = acc


@numba.njit(cache=True)
def conv3x3_backward(x, d_out, d_w, d_b):
    """Gradients of the weights and bias (the input needs none: it is the first layer)."""
    n, height, width = x.shape
    d_w[:] = 0.0
    d_b[:] = 0.0
    for s in range(n):
        for c in range(d_w.shape[0]):
            for i in range(height):
                for j in range(width):
                    g = d_out[s, c, i, j]
                    d_b[c] += g
                    for di in range(3):
                        for dj in range(3):
                            ii, jj = i + di - 1, j + dj - 1
                            if 0 <= ii < height and 0 <= jj < width:
                                d_w[c, di, dj] += g * x[s, ii, jj]


class CNN:
    """conv 3x3 (8 channels, numba) -> ReLU -> dense 512 -> 10."""

    def __init__(self, seed, channels=8):
        rng = np.random.default_rng(seed)
        self.params = [rng.normal(0, np.sqrt(2 / 9), (channels, 3, 3)).astype(np.float32),
                       np.zeros(channels, np.float32),
                       rng.normal(0, np.sqrt(2 / (channels * 64)), (channels * 64, 10)).astype(np.float32),
                       np.zeros(10, np.float32)]

    def logits(self, x):
        w, b, w2, b2 = self.params
        self._x = np.ascontiguousarray(x.reshape(-1, 8, 8))
        z = np.empty((len(x), w.shape[0], 8, 8), np.float32)
        conv3x3_forward(self._x, w, b, z)
        self._z = z
        self._h = np.maximum(z, 0.0).reshape(len(x), -1)
        return self._h @ w2 + b2

    def backward(self, d_logits, on_grad=None):
        w, b, w2, _ = self.params
        grads = [None] * 4
        _emit(grads, ((3, d_logits.sum(0)), (2, self._h.T @ d_logits)), on_grad)
        d_z = np.ascontiguousarray((d_logits @ w2.T).reshape(self._z.shape) * (self._z > 0), dtype=np.float32)
        d_w, d_b = np.empty_like(w), np.empty_like(b)
        conv3x3_backward(self._x, d_z, d_w, d_b)
        _emit(grads, ((1, d_b), (0, d_w)), on_grad)
        return grads


MODELS = {"mlp": MLP, "cnn": CNN}


def accuracy(model, x, y):
    return float((model.logits(x).argmax(1) == y).mean())
