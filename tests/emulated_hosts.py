"""Emulated hosts on one machine, for real: each host is a network namespace (its own network
stack and address on a private bridge) plus a UTS namespace (its own hostname) and a mount
namespace (its own /tmp, /dev/shm and /etc/hosts). Needs root, as CI has.

    cluster = EmulatedCluster(3)          # creates h1, h2, h3 (removing what an earlier run left)
    cluster.run("h2", ["hostname"])       # -> CompletedProcess, run inside h2
    cluster.launcher_exec                 # for hydra: mpiexec -launcher ssh -launcher-exec ...
    cluster.shape("10gbit")               # tbf on every link, both ways
    cluster.close()                       # removes everything it made

The namespaces are persistent (bind-mounted under STATE_DIR), so every process started on a host
sees the same hostname, /tmp and /dev/shm. The hosts talk only to each other: the bridge has no
address in the machine's own namespace and the hosts have no default route. Also a command line
for bench/: `python tests/emulated_hosts.py up 2`, `... down`.
"""
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time

STATE_DIR = "/run/ringtrain-hosts"
NETNS_PREFIX = "rt-"          # ip netns names: rt-h1, rt-h2, ...
BRIDGE = "rtbr0"
INTERFACE = "eth0"            # every host's own interface, as on a real cluster
# RFC 2544's benchmarking range: never a real network, so it cannot collide with the machine's.
SUBNET = ipaddress.ip_network("198.18.213.0/24")


class NotRoot(RuntimeError):
    pass


def _sh(*argv, check=True, **kwargs):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)


def host_address(index):
    return str(SUBNET.network_address + 10 + index)


def _namespace_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def processes_in(uts_path):
    """PIDs of every process whose UTS namespace is the one bound at uts_path."""
    inode = _namespace_inode(uts_path)
    pids = []
    if inode is None:
        return pids
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/uts").st_ino == inode and int(entry) != os.getpid():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def remove_stale():
    """Everything an earlier (perhaps killed) run left: processes inside its hosts, the bound
    namespaces, the netns, the veths and the bridge."""
    if os.path.isdir(STATE_DIR):
        for name in sorted(os.listdir(STATE_DIR)):
            path = os.path.join(STATE_DIR, name)
            if name.endswith(".uts"):
                for pid in processes_in(path):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for name in sorted(os.listdir(STATE_DIR)):
            path = os.path.join(STATE_DIR, name)
            if name.endswith((".uts", ".mnt")):
                _sh("umount", path, check=False)
        _sh("umount", STATE_DIR, check=False)
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    for line in _sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NETNS_PREFIX):
            _sh("ip", "netns", "delete", name, check=False)
    for line in _sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        ifname = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if ifname == BRIDGE or ifname.startswith("rtv"):
            _sh("ip", "link", "delete", ifname, check=False)


def _check_subnet_is_free():
    for line in _sh("ip", "-4", "route", "show").stdout.splitlines():
        target = line.split()[0]
        if target == "default":
            continue
        try:
            if ipaddress.ip_network(target, strict=False).overlaps(SUBNET):
                raise RuntimeError(f"the emulated hosts' subnet {SUBNET} overlaps this machine's route {line!r}")
        except ValueError:
            continue


LAUNCHER_EXEC = """#!/bin/sh
# hydra's ssh launcher calls this as `ssh [options] HOST COMMAND...`: run COMMAND inside HOST.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host="$1"; shift
[ -e "{state}/$host.pid" ] || {{ echo "no emulated host $host" >&2; exit 255; }}
# through the host's keeper process: the bound namespace files of hosts made later are not
# visible inside an earlier host's mount namespace
exec nsenter -t "$(cat {state}/$host.pid)" --net --uts --mount -- sh -c "$*"
"""


