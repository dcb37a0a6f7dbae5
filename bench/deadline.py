"""The progress deadline's margin: the longest stretch a wait went without any message
completing (and still completed), during allreduce, broadcast and allgather of 1-64 MB, against
the default RINGTRAIN_PROGRESS_TIMEOUT. The deadline only trips after that long with nothing
completing, so this ratio is the safety margin a healthy job has.

    python bench/deadline.py                 # 2 ranks on this host (BENCH_NP=3 for 3)
    sudo python bench/multihost.py --only deadline   # 2 emulated hosts, links shaped to 1 Gbit/s

Calls go through the public API, named, as a training loop makes them."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ensure_mpi, human_bytes, machine_line, print_table  # noqa: E402

REPEATS = 5


def main():
    ensure_mpi(2)
    import numpy as np

    import ringtrain as rt
    from ringtrain.config import Config
    from ringtrain.runtime import current

    rt.init()
    core = current("bench").core
    rank, size = rt.rank(), rt.size()
    default = Config.progress_timeout
    rows = []
    for kind in ("allreduce", "broadcast", "allgather"):
        for nbytes in (1 << 20, 16 << 20, 64 << 20):
            x = np.ones(nbytes // 4, dtype=np.float32)
            calls = {"allreduce": lambda: rt.allreduce_(x, name=f"a{nbytes}"),
                     "broadcast": lambda: rt.broadcast_(x, root_rank=0, name=f"b{nbytes}"),
                     "allgather": lambda: rt.allgather(x[: x.size // size], name=f"g{nbytes}")}
            calls[kind]()  # warm-up (negotiation, first touch)
            rt.barrier()
            core.take_longest_quiet()
            started = time.perf_counter()
            for _ in range(REPEATS):
                calls[kind]()
            seconds = (time.perf_counter() - started) / REPEATS
            quiet = max(rt.allgather_object(core.take_longest_quiet()))
            seconds = max(rt.allgather_object(seconds))
            if rank == 0:
                print(f"# {kind} {human_bytes(nbytes)} done", flush=True)
            rows.append([kind, human_bytes(nbytes), f"{seconds * 1e3:.1f}", f"{quiet * 1e3:.2f}", f"{default:g}",
                         f"{default / max(quiet, 1e-6):,.0f}"])
    if rank == 0:
        print(f"# {machine_line()}; {size} ranks")
        print_table(["collective", "size", "ms per call (slowest rank)", "longest quiet wait, ms (any rank)",
                     "default timeout, s", "timeout / longest quiet"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
