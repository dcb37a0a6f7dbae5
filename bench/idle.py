"""CPU an idle rank burns: after init(), each rank sleeps; getrusage says how much CPU its process
used meanwhile (the engine's thread included). The peer is a plain mpi4py process doing the same
(0%). Also after a burst of work, since an engine that has just been busy must calm down again.

    python bench/idle.py [--seconds 8]      # relaunches itself under mpiexec -n 2"""
import argparse
import resource
import time

from common import ensure_mpi, machine_line, print_table

ensure_mpi(2)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import ringtrain as rt  # noqa: E402


def cpu_percent(seconds):
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return 100 * used / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    comm.Barrier()
    plain = cpu_percent(args.seconds)  # before ringtrain starts its engine: mpi4py alone
    rt.init()
    time.sleep(0.5)
    fresh = cpu_percent(args.seconds)
    x = np.ones(1024, np.float32)
    for _ in range(2000):  # a burst of work, then idle again
        rt.allreduce_(x, name="burst")
    handles = [rt.allreduce_async(np.ones(16), name=f"async.{i}") for i in range(200)]
    for h in handles:
        rt.synchronize(h)
    time.sleep(0.5)
    after = cpu_percent(args.seconds)
    rows = comm.gather([comm.rank, f"{plain:.2f}", f"{fresh:.2f}", f"{after:.2f}"], root=0)
    if comm.rank == 0:
        print(f"# {machine_line()}; {comm.size} ranks; idle for {args.seconds:g} s each")
        print_table(["rank", "mpi4py only, % of a core", "ringtrain idle after init, %",
                     "ringtrain idle after a burst, %"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