class EmulatedCluster:
    def __init__(self, n_hosts):
        if os.geteuid() != 0:
            raise NotRoot("emulated hosts need root (network, UTS and mount namespaces): run the tests as "
                          "root, as CI does")
        for tool in ("ip", "nsenter", "unshare", "tc"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"emulated hosts need `{tool}` (iproute2 / util-linux)")
        remove_stale()
        _check_subnet_is_free()
        self.hosts = [f"h{i}" for i in range(1, n_hosts + 1)]
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.shared_in_tmp = sorted({os.path.realpath(p) for p in (here, sys.prefix, os.path.dirname(sys.executable))
                                     if os.path.realpath(p).startswith("/tmp/")})
        # one mount per tree: a path inside another shared one comes with it
        self.shared_in_tmp = [p for p in self.shared_in_tmp
                              if not any(p != q and p.startswith(q + "/") for q in self.shared_in_tmp)]
        self.addresses = {h: host_address(i) for i, h in enumerate(self.hosts, 1)}
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    # -- set-up -----------------------------------------------------------------------------
    def _create(self):
        self._keepers = []
        os.makedirs(STATE_DIR)
        # unshare --uts=FILE binds the namespace there: the parent mount must be private
        _sh("mount", "--bind", STATE_DIR, STATE_DIR)
        _sh("mount", "--make-private", STATE_DIR)
        hosts_file = os.path.join(STATE_DIR, "hosts")
        with open(hosts_file, "w") as f:
            f.write("127.0.0.1 localhost\n")
            f.writelines(f"{address} {host}\n" for host, address in self.addresses.items())
        self.launcher_exec = os.path.join(STATE_DIR, "enter-host")
        with open(self.launcher_exec, "w") as f:
            f.write(LAUNCHER_EXEC.format(state=STATE_DIR, prefix=NETNS_PREFIX))
        os.chmod(self.launcher_exec, 0o755)
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
        _sh("ip", "link", "set", BRIDGE, "up")
        for i, host in enumerate(self.hosts, 1):
            netns = NETNS_PREFIX + host
            _sh("ip", "netns", "add", netns)
            outside = f"rtv{i}"
            _sh("ip", "link", "add", outside, "type", "veth", "peer", "name", f"rtp{i}")
            _sh("ip", "link", "set", f"rtp{i}", "netns", netns)
            _sh("ip", "link", "set", outside, "master", BRIDGE)
            _sh("ip", "link", "set", outside, "up")
            inside = ["ip", "netns", "exec", netns]
            _sh(*inside, "ip", "link", "set", f"rtp{i}", "name", INTERFACE)
            _sh(*inside, "ip", "addr", "add", f"{self.addresses[host]}/{SUBNET.prefixlen}", "dev", INTERFACE)
            _sh(*inside, "ip", "link", "set", INTERFACE, "up")
            _sh(*inside, "ip", "link", "set", "lo", "up")
            uts, mnt = self._ns_files(host)
            for path in (uts, mnt):
                open(path, "w").close()
            # Directories every host must see (like an NFS home: the code and its venv) stay
            # visible under the host's own /tmp when they live in /tmp (a CI clone there).
            stage = os.path.join(STATE_DIR, f"stage-{host}")
            keep, restore = [], []
            for k, path in enumerate(self.shared_in_tmp):
                os.makedirs(f"{stage}/{k}")
                keep.append(f"mount --bind {path} {stage}/{k}")
                restore.append(f"mkdir -p {path} && mount --move {stage}/{k} {path}")
            script = " && ".join([f"hostname {host}", "mount -t tmpfs -o size=4g tmpfs /dev/shm", *keep,
                                  "mount -t tmpfs -o mode=1777 tmpfs /tmp", *restore,
                                  f"mount --bind {hosts_file} /etc/hosts"])
            _sh("nsenter", f"--net=/run/netns/{netns}", "unshare", f"--uts={uts}", f"--mount={mnt}",
                "--propagation", "private", "sh", "-c", script, cwd="/")
            keeper = subprocess.Popen(self.enter(host) + ["sleep", "infinity"], cwd="/", start_new_session=True,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(STATE_DIR, f"{host}.pid"), "w") as f:
                f.write(f"{keeper.pid}\n")
            self._keepers.append(keeper)

    def _ns_files(self, host):
        return os.path.join(STATE_DIR, f"{host}.uts"), os.path.join(STATE_DIR, f"{host}.mnt")

    # -- use --------------------------------------------------------------------------------
    def enter(self, host):
        """The argv prefix that runs a command inside `host`."""
        uts, mnt = self._ns_files(host)
        return ["nsenter", f"--net=/run/netns/{NETNS_PREFIX}{host}", f"--uts={uts}", f"--mount={mnt}", "--"]

    def popen(self, host, argv, **kwargs):
        kwargs.setdefault("cwd", os.getcwd())
        return subprocess.Popen(self.enter(host) + list(argv), **kwargs)

    def run(self, host, argv, timeout=120, **kwargs):
        kwargs.setdefault("cwd", os.getcwd())
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.enter(host) + list(argv), timeout=timeout, **kwargs)

    def processes(self, host):
        """PIDs of the processes running on `host` now (not its keeper)."""
        keepers = {k.pid for k in getattr(self, "_keepers", [])}
        return [p for p in processes_in(self._ns_files(host)[0]) if p not in keepers]

    def files(self, host, directory="/tmp"):
        """Names in `host`'s own /tmp (or another directory of that host)."""
        out = self.run(host, ["ls", "-A", directory]).stdout
        shared_tops = {os.path.relpath(p, directory).split("/")[0] for p in self.shared_in_tmp
                       if p.startswith(directory.rstrip("/") + "/")}
        return sorted(set(out.split()) - shared_tops)

    def kill_processes(self, host):
        for pid in self.processes(host):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def shape(self, rate=None):
        """tbf on both ends of every link at `rate` (e.g. "10gbit"); None removes it."""
        for i, host in enumerate(self.hosts, 1):
            for prefix in ([], ["ip", "netns", "exec", NETNS_PREFIX + host]):
                dev = INTERFACE if prefix else f"rtv{i}"
                _sh(*prefix, "tc", "qdisc", "del", "dev", dev, "root", check=False)
                if rate:
                    _sh(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                        "burst", "1mb", "latency", "50ms")

    def mpi_environment(self, base=None):
        """What MPI needs between these hosts: TCP (without it UCX uses shared memory/CMA between
        namespaces of one kernel, which real hosts cannot)."""
        env = dict(os.environ if base is None else base)
        env["UCX_TLS"] = "tcp,self"
        return env

    def close(self):
        for host in getattr(self, "hosts", []):
            if os.path.exists(self._ns_files(host)[0]):
                self.kill_processes(host)
        deadline = time.monotonic() + 5
        while any(self.processes(h) for h in getattr(self, "hosts", []) if os.path.exists(self._ns_files(h)[0])):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        remove_stale()  # kills the keepers too
        for keeper in getattr(self, "_keepers", []):
            keeper.wait()


