"""Every way of launching, across emulated hosts (tests/emulated_hosts.py): each host has its own
network, hostname, /tmp and /dev/shm, so nothing here can lean on a shared /tmp or on shared
memory between hosts. The launching command itself runs on h1, as a user would run it there."""
import json
import os
import select
import subprocess
import sys
import time

import pytest

from ringtrain.launch.mpiexec import find_mpiexec, kill_process_group
from ringtrain.launch.rank_output import PREPEND_PATTERN, RankLines

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT_JOB = os.path.join(HERE, "multihost", "layout_job.py")
PYTHON = sys.executable


@pytest.fixture
def hosts(cluster):
    """The cluster, with every host checked clean after the test (no process left behind)."""
    yield cluster
    leftovers = {h: cluster.processes(h) for h in cluster.hosts}
    for h in cluster.hosts:
        cluster.kill_processes(h)
    assert not any(leftovers.values()), f"processes left behind on the hosts: {leftovers}"


def rank_lines(output):
    """(rank, line) pairs out of mpiexec output made with -prepend-pattern PREPEND_PATTERN."""
    demux = RankLines()
    return demux.feed(output.encode()) + demux.flush()


def layouts(lines):
    return sorted((json.loads(line.split("LAYOUT ", 1)[1]) for _, line in lines if line.startswith("LAYOUT ")),
                  key=lambda r: r["rank"])


def check_layout(records, spec):
    """records agree with host spec [(host, slots), ...]: ranks fill hosts in order."""
    expected = [(host, local, cross) for cross, (host, slots) in enumerate(spec) for local in range(slots)]
    size = len(expected)
    assert [r["rank"] for r in records] == list(range(size)), records
    for r, (host, local, cross) in zip(records, expected):
        assert (r["host"], r["local_rank"], r["cross_rank"]) == (host, local, cross), r
        assert r["size"] == size and r["cross_size"] == len(spec)
        assert r["local_size"] == dict(spec)[host]
        assert r["allreduce_ok"] and r["allgather_ok"] and r["broadcast_ok"], r


@pytest.mark.parametrize("spec", [[("h1", 2), ("h2", 2)], [("h1", 1), ("h2", 1), ("h3", 1)]],
                         ids=["2x2", "3x1"])
def test_plain_mpiexec_across_hosts(hosts, spec):
    n = sum(s for _, s in spec)
    argv = [find_mpiexec(), "-launcher", "ssh", "-launcher-exec", hosts.launcher_exec,
            "-hosts", ",".join(f"{h}:{s}" for h, s in spec), "-n", str(n), "-prepend-pattern", PREPEND_PATTERN,
            PYTHON, LAYOUT_JOB]
    result = hosts.run("h1", argv, env=hosts.mpi_environment(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = rank_lines(result.stdout)
    check_layout(layouts(lines), spec)
    for rank, line in lines:  # each rank's line came with its own rank
        if line.startswith("LAYOUT "):
            assert json.loads(line[7:])["rank"] == rank


def test_plain_mpiexec_a_failing_rank_on_the_second_host_shows_its_traceback(hosts):
    """Plain hydra across hosts reports the rank's traceback, but does not end the ranks still
    waiting on the first host (seen with a plain mpi4py program too): `ringtrain run` does."""
    argv = [find_mpiexec(), "-launcher", "ssh", "-launcher-exec", hosts.launcher_exec,
            "-hosts", "h1:2,h2:2", "-n", "4", "-prepend-pattern", PREPEND_PATTERN, PYTHON, LAYOUT_JOB]
    env = dict(hosts.mpi_environment(), RINGTRAIN_TEST_FAIL_RANK="3")
    process = hosts.popen("h1", argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)
    demux, seen = RankLines(), []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and (3, "ValueError: rank 3 fails on purpose on h2") not in seen:
            ready, _, _ = select.select([process.stderr], [], [], 1)
            if ready:
                chunk = os.read(process.stderr.fileno(), 65536)
                if not chunk:
                    break
                seen += demux.feed(chunk)
    finally:
        kill_process_group(process.pid)
        process.wait()
        for h in hosts.hosts:
            hosts.kill_processes(h)
    assert (3, "ValueError: rank 3 fails on purpose on h2") in seen, seen
    assert any(rank == 3 and "layout_job.py" in line for rank, line in seen), seen
