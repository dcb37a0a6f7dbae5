"""Adasum (Horovod's adaptive summation), as arithmetic on the ranks' gathered gradients.

Two gradients are combined by scaling each down by half its projection on the other, so
parallel gradients average and orthogonal ones add. N ranks combine pairwise in the order of
Horovod's recursive halving: (0+1), (2+3), ..., then ((0+1)+(2+3)), ... Like Horovod's CPU
Adasum it is defined for a power-of-two number of ranks. A binding gathers the tensors (one
allgather) and calls combine(); the arithmetic is in float64."""
import numpy as np

from ..dtypes import bfloat16


def check(size, dtypes):
    """Raise before anything is sent if Adasum cannot run on `size` ranks with these dtypes."""
    if size & (size - 1):
        raise ValueError(f"op=Adasum needs a power-of-two number of ranks (as Horovod's CPU Adasum does); "
                         f"this process set has {size}")
    for i, dtype in enumerate(dtypes):
        if np.dtype(dtype).kind != "f" and np.dtype(dtype) != bfloat16:
            raise TypeError(f"op=Adasum needs floating-point tensors; tensors[{i}] has dtype {np.dtype(dtype).name}")


def pair(a, b):
    """Adasum of two gradients."""
    dot, a2, b2 = float(np.vdot(a, b)), float(np.vdot(a, a)), float(np.vdot(b, b))
    ca = 1.0 - dot / (2 * a2) if a2 > 0 else 1.0
    cb = 1.0 - dot / (2 * b2) if b2 > 0 else 1.0
    return ca * a + cb * b


def combine(vectors):
    """Adasum of the ranks' vectors (a sequence, or a 2-D array with one row per rank, in
    rank order), in recursive-halving order."""
    level = list(vectors)
    while len(level) > 1:
        level = [pair(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]
