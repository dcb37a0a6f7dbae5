"""The control plane's messages, as named types: what a rank tells its process set's coordinator
in a slow round (a RoundMessage), and what the coordinator answers every rank (a Response).

They travel as JSON (engine.py gathers the messages on the coordinator and broadcasts the
response); to_wire() and from_wire() are the only places that know the JSON layout, so the
engine and the coordinator (coordinator.py) work with fields, never with positions in lists."""
import dataclasses
import enum


class FailureKind(enum.Enum):
    """Why a collective failed: the engine raises StallError for STALL, RingtrainError otherwise."""
    MISMATCH = "mismatch"          # ranks disagree on dtype, shape, op, root, scale or collective
    DUPLICATE = "duplicate"        # a name submitted twice on one rank before it completed
    STALL = "stall"                # some ranks never submitted it (RINGTRAIN_STALL_SHUTDOWN_TIME)
    JOINED = "joined"              # not an allreduce, and a rank has already joined
    SHUTDOWN = "shutdown"          # a rank left (shutdown) without submitting it, or the reverse
    PROCESS_SET = "process_set"    # submitted on different process sets by ranks that should meet


@dataclasses.dataclass(frozen=True)
class Announcement:
    """A request this rank has submitted, announced to the coordinator the first time."""
    name: str
    signature: list                # requests.SIGNATURE_FIELDS, in order


@dataclasses.dataclass(frozen=True)
class Failure:
    """A collective that cannot complete, and why; `ranks` are the ranks it is for (None: all)."""
    name: str
    kind: FailureKind
    text: str
    ranks: tuple = None


@dataclasses.dataclass(frozen=True)
class Claim:
    """Something pending on a rank in some process set, for the cross-set comparison
    (negotiation.process_set_mismatches)."""
    name: str
    set_id: int
    set_ranks: tuple
    age: float                     # seconds since it was submitted
    kind: str = "?"                # the collective (allreduce, broadcast, ...), for messages


@dataclasses.dataclass(frozen=True)
class SetFailure:
    """A name submitted on different process sets: every (rank, set id) that holds it fails."""
    name: str
    text: str
    targets: tuple                 # ((rank, set_id), ...)


@dataclasses.dataclass(frozen=True)
class Ready:
    """A collective every rank of the set has submitted, with matching signatures: run it.
    `bit` is its new response-cache bit (None: not cached)."""
    name: str
    signature: list
    bit: int = None


@dataclasses.dataclass
class RoundMessage:
    announce: list = dataclasses.field(default_factory=list)     # [Announcement]
    failures: list = dataclasses.field(default_factory=list)     # [Failure] this rank found itself
    join: bool = False             # this rank has called join() and not yet said so
    claims: list = None            # [Claim], from the global set's rank 0 when a cross-check is due
    params: dict = None            # autotune's new settings, from the global set's rank 0
    waiting: bool = False          # a caller on this rank is blocked waiting for a handle (sent with claims)

    def to_wire(self):
        wire = {"a": [[a.name, a.signature] for a in self.announce],
                "f": [[f.name, f.kind.value, f.text] for f in self.failures], "j": self.join}
        if self.claims is not None:
            wire["c"] = [[c.name, c.set_id, list(c.set_ranks), c.age, c.kind] for c in self.claims]
            wire["w"] = self.waiting
        if self.params:
            wire["p"] = self.params
        return wire

    @classmethod
    def from_wire(cls, wire):
        claims = wire.get("c")
        return cls([Announcement(n, s) for n, s in wire["a"]],
                   [Failure(n, FailureKind(k), t) for n, k, t in wire["f"]], wire["j"],
                   None if claims is None else [Claim(n, i, tuple(r), a, k) for n, i, r, a, k in claims], wire.get("p"),
                   bool(wire.get("w")))


@dataclasses.dataclass
class Response:
    ready: list = dataclasses.field(default_factory=list)         # [Ready], in the order to run them
    failures: list = dataclasses.field(default_factory=list)      # [Failure]
    warnings: list = dataclasses.field(default_factory=list)      # [str], stall warnings
    join_done: int = None          # every rank has joined: the last one to join
    set_failures: list = dataclasses.field(default_factory=list)  # [SetFailure]
    params: dict = None            # settings every rank applies now (autotune)

    def to_wire(self):
        wire = {"r": [[r.name, r.signature, r.bit] for r in self.ready],
                "f": [[f.name, f.kind.value, f.text, None if f.ranks is None else list(f.ranks)] for f in self.failures],
                "w": self.warnings, "j": self.join_done}
        if self.set_failures:
            wire["s"] = [[s.name, s.text, [list(t) for t in s.targets]] for s in self.set_failures]
        if self.params:
            wire["p"] = self.params
        return wire

    @classmethod
    def from_wire(cls, wire):
        return cls([Ready(n, s, b) for n, s, b in wire["r"]],
                   [Failure(n, FailureKind(k), t, None if r is None else tuple(r)) for n, k, t, r in wire["f"]],
                   wire["w"], wire["j"],
                   [SetFailure(n, t, tuple((rank, sid) for rank, sid in targets)) for n, t, targets in wire.get("s", ())],
                   wire.get("p"))
