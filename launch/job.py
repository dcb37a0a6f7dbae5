"""A job: a command on N ranks under mpiexec, on this host or on many, streaming every rank's
output with its rank, and reporting the rank that failed. Used by `ringtrain run`, rt.run /
@rt.distributed and the Spark barrier task that leads a job.

The launcher runs a JobService: an authenticated channel (channel.py) that serves the pickled
function, and receives each rank's exit record (from rank_exec) and result (from worker). So
nothing depends on a file system the hosts share, and a failure on any host is seen at once.

The job runs in its own session: Ctrl-C or SIGTERM to this process kill the whole process group
(mpiexec, its proxies, every rank), so nothing is left behind.

When a rank exits non-zero, hydra is meant to kill the others, but its clean-up races between
the PMI socket closing and waitpid (pmodels/mpich#7057), and across hosts it does not end the
ranks of the other hosts at all; the rest can wait forever in a collective. So the launcher
watches the exit records itself and ends the job FAILURE_GRACE seconds after the first failure
if mpiexec has not."""
import dataclasses
import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .channel import Server, interface_address, job_environment, new_secret
from .mpiexec import die_with_parent, kill_process_group, mpiexec_command
from .rank_output import RankLines

FAILURE_GRACE = 3.0  # seconds the other ranks get to report their own errors after one fails


@dataclasses.dataclass(frozen=True)
class Hosts:
    """Where a job's ranks go: host names with slots, and how to reach them. Parsed once from
    -H / --hostfile (the CLI) or hosts= / hostfile= (rt.run)."""
    entries: tuple                      # ((host, slots), ...)
    launcher_command: str = None        # called like ssh: COMMAND HOST COMMAND...; None: hydra's ssh
    network_interface: str = None       # the interface the hosts reach each other on
    ssh_port: int = None                # passed to the launcher command as -p PORT (horovodrun's -p)

    @classmethod
    def parse(cls, hosts=None, hostfile=None, launcher_command=None, network_interface=None, ssh_port=None):
        """-> Hosts, or None for a job on this host only. Raises ValueError on a bad entry."""
        if hosts and hostfile:
            raise ValueError("give hosts or a hostfile, not both")
        if hostfile:
            with open(hostfile) as f:
                items = [line.split("#", 1)[0].strip().replace(" slots=", ":") for line in f]
        elif hosts:
            items = [h.strip() for h in hosts.split(",")] if isinstance(hosts, str) else list(hosts)
        else:
            if launcher_command or network_interface or ssh_port:
                raise ValueError("a launcher command, ssh port or network interface needs hosts (-H or --hostfile)")
            return None
        entries = []
        for item in filter(None, items):
            host, _, count = item.partition(":")
            if not host or (count and (not count.isdigit() or int(count) < 1)):
                raise ValueError(f"bad host entry {item!r}: expected host or host:slots")
            entries.append((host, int(count or 1)))
        if not entries:
            raise ValueError(f"no hosts in {hostfile or hosts!r}")
        return cls(tuple(entries), launcher_command, network_interface, ssh_port)

    @property
    def slots(self):
        return sum(slots for _, slots in self.entries)

    def spec(self):
        return ",".join(f"{host}:{slots}" for host, slots in self.entries)

    def check_slots(self, np):
        if self.slots < np:
            raise ValueError(f"-np {np} needs {np} slots, but the hosts offer {self.slots}: {self.spec()}")

    def service_address(self):
        """The address of this host that the job's hosts reach: the network interface's, or the
        one this host routes to them from (a UDP connect sends nothing)."""
        if self.network_interface:
            return interface_address(self.network_interface)
        for host, _ in self.entries:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect((host, 9))
                    address = s.getsockname()[0]
            except OSError:
                continue
            if not address.startswith("127."):
                return address
        return "127.0.0.1"


