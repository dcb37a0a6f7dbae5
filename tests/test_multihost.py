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
        for name in cluster.files(h):  # the next test starts clean (the shared code stays)
            cluster.run(h, ["rm", "-rf", os.path.join("/tmp", name)])
        cluster.run(h, ["sh", "-c", "rm -rf /dev/shm/*"])
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


# --- ringtrain run -H / --hostfile --------------------------------------------------------------
def ringtrain_run_on_h1(hosts, *args, env=None, timeout=120):
    return hosts.run("h1", [PYTHON, "-m", "ringtrain", "run", "--launcher-command", hosts.launcher_exec,
                            "--network-interface", "eth0", *args], env=env or hosts.mpi_environment(),
                     timeout=timeout)


def cli_layouts(stdout):
    """The LAYOUT records of `ringtrain run` output ("[rank]: LAYOUT {...}"), each checked to
    carry its own rank in the prefix."""
    records = []
    for line in stdout.splitlines():
        prefix, _, rest = line.partition(": LAYOUT ")
        if rest:
            record = json.loads(rest)
            assert prefix == f"[{record['rank']}]", line
            records.append(record)
    return sorted(records, key=lambda r: r["rank"])


@pytest.mark.parametrize("spec", [[("h1", 2), ("h2", 2)], [("h1", 1), ("h2", 1), ("h3", 1)]],
                         ids=["2x2", "3x1"])
def test_ringtrain_run_with_a_host_list(hosts, spec):
    n = sum(s for _, s in spec)
    result = ringtrain_run_on_h1(hosts, "-np", str(n), "-H", ",".join(f"{h}:{s}" for h, s in spec),
                                 "python", LAYOUT_JOB)
    assert result.returncode == 0, result.stdout + result.stderr
    check_layout(cli_layouts(result.stdout), spec)


def test_ssh_port_reaches_the_launcher_command(hosts):
    """horovodrun's -p: hydra cannot pass a port to its launcher, so ringtrain puts `-p PORT` in
    front of the launcher command's arguments (here a launcher that records them, then enters
    the host like ssh would)."""
    launcher = os.path.join(HERE, "multihost", "port-recording-launcher")
    record = os.path.join(HERE, "multihost", "port-recording-launcher.log")
    with open(launcher, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> {record}\n[ "$1" = -p ] || exit 255\nshift 2\n'
                f'exec {hosts.launcher_exec} "$@"\n')
    os.chmod(launcher, 0o755)
    try:
        result = hosts.run("h1", [PYTHON, "-m", "ringtrain", "run", "--launcher-command", launcher,
                                  "--network-interface", "eth0", "-p", "2222", "-np", "2", "-H", "h1:1,h2:1",
                                  "python", LAYOUT_JOB], env=hosts.mpi_environment(), timeout=120)
        with open(record) as f:
            calls = f.read().splitlines()
    finally:
        for path in (launcher, record):
            if os.path.exists(path):
                os.unlink(path)
    assert result.returncode == 0, result.stdout + result.stderr
    check_layout(cli_layouts(result.stdout), [("h1", 1), ("h2", 1)])
    assert calls and all(call.startswith("-p 2222 ") for call in calls), calls
    assert any(" h2 " in f" {call} " for call in calls), calls


def test_ringtrain_run_with_a_hostfile_reports_a_rank_failing_on_the_second_host(hosts):
    hostfile = os.path.join(HERE, "multihost", "hostfile-h1-h2")
    with open(hostfile, "w") as f:
        f.write("# two emulated hosts\nh1 slots=2\nh2:2\n")
    try:
        started = time.monotonic()
        result = ringtrain_run_on_h1(hosts, "-np", "4", "--hostfile", hostfile, "python", LAYOUT_JOB,
                                     env=dict(hosts.mpi_environment(), RINGTRAIN_TEST_FAIL_RANK="3"))
        elapsed = time.monotonic() - started
    finally:
        os.unlink(hostfile)
    assert result.returncode == 1, result.stdout + result.stderr
    # the failure on h2 reached the launcher on h1, which ended the ranks hydra leaves waiting
    assert elapsed < 60, elapsed
    assert "ringtrain run: rank 3 failed with exit status 1; its last output:" in result.stderr, result.stderr
    assert "ValueError: rank 3 fails on purpose on h2" in result.stderr.split("its last output:")[1]
    assert "[3]: ValueError: rank 3 fails on purpose on h2" in result.stderr
    assert (hosts.files("h1"), hosts.files("h2")) == ([], [])  # not even hydra's, after a failure


def test_no_job_files_are_left_in_any_hosts_tmp(hosts):
    result = ringtrain_run_on_h1(hosts, "-np", "2", "-H", "h1:1,h2:1", "python", LAYOUT_JOB)
    assert result.returncode == 0, result.stderr
    assert hosts.files("h1") == [] and hosts.files("h2") == []


# --- rt.run(hosts=...) and @rt.distributed(hosts=...) ----------------------------------------------
RUN_FUNCTION_SCRIPT = os.path.join(HERE, "multihost", "run_function_job.py")


