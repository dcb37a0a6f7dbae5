"""Whole programs that go wrong, as users would write them, under real mpiexec: every rank must
end with a clear error (not a hang), within a bounded time."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from ringtrain.launch import run_mpiexec

DEADLINE = 30  # seconds: the bound for a wrong program to end on every rank


def left_behind(path, within=10.0):
    """Processes still running `path` once they have had `within` seconds to finish dying: when
    mpiexec returns after an abort, the ranks it SIGKILLed may still be leaving the process table
    (a rank stopped with SIGSTOP is woken to die). Any that remain are killed, and returned."""
    deadline = time.monotonic() + within
    while True:
        pids = subprocess.run(["pgrep", "-f", path], capture_output=True, text=True).stdout.split()
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def script(code):
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    f.write(textwrap.dedent(code))
    f.close()
    return f.name


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_mismatched_program_fails_on_every_rank_in_bounded_time(ranks):
    path = script("""
        import numpy as np, ringtrain as rt
        rt.init()
        r = rt.rank()
        # the last rank builds its gradient with the dimensions swapped
        grad = np.zeros((64, 128) if r == rt.size() - 1 else (128, 64), dtype=np.float32)
        try:
            rt.allreduce(grad, name="grad/fc1")
        except rt.RingtrainError as error:
            print(f"caught {type(error).__module__}.{type(error).__name__}: {error}", flush=True)
            # The engine still works after a mismatch. The barrier also makes every rank print before the
            # first one exits: mpiexec kills the rest as soon as one rank exits non-zero.
            rt.barrier()
            raise
        print("unreachable")
    """)
    run = run_mpiexec(ranks, [sys.executable, path], timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.unlink(path)
    assert not run.timed_out, f"the mismatched job hung:\n{run.output[-3000:]}"
    assert run.seconds < DEADLINE, f"took {run.seconds:.1f}s"
    assert run.returncode != 0
    message = (f"Mismatched allreduce shapes for 'grad/fc1': rank 0 has (128, 64), "
               f"but rank {ranks - 1} has (64, 128)")
    for rank in range(ranks):
        assert f"caught ringtrain.errors.RingtrainError: {message}" in run.rank_output(rank), run.output[-3000:]
    assert "unreachable" not in run.output


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_a_collective_the_other_ranks_never_call_fails_on_every_rank(ranks):
    # rank 0 waits in an allreduce that the others skip; they reach the end of the program
    path = script("""
        import numpy as np, ringtrain as rt
        rt.init()
        if rt.rank() == 0:
            rt.allreduce(np.ones(4), name="grad/only_rank0")
        print("finished", flush=True)
    """)
    run = run_mpiexec(ranks, [sys.executable, path], timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.unlink(path)
    assert not run.timed_out, f"the job hung:\n{run.output[-3000:]}"
    assert run.seconds < DEADLINE, f"took {run.seconds:.1f}s"
    assert run.returncode != 0
    # every rank that skipped it is named; which of them had already left depends on timing
    found = re.search(r"RingtrainError: allreduce 'grad/only_rank0' cannot complete: rank\(s\) \[([\d, ]+)\] did not "
                      r"submit it; rank\(s\) \[([\d, ]+)\] called shutdown\(\) \(or reached the end of the program\) "
                      r"without submitting it", run.rank_output(0))
    assert found, run.output[-3000:]
    assert set(map(int, found.group(1).split(","))) == set(range(1, ranks)), run.output[-3000:]
    assert set(map(int, found.group(2).split(","))) <= set(range(1, ranks)), run.output[-3000:]
    for rank in range(1, ranks):
        assert (f"ringtrain: rank {rank}: ringtrain.errors.RingtrainError: shutdown() cannot complete: the other "
                f"ranks still wait for allreduce 'grad/only_rank0', submitted by rank(s) [0]") in run.rank_output(rank), \
            run.output[-3000:]


def test_stall_warns_then_fails_after_the_shutdown_time():
    path = script("""
        import time, numpy as np, ringtrain as rt
        rt.init()
        if rt.rank() == 0:
            try:
                rt.allreduce(np.ones(3), name="grad/stuck")
            except rt.StallError as e:
                print("caught StallError:", e, flush=True)
        else:
            time.sleep(5)   # never submits grad/stuck
        rt.barrier()
        print("finished", flush=True)
    """)
    env = dict(os.environ, PYTHONUNBUFFERED="1", RINGTRAIN_STALL_CHECK_TIME="1", RINGTRAIN_STALL_SHUTDOWN_TIME="3")
    run = run_mpiexec(2, [sys.executable, path], timeout=DEADLINE + 30, env=env)
    os.unlink(path)
    assert run.ok, run.output[-3000:]
    stall = "Stall: 'grad/stuck' (allreduce) was submitted by ranks 0 and is still waiting for ranks 1"
    for rank in (0, 1):  # the warning is logged on every rank
        assert f"ringtrain: {stall} after" in run.rank_output(rank), run.output[-3000:]
    assert f"caught StallError: {stall}" in run.rank_output(0) and "RINGTRAIN_STALL_SHUTDOWN_TIME=3" in run.output
    assert run.output.count("finished") == 2


def test_timeline_is_valid_json_after_a_kill():
    trace = os.path.join(tempfile.gettempdir(), f"ringtrain-killed-{os.getpid()}.json")
    path = script("""
        import numpy as np, ringtrain as rt
        rt.init()
        print("running", flush=True)
        i = 0
        while True:
            hs = [rt.allreduce_async(np.ones(1000), name=f"g{k}") for k in range(8)]
            [rt.synchronize(h) for h in hs]
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, path], env=dict(os.environ, RINGTRAIN_TIMELINE=trace),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "running"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    os.unlink(path)
    with open(trace) as f:
        events = json.load(f)
    os.unlink(trace)
    names = {e["name"] for e in events}
    assert {"NEGOTIATE_ALLREDUCE", "WAIT_FOR_DATA", "MEMCPY_IN_FUSION_BUFFER", "LOCAL_ALLREDUCE",
            "MEMCPY_OUT_FUSION_BUFFER"} <= names, names