class JobService:
    """The launcher's end of the job channel: serves the payload (the pickled function of
    rt.run), and keeps every rank's exit record and result."""

    def __init__(self, payload=b"", host="127.0.0.1"):
        self.secret = new_secret()
        self.payload = payload
        self.exits = {}     # rank -> (status, time, host)
        self.results = {}   # rank -> bytes (a pickled record, see worker.py)
        self.started = set()  # ranks whose rank_exec has reported in
        self.hosts_changed = False  # set by a host discovery watcher; ranks ask at each elastic commit
        self._lock = threading.Lock()
        self._server = Server(self.secret, self._handle, host)

    def environment(self):
        return job_environment(self._server.address, self.secret)

    def _handle(self, message, data, reply):
        kind = message.get("type")
        with self._lock:
            if kind == "exit":
                self.exits[int(message["rank"])] = (int(message["status"]), float(message["time"]), message["host"])
            elif kind == "result":
                self.results[int(message["rank"])] = data
            elif kind == "started":
                self.started.add(int(message["rank"]))
        if kind == "payload":
            reply({"type": "payload"}, self.payload)
        elif kind == "hosts_changed":
            reply({"type": "hosts", "changed": self.hosts_changed})
        elif kind in ("exit", "result", "started"):
            reply({"type": "ok"})

    def a_rank_failed(self):
        with self._lock:
            return any(status not in (0, RESIZE_EXIT_STATUS) for status, _, _ in self.exits.values())

    def every_rank_left_to_resize(self, np):
        with self._lock:
            return len(self.exits) == np and all(s == RESIZE_EXIT_STATUS for s, _, _ in self.exits.values())

    def first_failure(self):
        """(rank, status) of the first rank that failed on its own, or (None, None)."""
        with self._lock:
            ended = [(when, status < 0, rank, status) for rank, (status, when, _) in self.exits.items() if status]
        if not ended:
            return None, None
        # ranks killed by a signal are usually collateral: prefer the first that failed by itself
        ended.sort(key=lambda e: (e[1], e[0]))
        return ended[0][2], ended[0][3]

    def close(self):
        self._server.close()


@dataclasses.dataclass
class JobResult:
    returncode: int
    failed_rank: object           # the first rank that exited non-zero, or None
    failed_status: object
    last_lines: dict              # rank -> its last stderr (and stdout) lines
    results: dict = dataclasses.field(default_factory=dict)  # rank -> bytes, from worker.py
    mpiexec_lines: list = dataclasses.field(default_factory=list)  # hydra's own words
    resized: bool = False         # every rank left to restart on the hosts discovery offers now
    not_started: str = None       # why the launcher ended the job before every rank had started

    def failure_report(self):
        if self.not_started:
            return self.not_started
        if self.failed_rank is None:
            said = "\n".join(f"    {line}" for line in self.mpiexec_lines[-8:] if line.strip())
            return (f"the job failed with status {self.returncode} and no rank reported an exit"
                    + (f"; mpiexec said:\n{said}" if said else ""))
        lines = "\n".join(f"    {line}" for line in self.last_lines.get(self.failed_rank, []))
        return (f"rank {self.failed_rank} failed with exit status {self.failed_status}; "
                f"its last output:\n{lines}")


def pump_rank_lines(stream, emit):
    """Every whole line of mpiexec's output stream, as emit(rank, line) (rank "mpiexec" for
    hydra's own); returns the RankLines with each rank's last lines."""
    lines = RankLines()
    while True:
        data = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not data:
            break
        for rank, line in lines.feed(data):
            emit(rank, line)
    for rank, line in lines.flush():
        emit(rank, line)
    return lines


