"""Find the right mpiexec and run a command under it, with a deadline and no orphans.

The right mpiexec is the one of the MPI library mpi4py loads: for the `mpich` wheel that is the
one installed next to this Python (in the venv's bin/). RINGTRAIN_MPIEXEC overrides the search.
The job runs in its own session (process group); when it overruns its deadline or the caller is
interrupted, the whole group (mpiexec, its hydra proxies and every rank) is killed."""
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time

from .rank_output import MPIEXEC, PREPEND_PATTERN, RankLines


class MPIExecNotFound(RuntimeError):
    pass


def find_mpiexec():
    override = os.environ.get("RINGTRAIN_MPIEXEC")
    if override:
        path = shutil.which(override)
        if not path:
            raise MPIExecNotFound(f"RINGTRAIN_MPIEXEC={override!r} is not an executable")
        return path
    looked = []
    for directory in (os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin")):
        candidate = os.path.join(directory, "mpiexec")
        looked.append(candidate)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mpiexec")
    if found:
        return found
    raise MPIExecNotFound(
        "cannot find mpiexec: looked at " + ", ".join(looked) + " and on PATH. "
        "Install MPI with `pip install mpich` (ringtrain's dependency), or set RINGTRAIN_MPIEXEC."
    )


@dataclasses.dataclass
class MPIRun:
    command: list
    returncode: int          # mpiexec's exit status; None if it was killed at the deadline
    output: str              # stdout and stderr of every rank, whole lines, each prefixed "[rank] "
    seconds: float
    timed_out: bool
    lines: list = dataclasses.field(default_factory=list, repr=False)  # (rank or "mpiexec", line)

    @property
    def ok(self):
        return self.returncode == 0 and not self.timed_out

    def rank_output(self, rank):
        """Everything one rank wrote, as whole lines."""
        return "\n".join(line for source, line in self.lines if source == rank)


def die_with_parent():
    """preexec_fn for a child that must not outlive the process that started it, however that
    process ends (PR_SET_PDEATHSIG); with start_new_session it also gets its own group."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_process_group(pgid, patience=5.0):
    """SIGKILL every process of a process group, again and again until the group is empty: a
    process forked while the first signal was sent (mpiexec starting a rank) escapes one
    killpg but keeps the group id, so the next one reaches it."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _kill_group(process):
    kill_process_group(process.pid)


def mpiexec_command(np, command, hosts=None, manual_hosts=None, wdir=None, extra=()):
    """The one place that builds an mpiexec command line: `command` on np ranks, on this host,
    on `hosts` (a job.Hosts: hydra's ssh launcher, or the launcher command given), or, with
    manual_hosts="h1:2,h2:2", with hydra's manual launcher (it prints one proxy command per host
    for the caller to run there: the Spark route). wdir: the ranks' working directory on every
    host (by default the caller's, which must then exist on every host)."""
    argv = [find_mpiexec()]
    if manual_hosts:
        argv += ["-launcher", "manual", "-hosts", manual_hosts]
    elif hosts is not None:
        argv += ["-hosts", hosts.spec()]
        if hosts.launcher_command:
            argv += ["-launcher", "ssh", "-launcher-exec", hosts.launcher_command]
        if hosts.network_interface:
            argv += ["-iface", hosts.network_interface]
    if wdir:
        argv += ["-wdir", wdir]
    # Ranks' chunks interleave (an unbuffered line can arrive in pieces); the marker pattern lets
    # RankLines put every rank's lines back together.
    return argv + ["-n", str(np), "-prepend-pattern", PREPEND_PATTERN, *extra, *command]


def run_mpiexec(np, argv, timeout, env=None, mpi_args=(), cwd=None, hosts=None):
    """Run `argv` on `np` ranks (on this host, or on `hosts`); wait at most `timeout` seconds;
    return an MPIRun."""
    command = mpiexec_command(np, argv, hosts=hosts, extra=mpi_args)
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,  # its own process group: one killpg reaches every rank
        preexec_fn=die_with_parent,
    )
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process)
        output, _ = process.communicate()
    except BaseException:
        _kill_group(process)
        process.wait()
        raise
    finally:
        _kill_group(process)  # ranks that outlived mpiexec must not linger either
    demux = RankLines()
    lines = demux.feed(output) + demux.flush()
    text = "\n".join(line if source == MPIEXEC else f"[{source}] {line}" for source, line in lines)
    return MPIRun(command, None if timed_out else process.returncode, text, time.monotonic() - start, timed_out, lines)