FROZEN_PROGRAM = """
    import os, signal, sys, threading, time
    import numpy as np, ringtrain as rt
    rt.init(progress_timeout=3)
    r, frozen = rt.rank(), {frozen}
    x = np.ones(8 << 20, dtype=np.float32)  # 32 MB: most of a step is spent moving data
    persistent = rt.allreduce_init(x, name="x") if {persistent} else None  # its steady rounds run in C
    if r == frozen and {during}:
        # stops in the middle of whatever it is doing, most likely inside the ring
        threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGSTOP)).start()
    print("started", flush=True)
    started = time.time()
    try:
        for step in range(1_000_000):
            if r == frozen and not {during} and step == 3:
                os.kill(os.getpid(), signal.SIGSTOP)  # before submitting: the others wait in negotiation
            if persistent is not None:
                rt.synchronize(persistent.start())
            else:
                rt.allreduce_(x, name="x")
    except rt.ProgressTimeoutError as error:
        print(f"caught after {{time.time() - started:.1f}} s: {{error}}", flush=True)
        sys.exit(3)
"""


@pytest.mark.parametrize("ranks,frozen,during,persistent", [(2, 1, True, False), (3, 1, True, False),
                                                             (3, 2, False, False), (2, 0, False, False),
                                                             (2, 1, True, True), (3, 0, False, True)])
