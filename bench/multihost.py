"""Across emulated hosts (tests/emulated_hosts.py; needs root): allreduce against MPI_Allreduce
on 2 hosts x 1 rank and 2 x 2, links unshaped and shaped to 10 Gbit/s; the hierarchical
allreduce (2 x 2, 10 Gbit/s, 1-64 MB) against MPI and against a plain TCP stream between the two
hosts measured in the same run, and the flat ring (hierarchical allreduce off); Tensor Fusion
(bench/fusion.py) at 10 Gbit/s; the progress deadline's margin (bench/deadline.py) with links
shaped to 1 Gbit/s; the planner's predictions and fusion advice (bench/plan.py) on 2 x 1 at 10
and 1 Gbit/s; and the launch time of a trivial 4-rank job on a Spark standalone cluster
(master + a worker per host) against the same kind of job on local[N] in the same run.

    sudo python bench/multihost.py [--repeats 5] [--only allreduce hierarchical fusion deadline plan spark]

The allreduce tables come from bench/allreduce.py, started with `ringtrain run -H` on the hosts
(in place, unnamed, as that benchmark calls it)."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from common import machine_line, print_table  # noqa: E402
from emulated_hosts import EmulatedCluster, SparkStandalone  # noqa: E402

SPARK_JOB = os.path.join(ROOT, "tests", "multihost", "spark_job.py")


def rank0_tables(cluster, spec, script, *args, what, env=None):
    """`ringtrain run -H spec python bench/<script> args` on the emulated hosts; prints rank 0's
    table lines and returns them."""
    result = cluster.run("h1", [sys.executable, "-m", "ringtrain", "run", "-np", str(ranks_of(spec)), "-H", spec,
                                "--launcher-command", cluster.launcher_exec, "--network-interface", "eth0",
                                "python", os.path.join(HERE, script), *args],
                         env=cluster.mpi_environment(env), timeout=1800, cwd=HERE)
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-4000:])
        raise SystemExit(f"the {what} benchmark failed on {spec}")
    lines = [line[5:] for line in result.stdout.splitlines() if line.startswith(("[0]: |", "[0]: #", "[0]: negotiation"))]
    for line in lines:
        print(line, flush=True)
    return lines


TCP_STREAM = """
import socket, sys, time
role, address, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "receive":
    server = socket.create_server((address, 0))
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    view, got = bytearray(1 << 20), 0
    started = None
    while got < nbytes:
        n = conn.recv_into(view)
        if not n:
            break
        started = started or time.perf_counter()
        got += n
    print(got / (time.perf_counter() - started), flush=True)
else:
    host, port = address.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)))
    chunk = bytes(1 << 20)
    for _ in range(nbytes >> 20):
        conn.sendall(chunk)
    conn.close()
