"""numba kernels for sparse (row-indexed) gradients: merging duplicate row indices and
scattering rows into a dense array. The values are 2-D here, (rows, row_width): callers
reshape embedding-style gradients of any trailing shape to that first (a free view).

Compiled on first use with cache=True, so later processes load them from __pycache__."""
import numba
import numpy as np


@numba.njit(cache=True)
def _is_sorted_unique(indices):
    for k in range(1, indices.shape[0]):
        if indices[k] <= indices[k - 1]:
            return False
    return True


@numba.njit(cache=True)
def merge_duplicate_rows(indices, values):
    """(unique sorted indices, values summed per index). Sort + segment-sum: a stable
    argsort groups equal indices, one pass adds each group's rows together.
    Already sorted-unique input (the common case after a merge) is returned as it is."""
    n = indices.shape[0]
    width = values.shape[1]
    if _is_sorted_unique(indices):
        return indices, values
    order = np.argsort(indices, kind="mergesort")
    unique = 0
    for k in range(n):
        if k == 0 or indices[order[k]] != indices[order[k - 1]]:
            unique += 1
    out_indices = np.empty(unique, dtype=np.int64)
    out_values = np.zeros((unique, width), dtype=values.dtype)
    j = -1
    for k in range(n):
        row = order[k]
        if k == 0 or indices[row] != indices[order[k - 1]]:
            j += 1
            out_indices[j] = indices[row]
        for c in range(width):
            out_values[j, c] += values[row, c]
    return out_indices, out_values


@numba.njit(cache=True)
def scatter_add_rows(dense, indices, values):
    """dense[indices[k], :] += values[k, :] for every k (duplicates add up), in place."""
    width = dense.shape[1]
    for k in range(indices.shape[0]):
        row = indices[k]
        for c in range(width):
            dense[row, c] += values[k, c]


@numba.njit(cache=True)
def zero_rows(dense, indices):
    """dense[indices[k], :] = 0: clears the rows a previous scatter wrote, instead of the
    whole (mostly untouched) array."""
    width = dense.shape[1]
    for k in range(indices.shape[0]):
        row = indices[k]
        for c in range(width):
            dense[row, c] = 0
