"""Runs one rank's command and reports how it ended.

    python -m ringtrain.launch.rank_exec COMMAND...

mpiexec itself does not say which rank failed, only that one did. This wrapper runs the
command as its child (inheriting the PMI file descriptors MPI needs), sends the job's launcher
an exit record (rank, status, time, host) over the job channel (channel.py; its address and
secret are in the environment), and exits with the same status. Nothing is written to disk, so
it works on hosts that share no file system with the launcher. This process is tied to its
parent, the proxy, and the child to this process (PR_SET_PDEATHSIG), so killing the job cannot
orphan either."""
import os
import signal
import socket
import subprocess
import sys
import time


def main():
    command = sys.argv[1:]
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    from ringtrain.launch.channel import Client
    from ringtrain.launch.mpiexec import die_with_parent

    die_with_parent()  # hydra's proxy may give its ranks their own process group: tie them to it
    if os.getppid() == 1:  # the proxy was already gone
        sys.exit(128 + signal.SIGKILL)
    if rank is None or not command:
        sys.exit("ringtrain.launch.rank_exec runs one rank of a job started by ringtrain (no PMI_RANK or no command)")
    client = Client.from_environment()
    if client is None:
        sys.exit("ringtrain.launch.rank_exec: no job channel in the environment: start it through ringtrain run")
    client.request({"type": "started", "rank": int(rank)})  # for the launcher's --start-timeout
    child = subprocess.Popen(command, close_fds=False, preexec_fn=die_with_parent)

    def forward(signum, _frame):
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    status = child.wait()
    # a request, not a one-way send: the record is stored before mpiexec can see this rank end
    client.request({"type": "exit", "rank": int(rank), "status": status, "time": time.time(),
                    "host": socket.gethostname()})
    client.close()
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
