"""Across emulated hosts (tests/emulated_hosts.py; needs root): allreduce against MPI_Allreduce
on 2 hosts x 1 rank and 2 x 2, links unshaped and shaped to 10 Gbit/s; Tensor Fusion
(bench/fusion.py) at 10 Gbit/s; the progress deadline's margin (bench/deadline.py) with links
shaped to 1 Gbit/s; and the launch time of a trivial 4-rank job on a Spark standalone cluster
(master + a worker per host) against the same kind of job on local[N] in the same run.

    sudo python bench/multihost.py [--repeats 5] [--only allreduce fusion deadline spark]

The allreduce tables come from bench/allreduce.py, started with `ringtrain run -H` on the hosts
(in place, unnamed, as that benchmark calls it)."""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from common import machine_line, print_table  # noqa: E402
from emulated_hosts import EmulatedCluster, SparkStandalone  # noqa: E402

SPARK_JOB = os.path.join(ROOT, "tests", "multihost", "spark_job.py")


def rank0_tables(cluster, spec, script, *args, what):
    """`ringtrain run -H spec python bench/<script> args` on the emulated hosts; prints rank 0's
    table lines."""
    result = cluster.run("h1", [sys.executable, "-m", "ringtrain", "run", "-np", str(ranks_of(spec)), "-H", spec,
                                "--launcher-command", cluster.launcher_exec, "--network-interface", "eth0",
                                "python", os.path.join(HERE, script), *args],
                         env=cluster.mpi_environment(), timeout=1800, cwd=HERE)
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-4000:])
        raise SystemExit(f"the {what} benchmark failed on {spec}")
    for line in result.stdout.splitlines():
        if line.startswith(("[0]: |", "[0]: #", "[0]: negotiation")):
            print(line[5:], flush=True)


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


PARTS = ["allreduce", "fusion", "deadline", "spark"]


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
        if "fusion" in args.only:
            fusion_tables(cluster)
        if "deadline" in args.only:
            deadline_tables(cluster)
        if "spark" in args.only:
            spark_launch_table(cluster, args.repeats)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
