"""Elastic recovery: a failed job comes back by itself from its last commit.

    state = rt.elastic.State(directory="/shared/ckpt", params=params, epoch=0, step=0)

    @rt.elastic.run
    def train(state):
        while state.step < steps:
            ...                      # one training step on state.params
            state.step += 1
            state.commit()           # collective; persisted to `directory`

    train(state)

Under `ringtrain run --max-restarts N` (or rt.run(..., max_restarts=N), or a Spark stage retry)
a rank failure ends the MPI job and the launcher starts a new one; a restarted MPI job keeps
nothing in memory, so every commit is persisted (or every `persist_every`-th) to a directory
every host can reach, and @run restores the last one before calling the training function.
Steps after the last commit are recomputed, none skipped: with the same world size, a
deterministic data order and the RNG states (Python's, numpy's and torch's, per rank, saved
with each commit), the result equals an uninterrupted run's.

Horovod's names: State (ObjectState / TorchState), commit(), restore(), sync(),
register_reset_callbacks(), and run. Unlike Horovod's Gloo-based elastic mode, recovery is by
restarting the job (like torchrun), so run() does not retry in-process; reset callbacks run
after a restart has restored a commit."""
import copy
import functools
import os
import pickle
import random
import sys

import numpy as np

from ..errors import HostsUpdatedInterrupt
from ..launch.job import RESIZE_EXIT_STATUS
from ..object_collectives import broadcast_object
from ..runtime import init, is_initialized, rank

LATEST = "LATEST"


def _is_torch_stateful(value):
    return hasattr(value, "state_dict") and hasattr(value, "load_state_dict")


def _capture(value):
    if _is_torch_stateful(value):  # torch modules and optimizers
        return ("state_dict", copy.deepcopy(value.state_dict()))
    if isinstance(value, np.ndarray):
        return ("array", value.copy())
    return ("object", copy.deepcopy(value))


def _rng_states():
    states = {"random": random.getstate(), "numpy": np.random.get_state()}
    if "torch" in sys.modules:
        states["torch"] = sys.modules["torch"].get_rng_state()
    return states


def _set_rng_states(states):
    random.setstate(states["random"])
    np.random.set_state(states["numpy"])
    if "torch" in states and "torch" in sys.modules:
        sys.modules["torch"].set_rng_state(states["torch"])


