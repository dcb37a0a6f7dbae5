"""Rank-0 checkpoints as .npz (no pickles), read back by one rank and shared with all."""
import numpy as np

from .. import collectives, runtime
from ..object_collectives import broadcast_object


def save_checkpoint(path, state):
    """Rank 0 writes `state` (a dict of arrays and numbers, nested dicts allowed) as .npz; the
    other ranks wait for it. No pickles: np.load(allow_pickle=False) reads it back."""
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                if "/" in str(key):
                    raise ValueError(f"checkpoint keys may not contain '/': {key!r}")
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        else:
            flat[prefix] = np.asarray(node)

    walk(state, "")
    if runtime.current("save_checkpoint").rank == 0:
        with open(path, "wb") as f:
            np.savez(f, **flat)
    collectives.barrier()


def load_checkpoint(path, root_rank=0):
    """Rank root_rank reads the checkpoint; every rank gets the same nested dict."""
    state = None
    if runtime.current("load_checkpoint").rank == root_rank:
        with np.load(path, allow_pickle=False) as data:
            state = {}
            for key in data.files:
                node = state
                *parents, leaf = key.split("/")
                for p in parents:
                    node = node.setdefault(p, {})
                value = data[key]
                node[leaf] = value.item() if value.ndim == 0 else value
    return broadcast_object(state, root_rank)
