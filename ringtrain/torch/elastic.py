"""hvd.elastic for ringtrain.torch: the one elastic API (ringtrain/elastic.py) under Horovod's
names. TorchState keeps a module, its optimizer and any other values; commits, restores and
syncs them like ringtrain.elastic.State (state_dicts are what is kept)."""
from ..train.elastic import State, restart_count, run

ObjectState = State


class TorchState(State):
    """Horovod's TorchState(model, optimizer, **kwargs): state.model and state.optimizer, plus
    any other values (epoch, batch, a sampler's state) as attributes."""

    def __init__(self, model=None, optimizer=None, directory=None, persist_every=1, **kwargs):
        values = {k: v for k, v in (("model", model), ("optimizer", optimizer)) if v is not None}
        super().__init__(directory=directory, persist_every=persist_every, **values, **kwargs)


__all__ = ["ObjectState", "State", "TorchState", "restart_count", "run"]
