"""The coordinator: rank 0 of each process set decides, for the whole set, which tensors are
ready and in what order they run.

Every rank announces the requests it has submitted (name + signature). A name is ready when
every rank of the set has announced it, ranks that have joined counting as present for
allreduce. Ready names are checked for agreement field by field; a disagreement becomes an
error response that every rank raises. Names that some ranks announced and others have not,
for too long, are reported by the stall inspector. Responses keep announcement order, so every
rank runs the same collectives in the same order."""
import collections
import dataclasses
import time

from .control_messages import Failure, FailureKind, Ready, Response, SetFailure
from .requests import mismatch_message
from .response_cache import FIRST_TENSOR_BIT

UNCACHED_KINDS = frozenset({"barrier", "join", "shutdown", "add_process_set", "remove_process_set"})


@dataclasses.dataclass
class Entry:
    first_seen: float
    signatures: dict = dataclasses.field(default_factory=dict)  # rank -> signature
    warned: bool = False


def _ranks(ranks):
    return ", ".join(str(r) for r in ranks) or "none"


class StallInspector:
    """Names what is stuck and who is missing; turns a long stall into an error if asked to."""

    def __init__(self, check_seconds, shutdown_seconds):
        self.check_seconds = check_seconds
        self.shutdown_seconds = shutdown_seconds

    def inspect(self, table, size, joined, now):
        """(warnings, failures): texts for stalled entries, and Failures for those given up on."""
        warnings, errors = [], []
        for name, entry in table.items():
            age = now - entry.first_seen
            have = sorted(entry.signatures)
            missing = sorted(set(range(size)) - set(have) - set(joined))
            kind = entry.signatures[have[0]][0]
            text = (f"Stall: '{name}' ({kind}) was submitted by ranks {_ranks(have)} and is still waiting for "
                    f"ranks {_ranks(missing)} after {age:.1f} s")
            if self.shutdown_seconds and age >= self.shutdown_seconds:
                errors.append(Failure(name, FailureKind.STALL, text + "; giving up "
                                      f"(RINGTRAIN_STALL_SHUTDOWN_TIME={self.shutdown_seconds:g})"))
            elif self.check_seconds and age >= self.check_seconds and not entry.warned:
                entry.warned = True
                warnings.append(text)
        return warnings, errors

    def wants_a_look(self, table, now):
        """Whether a slow round is needed just to check for stalls."""
        if not table:
            return False
        oldest = min(e.first_seen for e in table.values())
        limits = [s for s in (self.check_seconds, self.shutdown_seconds) if s]
        return bool(limits) and now - oldest >= min(limits)


# A request pending this long (seconds) on some rank makes the global set's coordinator compare
# what every rank has pending in every process set (see process_set_mismatches).
CROSS_CHECK_AFTER = 0.2
CROSS_CHECK_EVERY = 1.0
# A divergence (see divergence()) must look the same for this long before it fails the ranks:
# long enough for any other thread of a rank to have submitted what it was about to.
DIVERGENCE_AFTER = 1.0


def process_set_mismatches(claims):
    """Names submitted on different process sets by ranks that should meet in one of them.

    claims: rank -> [control.Claim], everything each rank has pending in every set, gathered in
    one round of the global set. Rank r waiting (for at least CROSS_CHECK_AFTER) on `name` in set
    S, while another member q of S has no `name` pending in S but has it pending in another set
    T, is a mismatch: neither can ever complete. Returns [control.SetFailure], each naming every
    (rank, set id) that holds the name."""
    by_name = collections.defaultdict(dict)  # name -> rank -> {set_id: (set_ranks, age)}
    for rank, entries in claims.items():
        for claim in entries:
            by_name[claim.name].setdefault(rank, {})[claim.set_id] = (claim.set_ranks, claim.age)
    found = []
    for name, holders in by_name.items():
        for rank in sorted(holders):
            problem = None
            for set_id, (set_ranks, age) in sorted(holders[rank].items()):
                if age < CROSS_CHECK_AFTER:
                    continue
                for other in set_ranks:
                    theirs = holders.get(other, {})
                    if other == rank or set_id in theirs or not theirs:
                        continue
                    problem = True
                    break
                if problem:
                    break
            if problem:
                members = {sid: list(sr) for sets in holders.values() for sid, (sr, _) in sets.items()}
                where = [f"on process set {sid} (ranks {members[sid]}) by rank(s) "
                         f"{sorted(r for r, sets in holders.items() if sid in sets)}" for sid in sorted(members)]
                text = f"Mismatched process sets for '{name}': it was submitted " + ", ".join(where)
                targets = tuple(sorted((r, sid) for r, sets in holders.items() for sid in sets))
                found.append(SetFailure(name, text, targets))
                break
    return found