def run_job(np, command, env=None, hosts=None, mpi_args=(), payload=b"", stdout=None, stderr=None, timeout=None,
            watch=None, start_timeout=None, output_dir=None, verbose=False):
    """Run `command` on np ranks (on `hosts`, a Hosts, or this host); each rank's lines go to
    stdout/stderr as "[rank]: line", and with output_dir also to output_dir/rank.N/stdout and
    stderr (horovodrun's --output-filename layout). Returns a JobResult when mpiexec has ended.
    watch(service, ended) runs in a thread while the job runs (a host discovery watcher). A job
    whose ranks have not all started within start_timeout seconds is stopped. verbose: say the
    mpiexec command line on stderr."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    service = JobService(payload, host=hosts.service_address() if hosts else "127.0.0.1")
    ended = threading.Event()
    watcher = threading.Thread(target=watch, args=(service, ended), daemon=True) if watch else None
    launcher_dir = None
    try:
        job_env = dict(os.environ if env is None else env, **service.environment())
        if hosts is not None and hosts.ssh_port:
            launcher_dir = tempfile.mkdtemp(prefix="ringtrain-launcher-")
            hosts = dataclasses.replace(hosts, launcher_command=_launcher_with_port(hosts, launcher_dir))
        argv = mpiexec_command(np, [sys.executable, "-m", "ringtrain.launch.rank_exec", *command],
                               hosts=hosts, extra=mpi_args)
        if verbose:
            # control characters (the prepend pattern's) escaped: one readable line
            stderr.write("ringtrain run: " + shlex.join(argv).encode("unicode_escape").decode("ascii") + "\n")
            stderr.flush()
        if watcher is not None:
            watcher.start()
        result = _supervise(argv, job_env, service, stdout, stderr, timeout, np, start_timeout, output_dir)
        result.resized = service.every_rank_left_to_resize(np)
        return result
    finally:
        ended.set()
        if watcher is not None:
            watcher.join(timeout=70)
        service.close()
        if launcher_dir is not None:
            shutil.rmtree(launcher_dir, ignore_errors=True)


def _launcher_with_port(hosts, directory):
    """hydra calls its launcher with fixed arguments: a private script puts -p PORT in front."""
    path = os.path.join(directory, "launcher")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(hosts.launcher_command or "ssh")} -p {int(hosts.ssh_port)} "$@"\n')
    os.chmod(path, 0o700)
    return path


class RankFiles:
    """Each rank's lines in directory/rank.N/stdout and stderr, opened as ranks first speak."""

    def __init__(self, directory):
        self.directory = directory
        self._files = {}
        self._lock = threading.Lock()

    def write(self, rank, stream, line):
        with self._lock:
            f = self._files.get((rank, stream))
            if f is None:
                folder = os.path.join(self.directory, f"rank.{rank}")
                os.makedirs(folder, exist_ok=True)
                f = self._files[(rank, stream)] = open(os.path.join(folder, stream), "a")
            f.write(line + "\n")
            f.flush()

    def close(self):
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


# The status with which every rank leaves when ringtrain.elastic saw, at a commit, that the host
# discovery script offers other hosts: the launcher starts the job again on them (EX_TEMPFAIL).
RESIZE_EXIT_STATUS = 75


def with_restarts(attempt, max_restarts, who, stderr=None):
    """Elastic recovery by restarting (like torchrun): attempt(restart) -> (outcome, failure),
    failure a short text, or None when the job succeeded. A failed job is started again, up to
    max_restarts times; the ranks find RINGTRAIN_RESTART in their environment and resume from
    their last persisted commit (ringtrain.elastic). Returns the last attempt's outcome."""
    stderr = stderr or sys.stderr
    for restart in range(max_restarts + 1):
        outcome, failure = attempt(restart)
        if failure is None or restart == max_restarts:
            return outcome
        stderr.write(f"{who}: the job failed ({failure}); restarting it from the last commit "
                     f"(restart {restart + 1} of {max_restarts})\n")
        stderr.flush()
    return outcome


