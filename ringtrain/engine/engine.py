"""The background engine: negotiation rounds, then execution, for every process set.

Design (after Horovod's operations.cc, in a smaller space):

* A collective call builds a Request and queues it; the caller gets a Handle at once.
* Rounds are lock-step per process set: every member takes part in every round, in the same
  sequence (process sets in id order), so the control collectives below always match up.
  A round is:
    1. one bitwise-AND allreduce of a bit vector on the set's control communicator. Bit 0 says
       "I need no slow path", bit 1 "I have joined", and one bit per response-cache entry says
       "I have this cached tensor ready". Tensors whose bit survives the AND are ready
       everywhere: repeated training steps negotiate with this single small allreduce.
    2. only if someone cleared bit 0: the slow path. Every rank sends its new announcements
       (name + signature), duplicate-name errors and join requests to the coordinator (rank 0
       of the set) with a Gatherv; the coordinator checks them (coordinator.py) and broadcasts
       the responses: ready tensors in order, errors, stall warnings, new cache bits.
    3. execution (executor.py) of the cached-ready tensors, then the slow path's responses.
* The background thread runs a round every cycle_time ms. A caller waiting on a handle runs
  rounds itself under the same lock instead of waiting for the thread: a synchronous small
  allreduce costs one round, with no thread hand-off. Either way all MPI traffic after init()
  happens in rounds, one at a time.
* A cached request whose bit does not survive the AND for a few rounds (ranks submitting at
  different times, or one rank submitting a different signature under the same name) falls
  back to the slow path, where the coordinator sees every rank's version: that is how
  mismatches and stalls are found even for tensors that were cached.
"""
import collections
import json
import logging
import os
import threading
import time
import weakref

import numpy as np

from .control_messages import Announcement, Claim, Failure, FailureKind, Response, RoundMessage
from ..errors import ProgressTimeoutError, RingtrainError
from .executor import Executor, AgreedCollective
from .coordinator import CROSS_CHECK_AFTER, CROSS_CHECK_EVERY, Coordinator, StallInspector
from .requests import Request, StallError, UnnamedName
from .response_cache import FIRST_TENSOR_BIT, JOINED_BIT, NO_SLOW_PATH_BIT, ResponseCache

log = logging.getLogger("ringtrain")

CONTROL_KINDS = frozenset({"shutdown", "add_process_set", "remove_process_set"})

# The longest pause of an idle engine between rounds (seconds); see Engine._loop.
IDLE_PAUSE_MAX = 0.1

# Names remembered for the duplicate-name check before the finished ones are forgotten.
HOLDERS_PRUNE_AT = 4096

# Rounds a cached request may wait for its bit before it is announced to the coordinator.
FALLBACK_ROUNDS = 3


class ProcessSetState:
    """One process set as this rank sees it."""

    def __init__(self, set_id, ranks, data_comm, config):
        self.id = set_id
        self.ranks = ranks                    # global ranks, sorted
        self.comm = data_comm                 # collectives on the data path
        self.ctrl = data_comm.Dup()           # negotiation, so it never matches data messages
        self.ctrl_handle = self.ctrl.py2f()
        self.handle = data_comm.py2f()
        self.rank = data_comm.Get_rank()
        self.size = data_comm.Get_size()
        self.queue = collections.deque()      # submitted, not yet taken into a round
        self.pending = collections.OrderedDict()  # name -> Request
        self.announced = set()                # names sent to the coordinator
        self.waited = collections.Counter()   # name -> rounds waited on the cache path
        self.cache = ResponseCache(config.cache_capacity)
        self.failures_to_report = []          # control.Failure found here, for the coordinator
        self.join_request = None
        self.join_announced = False
        self.holders = {}                     # name -> weak reference to its latest call's Handle
        self.holders_limit = HOLDERS_PRUNE_AT
        self.bit_memo = {}                    # call key -> [cache generation, bit, round words]: cached_bit
        self.coordinator = (Coordinator(self.size, StallInspector(config.stall_check_time, config.stall_shutdown_time))
                            if self.rank == 0 else None)
        self.shared_memory = self._attach_shared_memory(config)

    def cached_bit(self, key, signature):
        """The memo of a one-tensor allreduce's response-cache bit, by its call key (name, dtype
        code, shape, op, prescale, postscale), or None if the cache has no bit for it. The steady
        path and the rounds find a step's tensors by this tuple instead of building and comparing
        signatures; an entry holds while the cache's generation does. `signature()` is called
        only when the memo cannot answer. allreduce_now fills in the entry's round words."""
        memo = self.bit_memo.get(key)
        if memo is not None and memo[0] == self.cache.generation:
            return memo
        bit, hit = self.cache.lookup(key[0], signature())
        if not hit:
            return None
        if len(self.bit_memo) >= self.cache.capacity:
            self.bit_memo.clear()
        memo = self.bit_memo[key] = [self.cache.generation, bit, None]
        return memo

    def _attach_shared_memory(self, config):
        """The set's segment per host (collective: every member builds its ProcessSetState at the same
        point). What the allreduces of this set will use: "one host", "hierarchical" or "off"."""
        if self.size == 1 or not config.shared_memory:
            return "off"
        from .. import _core

        mode, reason, failed_here = _core.shm_attach(self.handle, config.shared_memory_piece_bytes,
                                                           config.hierarchical_allreduce, config.hierarchical_one_leader)
        if failed_here:  # this host could not share memory: one line from it, and every rank goes on without
            log.warning("ringtrain: shared memory is off for process set %d: %s", self.id, reason)
        elif mode == 0:
            log.debug("ringtrain: process set %d does not use shared memory: %s", self.id, reason)
        return {1: "one host", 2: "hierarchical"}.get(mode, "off")

    def free(self):
        if self.shared_memory != "off":
            from .. import _core

            _core.shm_detach(self.handle)
        for c in (self.ctrl, self.comm):
            c.Free()