class State:
    """Training state that survives a restart: numpy arrays, torch modules and optimizers, and
    any other picklable values (epoch, batch position, a data sampler's state), given as keyword
    arguments and read and written as attributes."""

    def __init__(self, directory=None, persist_every=1, **values):
        if persist_every < 1:
            raise ValueError(f"persist_every={persist_every!r} must be at least 1")
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_directory", directory or os.environ.get("RINGTRAIN_ELASTIC_DIR") or None)
        object.__setattr__(self, "_persist_every", int(persist_every))
        object.__setattr__(self, "_commits", 0)
        object.__setattr__(self, "_snapshot", None)
        object.__setattr__(self, "_reset_callbacks", [])

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"this elastic State has no value {name!r} (it has {sorted(values)})")

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._values[name] = value

    @property
    def commits(self):
        """How many commits this training has made, across restarts."""
        return self._commits

    @property
    def directory(self):
        return self._directory

    def register_reset_callbacks(self, callbacks):
        """Functions called (no arguments) after a restart restored the last commit."""
        self._reset_callbacks.extend(callbacks)

    # --- commit / restore ----------------------------------------------------------------
    def _take_snapshot(self):
        self._snapshot = {"values": {k: _capture(v) for k, v in self._values.items()}, "rng": _rng_states(),
                          "commits": self._commits}

    def _apply(self, snapshot):
        for name, (kind, data) in snapshot["values"].items():
            live = self._values.get(name)
            if kind == "state_dict" and live is not None and _is_torch_stateful(live):
                live.load_state_dict(copy.deepcopy(data))
            elif kind == "array" and isinstance(live, np.ndarray) and live.shape == data.shape \
                    and live.dtype == data.dtype and live.flags.writeable:
                np.copyto(live, data)  # in place: references the training loop holds stay valid
            else:
                self._values[name] = copy.deepcopy(data)
        if snapshot.get("rng") is not None:
            _set_rng_states(snapshot["rng"])
        self._commits = snapshot["commits"]

    def commit(self):
        """Record the state as the point to come back to (collective: every rank calls it at the
        same step). Persisted to the directory on every persist_every-th commit. Under a launcher
        with a host discovery script, raises HostsUpdatedInterrupt (after persisting) when the
        script offers other hosts, so that the job restarts on them."""
        self._commits += 1
        self._take_snapshot()
        moving = _hosts_changed()
        if self._directory and (self._commits % self._persist_every == 0 or moving):
            self._persist()
        if moving:
            raise HostsUpdatedInterrupt(f"the host discovery script offers other hosts: restarting on them "
                                        f"from commit {self._commits}")

    def restore(self):
        """Back to the last commit: the one in memory, else the last one persisted. Returns
        whether there was one."""
        if self._snapshot is not None:
            self._apply(self._snapshot)
            return True
        snapshot = self._load_persisted()
        if snapshot is None:
            return False
        self._snapshot = snapshot
        self._apply(snapshot)
        return True

    def sync(self):
        """Every rank takes rank 0's values (not its RNG states, which stay per rank)."""
        values = broadcast_object({k: _capture(v) for k, v in self._values.items()}, root_rank=0,
                                  name="ringtrain.elastic.sync")
        commits = broadcast_object(self._commits, root_rank=0, name="ringtrain.elastic.sync.commits")
        self._apply({"values": values, "rng": None, "commits": commits})

    # --- persistence -----------------------------------------------------------------------
    def _path(self, *parts):
        return os.path.join(self._directory, *parts)

    def _persist(self):
        """Rank 0 writes the values, every rank its RNG states; LATEST moves only after all of
        them are on disk (a barrier), so a kill at any moment leaves a complete commit."""
        from ..collectives import barrier

        os.makedirs(self._directory, exist_ok=True)
        number = self._commits
        if rank() == 0:
            _write(self._path(f"commit-{number:09d}.pkl"), {k: v for k, v in self._snapshot.items() if k != "rng"})
        _write(self._path(f"rng-{number:09d}-rank{rank()}.pkl"), self._snapshot["rng"])
        barrier()
        if rank() == 0:
            _write(self._path(LATEST), number)
            for name in os.listdir(self._directory):  # earlier commits are no longer needed
                if name.startswith(("commit-", "rng-")) and int(name.split("-")[1].split(".")[0]) < number:
                    try:
                        os.unlink(self._path(name))
                    except OSError:
                        pass

    def _load_persisted(self):
        if not self._directory or not os.path.exists(self._path(LATEST)):
            return None
        number = _read(self._path(LATEST))
        snapshot = _read(self._path(f"commit-{number:09d}.pkl"))
        own = self._path(f"rng-{number:09d}-rank{rank()}.pkl")
        snapshot["rng"] = _read(own) if os.path.exists(own) else None  # a rank the last job did not have
        return snapshot


def _write(path, obj):
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _read(path):
    # files this job wrote itself into its own directory, not anything from the network
    with open(path, "rb") as f:
        return pickle.load(f)


def _hosts_changed():
    """Whether the launcher's host discovery watcher asks for a restart on other hosts (rank 0
    asks it over the job channel; every rank gets the same answer)."""
    if os.environ.get("RINGTRAIN_ELASTIC_DISCOVERY") != "1":
        return False
    changed = False
    if rank() == 0:
        from ..launch.channel import Client

        client = Client.from_environment()
        if client is not None:
            try:
                reply, _ = client.request({"type": "hosts_changed"})
                changed = bool(reply.get("changed"))
            finally:
                client.close()
    return broadcast_object(changed, root_rank=0, name="ringtrain.elastic.hosts_changed")


def restart_count():
    """How many times the launcher has restarted this job (0 on the first run)."""
    return int(os.environ.get("RINGTRAIN_RESTART", "0"))


def run(fn):
    """Decorator for `fn(state, *args, **kwargs)`: initialises ringtrain if needed, restores the
    last persisted commit if there is one (then runs the reset callbacks), makes every rank
    start from rank 0's values, and calls fn."""

    @functools.wraps(fn)
    def wrapper(state, *args, **kwargs):
        if not isinstance(state, State):
            raise TypeError(f"@ringtrain.elastic.run expects a ringtrain.elastic.State first, got {type(state).__name__}")
        if not is_initialized():
            init()
        resumed = state._snapshot is None and state.restore()
        state.sync()
        state._take_snapshot()  # restore() without a commit yet goes back to this start
        if resumed:
            for callback in state._reset_callbacks:
                callback()
        try:
            return fn(state, *args, **kwargs)
        except HostsUpdatedInterrupt as moving:
            # every rank is here, at the same commit: leave together, and let the launcher
            # start the job again on the hosts it found
            print(f"ringtrain.elastic: {moving}", file=sys.stderr, flush=True)
            from ..runtime import shutdown

            shutdown()
            sys.exit(RESIZE_EXIT_STATUS)

    return wrapper