def divergence(claims, waiting, size):
    """Ranks whose programs went different ways (an exception on some ranks skipped a
    collective, a branch only some ranks took): every rank of the job is blocked waiting for a
    handle, and no pending name is held by every member of its set, so none can ever complete.

    claims: rank -> [control.Claim] (what each rank has pending, in every set); waiting: rank ->
    whether a caller is blocked in wait(). Returns None, or (fingerprint, [control.SetFailure])
    where the fingerprint identifies the situation: the coordinator acts only when it has found
    the same one for DIVERGENCE_AFTER (a second thread of a rank might still submit)."""
    if any(not claims.get(r) or not waiting.get(r) for r in range(size)):
        return None
    holders, kinds, members = collections.defaultdict(set), {}, {}
    for rank, entries in claims.items():
        for claim in entries:
            key = (claim.name, claim.set_id)
            holders[key].add(rank)
            kinds[key], members[key] = claim.kind, set(claim.set_ranks)
    if any(members[key] <= ranks for key, ranks in holders.items()):
        return None  # something can still complete
    waits = collections.defaultdict(list)  # what a rank waits for -> the ranks waiting for it
    for rank in range(size):
        mine = tuple(sorted((c.name, c.set_id) for c in claims[rank]))
        waits[mine].append(rank)

    def what(keys):
        shown = [f"{kinds[k]} '{k[0]}'" + (f" (process set {k[1]})" if k[1] else "") +
                 f", which rank(s) {_ranks(sorted(members[k] - holders[k]))} did not submit" for k in keys[:3]]
        return "; ".join(shown) + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")

    parts = [f"rank(s) {_ranks(ranks)} wait for {what(list(keys))}" for keys, ranks in sorted(waits.items(), key=lambda kv: kv[1])]
    text = ("The ranks' programs diverged: every rank is blocked waiting for a collective that other ranks did "
            "not submit, so none can complete: " + "; ".join(parts) +
            ". (Did an exception on some ranks skip a collective, or did only some ranks take a branch?)")
    failures = []
    for key in sorted(holders):
        failures.append(SetFailure(key[0], text, tuple(sorted((r, key[1]) for r in holders[key]))))
    fingerprint = frozenset((r, c.name, c.set_id) for r, entries in claims.items() for c in entries)
    return fingerprint, failures


