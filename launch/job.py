"""Run a command on N ranks under mpiexec, streaming every rank's output with its rank, and
report the rank that failed. Used by `ringtrain run` and by the decorator.

The job runs in its own session: Ctrl-C or SIGTERM to this process kill the whole process
group (mpiexec, its proxies, every rank), so nothing is left behind.

When a rank exits non-zero, hydra is meant to kill the others, but its clean-up races between
the PMI socket closing and waitpid (pmodels/mpich#7057) and can leave the rest waiting forever
in a collective. So the launcher watches the ranks' exit records itself and ends the job
FAILURE_GRACE seconds after the first failure if mpiexec has not."""
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading

from .mpiexec import die_with_parent, find_mpiexec, kill_process_group
from .rank_output import PREPEND_PATTERN, RankLines

FAILURE_GRACE = 3.0  # seconds the other ranks get to report their own errors after one fails


@dataclasses.dataclass
class JobResult:
    returncode: int
    failed_rank: object           # the first rank that exited non-zero, or None
    failed_status: object
    last_lines: dict              # rank -> its last stderr (and stdout) lines

    def failure_report(self):
        if self.failed_rank is None:
            return f"the job failed with status {self.returncode}"
        lines = "\n".join(f"    {line}" for line in self.last_lines.get(self.failed_rank, []))
        return (f"rank {self.failed_rank} failed with exit status {self.failed_status}; "
                f"its last output:\n{lines}")


def _pump(stream, sink, lines):
    while True:
        data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not data:
            break
        for rank, line in lines.feed(data):
            sink.write(f"[{rank}]: {line}\n")
        sink.flush()
    for rank, line in lines.flush():
        sink.write(f"[{rank}]: {line}\n")
    sink.flush()


def run_job(np, command, env=None, mpi_args=(), stdout=None, stderr=None, timeout=None):
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    status_dir = tempfile.mkdtemp(prefix="ringtrain-job-")
    argv = [find_mpiexec(), "-n", str(np), "-prepend-pattern", PREPEND_PATTERN, *mpi_args,
            sys.executable, "-m", "ringtrain.launch.rank_exec", status_dir, *command]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=env, start_new_session=True, preexec_fn=die_with_parent)
    out_lines, err_lines = RankLines(), RankLines()
    pumps = [threading.Thread(target=_pump, args=(process.stdout, stdout, out_lines), daemon=True),
             threading.Thread(target=_pump, args=(process.stderr, stderr, err_lines), daemon=True)]
    for t in pumps:
        t.start()

    def kill_job(*_):
        kill_process_group(process.pid)

    ended = threading.Event()
    watchdog = threading.Thread(target=end_after_a_failure, daemon=True,
                                args=(lambda: a_rank_failed(status_dir), ended, kill_job))
    watchdog.start()

    def interrupted(signum, _frame):
        kill_job()
        raise KeyboardInterrupt(f"ringtrain: stopped by signal {signum}; every rank was killed")

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, interrupted)
    try:
        returncode = process.wait(timeout=timeout)
    except BaseException:
        kill_job()
        process.wait()
        raise
    finally:
        ended.set()
        watchdog.join()
        kill_job()  # ranks that outlived mpiexec must not linger
        for t in pumps:
            t.join(timeout=5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    failed_rank, failed_status = _first_failure(status_dir)
    last = {r: list(err_lines.last.get(r, [])) or list(out_lines.last.get(r, []))
            for r in set(err_lines.last) | set(out_lines.last)}
    return JobResult(returncode, failed_rank, failed_status, last)


def a_rank_failed(status_dir):
    """Whether a rank_exec record in status_dir shows a non-zero exit."""
    for name in os.listdir(status_dir):
        if name.startswith("rank-") and not name.endswith(".tmp"):
            with open(os.path.join(status_dir, name)) as f:
                if int(f.read().split()[0]) != 0:
                    return True
    return False


def end_after_a_failure(failed, ended, kill_job, poll=0.1):
    """Until `ended` is set: once failed() is true, give the job FAILURE_GRACE seconds to end
    by itself, then kill_job(). For a watchdog thread beside whatever waits for the job. It
    kills even when the launcher process has exited: what it started may still hold the job's
    pipes open (a rank's own helper process, say)."""
    while not ended.wait(poll):
        if failed():
            if not ended.wait(FAILURE_GRACE):
                kill_job()
            return


def _first_failure(status_dir):
    ended = []
    for name in os.listdir(status_dir):
        if name.endswith(".tmp"):  # a rank killed while writing its record
            os.unlink(os.path.join(status_dir, name))
            continue
        with open(os.path.join(status_dir, name)) as f:
            status, when = f.read().split()
        os.unlink(os.path.join(status_dir, name))
        rank = int(name.split("-", 1)[1]) if name.split("-", 1)[1].isdigit() else name
        if int(status) != 0:
            ended.append((float(when), int(status) < 0, rank, int(status)))
    os.rmdir(status_dir)
    if not ended:
        return None, None
    # the first rank to fail on its own; ranks killed by a signal are usually collateral
    ended.sort(key=lambda e: (e[1], e[0]))
    return ended[0][2], ended[0][3]