def test_rt_run_returns_every_hosts_results(hosts):
    result = hosts.run("h1", [PYTHON, RUN_FUNCTION_SCRIPT, hosts.launcher_exec, "ok"], env=hosts.mpi_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(result.stdout.strip().splitlines()[-1])
    check_layout(sorted(records["run"], key=lambda r: r["rank"]), [("h1", 2), ("h2", 2)])
    check_layout(sorted(records["decorated"], key=lambda r: r["rank"]), [("h1", 1), ("h2", 1)])
    assert hosts.files("h1") == [] and hosts.files("h2") == []


def test_rt_run_raises_a_rank_failing_on_the_second_host(hosts):
    result = hosts.run("h1", [PYTHON, RUN_FUNCTION_SCRIPT, hosts.launcher_exec, "fail"],
                       env=dict(hosts.mpi_environment(), RINGTRAIN_TEST_FAIL_RANK="3"))
    assert result.returncode == 0, result.stdout + result.stderr
    caught = json.loads(result.stdout.strip().splitlines()[-1])
    assert caught["rank"] == 3 and caught["type_name"] == "ValueError", caught
    assert "rank 3 fails on purpose on h2" in caught["message"]
    assert 'raise ValueError(f"rank {rank} fails on purpose on {socket.gethostname()}")' in caught["traceback"]


# --- elastic recovery across hosts ----------------------------------------------------------------
def test_a_host_that_goes_away_mid_training_leaves_the_job_to_finish_on_the_others(hosts):
    """h3's rank dies at step 8 and the discovery script stops listing h3: the job restarts on h1
    and h2 from the commit at step 6, reading it from the directory every host reaches."""
    import shutil

    work = os.path.join(HERE, "multihost", f"elastic-{os.getpid()}")  # under the checkout: on every host
    os.makedirs(work)
    host_list = os.path.join(work, "hosts")
    with open(host_list, "w") as f:
        f.write("h1:1\nh2:1\nh3:1\n")
    discover = os.path.join(work, "discover")
    with open(discover, "w") as f:
        f.write(f"#!/bin/sh\ncat {host_list}\n")
    os.chmod(discover, 0o755)
    try:
        result = ringtrain_run_on_h1(
            hosts, "-np", "3", "--min-np", "2", "--max-restarts", "1", "--host-discovery-script", discover,
            "--elastic-dir", os.path.join(work, "commits"), "python", os.path.join(HERE, "elastic", "train.py"),
            "30", "3", "0:8:2", env=dict(hosts.mpi_environment(), ELASTIC_HOSTS_AFTER_KILL=f"{host_list}=h1:1\nh2:1"),
            timeout=300)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "ringtrain run: 3 ranks on h1:1,h2:1,h3:1" in output and "ringtrain run: 2 ranks on h1:1,h2:1" in output
    assert "[2]: KILL 0 at step 8" in result.stdout
    assert "[0]: RESUMED 1 at step 7" in result.stdout and "[1]: RESUMED 1 at step 7" in result.stdout
    assert "[0]: DONE on 2 ranks" in result.stdout and "[0]: FINAL " in result.stdout


# --- ringtrain.spark.run on a Spark standalone cluster (master on h1, a worker on h1 and h2) -----
# These come last: the cluster keeps running until the session ends, and the `hosts` fixture of
# the tests above counts any process on a host as left behind.
SPARK_JOB = os.path.join(HERE, "multihost", "spark_job.py")


@pytest.fixture
def spark_hosts(spark_standalone, cluster):
    """The standalone cluster; after the test, nothing but its daemons on any host, and no
    ringtrain or hydra file in any host's /tmp."""
    yield spark_standalone
    daemons = spark_standalone.daemon_pids()
    deadline = time.monotonic() + 20  # executors end a moment after their application
    while time.monotonic() < deadline:
        extra = {h: [p for p in cluster.processes(h) if p not in daemons] for h in spark_standalone.hosts}
        if not any(extra.values()):
            break
        time.sleep(0.2)
    files = {h: [f for f in cluster.files(h) if f.startswith(("ringtrain", "hydra"))] for h in spark_standalone.hosts}
    for h, pids in extra.items():
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    assert not any(extra.values()), f"processes left behind: {extra}"
    assert not any(files.values()), f"files left behind: {files}"


def check_spark_layout(records):
    """Spark decides which host gets task 0: ranks fill that host first, then the other."""
    first = records[0]["host"]
    check_layout(records, [(first, 2), ({"h1", "h2"}.difference([first]).pop(), 2)])


def run_spark_driver(spark_hosts, *args, timeout=240):
    result = spark_hosts.cluster.run("h1", [PYTHON, SPARK_JOB, spark_hosts.url, *args],
                                     env=spark_hosts.environment("h1"), timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(lines[-1][7:]), result


# --- the shared-memory and hierarchical allreduce across hosts -----------------------------------
ALLREDUCE_JOB = os.path.join(HERE, "multihost", "allreduce_job.py")


def allreduce_records(stdout):
    records = []
    for line in stdout.splitlines():
        prefix, _, rest = line.partition(": ALLREDUCE ")
        if rest:
            records.append(json.loads(rest))
    return sorted(records, key=lambda r: r["rank"])


@pytest.mark.parametrize("spec,settings,paths", [
    ([("h1", 2), ("h2", 2)], {}, {"global": "hierarchical", "spanning": "off", "first host": "one host"}),
    ([("h1", 3), ("h2", 3)], {}, {"global": "hierarchical", "spanning": "off", "first host": "one host"}),
    ([("h1", 3), ("h2", 3)], {"RINGTRAIN_HIERARCHICAL_ONE_LEADER": "1"},
     {"global": "hierarchical", "spanning": "off", "first host": "one host"}),
    ([("h1", 3), ("h2", 1)], {}, {"global": "off", "spanning": "off", "first host": "one host"}),
    ([("h1", 2), ("h2", 2)], {"RINGTRAIN_HIERARCHICAL_ALLREDUCE": "0"},
     {"global": "off", "spanning": "off", "first host": "one host"}),
], ids=["2x2", "2x3", "2x3-one-leader", "3+1-uneven", "2x2-hierarchical-off"])
def test_allreduce_across_hosts_matches_numpy_on_every_path(hosts, spec, settings, paths):
    """Every dtype x op at odd lengths, bitwise the same on every rank: through the hierarchical
    allreduce (uniform hosts), the flat ring (uneven hosts, or turned off, or a set with one rank
    per host) and shared memory alone (a set inside one host)."""
    n = sum(s for _, s in spec)
    result = ringtrain_run_on_h1(hosts, "-np", str(n), "-H", ",".join(f"{h}:{s}" for h, s in spec),
                                 "python", ALLREDUCE_JOB, env=dict(hosts.mpi_environment(), **settings), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = allreduce_records(result.stdout)
    assert [r["rank"] for r in records] == list(range(n)), result.stdout[-3000:]
    for r in records:
        assert r["failed"] == 0, r
        assert r["paths"]["global"] == paths["global"], r
        for label in ("spanning", "first host"):
            if label in r["paths"]:
                assert r["paths"][label] == paths[label], r
    assert {r["host"] for r in records} == {h for h, _ in spec}


def test_a_host_whose_dev_shm_is_too_small_warns_once_and_every_rank_goes_on_without_it(hosts):
    # 32 MB on h2: room for MPICH's own segment (about 2 MB for 2 ranks), not for ringtrain's of
    # 2 ranks x 2 pieces of 64 MB
    hosts.run("h2", ["mount", "-o", "remount,size=32m", "/dev/shm"])
    try:
        result = ringtrain_run_on_h1(hosts, "-np", "4", "-H", "h1:2,h2:2", "python", ALLREDUCE_JOB, timeout=300,
                                     env=dict(hosts.mpi_environment(), RINGTRAIN_SHARED_MEMORY_PIECE_BYTES="64M"))
    finally:
        hosts.run("h2", ["mount", "-o", "remount,size=4g", "/dev/shm"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = allreduce_records(result.stdout)
    assert len(records) == 4 and all(r["failed"] == 0 and r["paths"]["global"] == "off" for r in records), records
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if "shared memory is off for process set 0" in line]
    assert len(warnings) == 1 and warnings[0].startswith("[2]: "), warnings  # h2's first rank, once
    assert "/dev/shm has less than" in warnings[0] and "--shm-size" in warnings[0], warnings



def test_spark_standalone_across_hosts(spark_hosts):
    out, result = run_spark_driver(spark_hosts, "layout")
    check_spark_layout(out["run"])
    check_spark_layout(out["decorated"])
    for record in out["run"]:  # every rank's output reached the driver, with its rank
        assert f"[{record['rank']}]: rank {record['rank']} of 4 on {record['host']}" in result.stdout


def test_spark_standalone_a_rank_failing_on_the_second_host(spark_hosts):
    out, _ = run_spark_driver(spark_hosts, "fail")
    assert out["rank"] == 3 and out["type_name"] == "ValueError", out
    assert 'raise ValueError(f"rank {rank} fails on purpose on {socket.gethostname()}")' in out["traceback"]
    assert out["traceback"].count("fails on purpose on h") == 1


def test_spark_standalone_dataframe_feed_with_uneven_partitions(spark_hosts):
    out, _ = run_spark_driver(spark_hosts, "feed")
    ranks = out["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3]
    assert sum(r["rows"] for r in ranks) == out["expected_rows"]
    assert sum(r["sum"] for r in ranks) == out["expected_sum"]


def test_spark_standalone_a_killed_attempt_is_retried_and_cleaned_up(spark_hosts, tmp_path_factory):
    flag = os.path.join(HERE, "multihost", f"killed-flag-{os.getpid()}")
    try:
        out, result = run_spark_driver(spark_hosts, "killed", flag)
    finally:
        existed = os.path.exists(flag)
        if existed:
            os.unlink(flag)
    assert existed, "rank 3 never ran its first attempt"
    check_spark_layout(out["run"])
    assert ("an attempt failed (rank 3 was killed by signal 9 without reporting an exception); Spark retried "
            "the whole stage and it succeeded") in result.stderr, result.stderr[-3000:]