class Coordinator:
    def __init__(self, size, stall_inspector):
        self.size = size
        self.table = collections.OrderedDict()
        self.joined = []            # in the order ranks joined
        self.stalls = stall_inspector
        # name -> (Failure, ranks that have not announced it yet): a failed name is failed
        # for the latecomers too when they get there, instead of leaving them waiting forever.
        self.owed = {}
        # names failed because a rank had joined: a rank that still owes them would have
        # announced them before its own join, so they expire when the join completes
        self.owed_for_join = set()
        self.suspected_divergence = (None, 0.0)   # divergence()'s fingerprint, and since when

    def needs_slow_round(self, now):
        return self.stalls.wants_a_look(self.table, now)

    def process(self, messages, cache):
        """messages: rank -> control.RoundMessage; cache: the set's ResponseCache (the same on
        every rank), which picks the bits given out. Returns the control.Response broadcast to
        every rank of the set."""
        now = time.perf_counter()
        response = Response()
        taken = set()  # bits given in this response
        failed = {}
        reporters = {}
        for rank in sorted(messages):
            message = messages[rank]
            for failure in message.failures:
                failed.setdefault(failure.name, failure)
                reporters.setdefault(failure.name, set()).add(rank)
            if message.join and rank not in self.joined:
                self.joined.append(rank)
            for announcement in message.announce:
                name = announcement.name
                owed = self.owed.get(name)
                if owed is not None and rank in owed[1]:
                    owed[1].discard(rank)
                    if not owed[1]:
                        del self.owed[name]
                    response.failures.append(dataclasses.replace(owed[0], ranks=(rank,)))
                    continue
                entry = self.table.get(name)
                if entry is None:
                    entry = self.table[name] = Entry(now)
                if rank in entry.signatures:
                    failed.setdefault(name, Failure(name, FailureKind.DUPLICATE,
                                                    f"'{name}' was submitted twice on rank {rank} before it completed"))
                entry.signatures[rank] = announcement.signature
        for name, failure in failed.items():
            self._fail(response, failure, reporters.get(name, ()))

        if any(message.claims is not None for message in messages.values()):
            claims = {r: m.claims or [] for r, m in messages.items()}
            response.set_failures = process_set_mismatches(claims)
            found = None if response.set_failures or self.joined else \
                divergence(claims, {r: m.waiting for r, m in messages.items()}, self.size)
            if found is None:
                self.suspected_divergence = (None, now)
            elif found[0] != self.suspected_divergence[0]:
                self.suspected_divergence = (found[0], now)
            elif now - self.suspected_divergence[1] >= DIVERGENCE_AFTER:
                response.set_failures = found[1]
                self.suspected_divergence = (None, now)
        joined = set(self.joined)
        # ranks that are leaving (shutdown(), or the end of the program): what they have not
        # submitted can never complete, and their shutdown cannot complete while others wait
        shutting = set()
        for entry in self.table.values():
            if {sig[0] for sig in entry.signatures.values()} == {"shutdown"}:
                shutting |= set(entry.signatures)
        stranded = []
        for name in list(self.table):
            entry = self.table[name]
            present = set(entry.signatures)
            kinds = {sig[0] for sig in entry.signatures.values()}
            if "shutdown" not in kinds and shutting - present:
                gone = sorted(shutting - present)
                kind = sorted(kinds)[0]
                stranded.append(f"{kind} '{name}', submitted by rank(s) {sorted(present)} but not by rank(s) {gone}")
                # every rank that has not submitted it is named, not only those already seen
                # leaving: which of them left first is a matter of timing
                absent = sorted(set(range(self.size)) - present - joined)
                self._fail(response, Failure(name, FailureKind.SHUTDOWN, (
                    f"{kind} '{name}' cannot complete: rank(s) {absent} did not submit it; rank(s) {gone} called "
                    "shutdown() (or reached the end of the program) without submitting it")))
                continue
            if kinds != {"allreduce"} and joined - present:
                # a joined rank contributes zeros to allreduces only; nothing else can complete
                # now, so fail at once rather than wait for the other ranks' submissions
                self._fail(response, Failure(name, FailureKind.JOINED, (
                    f"{kinds.pop()} '{name}' cannot complete: rank(s) {sorted(joined - present)} have already joined")))
                if name in self.owed:
                    self.owed_for_join.add(name)
                continue
            if len(present | (joined if kinds == {"allreduce"} else set())) < self.size:
                continue
            del self.table[name]
            problem = mismatch_message(name, entry.signatures)
            if problem:
                response.failures.append(Failure(name, FailureKind.MISMATCH, problem))
                continue
            signature = next(iter(entry.signatures.values()))
            bit = None
            # unnamed calls too: their names recur from a bounded set (requests.unnamed_name)
            if signature[0] not in UNCACHED_KINDS:
                bit = cache.choose_bit(name, signature, taken)
                if bit is not None:
                    taken.add(bit)
            response.ready.append(Ready(name, signature, bit))

        if stranded:
            more = f" (and {len(stranded) - 1} more)" if len(stranded) > 1 else ""
            for name in [n for n, e in self.table.items() if {sig[0] for sig in e.signatures.values()} == {"shutdown"}]:
                self._fail(response, Failure(name, FailureKind.SHUTDOWN, (
                    f"shutdown() cannot complete: the other ranks still wait for {stranded[0]}{more}")))
        warnings, stalled = self.stalls.inspect(self.table, self.size, joined, now)
        response.warnings = warnings
        for failure in stalled:
            self._fail(response, failure)
        if len(joined) == self.size:
            response.join_done = self.joined[-1]
            self.joined = []
            for name in self.owed_for_join:
                self.owed.pop(name, None)
            self.owed_for_join.clear()
        return response

    def _fail(self, response, failure, also_present=()):
        """Fail a name for every rank that has it, and remember to fail it for the others."""
        entry = self.table.pop(failure.name, None)
        present = set(entry.signatures if entry else ()) | set(also_present) | set(self.joined)
        response.failures.append(failure)
        missing = set(range(self.size)) - present
        if missing:
            self.owed[failure.name] = (failure, missing)


assert FIRST_TENSOR_BIT >= 2
