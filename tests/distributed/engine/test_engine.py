"""The background engine under however many ranks run this file (1 in-process; 2, 3, 4 under
tests/test_under_mpiexec.py): async handles, out-of-order submission, fusion, grouped ops,
mismatch errors on every rank, duplicate names, stall warnings, the timeline, join and process
sets. Each test leaves the engine usable for the next one: that is part of what it checks."""
import json
import logging
import os
import re
import tempfile
import time

import numpy as np
import pytest

import ringtrain as rt
from ringtrain import runtime
from ringtrain.engine.requests import UNNAMED_WINDOW


def engine():
    return runtime.current("test").engine


def test_async_handles_poll_and_synchronize():
    size, rank = rt.size(), rt.rank()
    handles = [rt.allreduce_async(np.full(7, rank + i, dtype=np.float32), op=rt.Sum, name=f"async.{i}")
               for i in range(5)]
    results = [rt.synchronize(h) for h in handles]
    assert all(rt.poll(h) for h in handles)
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, np.full(7, sum(q + i for q in range(size)), dtype=np.float32))
    buf = np.full(3, float(rank))
    h = rt.allreduce_async_(buf, op=rt.Max, name="async.inplace")
    assert rt.synchronize(h) is buf and (buf == size - 1).all()


def test_every_collective_has_an_async_form():
    size, rank = rt.size(), rt.rank()
    hs = {
        "allgather": rt.allgather_async(np.full((rank + 1, 2), rank), name="a.gather"),
        "broadcast": rt.broadcast_async(np.full(4, rank), root_rank=size - 1, name="a.bcast"),
        "reducescatter": rt.reducescatter_async(np.ones((size * 2, 3)), op=rt.Sum, name="a.rs"),
        "alltoall": rt.alltoall_async(np.arange(size) + 10 * rank, name="a.a2a"),
        "grouped": rt.grouped_allreduce_async([np.ones(3), np.ones(2)], op=rt.Sum, name="a.grouped"),
    }
    assert rt.synchronize(hs["allgather"]).shape == (size * (size + 1) // 2, 2)
    assert (rt.synchronize(hs["broadcast"]) == size - 1).all()
    assert (rt.synchronize(hs["reducescatter"]) == size).all()
    out, received = rt.synchronize(hs["alltoall"])
    np.testing.assert_array_equal(out, [rank + 10 * q for q in range(size)])
    assert [r.tolist() for r in rt.synchronize(hs["grouped"])] == [[size] * 3, [size] * 2]


def test_ranks_may_submit_in_any_order():
    """Each rank submits the same named tensors in its own order, at different times."""
    size, rank = rt.size(), rt.rank()
    names = [f"ooo.{i}" for i in range(12)]
    order = np.random.default_rng(rank).permutation(len(names))
    handles = {}
    for k, i in enumerate(order):
        if k == 6:
            time.sleep(0.02 * rank)  # ranks also arrive at different times
        handles[names[i]] = rt.allreduce_async(np.full(100 + i, float(i * (rank + 1))), op=rt.Sum, name=names[i])
    for i, name in enumerate(names):
        expected = sum(i * (q + 1) for q in range(size))
        np.testing.assert_array_equal(rt.synchronize(handles[name]), np.full(100 + i, float(expected)))


def test_repeated_steps_use_the_response_cache():
    """After the first step, named tensors are negotiated by the bit-vector fast path."""
    grads = [np.full(50 + i, float(rt.rank())) for i in range(6)]
    state = engine().sets[0]
    for step in range(5):
        handles = [rt.allreduce_async(g, op=rt.Sum, name=f"cached.grad{i}") for i, g in enumerate(grads)]
        for h in handles:
            assert (rt.synchronize(h) == sum(range(rt.size()))).all()
    assert all(f"cached.grad{i}" in state.cache.bits_of for i in range(6))


def test_unnamed_calls_of_several_shapes_per_step_stay_cached():
    """Unnamed names recur in call order from a window of 512. With 3 calls per step, each name
    meets the 3 shapes in turn (3 does not divide 512); each (name, shape) keeps its own cache
    bit, so the loop stays on the cached path instead of being negotiated on every call."""
    state = engine().sets[0]
    xs = [np.full(n, rt.rank() + 1.0) for n in (1, 2, 3)]
    total = sum(range(1, rt.size() + 1))
    for step in range(560):  # > 3 x 512 calls: every name has met every shape
        for x in xs:
            assert (rt.allreduce(x, op=rt.Sum) == total).all()
    if rt.size() > 1:  # (one rank negotiates nothing)
        held = [len(state.cache.bits_of.get(f"allreduce.noname.{n}", ())) for n in range(512)]
        assert min(held) >= 3, held
        generation = state.cache.generation
        for step in range(50):
            for x in xs:
                rt.allreduce(x, op=rt.Sum)
        assert state.cache.generation == generation, "a repeated unnamed call was negotiated again"


def test_fusion_matches_unfused_results():
    size, rank = rt.size(), rt.rank()
    tensors = [np.random.default_rng([rank, i]).standard_normal(17 * i + 1).astype(np.float32) for i in range(40)]
    expected = [sum(np.random.default_rng([q, i]).standard_normal(17 * i + 1).astype(np.float32).astype(np.float64)
                    for q in range(size)) / size for i in range(40)]
    tuning = engine().tuning
    for threshold in (0, 1000, 64 << 20):
        saved = tuning.fusion_threshold
        tuning.fusion_threshold = threshold
        try:
            handles = [rt.allreduce_async(t, name=f"fuse.{threshold}.{i}") for i, t in enumerate(tensors)]
            for h, e in zip(handles, expected):
                np.testing.assert_allclose(rt.synchronize(h), e, rtol=1e-5, atol=1e-6)
        finally:
            tuning.fusion_threshold = saved


def test_grouped_ops_complete_together():
    size, rank = rt.size(), rt.rank()
    group = [np.full((3, 2), rank, dtype=np.int32), np.full(5, rank, dtype=np.int32), np.zeros((0,), np.int32)]
    out = rt.grouped_allreduce(group, op=rt.Sum, name="grouped.ar")
    total = sum(range(size))
    assert [o.tolist() for o in out] == [np.full((3, 2), total).tolist(), [total] * 5, []]
    gathered = rt.grouped_allgather([np.full((rank + 1, 2), rank), np.full(rank, rank)], name="grouped.ag")
    np.testing.assert_array_equal(gathered[0], np.concatenate([np.full((q + 1, 2), q) for q in range(size)]))
    np.testing.assert_array_equal(gathered[1], np.concatenate([np.full(q, q) for q in range(size)]))
    rows = 2 * size + 1
    a, b = np.arange(rows * 3, dtype=np.float64).reshape(rows, 3), np.arange(size + 2, dtype=np.float64)
    scattered = rt.grouped_reducescatter([a, b], op=rt.Sum, name="grouped.rs")
    for tensor, share in zip((a, b), scattered):
        counts = [len(c) for c in np.array_split(np.arange(len(tensor)), size)]
        start = sum(counts[:rank])
        np.testing.assert_array_equal(share, size * tensor[start:start + counts[rank]])


MISMATCHES = {
    "shape": (lambda r: rt.allreduce(np.zeros((2, 3) if r == 0 else (3, 2)), name="mm.shape"),
              r"Mismatched allreduce shapes for 'mm.shape': rank 0 has \(2, 3\), but rank 1 has \(3, 2\)"),
    "dtype": (lambda r: rt.allreduce(np.zeros(3, np.float32 if r == 0 else np.float64), name="mm.dtype"),
              r"Mismatched allreduce dtypes for 'mm.dtype': rank 0 has float32, but rank 1 has float64"),
    "op": (lambda r: rt.allreduce(np.zeros(3), op=rt.Sum if r == 0 else rt.Max, name="mm.op"),
           r"Mismatched allreduce ops for 'mm.op': rank 0 has Sum, but rank 1 has Max"),
    "root": (lambda r: rt.broadcast(np.zeros(3), root_rank=0 if r == 0 else 1, name="mm.root"),
             r"Mismatched broadcast root ranks for 'mm.root': rank 0 has 0, but rank 1 has 1"),
    "prescale": (lambda r: rt.allreduce(np.zeros(3), prescale_factor=1.0 if r == 0 else 2.0, name="mm.pre"),
                 r"Mismatched allreduce prescale factors for 'mm.pre': rank 0 has 1.0, but rank 1 has 2.0"),
    "collective": (lambda r: (rt.allreduce if r == 0 else rt.allgather)(np.zeros(3), name="mm.kind"),
                   r"Mismatched collective for 'mm.kind': rank 0 called allreduce, but rank 1 called allgather"),
}


def test_a_cached_tensor_called_with_another_shape_on_one_rank_fails_on_every_rank():
    """After two agreed calls the name is in the steady state (allreduce_now); a rank that then
    changes its shape is still caught by negotiation, on every rank, and the job goes on."""
    if rt.size() == 1:
        pytest.skip("a mismatch needs two ranks; runs under mpiexec")
    for _ in range(3):
        assert rt.allreduce(np.ones(4), op=rt.Sum, name="mm.cached").tolist() == [rt.size()] * 4
    last = rt.size() - 1
    with pytest.raises(rt.RingtrainError, match=rf"Mismatched allreduce shapes for 'mm.cached': rank 0 has \(4,\), "
                                                 rf"but rank {last} has \(5,\)"):
        rt.allreduce(np.ones(5 if rt.rank() == last else 4), op=rt.Sum, name="mm.cached")
    assert rt.allreduce(np.ones(2), op=rt.Sum, name="mm.cached.after").tolist() == [rt.size()] * 2


def test_the_steady_path_pairs_with_ranks_taking_the_general_path():
    """With a timeline on (rank 0 only records one), rank 0 takes the general path while the
    others run repeated calls in one C call each: the rounds still pair up, small and large."""
    path = rt.broadcast_object(os.path.join(tempfile.gettempdir(), f"ringtrain-mixed-{os.getpid()}-{rt.size()}.json"))
    eng = engine()
    before = eng.direct_calls
    rt.start_timeline(path)
    try:
        for n in (3, 5000, 300_001):  # data with the round's bits, and after it (ring)
            # a call takes the steady path only if its engine thread is between rounds; rank 0's
            # general path keeps the others' engines busy, so on oversubscribed cores (4 ranks on
            # 2) it takes a number of calls before one finds its engine idle
            for step in range(16):
                x = np.full(n, float(rt.rank() + step), np.float32)
                out = rt.allreduce(x, op=rt.Sum, name=f"mixed.{n}")
                assert (out == sum(q + step for q in range(rt.size()))).all(), (n, step)
    finally:
        rt.stop_timeline()
        if rt.rank() == 0:
            os.unlink(path)
    if rt.rank() == 0:
        assert eng.direct_calls == before  # a timeline's spans come from the general path
    else:
        assert eng.direct_calls > before, "no call took the steady path"
    rt.barrier()


def test_persistent_allreduces_queue_in_c_once_negotiated_and_pair_with_the_general_path():
    """Once negotiated, a persistent allreduce's start() queues it in the C lane and the round runs
    in C. Rank 0 records a timeline for part of the steps (its lane is closed: the general path)
    while the others use the lane; the last rank starts the second half of the tensors late, so
    rounds agree on some of them first. Results match numpy at every step, and a fusion
    threshold of 0 (every tensor alone) between steps changes nothing but the grouping."""
    eng, core = engine(), runtime.current("test").core
    size, rank = rt.size(), rt.rank()
    # several fusion groups: a tensor of more than a segment runs alone, float64 ones apart; the
    # group of 3 to 2501 floats is large enough for shared memory, taken without packing
    kinds = [(1, np.float32), (7, np.float64), (300_001, np.float32), (3, np.float32), (64, np.float32),
             (2000, np.float32), (2501, np.float32), (5, np.float64), (2, np.float32), (33, np.float32)]
    buffers = [np.empty(n, dtype) for n, dtype in kinds]
    made = [rt.allreduce_init(b, op=rt.Sum, name=f"lane.{i}") for i, b in enumerate(buffers)]
    path = rt.broadcast_object(os.path.join(tempfile.gettempdir(), f"ringtrain-lane-{os.getpid()}-{size}.json"))
    queued = []
    for step in range(12):
        timeline = 6 <= step < 9
        if timeline:
            rt.start_timeline(path) if step == 6 else None
        elif step == 9:
            rt.stop_timeline()
        for i, b in enumerate(buffers):
            b[...] = rank + step + i
        eng.tuning.fusion_threshold = 0 if step % 4 == 3 else 64 << 20  # every rank between the same steps
        with eng._round_lock:  # no round takes them while they are started
            handles = [p.start() for p in made[:4]]
            queued.append(core.lane_length())
        if rank == size - 1:
            time.sleep(0.05)
        handles += [p.start() for p in made[4:]]
        for i, (b, h) in enumerate(zip(buffers, handles)):
            assert rt.synchronize(h) is b
            assert (b == sum(q + step + i for q in range(size))).all(), (step, i, b[:3])
    eng.tuning.fusion_threshold = 64 << 20
    if rank == 0:
        os.unlink(path)
    assert queued[0] == 0 and queued[-1] == 4, queued  # first start: negotiated; then in C
    if rank == 0 and size > 1:
        assert queued[7] == 0, queued  # with a timeline the lane is closed
    rt.barrier()


def test_a_persistent_allreduce_in_the_lane_still_finds_a_mismatch():
    """After steady steps in the lane, the last rank makes the same name with another shape: its
    start is negotiated, rank 0's waits in C for FALLBACK_ROUNDS and is then announced too, and
    every rank gets the mismatch. The job goes on."""
    if rt.size() == 1:
        pytest.skip("a mismatch needs two ranks; runs under mpiexec")
    x = np.ones(4, np.float32)
    persistent = rt.allreduce_init(x, op=rt.Sum, name="lane.mm")
    for _ in range(3):
        x[...] = 1
        assert rt.synchronize(persistent.start()).tolist() == [rt.size()] * 4
    last = rt.size() - 1
    if rt.rank() == last:
        persistent = rt.allreduce_init(np.ones(5, np.float32), op=rt.Sum, name="lane.mm")
    with pytest.raises(rt.RingtrainError, match=rf"Mismatched allreduce shapes for 'lane.mm': rank 0 has \(4,\), "
                                                 rf"but rank {last} has \(5,\)"):
        rt.synchronize(persistent.start())
    assert rt.allreduce(np.ones(2), op=rt.Sum, name="lane.mm.after").tolist() == [rt.size()] * 2


def test_named_async_allreduces_queue_in_c_once_negotiated_and_fall_back_when_anything_changes():
    """A named allreduce_async(_) queues in the C lane from the third call of its name with the
    same signature (the first is negotiated, the second is taught its bit). Rank 0 records a
    timeline for some steps (its lane is closed) while the others use the lane; the last rank
    calls the second half late; one name changes shape for a step and back; a second call of a
    name in flight is refused with the engine's duplicate-name error. Results match numpy."""
    eng, core = engine(), runtime.current("test").core
    size, rank = rt.size(), rt.rank()
    sizes = [1, 7, 300_001, 3, 64, 2000, 2501, 5]
    buffers = [np.empty(n, np.float32 if i % 3 else np.float64) for i, n in enumerate(sizes)]
    path = rt.broadcast_object(os.path.join(tempfile.gettempdir(), f"ringtrain-async-lane-{os.getpid()}-{size}.json"))
    queued = []
    for step in range(10):
        if step == 5:
            rt.start_timeline(path)
        elif step == 7:
            rt.stop_timeline()
        odd = step == 3  # buffer 1 changes shape for this step only
        arrays = list(buffers)
        if odd:
            arrays[1] = np.empty(8, np.float32)
        for i, b in enumerate(arrays):
            b[...] = rank + step + i
        with eng._round_lock:  # no round takes them while they are submitted
            before = core.lane_length()
            handles = [rt.allreduce_async_(b, op=rt.Sum, name=f"alane.{i}") for i, b in enumerate(arrays[:4])]
            queued.append(core.lane_length() - before)
            with pytest.raises(ValueError, match="an operation named 'alane.0' is already in flight"):
                rt.allreduce_async_(arrays[0], op=rt.Sum, name="alane.0")
        if rank == size - 1:
            time.sleep(0.05)
        handles += [rt.allreduce_async(b, op=rt.Sum, name=f"alane.{i + 4}") for i, b in enumerate(arrays[4:])]
        for i, (b, h) in enumerate(zip(arrays, handles)):
            result = rt.synchronize(h)
            assert (result is b) if i < 4 else (result is not b)
            assert (result == sum(q + step + i for q in range(size))).all(), (step, i, result[:3])
    if rank == 0:
        os.unlink(path)
    # first call negotiated, second taught, then in C; the changed shape and back are negotiated
    # or taught again (as is every name when the cache changed that step)
    assert queued[:2] == [0, 0] and queued[2] == 4 and queued[4] < 4 and queued[-1] == 4, queued
    if size > 1:
        assert (queued[5] == 0) == (rank == 0), queued  # with a timeline rank 0's lane is closed
    rt.barrier()


def test_steady_synchronous_calls_run_in_c_and_unnamed_ones_keep_one_count_of_names():
    """allreduce(_) of a tensor the engine has taught its bit is csrc/persistent_lane.c's
    lane_allreduce alone. Unnamed calls are named from one counter whichever path takes them:
    here every step also makes an unnamed call through a memoryview (not an ndarray: the
    Python path), and on rank 0 one step records a timeline (its lane closed). Were the two
    paths to count names apart, the ranks' names would drift and the calls mismatch or hang."""
    core, size, rank = runtime.current("test").core, rt.size(), rt.rank()
    before = core.lane_direct_calls()
    path = rt.broadcast_object(os.path.join(tempfile.gettempdir(), f"ringtrain-sync-lane-{os.getpid()}-{size}.json"))
    x, y = np.empty(5, np.float32), np.empty((2, 3), np.int64)
    for step in range(8):
        if step == 4 and rank == 0:
            rt.start_timeline(path)
        elif step == 5 and rank == 0:
            rt.stop_timeline()
        x[...], y[...] = rank + step, rank - step
        assert rt.allreduce_(x, op=rt.Sum, name="sync.lane.x") is x
        assert (x == sum(q + step for q in range(size))).all(), (step, x)
        out = rt.allreduce(y, op=rt.Max)  # unnamed, out of place
        assert out is not y and (out == size - 1 - step).all() and (y == rank - step).all(), (step, out)
        viewed = rt.allreduce(memoryview(np.full(3, float(rank + 1))), op=rt.Sum)  # unnamed, the Python path
        assert (viewed == size * (size + 1) / 2).all(), (step, viewed)
        assert rt.allreduce_(y, op=rt.Min) is y and (y == -step).all(), (step, y)  # unnamed, in place
    if rank == 0:
        os.unlink(path)
    # the named call, from its third step on (unnamed names are new for 512 calls); a call whose
    # round met another rank's engine-thread round goes the general way instead
    if size > 1:
        assert core.lane_direct_calls() - before >= 1, "no steady named call ran in C"
    before = core.lane_direct_calls()
    z = np.empty(2, np.float32)
    for call in range(3 * UNNAMED_WINDOW):  # the window's names negotiated, taught, then recurring in C
        z[...] = call
        assert (rt.allreduce_(z, op=rt.Sum) == size * call).all(), call
    if size > 1:
        assert core.lane_direct_calls() - before >= UNNAMED_WINDOW // 8, "the steady unnamed calls did not run in C"
    rt.barrier()


@pytest.mark.parametrize("no_spare_core", [True, False])
def test_while_callers_drive_the_rounds_the_engine_thread_backs_off_only_without_a_core_to_spare(no_spare_core):
    """Synchronous calls run their rounds in the caller's thread. With as many ranks as cores
    the engine thread then backs off as when idle (each of its wakes would preempt a rank's
    computation); with a core to spare it keeps its cycle. Either way an async allreduce
    that nobody waits for completes, from the engine thread alone."""
    eng = engine()
    saved, eng.no_spare_core = eng.no_spare_core, no_spare_core
    x = np.ones(3, np.float32)
    try:
        rt.allreduce_(x, name="drive.warm")
        rt.barrier()
        wakes, started, more = eng.thread_wakes, time.perf_counter(), True
        while more:  # about 0.3 s of calls; every rank stops after the same call
            rt.allreduce_(x, op=rt.Max, name="drive.x")
            late = np.array([time.perf_counter() - started >= 0.3], np.int64)
            more = not rt.allreduce(late, op=rt.Max, name="drive.more")[0]
        cycles = (time.perf_counter() - started) / (eng.tuning.cycle_time / 1000.0)
        woke = eng.thread_wakes - wakes
        if no_spare_core:
            assert woke < cycles / 20, (woke, cycles)  # a pause doubling up to 100 ms: about ten
        elif rt.size() > 1:  # (one rank's calls need no rounds: its engine thread is idle, and backs off)
            assert woke > cycles / 10, (woke, cycles)  # about one per cycle (later under load)
        handle = rt.allreduce_async(np.full(4, 2.0), op=rt.Sum, name="drive.left")
        while not rt.poll(handle):  # nobody waits: the engine thread runs the round
            time.sleep(0.001)
        assert rt.synchronize(handle).tolist() == [2.0 * rt.size()] * 4
    finally:
        eng.no_spare_core = saved
    rt.barrier()


def test_a_named_async_allreduce_in_the_lane_still_finds_a_mismatch():
    """After steady steps in the lane, the last rank calls the name with another shape: every
    rank gets the mismatch, and the job goes on."""
    if rt.size() == 1:
        pytest.skip("a mismatch needs two ranks; runs under mpiexec")
    x = np.ones(4, np.float32)
    for _ in range(3):
        x[...] = 1
        assert rt.synchronize(rt.allreduce_async_(x, op=rt.Sum, name="alane.mm")).tolist() == [rt.size()] * 4
    last = rt.size() - 1
    y = np.ones(5 if rt.rank() == last else 4, np.float32)
    with pytest.raises(rt.RingtrainError, match=rf"Mismatched allreduce shapes for 'alane.mm': rank 0 has \(4,\), "
                                                 rf"but rank {last} has \(5,\)"):
        rt.synchronize(rt.allreduce_async_(y, op=rt.Sum, name="alane.mm"))
    assert rt.allreduce(np.ones(2), op=rt.Sum, name="alane.mm.after").tolist() == [rt.size()] * 2


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_mismatch_raises_on_every_rank(case):
    if rt.size() == 1:
        pytest.skip("a mismatch needs two ranks; runs under mpiexec")
    call, message = MISMATCHES[case]
    with pytest.raises(rt.RingtrainError, match=message):
        call(rt.rank())
    # and the job goes on: the same name works once the ranks agree
    assert rt.allreduce(np.ones(2), op=rt.Sum, name=f"after.{case}").tolist() == [rt.size()] * 2


def test_ranks_whose_programs_diverge_get_an_error_naming_what_each_waits_for():
    """One rank skips a collective (as a failed check would make it skip the rest of a test) and
    goes on to the next one: every rank is then blocked on a name the others never submit. Each
    gets an error naming both sides, within seconds, and the job goes on in step."""
    if rt.size() == 1:
        pytest.skip("a divergence needs two ranks; runs under mpiexec")
    late = rt.size() - 1
    others = ", ".join(str(r) for r in range(late))
    expected = (rf"The ranks' programs diverged: every rank is blocked waiting for a collective that other ranks "
                rf"did not submit, so none can complete: rank\(s\) {others} wait for allreduce 'div.check', which "
                rf"rank\(s\) {late} did not submit; rank\(s\) {late} wait for broadcast 'div.next', which rank\(s\) "
                rf"{others} did not submit")
    with pytest.raises(rt.RingtrainError, match=expected):  # (the suite's deadline catches a hang)
        if rt.rank() != late:
            rt.allreduce(np.ones(3), name="div.check")
        rt.broadcast(np.zeros(2), root_rank=0, name="div.next")
    if rt.rank() != late:  # owed: the name the late rank failed on fails here too, at once
        with pytest.raises(rt.RingtrainError, match="programs diverged"):
            rt.broadcast(np.zeros(2), root_rank=0, name="div.next")
    assert rt.allreduce(np.ones(2), op=rt.Sum, name="div.after").tolist() == [rt.size()] * 2


def test_a_caller_blocked_in_synchronize_is_counted_until_it_returns():
    # While a thread waits on a handle, the engine thread's own waits must not nap (csrc/p2p.c:
    # across hosts the naps halved a large transfer's throughput); the count must come back to 0.
    import threading
    core = runtime.current("test").core
    assert core.callers_waiting() == 0
    results = []
    with engine()._round_lock:  # no round can run: the waiter blocks inside wait()
        handle = rt.allreduce_async(np.ones(5), op=rt.Sum, name="counted.wait")
        waiter = threading.Thread(target=lambda: results.append(rt.synchronize(handle)))
        waiter.start()
        deadline = time.monotonic() + 10
        while core.callers_waiting() == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert core.callers_waiting() == 1
    waiter.join(timeout=30)
    assert not waiter.is_alive() and results[0].tolist() == [rt.size()] * 5
    assert core.callers_waiting() == 0


def test_a_name_submitted_twice_is_a_value_error_at_once_and_the_first_goes_on():
    # no round between the two submissions: the first cannot have completed when the second comes
    with engine()._round_lock:
        first = rt.allreduce_async(np.ones(2), op=rt.Sum, name="twice")
        if rt.rank() == 0:
            mine = np.ones(3)
            with pytest.raises(ValueError, match=r"allreduce: an operation named 'twice' is already in flight on "
                                                 r"rank 0; names of concurrent operations must be unique"):
                rt.allreduce_async_(mine, name="twice")
            assert mine.tolist() == [1.0, 1.0, 1.0]  # nothing was sent or touched
    assert rt.synchronize(first).tolist() == [rt.size()] * 2
    assert rt.allreduce(np.ones(1), op=rt.Sum, name="twice").tolist() == [rt.size()]  # reusable once done


def test_stall_inspector_warns_naming_tensor_and_missing_ranks(caplog):
    if rt.size() == 1:
        pytest.skip("a stall needs a rank that is late; runs under mpiexec")
    state = engine().sets[0]
    if state.coordinator is not None:
        state.coordinator.stalls.check_seconds = 0.3
    try:
        with caplog.at_level(logging.WARNING, logger="ringtrain"):
            if rt.rank() == rt.size() - 1:
                time.sleep(1.5)  # the last rank is late ...
            rt.allreduce(np.ones(2), name="stalled.grad")  # ... so the others wait for it
            rt.barrier()
    finally:
        if state.coordinator is not None:
            state.coordinator.stalls.check_seconds = runtime.current("t").config.stall_check_time
    # On a loaded machine an on-time rank can itself be 0.3 s behind the first, so the one warning
    # may list it as missing too; the late rank must be among the missing, never the submitters.
    late = rt.size() - 1
    pattern = (r"Stall: 'stalled.grad' \(allreduce\) was submitted by ranks ([\d, ]+) "
               r"and is still waiting for ranks ([\d, ]+)")
    found = [re.search(pattern, record.getMessage()) for record in caplog.records]
    found = [[[int(r) for r in group.split(",")] for group in m.groups()] for m in found if m]
    assert found, caplog.text
    submitted, waiting = found[0]
    assert late in waiting and late not in submitted and sorted(submitted + waiting) == list(range(rt.size())), \
        caplog.text


def test_timeline_marks_cycles_when_asked():
    path = os.path.join(tempfile.gettempdir(), f"ringtrain-cycles-{os.getpid()}-{rt.size()}.json")
    path = rt.broadcast_object(path)
    for mark_cycles in (True, False):
        rt.start_timeline(path, mark_cycles=mark_cycles)
        for i in range(3):
            rt.allreduce(np.ones(10), name=f"cycles.{i}")
        rt.stop_timeline()
        if rt.rank() == 0:
            with open(path) as f:
                events = json.load(f)
            os.unlink(path)
            marks = [e for e in events if e["name"] == "CYCLE_START"]
            assert (len(marks) >= 3) if mark_cycles else not marks, events
            assert all(e["ph"] == "i" and e["s"] == "g" for e in marks)
        rt.barrier()


def test_timeline_records_every_phase():
    path = os.path.join(tempfile.gettempdir(), f"ringtrain-timeline-{os.getpid()}-{rt.size()}.json")
    path = rt.broadcast_object(path)  # rank 0's path: rank 0 writes
    rt.start_timeline(path)
    handles = [rt.allreduce_async(np.ones(1000 + i, np.float32), name=f"tl.grad{i}") for i in range(4)]
    for h in handles:
        rt.synchronize(h)
    rt.stop_timeline()
    if rt.rank() == 0:
        with open(path) as f:
            events = json.load(f)  # valid JSON
        os.unlink(path)
        rows = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
        phases = {}
        for e in events:
            if e["ph"] == "X":
                phases.setdefault(rows[e["pid"]], set()).add(e["name"])
        for i in range(4):
            got = phases[f"tl.grad{i}"]
            assert {"NEGOTIATE_ALLREDUCE", "WAIT_FOR_DATA"} <= got, got
            if len(got) > 3:  # fused with others
                assert {"MEMCPY_IN_FUSION_BUFFER", "MEMCPY_OUT_FUSION_BUFFER"} <= got, got
            assert any(p.endswith("_ALLREDUCE") and p != "NEGOTIATE_ALLREDUCE" for p in got), got
        assert any("MEMCPY_IN_FUSION_BUFFER" in p for p in phases.values()), "nothing was fused"
    rt.barrier()


def test_join_with_uneven_batches():
    """Rank r has r + 2 batches; ranks that ran out contribute zeros; Average divides by size."""
    size, rank = rt.size(), rt.rank()
    batches = rank + 2
    for step in range(batches):
        result = rt.allreduce(np.full(4, 1.0 + rank), op=rt.Sum, name="join.grad")
        active = [q for q in range(size) if q + 2 > step]
        np.testing.assert_array_equal(result, np.full(4, sum(1.0 + q for q in active)))
        avg = rt.allreduce(np.full(2, 6.0), op=rt.Average, name="join.avg")
        np.testing.assert_allclose(avg, np.full(2, 6.0 * len(active) / size))
    last = rt.join()
    assert last == size - 1
    assert rt.allreduce(np.ones(1), op=rt.Sum, name="after.join").tolist() == [size]


def test_allgather_after_a_rank_joined_fails_at_once_on_every_other_rank():
    """Horovod's pattern: each rank in turn joins while the others call an unnamed allgather.
    The others' unnamed counters drift apart (the joined rank skipped a call), so their names
    differ; the op must fail at once, not wait for a name that never comes."""
    size, rank = rt.size(), rt.rank()
    if size == 1:
        pytest.skip("needs a second rank")
    for first in range(size):
        if rank != first:
            with pytest.raises(rt.RingtrainError, match=r"cannot complete: rank\(s\) \[([\d, ]+)\] have already joined") as info:
                rt.allgather(np.ones((2, 3), np.float32))
            # a slow rank may also see the ranks that failed faster and joined after `first`
            joined = [int(r) for r in re.search(r"\[([\d, ]+)\] have", str(info.value)).group(1).split(",")]
            assert first in joined and rank not in joined, str(info.value)
        assert rt.join() != first
    assert rt.allgather_object(rank, name="after.join.objects") == list(range(size))


def test_process_sets_run_independently():
    size, rank = rt.size(), rt.rank()
    evens = rt.add_process_set([r for r in range(size) if r % 2 == 0])
    odds = rt.add_process_set([r for r in range(size) if r % 2 == 1]) if size > 1 else None
    try:
        mine = evens if rank % 2 == 0 else odds
        members = mine.ranks
        assert mine.included() and mine.size() == len(members) and mine.rank() == members.index(rank)
        # different sets run different collectives at the same time, under the same name
        out = rt.allreduce(np.full(3, float(rank)), op=rt.Sum, name="ps.grad", process_set=mine)
        assert out.tolist() == [float(sum(members))] * 3
        got = rt.broadcast(np.full(2, rank), root_rank=len(members) - 1, process_set=mine, name="ps.bcast")
        assert got.tolist() == [members[-1]] * 2
        assert rt.allgather(np.array([rank]), process_set=mine, name="ps.gather").tolist() == members
        other = odds if rank % 2 == 0 else evens
        if other is not None:
            with pytest.raises(ValueError, match=f"rank {rank} is not a member"):
                rt.allreduce(np.ones(1), process_set=other)
    finally:
        if odds is not None:
            rt.remove_process_set(odds)
        rt.remove_process_set(evens)
    assert rt.allreduce(np.ones(1), op=rt.Sum, name="after.ps").tolist() == [size]


def test_sync_calls_are_async_plus_wait():
    h = rt.allreduce_async(np.ones(3), op=rt.Sum, name="sync.check")
    assert isinstance(h, rt.Handle)
    assert rt.synchronize(h).tolist() == [rt.size()] * 3


def test_background_thread_reduces_while_python_computes():
    """An async allreduce completes while the main thread is busy in Python and never calls
    into ringtrain: the engine's own thread did the work."""
    handle = rt.allreduce_async(np.ones(1 << 20, dtype=np.float32), op=rt.Sum, name="overlap.big")
    deadline = time.monotonic() + 60
    work = 0
    while not rt.poll(handle) and time.monotonic() < deadline:
        work += sum(i * i for i in range(1000))  # pure Python compute, holding the GIL in between
    assert rt.poll(handle), "the background engine did not complete the allreduce"
    assert work > 0
    assert (rt.synchronize(handle) == rt.size()).all()


def test_unnamed_calls_on_a_set_do_not_shift_the_global_names():
    """Only rank 0's set runs unnamed ops; the unnamed global ops after them still match up."""
    size, rank = rt.size(), rt.rank()
    solo = rt.add_process_set([0])
    try:
        if rank == 0:
            for _ in range(3):
                assert rt.allreduce(np.ones(2), op=rt.Sum, process_set=solo).tolist() == [1, 1]
            assert rt.broadcast_object({"from": "set"}, process_set=solo, name="solo.obj") == {"from": "set"}
            assert rt.allgather_object(rank, process_set=solo) == [0]
        handles = [rt.allreduce_async(np.full(3, float(rank)), op=rt.Sum) for _ in range(2)]
        expected = float(sum(range(size)))
        assert all(rt.synchronize(h).tolist() == [expected] * 3 for h in handles)
    finally:
        rt.remove_process_set(solo)


def test_grouped_calls_return_lists_even_for_one_tensor():
    size, rank = rt.size(), rt.rank()
    out = rt.grouped_allreduce([np.full(2, float(rank))], op=rt.Sum)
    assert isinstance(out, list) and len(out) == 1 and out[0].tolist() == [float(sum(range(size)))] * 2
    gathered = rt.synchronize(rt.grouped_allgather_async([np.array([rank])]))
    assert isinstance(gathered, list) and gathered[0].tolist() == list(range(size))
    shares = rt.grouped_reducescatter([np.ones((size, 2))], op=rt.Sum)
    assert isinstance(shares, list) and shares[0].tolist() == [[size, size]]
    buf = [np.ones(3)]
    out = rt.grouped_allreduce_(buf, op=rt.Sum)
    assert isinstance(out, list) and out[0] is buf[0] and buf[0].tolist() == [size] * 3


def test_names_used_once_are_forgotten_by_the_duplicate_name_check():
    from ringtrain.engine.engine import HOLDERS_PRUNE_AT

    x = np.ones(1)
    for i in range(HOLDERS_PRUNE_AT + 500):  # a new name every call, as a loop with f"step{i}" names makes
        rt.allreduce_(x, op=rt.Max, name=f"once.{i}")
    assert len(engine().sets[0].holders) <= HOLDERS_PRUNE_AT