class Engine:
    def __init__(self, runtime, config, process_sets=()):
        from mpi4py import MPI

        self.MPI = MPI
        self.runtime = runtime
        self.tuning = TunableSettings(config)
        self.timeline = None
        self.autotuner = None
        self.direct_ok = False   # see _update_direct
        self.executor = Executor(runtime.core, self.tuning, lambda: self.timeline)
        self.sets = {0: ProcessSetState(0, list(range(runtime.size)), runtime.comm.Dup(), config)}
        # the persistent lane (csrc/persistent_lane.c) queues started persistent allreduces of set 0
        self.lane_generation = runtime.core.lane_new_generation()
        self.sets[0].cache.on_change = runtime.core.lane_cache_generation
        self.lane_calls = runtime.core.lane_calls()  # name -> entry of set 0's allreduce(_async) calls
        self.next_set_id = 1
        self._round_lock = threading.Lock()
        state = self.sets[0]
        runtime.core.lane_cache_generation(state.cache.generation, state.cache.words(), ())
        runtime.core.lane_engine(self, state, self._round_lock, self.tuning, state.ctrl_handle, state.handle)
        self._stop = threading.Event()
        self._doorbell = threading.Event()   # submit() wakes an idle engine (see _loop)
        self._activity = False
        self._dozing = False
        self._waiting = set()        # threads blocked in wait() (set.add/discard are atomic)
        # this host runs as many ranks as this process may use cores: see _loop
        self.no_spare_core = runtime.local_comm.Get_size() >= len(os.sched_getaffinity(0))
        self.thread_wakes = 0        # times the engine thread woke (from a pause or by the doorbell)
        self.round_ended = 0.0
        self.failure = None
        self.last_round = 0.0
        self.negotiation_seconds = 0.0   # time in rounds outside the collectives themselves
        self.rounds = 0
        self._direct_calls = 0   # synchronous allreduces completed by allreduce_now alone (and see direct_calls)
        self._next_cross_check = 0.0
        if config.timeline:
            self.start_timeline(config.timeline, config.timeline_mark_cycles)
        from .autotune import Autotuner

        self.autotuner = Autotuner(self.tuning, config.autotune_log) if config.autotune and runtime.rank == 0 else None
        for process_set in process_sets:  # before the thread starts: no round may interleave
            process_set._register(self.create_set(process_set.ranks))
        self._update_direct()
        self._thread = threading.Thread(target=self._loop, name="ringtrain-engine", daemon=True)
        self._thread.start()

    # --- submission and waiting ----------------------------------------------------------
    def submit(self, request):
        state = self.sets.get(request.process_set)
        if state is None:
            raise ValueError(f"process_set id {request.process_set} is not registered on rank {self.runtime.rank}")
        if self.failure is not None:
            raise self._failure_error()
        # The one duplicate-name check, for the numpy API and ringtrain.torch alike: a name may
        # be reused once the call that held it has completed on this rank. Unnamed names recur
        # (requests.unnamed_name), so an unnamed call waits for its name's last holder (whose
        # outcome belongs to its own caller); a named one is refused at once, as Horovod does,
        # before anything is sent, and the first call goes on.
        holders = state.holders
        previous = holders.get(request.name)
        previous = previous() if previous is not None else None  # gone: the engine let go of it, done
        if (previous is None or previous.done) and request.process_set == 0:
            call = self.lane_calls.get(request.name)  # an allreduce_async queued in the C lane
            if call is not None and call.handle is not None:
                previous = call.handle
        if previous is not None and not previous.done and previous is not request.handle:
            if not isinstance(request.name, UnnamedName):
                raise ValueError(f"{request.kind}: an operation named '{request.name}' is already in flight on rank "
                                 f"{self.runtime.rank}; names of concurrent operations must be unique (a name can be "
                                 "reused once its operation has completed)")
            try:
                self.wait(previous)
            except RingtrainError:
                if self.failure is not None or self._stop.is_set():
                    raise
        holders[request.name] = weakref.ref(request.handle)
        if len(holders) > state.holders_limit:  # names that came and went (unique per step, say): forget them
            for name in [n for n, ref in holders.items() if ref() is None or ref().done]:
                del holders[name]
            state.holders_limit = max(HOLDERS_PRUNE_AT, 2 * len(holders))
        request.handle.engine = self
        state.queue.append(request)
        if self._dozing:  # at the normal pace the loop comes by within a cycle anyway
            self._doorbell.set()
        return request.handle

    def wait(self, handle):
        if handle.done and handle.deferred is None:  # (most handles of a step: a round completed them)
            if handle.error is not None:
                raise handle.error
            return handle.result
        if handle.deferred is not None:  # a handle over parts: wait for them, then combine
            run, handle.deferred = handle.deferred, None
            try:
                handle.complete(run())
            except BaseException as exc:
                handle.fail(exc)
        me = threading.get_ident()
        self._waiting.add(me)  # while a caller waits, this rank submits nothing more (negotiation.divergence)
        core = self.runtime.core
        core.note_caller_waiting(1)  # nobody computes here now: the engine thread's waits need not nap
        try:
            while not handle.done:
                if self.failure is not None:
                    raise self._failure_error()
                with self._round_lock:
                    if not handle.done and not self._stop.is_set():
                        self._rounds_or_fail()
                if self._stop.is_set() and not handle.done:
                    if self.failure is not None:
                        raise self._failure_error()
                    raise RingtrainError("ringtrain was shut down before this operation completed")
        finally:
            core.note_caller_waiting(-1)
            self._waiting.discard(me)
        if handle.error is not None:
            raise handle.error
        return handle.result

    def _update_direct(self):
        """Whether allreduce_now may run at all: not with a timeline (its spans come from the
        general path), autotuning (rank 0 reports observations in slow rounds), several process
        sets (a round covers every set in order), after a failure or once stopped."""
        self.direct_ok = (self.timeline is None and self.autotuner is None and len(self.sets) == 1
                          and self.failure is None and not self._stop.is_set())
        core = self.runtime.core
        core.lane_open(self.direct_ok)
        if not self.direct_ok and core.lane_length() and 0 in self.sets:  # what it queued goes the general way
            self._drain_lane(self.sets[0])

    def allreduce_now(self, state, name, array, output, code, op, pre, post):
        """A synchronous allreduce of one tensor, run in the caller's thread when this rank has
        nothing else in flight and the tensor is in the response cache (a training loop's steady
        state): one C call runs the round's bit vector and, if every rank proposed this tensor,
        its allreduce, with no Request, queue or round bookkeeping in Python. The other ranks see
        exactly the round the general path would run, so they need not take this path too.
        Returns the output, or None if this call must take the general path (nothing was sent)."""
        t, core = self.tuning, self.runtime.core
        if not self.direct_ok or state.pending or state.queue or state.join_request is not None:
            return None
        if state.size == 1:  # one rank agrees with itself: nothing to negotiate, nothing to send
            with self._round_lock:
                core.allreduce(state.handle, array, output, code, op, pre, post, *t.allreduce_args)
            self.executor.bytes_reduced += array.nbytes
            self._direct_calls += 1
            return output
        key = (name, code, array.shape, op, pre, post)  # (a name may hold several signatures: response_cache)
        memo = state.bit_memo.get(key)  # (cached_bit's own first step, without its call: this is the latency)
        if memo is None or memo[0] != state.cache.generation:
            memo = state.cached_bit(key, lambda: ["allreduce", code, [list(array.shape)], op, -1, pre, post])
            if memo is None:
                return None  # first sight (or a new signature): the coordinator must see it
        words = memo[2]
        if words is None:
            words = memo[2] = np.zeros(state.cache.words(), dtype=np.uint64)
            words.view(np.uint8)[:] = np.frombuffer(((1 << NO_SLOW_PATH_BIT) | (1 << memo[1])).to_bytes(
                words.nbytes, "little"), dtype=np.uint8)
        # Not while the engine thread is in a round: this call then queues like any other, so
        # that round's outcome (a deadline's message naming what waits, say) covers it too.
        if not self._round_lock.acquire(blocking=False):
            return None
        try:
            if state.pending or state.queue or not self.direct_ok or core.lane_length():
                self._round_lock.release()
                return None  # another thread got in first
            started = self.last_round = self.round_ended = time.perf_counter()
            self.rounds += 1
            agreed = core.round_allreduce_one(state.ctrl_handle, words, state.handle, array, output, code, op, pre,
                                              post, *t.allreduce_args)
            error = None
        except BaseException as exc:  # noqa: BLE001 - handed on
            agreed, error = False, exc
        if agreed:
            self._round_lock.release()
            self._activity = True
            self.executor.bytes_reduced += array.nbytes
            self._direct_calls += 1
            return output
        state.bit_memo.pop(key, None)
        return self._direct_round_ended(name, array, output, code, op, pre, post, words, started, error)

    def _direct_round_ended(self, name, array, output, code, op, pre, post, words, started, error, in_place=None):
        """A steady-path round (allreduce_now, or csrc/persistent_lane.c's lane_allreduce) that
        did not complete its call, entered with the round lock held, which is released here.
        Either the others proposed something else (words hold the agreed bits): this call then
        joins the general path from there. Or the round failed (error): the engine fails."""
        core, state = self.runtime.core, self.sets[0]
        try:
            if error is not None:
                raise error
            request = Request("allreduce", name, state.id, [array], [output], code, op, -1, pre, post)
            request.handle.engine = self
            state.holders[name] = weakref.ref(request.handle)
            state.pending[name] = request
            self._finish_round(state, int.from_bytes(words.tobytes(), "little"), [], False, started)
            self.round_ended = time.perf_counter()
        except core.NoProgressError as exc:
            if name in state.pending:  # in the general path's part of the round
                error = ProgressTimeoutError(self._no_progress_text(state, getattr(exc, "items", None)))
            elif str(exc).startswith("allreduce"):  # stopped in the data, not in the round's exchange
                items = [AgreedCollective(name, ["allreduce", code, [list(array.shape)], op, -1, pre, post], None, started)]
                error = ProgressTimeoutError(self._no_progress_text(state, items))
            else:
                error = ProgressTimeoutError(self._no_progress_text(state, None, agreeing=[name]))
            self._fail_everything(error)
            raise error from None
        except Exception as exc:  # noqa: BLE001 - as _rounds_or_fail: the engine cannot go on
            self._fail_everything(exc)
            raise self._failure_error() from None
        finally:
            self._round_lock.release()
        result = self.wait(request.handle)
        return array if in_place else result

    @property
    def direct_calls(self):
        """Synchronous allreduces completed by the steady path alone (in Python or in C)."""
        return self._direct_calls + self.runtime.core.lane_direct_calls()

    def _loop(self):
        """A round every cycle_time, unless callers waiting on handles are already running them:
        then an extra round from here would only pair up with the wrong round on another rank.

        An idle engine backs off: after each round in which this rank had nothing to do, the
        pause doubles, up to IDLE_PAUSE_MAX, and a submit() rings the doorbell, which starts the
        next round at once. The pause counts from the end of a round: a round ends at the same
        moment on every rank (its first step is an allreduce), so idle ranks stay in phase and
        do not spin in MPI waiting for each other's next round.

        It backs off the same way while callers drive the rounds (synchronize() runs them) on a
        host with no core to spare for this thread (as many ranks as cores): a rank's main
        threads then keep every core busy, each wake of this thread preempts one of them, and a
        round run from here could not overlap with computation anyway. Waking once per cycle
        cost 2 ranks on 2 cores a fifth of a small model's training step. Work a caller leaves
        without waiting for it still runs within IDLE_PAUSE_MAX."""
        self.runtime.core.set_gentle_waits(True)  # this thread's rounds must not take the main thread's core
        idle_rounds = 0
        while True:
            cycle = self.tuning.cycle_time / 1000.0
            pause = max(cycle, min(cycle * 2 ** min(idle_rounds, 30), IDLE_PAUSE_MAX))
            dozing = pause > cycle
            if dozing != self._dozing:  # a start() queued in the lane rings too
                self.runtime.core.lane_doorbell(self._doorbell.set if dozing else None)
            self._dozing = dozing
            # (a round another thread is running has set last_round but not yet round_ended)
            wake_at = max(self.round_ended + pause, self.last_round + cycle)
            rung = self._doorbell.wait(max(wake_at - time.perf_counter(), 0.0))
            self._doorbell.clear()
            self.thread_wakes += 1
            if self._stop.is_set():
                break
            if time.perf_counter() - self.last_round < cycle:  # a caller ran a round since: it drives them
                if self.no_spare_core:
                    idle_rounds += 1  # and this thread's wakes would only take the core of a rank's computation
                elif rung:
                    idle_rounds = 0
                continue
            if rung:
                idle_rounds = 0
            with self._round_lock:
                if self._stop.is_set() or not self._rounds_or_fail():
                    break
            idle_rounds = 0 if self._activity else idle_rounds + 1

    def halt(self):
        """Stop running rounds (the loop wakes at once)."""
        self._stop.set()
        self.direct_ok = False
        self.runtime.core.lane_open(False)
        self._doorbell.set()

    def _rounds_or_fail(self):
        """One round on every set; False if the engine failed (every handle then has the error)."""
        try:
            self._round_all()
            return True
        except Exception as exc:  # noqa: BLE001 - reported through every handle
            self._fail_everything(exc)
            return False

    def _failure_error(self):
        if isinstance(self.failure, ProgressTimeoutError):
            return self.failure
        return RingtrainError(f"the ringtrain engine stopped: {self.failure}")

    def _fail_everything(self, exc):
        self.failure = exc
        self.direct_ok = False
        self.runtime.core.lane_open(False)
        if 0 in self.sets:
            self._drain_lane(self.sets[0])
        error = self._failure_error()
        for state in self.sets.values():  # before halt(): a waiter that sees the stop finds its error
            for request in list(state.pending.values()) + list(state.queue):
                request.handle.fail(error)
            if state.join_request is not None:
                state.join_request.handle.fail(error)
        self.halt()

    # --- rounds ---------------------------------------------------------------------------
    def _round_all(self):
        self.last_round = time.perf_counter()
        self._activity = False
        for set_id in sorted(self.sets):
            state = self.sets.get(set_id)
            if state is not None and not self._stop.is_set():
                try:
                    self._round(state)
                except self.runtime.core.NoProgressError as exc:
                    raise ProgressTimeoutError(self._no_progress_text(state, getattr(exc, "items", None))) from None
        self.round_ended = time.perf_counter()

    def _no_progress_text(self, state, items, agreeing=None):
        """Why a wait gave up, from the heartbeats' verdict (csrc/liveness.c), in a user's terms."""
        report = self.runtime.core.stall_report()
        me = self.runtime.rank
        if items:
            names = ", ".join(f"'{item.name}'" for item in items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
            what = f"{items[0].signature[0]} {names}"
        else:
            # what this rank waits to agree on: in the round, or queued for the next (a caller
            # that found the engine thread mid-round queues its call behind that round)
            names = agreeing or list(state.pending) + [r.name for r in list(state.queue) if r.name not in state.pending]
            waiting = [f"'{name}'" for name in names[:4]]
            what = (f"a negotiation round of process set {state.id}"
                    + (f" (agreeing on {', '.join(waiting)})" if waiting else ""))
        text = (f"{what} made no progress for {report['quiet']:.1f} s on rank {me} "
                f"(RINGTRAIN_PROGRESS_TIMEOUT={self.runtime.config.progress_timeout:g})")
        culprit, chain, kind = report["culprit"], report["chain"], report["kind"]
        if kind == "silent":
            text += f": rank {culprit} has stopped responding (no heartbeat for {report['age']:.1f} s)"
        elif kind == "stuck":
            text += (f": rank {culprit} is alive but has made no progress for {report['age']:.1f} s and is not waiting "
                     "in ringtrain (is a thread holding its GIL, or is it blocked outside ringtrain?)")
        elif kind == "stalled":
            text += (f": every rank is alive but none has completed a message for {report['age']:.1f} s (rank "
                     f"{culprit} waits in a collective): the ranks wait for each other in a deadlock")
        elif kind == "cycle":
            text += f": ranks {', '.join(str(r) for r in [me] + chain)} wait on each other and none can progress"
        else:
            text += ": no heartbeats to tell whether the ranks it waits on stopped or are slow"
        if kind in ("silent", "stuck") and chain and chain[0] != culprit:
            hops = [f"rank {me} waits on rank {chain[0]}"] + [f"which waits on rank {r}" for r in chain[1:]]
            text += "; " + ", ".join(hops)
        elif report["waited_on"] >= 0 and report["waited_on"] != culprit and kind == "none":
            text += f" (it waited on rank {report['waited_on']})"
        return text + ". The job cannot continue: its ranks are no longer in step."

    def _claims(self, now):
        """Everything this rank has pending, in every set: the global coordinator compares them
        across sets to find a name submitted on different process sets (coordinator.py)."""
        return [Claim(name, state.id, tuple(state.ranks), now - request.submitted, request.kind)
                for state in self.sets.values() for name, request in state.pending.items()]

    def _cross_check_due(self, now):
        """A request pending for CROSS_CHECK_AFTER asks for a cross-set comparison, then again
        every CROSS_CHECK_EVERY while something is still pending that long."""
        if now < self._next_cross_check:
            return False
        oldest = min((r.submitted for st in self.sets.values() for r in st.pending.values()), default=now)
        if now - oldest < CROSS_CHECK_AFTER:
            # nothing is old yet: look again when the oldest could be (a newer request, later)
            self._next_cross_check = min(oldest + CROSS_CHECK_AFTER, now + CROSS_CHECK_AFTER / 2)
            return False
        self._next_cross_check = now + CROSS_CHECK_EVERY
        return True

    def _intake(self, state):
        while state.queue:
            request = state.queue.popleft()
            if request.kind == "join":
                state.join_request = request
                continue
            if request.name in state.pending:
                text = (f"'{request.name}' was submitted twice on rank {self.runtime.rank} "
                        "(the first one has not completed yet)")
                request.handle.fail(RingtrainError(text))
                state.failures_to_report.append(Failure(request.name, FailureKind.DUPLICATE, text))
                continue
            state.pending[request.name] = request

    def _round(self, state):
        if state.id == 0 and self.runtime.core.lane_length() and self._lane_round(state):
            return
        self._intake(state)
        started = time.perf_counter()
        self.rounds += 1
        announce, cached = [], []
        announced, waited, lookup = state.announced, state.waited, state.cache.lookup
        for name, request in state.pending.items():
            if name in announced:
                continue
            if request.kind == "allreduce" and len(request.tensors) == 1:  # by its call key (cached_bit)
                memo = state.cached_bit((name, request.code, request.tensors[0].shape, request.op, request.prescale,
                                         request.postscale), request.signature)
                bit, hit = (memo[1], True) if memo is not None else (None, False)
                if hit and request.origin is not None and state.id == 0:  # its next start() can queue in C
                    request.origin.bit, request.origin.bit_generation = bit, state.cache.generation
            else:
                bit, hit = lookup(name, request.signature())
            if hit and (not waited or waited.get(name, 0) < FALLBACK_ROUNDS):
                cached.append(bit)
            else:
                announce.append(Announcement(name, request.signature()))
        joined = state.join_request is not None
        need_slow = bool(announce or state.failures_to_report or (joined and not state.join_announced))
        if state.coordinator is not None and state.coordinator.needs_slow_round(started):
            need_slow = True
        if self.autotuner is not None and state.id == 0 and self.autotuner.has_news():
            need_slow = True
        if state.id == 0 and self._cross_check_due(started):
            need_slow = True

        # the round's bit vector, built as a Python int (a few hundred ns for a training step's bits)
        mask = 0 if need_slow else 1 << NO_SLOW_PATH_BIT
        for bit in cached:
            mask |= 1 << bit
        if joined:
            mask |= 1 << JOINED_BIT
            for bit, (_, sig) in state.cache.entry.items():
                if sig[0] == "allreduce":
                    mask |= 1 << bit
        if state.size > 1:  # one rank agrees with itself
            words = np.frombuffer(mask.to_bytes(state.cache.words() * 8, "little"), dtype=np.uint64).copy()
            fast = self._fast_candidate(state, cached, announce, need_slow, joined)
            if fast is not None and self._fast_allreduce(state, *fast, words, started):
                return
            if fast is None:  # (the fast path already ran the round's allreduce of bits)
                self.runtime.core.control_band(state.ctrl_handle, words, self.tuning.small_allreduce_threshold)
            mask = int.from_bytes(words.tobytes(), "little")
        self._finish_round(state, mask, announce, joined, started)

    def _finish_round(self, state, mask, announce, joined, started):
        """A round from the agreed bit vector on: the slow path if anyone asked for it, then
        execution of what is ready."""
        no_slow_path = bool(mask >> NO_SLOW_PATH_BIT & 1)
        everyone_joined = bool(mask >> JOINED_BIT & 1)

        ready_at = time.perf_counter()
        items = []
        if not everyone_joined:
            tensors = mask >> FIRST_TENSOR_BIT << FIRST_TENSOR_BIT
            entry, pending = state.cache.entry, state.pending
            while tensors:  # the agreed bits, lowest first
                lowest = tensors & -tensors
                name, signature = entry[lowest.bit_length() - 1]
                items.append(AgreedCollective(name, signature, pending.get(name), ready_at))
                tensors ^= lowest

        if state.pending or state.queue or items or joined or not no_slow_path:
            self._activity = True  # not idle: keep the engine's pace
        if not no_slow_path:  # someone asked for the slow path
            message = RoundMessage(announce, state.failures_to_report, joined and not state.join_announced)
            if state.id == 0:
                message.claims = self._claims(started) or None
                message.waiting = bool(self._waiting)
            response = self._negotiate(state, message)
            state.failures_to_report = []
            state.announced.update(a.name for a in announce)
            if message.join:
                state.join_announced = True
            ready_at = time.perf_counter()
            self._apply(state, response, items, ready_at)

        self.negotiation_seconds += time.perf_counter() - started
        pending, announced, waited = state.pending, state.announced, state.waited
        for item in items:
            if item.request is not None:
                pending.pop(item.name, None)
                if announced:
                    announced.discard(item.name)
                if waited:
                    waited.pop(item.name, None)
        for name in pending:
            if name not in announced:
                waited[name] += 1

        if items and self.timeline is not None and self.timeline.mark_cycles:
            self.timeline.mark("CYCLE_START", started)
        self._execute(state, items)
        if self.autotuner is not None and state.id == 0 and items:
            self.autotuner.observe(self.executor.bytes_reduced, time.perf_counter())

    def _lane_round(self, state):
        """Set 0's round when the persistent lane holds started allreduces (csrc/persistent_lane.c)
        and nothing else is pending: run in C. True if a round ran; False if nothing was sent and
        the lane's entries went to the queue as requests, for the general round."""
        core, t = self.runtime.core, self.tuning
        started = time.perf_counter()
        if (not self.direct_ok or state.pending or state.queue or state.join_request is not None
                or state.failures_to_report
                or (state.coordinator is not None and state.coordinator.needs_slow_round(started))):
            # (closed: what a round in flight handed back after a timeline started, say)
            self._drain_lane(state)
            return False
        words = np.zeros(state.cache.words(), dtype=np.uint64)
        try:
            outcome = core.lane_round(state.ctrl_handle, words, state.handle,
                                      self.executor.fusion_buffer(core.lane_bytes()), t.fusion_threshold,
                                      FALLBACK_ROUNDS, *t.allreduce_args)
        except core.MPIError as exc:
            requests = self._lane_requests(getattr(exc, "entries", ()))
            for request in requests:  # pending: the engine's failure reaches their handles
                state.pending[request.name] = request
            if str(exc).startswith("allreduce"):  # stopped in the data, not in the round's exchange
                exc.items = [AgreedCollective(r.name, r.signature(), r, started) for r in requests]
            raise
        if outcome is None:  # not one fusion group: the general path plans them
            self._drain_lane(state)
            return False
        self.rounds += 1
        self.last_round = started
        self._activity = True
        if isinstance(outcome, int):  # (what the others had not started yet stays in the lane)
            self.executor.bytes_reduced += outcome
            self.negotiation_seconds += time.perf_counter() - started
            return True
        # some rank asked for the slow path: the general path goes on from the agreed bits
        state.queue.extend(self._lane_requests(outcome))
        self._intake(state)
        self._finish_round(state, int.from_bytes(words.tobytes(), "little"), [], False, started)
        return True

    def _drain_lane(self, state):
        state.queue.extend(self._lane_requests(self.runtime.core.lane_take()))

    @staticmethod
    def _lane_requests(entries):
        """The lane's entries as the requests their slow start would have made."""
        requests = []
        for entry in entries:
            tensor, output = entry.arrays()  # (a torch tensor queued in place: a view of it)
            request = Request("allreduce", entry.name, entry.set_id, [tensor], [output], entry.code,
                              entry.op, -1, entry.prescale, entry.postscale)
            request.handle, request.origin = entry.handle, entry
            if entry.result is not None:  # a torch call's tensor: what its Handle returns
                request.handle.finish = lambda _, result=entry.result: result
            requests.append(request)
        return requests

    def _fast_candidate(self, state, cached, announce, need_slow, joined):
        """The steady state of a training loop: every request pending on this set is a cached
        allreduce this round proposes, and together they make exactly one fusion group (or one
        tensor of any size). Returns (them in bit order, their bytes), or None. The fast round sends exactly
        what the general path sends (the same bit vector, then the same allreduce of the same
        packed bytes, planned by the same rule: executor.plan_fusion), so other ranks need not
        take the fast path too; only Python's bookkeeping between the collectives is skipped."""
        pending = state.pending
        if len(cached) != len(pending) or not cached or announce or need_slow or joined or self.timeline:
            return None
        requests = list(pending.values())
        if len(requests) > 1 and any(a > b for a, b in zip(cached, cached[1:])):
            # (cached holds their bits in pending order: every one was a hit) into bit order
            requests = [r for _, r in sorted(zip(cached, requests), key=lambda pair: pair[0])]
        first = requests[0]
        if first.kind != "allreduce":
            return None
        if len(requests) == 1 and len(first.tensors) == 1:
            return requests, first.nbytes
        key, total, t = (first.code, first.op, first.prescale, first.postscale), 0, self.tuning
        for request in requests:
            if request.kind != "allreduce" or (request.code, request.op, request.prescale, request.postscale) != key:
                return None
            nbytes = request.nbytes
            if nbytes >= t.segment_bytes and len(request.tensors) == 1:
                return None  # the general path runs this one on its own
            total += nbytes
        return (requests, total) if total <= t.fusion_threshold else None

    def _fast_allreduce(self, state, requests, total, words, started):
        """Runs the round's bit-vector allreduce and, if every rank proposed exactly these
        tensors, their allreduce (packed if several), in C. False (words holding the agreed
        bits) when the others proposed something else: the general path goes on from there."""
        t, core = self.tuning, self.runtime.core
        first = requests[0]
        if len(requests) == 1:
            srcs, dsts = first.tensors, first.outputs
        else:
            srcs = [x for r in requests for x in r.tensors]
            dsts = [x for r in requests for x in r.outputs]
        try:
            agreed = core.round_allreduce(
                state.ctrl_handle, words, state.handle, srcs, dsts,
                self.executor.fusion_buffer(total) if len(srcs) > 1 else None, first.code, first.op, first.prescale,
                first.postscale, *t.allreduce_args)
        except core.NoProgressError as exc:
            if str(exc).startswith("allreduce"):  # stopped in the data, not in the bit vector
                exc.items = [AgreedCollective(r.name, r.signature(), r, started) for r in requests]
            raise
        if not agreed:
            return False
        self.negotiation_seconds += time.perf_counter() - started
        self._activity = True
        pending, waited = state.pending, state.waited
        for request in requests:
            del pending[request.name]
            if waited:
                waited.pop(request.name, None)
            outputs = request.outputs
            request.handle.complete(outputs[0] if len(outputs) == 1 else list(outputs))
        self.executor.bytes_reduced += total
        if self.autotuner is not None and state.id == 0:
            self.autotuner.observe(self.executor.bytes_reduced, time.perf_counter())
        return True

    def _execute(self, state, items):
        """Data collectives go to the executor in runs; control requests (process sets,
        shutdown) run in their place in the order, so every rank sees them at the same point."""
        batch = []
        for item in items + [None]:
            if item is not None and item.signature[0] not in CONTROL_KINDS:
                batch.append(item)
                continue
            failures = self.executor.run(state, batch) if batch else {}
            for done in batch:
                if done.name in failures and done.request is not None:
                    error = failures[done.name]
                    done.request.handle.fail(error if isinstance(error, RingtrainError) else RingtrainError(
                        f"{done.signature[0]} '{done.name}' failed: {error}"))
            batch = []
            if item is None:
                break
            kind, payload = item.signature[0], item.signature[2][0] if item.signature[2] else None
            result = None
            if kind == "shutdown":
                self.halt()
            elif kind == "add_process_set":
                result = self.create_set(payload)
            elif kind == "remove_process_set":
                self.remove_set(payload[0])
            if item.request is not None:
                item.request.handle.complete(result)

    def _negotiate(self, state, message):
        """One slow round: every rank's RoundMessage to the coordinator, its Response to all."""
        if self.autotuner is not None and state.id == 0:
            message.params = self.autotuner.take_news() or None
        if state.size == 1:  # the coordinator is this rank: no messages needed
            response = state.coordinator.process({0: message}, state.cache)
            response.params = message.params
            return response
        core, ctrl = self.runtime.core, state.ctrl_handle
        payload = np.frombuffer(json.dumps(message.to_wire()).encode(), dtype=np.uint8)
        sizes = np.zeros(state.size, dtype=np.int64)
        eights = np.full(state.size, 8, dtype=np.int64)
        core.control_gatherv(ctrl, np.array([payload.size], dtype=np.int64).view(np.uint8), sizes.view(np.uint8),
                             eights, 0)
        gathered = np.empty(int(sizes.sum()) if state.rank == 0 else 0, dtype=np.uint8)
        core.control_gatherv(ctrl, payload, gathered, sizes, 0)
        if state.rank == 0:
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            messages = {r: RoundMessage.from_wire(json.loads(gathered[offsets[r]:offsets[r + 1]].tobytes()))
                        for r in range(state.size)}
            response = state.coordinator.process(messages, state.cache)
            response.params = message.params
            reply = np.frombuffer(json.dumps(response.to_wire()).encode(), dtype=np.uint8).copy()
            length = np.array([reply.size], dtype=np.int64)
        else:
            length = np.zeros(1, dtype=np.int64)
        core.control_bcast(ctrl, length.view(np.uint8), 0)
        if state.rank != 0:
            reply = np.empty(int(length[0]), dtype=np.uint8)
        core.control_bcast(ctrl, reply, 0)
        return Response.from_wire(json.loads(reply.tobytes())) if state.rank != 0 else response

    def _apply(self, state, response, items, ready_at):
        for text in response.warnings:
            log.warning("ringtrain: %s", text)
        for failure in response.failures:
            if failure.ranks is not None and state.rank not in failure.ranks:
                continue
            name = failure.name
            request = state.pending.pop(name, None)
            state.announced.discard(name)
            state.waited.pop(name, None)
            state.cache.evict(name)
            if request is not None:
                error_class = StallError if failure.kind is FailureKind.STALL else RingtrainError
                request.handle.fail(error_class(failure.text))
        debug = log.isEnabledFor(logging.DEBUG)
        for ready in response.ready:
            if debug:
                log.debug("negotiated %s '%s' on process set %d (cache bit %s)", ready.signature[0], ready.name,
                          state.id, ready.bit)
            if ready.bit is not None:
                state.cache.assign(ready.name, ready.signature, ready.bit)
            request = state.pending.get(ready.name)
            if request is None and state.join_request is None:
                raise RingtrainError(f"internal: response for '{ready.name}' which rank {self.runtime.rank} "
                                     "never submitted")
            items.append(AgreedCollective(ready.name, ready.signature, request, ready_at))
        for failure in response.set_failures:
            for rank, set_id in failure.targets:
                other = self.sets.get(set_id)
                if rank != self.runtime.rank or other is None:
                    continue
                request = other.pending.pop(failure.name, None)
                other.waited.pop(failure.name, None)
                other.cache.evict(failure.name)
                if failure.name in other.announced:  # the set's coordinator forgets it, and owes it to latecomers
                    other.announced.discard(failure.name)
                    other.failures_to_report.append(Failure(failure.name, FailureKind.PROCESS_SET, failure.text))
                if request is not None:
                    request.handle.fail(RingtrainError(failure.text))
        if response.params:
            self.tuning.update(response.params)
        if response.join_done is not None:
            if state.join_request is not None:
                state.join_request.handle.complete(response.join_done)
            state.join_request = None
            state.join_announced = False

    # --- process sets ---------------------------------------------------------------------
    def create_set(self, ranks):
        """Collective over the global set, run by the executor at the same point on every rank."""
        MPI = self.MPI
        member = self.runtime.rank in ranks
        comm = self.sets[0].comm.Split(0 if member else MPI.UNDEFINED, self.runtime.rank)
        set_id = self.next_set_id
        self.next_set_id += 1
        if member:
            self.sets[set_id] = ProcessSetState(set_id, list(ranks), comm, self.runtime.config)
            self._update_direct()
        return set_id

    def remove_set(self, set_id):
        state = self.sets.pop(set_id, None)
        self._update_direct()
        if state is not None:
            for request in list(state.pending.values()) + list(state.queue):
                request.handle.fail(RingtrainError(f"process set {set_id} was removed"))
            state.free()

    # --- timeline -------------------------------------------------------------------------
    def start_timeline(self, path, mark_cycles=False):
        from .timeline import Timeline

        if self.runtime.rank == 0:
            old, self.timeline = self.timeline, Timeline(path, mark_cycles)
            if old is not None:
                old.close()
            self._update_direct()

    def stop_timeline(self):
        old, self.timeline = self.timeline, None
        self._update_direct()
        if old is not None:
            old.close()

    # --- shutdown -------------------------------------------------------------------------
    def stop(self):
        """After every rank's shutdown request has run (so all stop at the same round)."""
        self.halt()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)
        self.stop_timeline()
        for set_id in sorted(self.sets, reverse=True):
            self.sets[set_id].free()
        self.sets.clear()


class TunableSettings:
    """The settings the engine reads on every round; autotune changes them in step on all ranks."""

    FIELDS = ("fusion_threshold", "cycle_time", "small_allreduce_threshold", "segment_bytes",
              "shared_memory_threshold", "hierarchical_threshold")

    def __init__(self, config):
        for field in self.FIELDS:
            setattr(self, field, getattr(config, field))
        self._derive()

    def update(self, params):
        for field, value in params.items():
            if field in self.FIELDS:
                setattr(self, field, value)
        self._derive()

    def _derive(self):
        # what every C allreduce call takes, in its argument order (csrc/module.c)
        self.allreduce_args = (self.small_allreduce_threshold, self.segment_bytes, self.shared_memory_threshold,
                               self.hierarchical_threshold)