def test_a_frozen_rank_is_named_on_every_other_rank_and_the_job_ends(ranks, frozen, during, persistent):
    # SIGSTOP: the process neither dies nor answers, MPI sees nothing wrong, only silence
    path = script(FROZEN_PROGRAM.format(frozen=frozen, during=during, persistent=persistent))
    run = run_mpiexec(ranks, [sys.executable, path], timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    leftovers = left_behind(path)
    os.unlink(path)
    assert not run.timed_out, f"the job hung:\n{run.output[-3000:]}"
    assert run.seconds < DEADLINE, f"took {run.seconds:.1f}s"
    assert run.returncode != 0
    assert not leftovers, f"processes left behind: {leftovers}"
    for rank in set(range(ranks)) - {frozen}:
        out = run.rank_output(rank)
        found = re.search(r"caught after ([\d.]+) s: (allreduce 'x'|a negotiation round of process set 0 \(agreeing on "
                          r"'x'\)) made no progress for [\d.]+ s on rank (\d+) \(RINGTRAIN_PROGRESS_TIMEOUT=3\): "
                          rf"rank {frozen} has stopped responding \(no heartbeat for [\d.]+ s\)", out)
        assert found, run.output[-3000:]
        assert int(found.group(3)) == rank
        if not during:
            assert "negotiation round" in found.group(2)


def test_a_slow_rank_is_waited_for_however_short_the_progress_timeout():
    # rank 1 submits 5 s late: it is alive (its engine keeps negotiating), so nobody gives up
    path = script("""
        import time, numpy as np, ringtrain as rt
        rt.init(progress_timeout=0.5)
        if rt.rank() == 1:
            time.sleep(5)
        out = rt.allreduce(np.full(3 << 20, rt.rank() + 1.0), name="late", op=rt.Sum)
        assert (out == 3.0).all()
        print("finished", flush=True)
    """)
    run = run_mpiexec(2, [sys.executable, path], timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.unlink(path)
    assert run.returncode == 0, run.output[-3000:]
    assert run.output.count("finished") == 2


@pytest.mark.parametrize("ranks", [3, 4])
def test_a_process_set_mismatch_fails_on_every_rank_without_a_stall_setting(ranks):
    # rank 0 calls 't' on the set [0, 1], every other rank on the global set: neither can complete
    path = script("""
        import time, numpy as np, ringtrain as rt
        pair = rt.ProcessSet([0, 1])
        rt.init(process_sets=[pair])
        started = time.time()
        try:
            rt.allreduce(np.ones(4), name="t", process_set=pair if rt.rank() == 0 else rt.global_process_set)
            print("unreachable", flush=True)
        except rt.RingtrainError as error:
            print(f"caught after {time.time() - started:.2f} s: {error}", flush=True)
        # the engine is still in step: both sets keep working
        assert (rt.allreduce(np.ones(2), name="after", op=rt.Sum) == rt.size()).all()
        if rt.rank() in (0, 1):
            assert (rt.allreduce(np.ones(2), name="pair", op=rt.Sum, process_set=pair) == 2).all()
        rt.barrier()
    """)
    run = run_mpiexec(ranks, [sys.executable, path], timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.unlink(path)
    assert not run.timed_out, f"the job hung:\n{run.output[-3000:]}"
    assert run.returncode == 0, run.output[-3000:]
    others = list(range(1, ranks))
    message = (f"Mismatched process sets for 't': it was submitted on process set 0 (ranks {list(range(ranks))}) by "
               f"rank(s) {others}, on process set 1 (ranks [0, 1]) by rank(s) [0]")
    for rank in range(ranks):
        found = re.search(r"caught after ([\d.]+) s: (.*)", run.rank_output(rank))
        assert found and found.group(2) == message, run.output[-3000:]
        assert float(found.group(1)) < 5
    assert "unreachable" not in run.output


def test_a_deadlock_among_live_ranks_ends_at_the_progress_deadline():
    # Every rank alive and heartbeating, each waiting in a collective the other never joins (a
    # barrier on two different communicators): nobody is silent, nobody progresses. The engines'
    # own rounds are halted first, or their idle rounds would count as progress.
    path = script("""
        import sys, time, ringtrain as rt
        from ringtrain.runtime import current
        rt.init(progress_timeout=2)
        runtime = current("test")
        runtime.engine.halt()
        runtime.engine._thread.join()
        comm = runtime.handle if rt.rank() == 0 else runtime.engine.sets[0].handle
        started = time.time()
        try:
            runtime.core.barrier(comm)
        except runtime.core.NoProgressError as error:
            print(f"caught after {time.time() - started:.1f} s: {error}; {runtime.core.stall_report()['kind']}",
                  flush=True)
        sys.stdout.flush()
        runtime.comm.Abort(3)
    """)
    run = run_mpiexec(2, [sys.executable, path], timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.unlink(path)
    assert not run.timed_out, f"the deadlock hung:\n{run.output[-3000:]}"
    # whichever rank gives up first aborts the job for both
    found = re.search(r"caught after ([\d.]+) s: barrier made no progress for [\d.]+ s; stalled", run.output)
    assert found and float(found.group(1)) < 10, run.output[-3000:]


def test_a_rank_killed_inside_a_shared_memory_allreduce_ends_the_job_and_leaves_nothing_in_dev_shm():
    # 3 ranks on one host reduce 32 MB through their shared segment; rank 1 is SIGKILLed mid-call
    path = script("""
        import os, signal, threading, numpy as np, ringtrain as rt
        from ringtrain import runtime
        rt.init(progress_timeout=3)
        assert runtime.current("test").engine.sets[0].shared_memory == "one host"
        x = np.ones(8 << 20, dtype=np.float32)
        print(f"pid {os.getpid()}", flush=True)
        if rt.rank() == 1:
            threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
        while True:
            rt.allreduce_(x, name="x")
    """)
    run = subprocess.run([sys.executable, "-m", "ringtrain", "run", "-np", "3", sys.executable, path],
                         capture_output=True, text=True, timeout=DEADLINE + 30, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    leftovers = left_behind(path)
    os.unlink(path)
    output = run.stdout + run.stderr
    pids = set(re.findall(r"pid (\d+)", output))
    assert len(pids) == 3, output[-3000:]
    assert run.returncode != 0
    assert "rank 1 failed with exit status -9" in output, output[-3000:]
    assert not leftovers, f"processes left behind: {leftovers}"
    segments = [f for f in os.listdir("/dev/shm") if any(f.startswith(f"ringtrain-{pid}-") for pid in pids)]
    assert segments == [], f"left in /dev/shm: {segments}"