class SparkStandalone:
    """A real Spark standalone cluster on emulated hosts: the master on the first host, one
    worker per host (started with spark-class, SPARK_HOME set from pyspark), each worker's
    directories on its own host. Drivers run on the first host too (see driver_env)."""

    def __init__(self, cluster, hosts=None, cores_per_worker=2, memory="2g", timeout=90):
        import pyspark

        self.cluster = cluster
        self.spark_home = os.path.dirname(pyspark.__file__)
        self.master_host = cluster.hosts[0]
        self.url = f"spark://{self.master_host}:7077"
        self.daemons = []
        self.logs = {}
        self.hosts = list(hosts or cluster.hosts)
        self.cores = cores_per_worker * len(self.hosts)
        try:
            self._start("master", self.master_host, ["org.apache.spark.deploy.master.Master",
                                                     "--host", self.master_host, "--port", "7077",
                                                     "--webui-port", "8080"])
            self._wait_for("master", "Starting Spark master", timeout)
            for host in self.hosts:
                # work dirs (and so executors' working directories) in the host's own /tmp
                self._start(f"worker-{host}", host, ["org.apache.spark.deploy.worker.Worker", "--host", host,
                                                     "--cores", str(cores_per_worker), "--memory", memory,
                                                     "--work-dir", "/tmp/spark-work", self.url])
            for host in self.hosts:
                self._wait_for(f"worker-{host}", "Successfully registered with master", timeout)
        except BaseException:
            self.close()
            raise

    def environment(self, host):
        env = dict(os.environ, SPARK_HOME=self.spark_home, SPARK_LOCAL_IP=self.cluster.addresses[host],
                   PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
                   SPARK_NO_DAEMONIZE="1")
        return self.cluster.mpi_environment(env)

    def _start(self, name, host, argv):
        log = open(os.path.join(STATE_DIR, f"spark-{name}.log"), "w+")
        self.logs[name] = log
        process = self.cluster.popen(host, [os.path.join(self.spark_home, "bin", "spark-class"), *argv],
                                     env=self.environment(host), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd="/")
        self.daemons.append(process)

    def _wait_for(self, name, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.logs[name].name) as f:
                if text in f.read():
                    return
            if any(p.poll() is not None for p in self.daemons):
                break
            time.sleep(0.2)
        with open(self.logs[name].name) as f:
            raise RuntimeError(f"Spark {name} did not start: {f.read()[-3000:]}")

    def daemon_pids(self):
        """The master's and workers' JVMs (and their launch shells)."""
        pids = set()
        for process in self.daemons:
            pids.add(process.pid)
            try:
                with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                pass
        return pids

    def close(self):
        for process in self.daemons:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
        for log in self.logs.values():
            log.close()


def main(argv):
    if argv[:1] == ["up"]:
        cluster = EmulatedCluster(int(argv[1]) if len(argv) > 1 else 2)
        print(f"hosts {' '.join(cluster.hosts)} up; launcher-exec {cluster.launcher_exec}; "
              f"interface {INTERFACE}; enter with: {' '.join(cluster.enter(cluster.hosts[0]))} bash")
    elif argv[:1] == ["down"]:
        remove_stale()
        print("removed")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
