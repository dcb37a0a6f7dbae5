"""The ways in: `ringtrain run` (and python -m ringtrain), and rt.run / @rt.distributed."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

import ringtrain as rt

RINGTRAIN = [sys.executable, "-m", "ringtrain"]


def write(code):
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    f.write(textwrap.dedent(code))
    f.close()
    return f.name


def leftovers(marker):
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def ringtrain_run(*args, timeout=120):
    return subprocess.run([*RINGTRAIN, "run", *args], capture_output=True, text=True, timeout=timeout)


def test_run_prefixes_lines_and_passes_settings():
    path = write("""
        import ringtrain as rt
        from ringtrain import runtime
        rt.init()
        t = runtime.current("t").engine.tuning
        print(f"rank {rt.rank()} of {rt.size()}: fusion={t.fusion_threshold} cycle={t.cycle_time}")
    """)
    result = ringtrain_run("-np", "3", "--fusion-threshold-mb", "2", "--cycle-time-ms", "3.5", "python", path)
    os.unlink(path)
    assert result.returncode == 0, result.stderr
    for r in range(3):
        assert f"[{r}]: rank {r} of 3: fusion=2097152 cycle=3.5" in result.stdout.splitlines(), result.stdout


def test_a_failing_rank_is_named_with_its_last_lines_and_nothing_survives():
    marker = "ringtrain-cli-fail-marker-91c2"
    path = write(f"""
        # {marker}
        import time, ringtrain as rt
        rt.init()
        if rt.rank() == 2:
            raise RuntimeError("bad batch on rank two")
        time.sleep(60)
    """)
    started = time.monotonic()
    result = ringtrain_run("-np", "3", "python", path, marker)
    os.unlink(path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert time.monotonic() - started < 30
    assert "ringtrain run: rank 2 failed with exit status 1; its last output:" in result.stderr
    assert "RuntimeError: bad batch on rank two" in result.stderr.split("its last output:")[1]
    assert "[2]: RuntimeError: bad batch on rank two" in result.stderr
    time.sleep(0.5)
    assert not leftovers(marker), "a rank outlived the failed job"


def test_a_rank_that_fails_before_mpi_starts_ends_the_job():
    # hydra kills the other ranks only when a rank dies after MPI's PMI init, and even then it races
    # (pmodels/mpich#7057). Here rank 1 exits before init, and rank 0 would wait in MPI_Init
    # forever: only the launcher's own watchdog can end the job.
    marker = "ringtrain-cli-before-init-marker-5d0e"
    path = write(f"""
        # {marker}
        import os, sys
        if os.environ["PMI_RANK"] == "1":
            sys.exit("rank 1 could not read its shard")
        import ringtrain as rt
        rt.init()
        rt.barrier()
    """)
    started = time.monotonic()
    result = ringtrain_run("-np", "2", "python", path, marker, timeout=60)
    os.unlink(path)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert time.monotonic() - started < 30
    assert "ringtrain run: rank 1 failed with exit status 1; its last output:" in result.stderr
    assert "rank 1 could not read its shard" in result.stderr.split("its last output:")[1]
    time.sleep(0.5)
    assert not leftovers(marker), "a rank outlived the failed job"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_launcher_stops_every_rank(signum):
    marker = f"ringtrain-cli-interrupt-marker-{signum}"
    path = write(f"""
        import time, ringtrain as rt
        rt.init()
        print("ready", flush=True)
        time.sleep(120)  # {marker}
    """)
    proc = subprocess.Popen([*RINGTRAIN, "run", "-np", "2", "python", path, marker], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "ready" in proc.stdout.readline()
        assert len(leftovers(marker)) >= 2
        proc.send_signal(signum)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    os.unlink(path)
    assert proc.returncode == 130
    time.sleep(0.5)
    assert not leftovers(marker), "ranks survived the interrupt"


def test_check_and_argument_errors():
    check = subprocess.run([*RINGTRAIN, "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "MPI library:      MPICH" in check.stdout and "recursive_doubling, ring" in check.stdout
    assert "numba:" in check.stdout and "pyspark:" in check.stdout and "java (for Spark):" in check.stdout
    build = ringtrain_run("--check-build")
    assert build.returncode == 0 and "MPI library" in build.stdout
    slots = ringtrain_run("-np", "4", "-H", "localhost:2", "python", "-c", "pass")
    assert slots.returncode == 2 and "-np 4 needs 4 slots, but the hosts offer 2" in slots.stderr
    iface = ringtrain_run("-np", "2", "-H", "localhost:2", "--network-interface", "nope0", "python", "-c", "pass")
    assert iface.returncode == 2 and "network interface 'nope0' has no IPv4 address here" in iface.stderr
    missing = ringtrain_run("python", "-c", "pass")
    assert missing.returncode == 2 and "run needs -np N" in missing.stderr


def test_horovodrun_output_verbose_log_level_and_timeline_flags(tmp_path):
    path = write("""
        import sys
        import numpy as np
        import ringtrain as rt
        rt.init()
        rt.allreduce(np.ones(3), name="flags.grad")
        print(f"out of rank {rt.rank()}")
        print(f"err of rank {rt.rank()}", file=sys.stderr)
    """)
    out, trace = tmp_path / "logs", tmp_path / "trace.json"
    result = ringtrain_run("-np", "2", "--output-filename", str(out), "--verbose", "--log-level", "debug",
                           "--timeline-filename", str(trace), "--timeline-mark-cycles", "python", path)
    os.unlink(path)
    assert result.returncode == 0, result.stderr
    for r in range(2):  # horovodrun's layout, and the console still gets every line
        assert (out / f"rank.{r}" / "stdout").read_text().splitlines()[-1] == f"out of rank {r}"
        assert f"err of rank {r}" in (out / f"rank.{r}" / "stderr").read_text().splitlines()
        assert f"[{r}]: out of rank {r}" in result.stdout.splitlines()
        # --log-level DEBUG on every rank: the init line and each negotiated name
        assert re.search(rf"^\[{r}\]: ringtrain INFO: rank {r} of 2 \(local rank {r} of 2\) on .*; settings changed "
                         r"from the defaults: .*'log_level': 'DEBUG'", result.stderr, re.M), result.stderr
        assert f"[{r}]: ringtrain DEBUG: negotiated allreduce 'flags.grad' on process set 0" in result.stderr
    # --verbose: the mpiexec command line, which carries no secret
    line = next(line for line in result.stderr.splitlines() if line.startswith("ringtrain run: "))
    assert "mpiexec" in line and "ringtrain.launch.rank_exec" in line and "SECRET" not in line.upper()
    events = json.loads(trace.read_text())
    assert any(e["name"] == "CYCLE_START" for e in events) and any(e["name"] == "RING_ALLREDUCE"
                                                                     or e["ph"] == "X" for e in events)
    bad = ringtrain_run("-np", "2", "--log-level", "loud", "python", "-c", "pass")
    assert bad.returncode == 2 and "--log-level: invalid choice: 'LOUD'" in bad.stderr


def test_ranks_that_never_start_end_the_job_at_the_start_timeout(tmp_path):
    """A host the launcher cannot reach leaves ssh hanging: here a launcher command that never
    runs what it is given. --start-timeout ends the job, names the ranks, and kills the launcher."""
    marker = "ringtrain-start-timeout-marker-5e1a"
    hanging = tmp_path / "hanging-ssh"
    hanging.write_text(f"#!/bin/sh\n# {marker}\nexec sleep 600 # {marker}\n")
    hanging.chmod(0o755)
    started = time.monotonic()
    result = ringtrain_run("-np", "2", "-H", "unreachable-host:2", "--launcher-command", str(hanging),
                           "--start-timeout", "2", "python", "-c", "print('never')", timeout=120)
    assert result.returncode != 0
    assert "ranks 0, 1 of 2 did not start within --start-timeout 2 s" in result.stderr, result.stderr
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 10
    while leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers(marker)


def test_plain_hosts_flag_runs_locally():
    result = ringtrain_run("-np", "2", "-H", "localhost:2", "python", "-c",
                           "import ringtrain as rt; rt.init(); print('size', rt.size())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("size 2") == 2


# --- rt.run and @rt.distributed -------------------------------------------------------------
def test_decorator_returns_rank_zero_value_and_every_rank_on_request():
    @rt.distributed(np=3)
    def total(scale):
        import numpy as np
        return float(rt.allreduce(np.array([rt.rank() * scale]), op=rt.Sum)[0]) + rt.rank() / 10

    assert total(10.0) == 30.0
    assert rt.run(lambda: (rt.rank(), rt.size()), np=3, all_ranks=True) == [(0, 3), (1, 3), (2, 3)]


def test_decorator_reraises_a_worker_exception_with_rank_and_traceback():
    def fails():
        if rt.rank() == 1:
            raise KeyError("missing parameter 'lr'")
        rt.barrier()

    with pytest.raises(rt.RemoteError) as info:
        rt.run(fails, np=2)
    assert info.value.rank == 1
    assert "rank 1 raised KeyError" in str(info.value)
    assert "raise KeyError(\"missing parameter 'lr'\")" in info.value.remote_traceback
    assert isinstance(info.value.__cause__, KeyError)


def test_decorator_inside_mpi_runs_in_place():
    path = write("""
        import os, ringtrain as rt

        @rt.distributed(np=4)
        def where():
            return os.getpid()

        pid = where()           # inside MPI: no new workers, this process runs it
        assert pid == os.getpid(), (pid, os.getpid())
        print("in place", rt.rank(), rt.size(), flush=True)
    """)
    result = ringtrain_run("-np", "2", "python", path)
    os.unlink(path)
    assert result.returncode == 0, result.stderr
    assert "[0]: in place 0 2" in result.stdout and "[1]: in place 1 2" in result.stdout


def test_bad_backend_and_np():
    with pytest.raises(ValueError, match="backend='gpu' must be one of mpi, spark, auto"):
        rt.run(print, backend="gpu")
    with pytest.raises(ValueError, match="np=0 must be a positive int"):
        rt.run(print, np=0)


def test_run_mpiexec_reassembles_each_ranks_lines_from_interleaved_chunks():
    """Ranks writing unbuffered half-lines at once: every line comes back whole, under its rank."""
    from ringtrain.launch import run_mpiexec

    program = textwrap.dedent("""
        import os, sys, time
        rank = os.environ["PMI_RANK"]
        for i in range(20):
            sys.stdout.write(f"rank {rank} line {i} first half, ")
            sys.stdout.flush()
            time.sleep(0.002)
            sys.stdout.write(f"second half of {rank}/{i}\\n")
            sys.stdout.flush()
    """)
    run = run_mpiexec(3, [sys.executable, "-c", program], timeout=60)
    assert run.ok, run.output
    for rank in range(3):
        expected = [f"rank {rank} line {i} first half, second half of {rank}/{i}" for i in range(20)]
        assert run.rank_output(rank).splitlines() == expected, run.output
