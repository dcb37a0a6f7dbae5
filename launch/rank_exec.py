"""Runs one rank's command and records how it ended.

    python -m ringtrain.launch.rank_exec STATUS_DIR COMMAND...

mpiexec itself does not say which rank failed, only that one did. This wrapper runs the
command as its child (inheriting the PMI file descriptors MPI needs), writes
STATUS_DIR/rank-<r> with the exit status and the time it ended, and exits with the same status.
This process is tied to its parent, the proxy, and the child to this process (PR_SET_PDEATHSIG),
so killing the job cannot orphan either."""
import os
import signal
import subprocess
import sys
import time


def main():
    status_dir, command = sys.argv[1], sys.argv[2:]
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "unknown"
    from ringtrain.launch.mpiexec import die_with_parent

    die_with_parent()  # hydra's proxy may give its ranks their own process group: tie them to it
    if os.getppid() == 1:  # the proxy was already gone
        sys.exit(128 + signal.SIGKILL)
    child = subprocess.Popen(command, close_fds=False, preexec_fn=die_with_parent)

    def forward(signum, _frame):
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    status = child.wait()
    path = os.path.join(status_dir, f"rank-{rank}")
    with open(path + ".tmp", "w") as f:  # renamed into place: the launcher polls for these files
        f.write(f"{status} {time.time():.6f}\n")
    os.replace(path + ".tmp", path)
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