"""


def tcp_stream_rate(cluster, nbytes=1 << 30, both_ways=False):
    """Bytes per second of one plain TCP stream from h2 to h1 (Python sockets, 1 MB writes); with
    both_ways, the slower of two streams run at once, h2 -> h1 and h1 -> h2 (what an allreduce
    between two hosts asks of the link and of the kernel that carries both hosts here)."""
    pairs = [("h1", "h2")] + ([("h2", "h1")] if both_ways else [])
    receivers = []
    for into, _ in pairs:
        receivers.append(cluster.popen(into, [sys.executable, "-c", TCP_STREAM, "receive", cluster.addresses[into],
                                              str(nbytes)], stdout=subprocess.PIPE, text=True))
    ports = [r.stdout.readline().strip() for r in receivers]
    senders = [cluster.popen(source, [sys.executable, "-c", TCP_STREAM, "send", f"{cluster.addresses[into]}:{port}",
                                      str(nbytes)], stderr=subprocess.PIPE, text=True)
               for (into, source), port in zip(pairs, ports)]
    rates = [float(r.stdout.readline()) for r in receivers]
    for process in receivers + senders:
        if process.wait(timeout=300) != 0:
            raise SystemExit("a TCP stream failed")
    return min(rates)


def hierarchical_tables(cluster, max_bytes, runs=2):
    """2 x 2 at 10 Gbit/s, 1-64 MB: the hierarchical allreduce (the default, and with one leader
    per host) against MPI, with TCP streams measured before each run; then the flat ring
    (hierarchical off) the same way."""
    cluster.shape("10gbit")
    try:
        for label, env in (("hierarchical, every local rank crosses hosts", {}),
                           ("hierarchical, one leader per host (RINGTRAIN_HIERARCHICAL_ONE_LEADER=1)",
                            {"RINGTRAIN_HIERARCHICAL_ONE_LEADER": "1"}),
                           ("flat ring (RINGTRAIN_HIERARCHICAL_ALLREDUCE=0)", {"RINGTRAIN_HIERARCHICAL_ALLREDUCE": "0"})):
            for run in range(runs):
                rate, both = tcp_stream_rate(cluster), tcp_stream_rate(cluster, both_ways=True)
                print(f"\n## {label}, h1:2,h2:2, links 10gbit, run {run + 1}: TCP stream h2 -> h1 "
                      f"{rate / 1e9:.3f} GB/s; both ways at once {both / 1e9:.3f} GB/s each", flush=True)
                lines = rank0_tables(cluster, "h1:2,h2:2", "allreduce.py", "--named", "--min-bytes", str(1 << 20),
                                     "--max-bytes", str(max_bytes), what=label, env=dict(os.environ, **env))
                rows = []
                for line in lines:
                    cells = [c.strip() for c in line.strip("|").split("|")]
                    if len(cells) == 8 and cells[0][0].isdigit():
                        busbw = float(cells[6])
                        algbw = busbw * 4 / (2 * 3)  # 4 ranks: busbw = 2(p-1)/p * algbw
                        rows.append([cells[0], cells[1], f"{algbw:.3f}", f"{rate / 1e9:.3f}",
                                     f"{rate / 1e9 / algbw:.2f}", f"{both / 1e9:.3f}", f"{both / 1e9 / algbw:.2f}"])
                print_table(["size", "algorithm", "ringtrain algbw GB/s", "TCP stream GB/s", "TCP / algbw",
                             "TCP both ways GB/s each", "both ways / algbw"], rows)
    finally:
        cluster.shape(None)


def ranks_of(spec):
    return sum(int(s.split(":")[1]) for s in spec.split(","))


def shaped_tables(cluster, rate, title, script, *args):
    """rank0_tables of `script` on 2 x 1 and 2 x 2 ranks, links shaped to `rate` (None: unshaped)."""
    cluster.shape(rate)
    try:
        for spec in ("h1:1,h2:1", "h1:2,h2:2"):
            print(f"\n## {title}, {spec} ({ranks_of(spec)} ranks), links {rate or 'unshaped'}", flush=True)
            rank0_tables(cluster, spec, script, *args, what=title)
    finally:
        cluster.shape(None)


def allreduce_tables(cluster, max_bytes):
    for rate in (None, "10gbit"):
        shaped_tables(cluster, rate, "allreduce", "allreduce.py", "--max-bytes", str(max_bytes))


def fusion_tables(cluster):
    """bench/fusion.py across hosts (fused vs unfused vs one MPI_Allreduce), links shaped to 10 Gbit/s."""
    shaped_tables(cluster, "10gbit", "fusion", "fusion.py")


def deadline_tables(cluster):
    """bench/deadline.py across hosts on the slowest link the default progress deadline promises
    to tolerate: 1 Gbit/s."""
    shaped_tables(cluster, "1gbit", "progress deadline margin", "deadline.py")


def plan_tables(cluster):
    """bench/plan.py (the planner's predicted step vs the measured one, and the fusion-threshold
    advice vs a sweep of the real setting) on 2 hosts x 1 rank, links shaped to 10 and 1 Gbit/s."""
    for rate in ("10gbit", "1gbit"):
        cluster.shape(rate)
        try:
            print(f"\n## planner validation, h1:1,h2:1 (2 ranks), links {rate}", flush=True)
            rank0_tables(cluster, "h1:1,h2:1", "plan.py", what="planner validation")
        finally:
            cluster.shape(None)


def spark_launch_table(cluster, repeats):
    spark = SparkStandalone(cluster, hosts=cluster.hosts[:2])
    rows = []
    try:
        for label, master, ranks in (("standalone, 2 hosts", spark.url, 4), ("local[2]", "local[2]", 2),
                                     ("local[4]", "local[4]", 4)):
            print(f"# {label}: {repeats} trivial jobs of {ranks} ranks", file=sys.stderr, flush=True)
            started = time.perf_counter()
            result = cluster.run("h1", [sys.executable, SPARK_JOB, master, "launch", str(repeats), str(ranks)],
                                 env=spark.environment("h1"), timeout=1800, stderr=None)
            total = time.perf_counter() - started
            lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
            if result.returncode != 0 or not lines:
                raise SystemExit(f"the Spark launch benchmark failed on {label}: {result.stdout[-2000:]}")
            seconds = json.loads(lines[-1][7:])["seconds"]
            rows.append((label, ranks, seconds, total))
    finally:
        spark.close()
    reference = statistics.median(rows[1][2][1:])
    table = []
    for label, ranks, seconds, total in rows:
        repeated = statistics.median(seconds[1:])
        table.append([label, ranks, f"{total:.1f}", f"{seconds[0]:.2f}", f"{repeated:.2f}",
                      f"{min(seconds[1:]):.2f}", f"{max(seconds[1:]):.2f}", f"{repeated / reference:.2f}"])
    print(f"\n## Spark launch of a trivial job (one allreduce), first and repeated (median of {repeats - 1})")
    print_table(["cluster", "ranks", "driver process s", "first job s", "repeated median s", "min s", "max s",
                 "repeated / local[2]"], table)


PARTS = ["allreduce", "hierarchical", "fusion", "deadline", "plan", "spark"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=6, help="Spark jobs per cluster (the first is reported apart)")
    parser.add_argument("--max-bytes", type=int, default=64 << 20)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, help="run only these parts")
    args = parser.parse_args()
    print(f"# {machine_line()}; emulated hosts (network namespaces, veth + bridge, UCX_TLS=tcp,self)", flush=True)
    cluster = EmulatedCluster(2)
    try:
        if "allreduce" in args.only:
            allreduce_tables(cluster, args.max_bytes)
        if "hierarchical" in args.only:
            hierarchical_tables(cluster, args.max_bytes)
        if "fusion" in args.only:
            fusion_tables(cluster)
        if "deadline" in args.only:
            deadline_tables(cluster)
        if "plan" in args.only:
            plan_tables(cluster)
        if "spark" in args.only:
            spark_launch_table(cluster, args.repeats)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
