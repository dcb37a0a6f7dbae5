"""Each rank's share of a dataset, so that every rank takes the same number of steps."""
import numpy as np

from .. import runtime


def shard(*arrays, seed=None, drop_last=True, rank=None, size=None):
    """This rank's share of a dataset, so that every rank takes the same number of steps.

    With seed, samples are shuffled first (the same permutation on every rank). drop_last=True
    drops the n % size samples that do not divide evenly; drop_last=False pads by repeating
    samples from the start instead. Returns the arrays' shares (or the indices, given an int)."""
    if not arrays:
        raise ValueError("shard() needs a dataset length or arrays")
    rank = runtime.current("shard").rank if rank is None else rank
    size = runtime.current("shard").size if size is None else size
    n = arrays[0] if isinstance(arrays[0], (int, np.integer)) else len(arrays[0])
    for a in arrays if not isinstance(arrays[0], (int, np.integer)) else ():
        if len(a) != n:
            raise ValueError(f"shard(): arrays have different lengths ({len(a)} vs {n})")
    order = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    per_rank = n // size if drop_last else -(-n // size)
    if not drop_last and per_rank * size > n:
        order = np.concatenate([order, order[: per_rank * size - n]])
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    if isinstance(arrays[0], (int, np.integer)):
        return mine
    shares = tuple(a[mine] for a in arrays)
    return shares[0] if len(shares) == 1 else shares
