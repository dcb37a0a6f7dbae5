"""What a rank asks the engine to do (a Request), and what it gets back (a Handle).

A request's *signature* is the part every rank must agree on: the collective, dtype, the shape
dimensions that must match, op, root and scale factors. The coordinator compares signatures
field by field to explain a mismatch; the response cache keys on them."""
import collections
import itertools
import time

import numpy as np

from ..dtypes import SUPPORTED
from ..errors import RingtrainError

# The collectives whose first dimension may differ between ranks.
RAGGED = frozenset({"allgather", "alltoall"})
SIGNATURE_FIELDS = ("collective", "dtype", "shape", "op", "root rank", "prescale factor", "postscale factor")


class Handle:
    """An operation in flight, the one handle type of the numpy API and ringtrain.torch.
    ready() tells whether waiting would not block; wait() (or calling the handle, as Horovod's
    sparse handles are called) waits and returns the output, or raises the operation's error.
    `finish` (or None) turns the core's result into what wait() returns (torch tensors). A
    handle over other handles (`parts`, e.g. Adasum's allgathers) completes by running
    `deferred` when it is first waited on."""

    # No reference back to the Request: the Request holds the handle, and a cycle between them
    # would keep the output arrays alive until the cyclic garbage collector ran, so every large
    # out-of-place call paid for fresh memory (page faults) instead of reusing what was freed.
    __slots__ = ("kind", "name", "grouped", "done", "result", "error", "engine", "finish", "parts", "deferred",
                 "__weakref__")

    def __init__(self, kind, name, grouped=False, engine=None, parts=None, deferred=None):
        self.kind, self.name, self.grouped = kind, name, grouped
        self.done = False
        self.result = None
        self.error = None
        self.engine = engine  # set by Engine.submit: who completes it
        self.finish = None
        self.parts, self.deferred = parts, deferred

    def complete(self, result):
        if self.grouped and not isinstance(result, list):  # a one-tensor group is still a group
            result = [result]
        self.result, self.done = result, True

    def fail(self, error):
        if not self.done:
            self.error, self.done = error, True

    def ready(self):
        """Finished, or (a handle over parts) every part has: waiting will not block."""
        return self.done or (self.parts is not None and all(p.ready() for p in self.parts))

    def wait(self):
        result = self.engine.wait(self)
        return result if self.finish is None else self.finish(result)

    __call__ = wait

    def __repr__(self):
        state = "failed" if self.error else "done" if self.done else "pending"
        return f"<ringtrain.Handle {self.kind} {self.name!r} {state}>"


class UnnamedName(str):
    """The name ringtrain gave an unnamed call (see unnamed_name)."""


# Unnamed calls reuse UNNAMED_WINDOW names per (kind, process set), in call order. A training
# loop's unnamed calls are the same tensors every step, so their names recur and get response
# cache bits, and the names stay bounded instead of filling the cache. A name comes back only
# after the call that last held it has completed on this rank (the engine waits for it), so a
# name is never in flight twice; which name a call gets depends only on the order of calls,
# the same on every member of the set, so a mismatch between ranks is still found by name.
UNNAMED_WINDOW = 512
_unnamed_counters = collections.defaultdict(itertools.count)
_unnamed_names = {}


def unnamed_name(kind, process_set_id=0):
    """The one generator of names for unnamed calls, for the numpy API and ringtrain.torch.
    Numbered per (kind, process set): the members of a set make the same calls on it, but ranks
    outside it do not, so one counter per kind would drift apart between ranks."""
    key = (kind, process_set_id)
    names = _unnamed_names.get(key)
    if names is None:  # made once: an unnamed call's latency is mostly Python like this
        names = unnamed_source(kind, process_set_id)[1]
    return names[next(_unnamed_counters[key]) % UNNAMED_WINDOW]


def unnamed_source(kind, process_set_id=0):
    """(counter, names) behind unnamed_name for (kind, set): the C lane (csrc/persistent_lane.c)
    names unnamed allreduces from the same counter, so both count one sequence."""
    key = (kind, process_set_id)
    names = _unnamed_names.get(key)
    if names is None:
        prefix = f"{kind}.noname." if process_set_id == 0 else f"{kind}.noname.set{process_set_id}."
        names = _unnamed_names[key] = [UnnamedName(f"{prefix}{number}") for number in range(UNNAMED_WINDOW)]
    return _unnamed_counters[key], names