class HydraLeftovers:
    """hydra's proxies each write a topology file to /tmp for their ranks and remove it when they
    end by themselves; a proxy killed first (by us, or by mpiexec, which SIGKILLs the proxies it
    started once they have reported, racing their clean-up) leaves it behind. Taken before the job
    starts, remove() deletes the files that appeared since, once no hydra proxy that shares this
    /tmp is left to need one (a concurrent job's proxy keeps them: its file cannot be told apart)."""
    PATTERN = "/tmp/hydra_hwloc_xmlfile_*"
    PROXY = b"hydra_pmi_proxy"

    def __init__(self):
        self._before = set(glob.glob(self.PATTERN))

    def remove(self, patience=2.0):
        deadline = time.monotonic() + patience
        while set(glob.glob(self.PATTERN)) - self._before:
            if not self._proxies_sharing_tmp():
                for path in set(glob.glob(self.PATTERN)) - self._before:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                return
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    @classmethod
    def _proxies_sharing_tmp(cls):
        """PIDs of live hydra proxies in this process's mount namespace (the ones that see our /tmp)."""
        try:
            mine = os.readlink("/proc/self/ns/mnt")
        except OSError:
            mine = None
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0", 1)[0]
                if not argv0.endswith(cls.PROXY):
                    continue
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue  # a zombie needs no file
                if mine is None or os.readlink(f"/proc/{entry}/ns/mnt") == mine:
                    found.append(int(entry))
            except (OSError, IndexError):
                continue
        return found


def _supervise(argv, env, service, stdout, stderr, timeout, np=None, start_timeout=None, output_dir=None):
    hydra_files = HydraLeftovers()
    files = RankFiles(output_dir) if output_dir else None
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=env, start_new_session=True, preexec_fn=die_with_parent)
    seen = {}

    def pump(stream, sink, name):
        def emit(rank, line):
            sink.write(f"[{rank}]: {line}\n" if rank != "mpiexec" else f"{line}\n")
            sink.flush()
            if files is not None and rank != "mpiexec":
                files.write(rank, "stdout" if name == "out" else "stderr", line)
        seen[name] = pump_rank_lines(stream, emit)

    pumps = [threading.Thread(target=pump, args=(process.stdout, stdout, "out"), daemon=True),
             threading.Thread(target=pump, args=(process.stderr, stderr, "err"), daemon=True)]
    for t in pumps:
        t.start()

    def kill_job(*_):
        stop_mpiexec(process)

    ended = threading.Event()
    watchdog = threading.Thread(target=end_after_a_failure, daemon=True, args=(service.a_rank_failed, ended, kill_job))
    watchdog.start()
    not_started = []

    def start_watch():
        deadline = time.monotonic() + start_timeout
        while not ended.wait(0.1):
            if len(service.started) >= np or service.exits:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(range(np)) - service.started)
                not_started.append(f"ranks {', '.join(map(str, missing))} of {np} did not start within --start-timeout "
                                   f"{start_timeout:g} s (is every host reachable by the launcher command, and "
                                   "ringtrain installed at the same path there?)")
                kill_job()
                return

    starter = threading.Thread(target=start_watch, daemon=True) if start_timeout and np else None
    if starter is not None:
        starter.start()

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
        if starter is not None:
            starter.join()
        kill_job()  # ranks that outlived mpiexec must not linger
        for t in pumps:
            t.join(timeout=5)
        if files is not None:
            files.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        hydra_files.remove()
    failed_rank, failed_status = service.first_failure()
    out, err = seen.get("out") or RankLines(), seen.get("err") or RankLines()
    last = {r: list(err.last.get(r, [])) or list(out.last.get(r, [])) for r in set(err.last) | set(out.last)}
    hydra = list(err.last.get("mpiexec", [])) + list(out.last.get("mpiexec", []))
    return JobResult(returncode, failed_rank, failed_status, last, dict(service.results), hydra,
                     not_started=not_started[0] if not_started else None)


def stop_mpiexec(process, patience=2.0):
    """End a job: SIGINT to mpiexec first, so that mpiexec tells the other hosts' proxies to end their
    ranks and removes its files, then SIGKILL to whatever is left of its process group."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGINT)  # mpiexec only: it signals its proxies itself
            process.wait(patience)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    kill_process_group(process.pid)


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