def request_name(kind, name, process_set_id=0):
    """The name a call goes by: the user's, or the next unnamed one of its kind and set."""
    if name is None:
        return unnamed_name(kind, process_set_id)
    if not isinstance(name, str):
        raise TypeError(f"name={name!r} must be a str")
    return name


class Request:
    """One call, as the engine queues it. A plain class with slots: a training step makes one
    per gradient, and a dataclass's generated __init__ and __post_init__ cost twice as much."""

    __slots__ = ("kind", "name", "process_set", "tensors", "outputs", "code", "op", "root", "prescale", "postscale",
                 "splits", "payload", "grouped", "submitted", "handle", "nbytes", "origin", "_signature")

    def __init__(self, kind, name, process_set=0, tensors=(), outputs=(), code=-1, op=0, root=-1, prescale=1.0,
                 postscale=1.0, splits=None, payload=None, grouped=False):
        self.kind = kind              # allreduce, allgather, broadcast, reducescatter, alltoall, barrier, join, ...
        self.name = name
        self.process_set = process_set
        self.tensors = tensors        # inputs (grouped ops carry several)
        self.outputs = outputs        # where results go (same arrays when in place)
        self.code = code              # dtype code, -1 for control requests
        self.op = op
        self.root = root
        self.prescale = prescale
        self.postscale = postscale
        self.splits = splits          # alltoall's send splits (legitimately differ between ranks)
        self.payload = payload        # control requests: e.g. the ranks of a new process set
        self.grouped = grouped        # a grouped_* call: its result is a list, even of one tensor
        self.submitted = time.perf_counter()
        self.handle = Handle(kind, name, grouped)
        # of the inputs, set here: rounds ask often
        self.nbytes = tensors[0].nbytes if len(tensors) == 1 else sum(t.nbytes for t in tensors)
        self.origin = None            # the persistent allreduce (its C lane entry) that started it
        self._signature = None

    def shape_key(self):
        if self.payload is not None:  # control requests: what every rank must agree on
            return [list(self.payload)]
        shapes = []
        for t in self.tensors:
            shapes.append(list(t.shape[1:]) + [len(t.shape)] if self.kind in RAGGED else list(t.shape))
        return shapes

    def signature(self):
        """JSON-friendly list, one entry per SIGNATURE_FIELDS (computed once: rounds ask often)."""
        if self._signature is None:
            self._signature = [self.kind, self.code, self.shape_key(), int(self.op), self.root, self.prescale,
                               self.postscale]
        return self._signature



def _ragged_shape(key):
    """A ragged collective's shape key (the dimensions after the first, then the number of
    dimensions) as the shape it stands for, the first dimension free: (N, 3)."""
    *rest, ndim = key
    return "(" + ", ".join(["N", *map(str, rest)]) + ("," if ndim == 1 else "") + ")"


def describe(field, value, kind=None):
    """A signature value as a person would write it."""
    if field == "dtype":
        return str(SUPPORTED[value]) if value >= 0 else "none"
    if field == "shape":
        shapes = [_ragged_shape(s) if kind in RAGGED else str(tuple(s)) for s in value]
        return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"
    if field == "op":
        from ..reduce_ops import ReduceOp

        return ReduceOp(value).name
    return str(value)


def mismatch_message(name, signatures):
    """The first field on which ranks disagree, Horovod-style, or None if they all agree.
    `signatures` maps rank -> signature."""
    ranks = sorted(signatures)
    first = ranks[0]
    kind = signatures[first][0]
    for index, field in enumerate(SIGNATURE_FIELDS):
        for other in ranks[1:]:
            a, b = signatures[first][index], signatures[other][index]
            if a != b:
                if field == "collective":
                    return (f"Mismatched collective for '{name}': rank {first} called {a}, "
                            f"but rank {other} called {b}")
                what = "shapes" if field == "shape" and kind not in RAGGED else (
                    "shapes (all dimensions but the first)" if field == "shape" else field + "s")
                return (f"Mismatched {kind} {what} for '{name}': rank {first} has {describe(field, a, kind)}, "
                        f"but rank {other} has {describe(field, b, kind)}")
    return None


def zeros_like_signature(signature):
    """The tensors a rank that has joined contributes to an allreduce: zeros of the agreed shape."""
    code, shapes = signature[1], signature[2]
    return [np.zeros(tuple(shape), dtype=SUPPORTED[code]) for shape in shapes]


class StallError(RingtrainError):
    """Some ranks submitted a tensor and others did not, for longer than RINGTRAIN_STALL_SHUTDOWN_TIME."""
