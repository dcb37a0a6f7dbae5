"""Shared benchmark plumbing: relaunch under mpiexec, timing by repeated medians, tables."""
import os
import statistics
import sys
import time


def ensure_mpi(np_default, argv=None):
    """Re-run this script under `mpiexec -n np` unless it already runs inside an MPI job."""
    if "PMI_RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from ringtrain.launch import find_mpiexec

    np = int(os.environ.get("BENCH_NP", np_default))
    command = [find_mpiexec(), "-n", str(np), sys.executable, os.path.abspath(sys.argv[0]), *(argv or sys.argv[1:])]
    print(f"# running: {' '.join(command)}", flush=True)
    os.execv(command[0], command)


def median_seconds(fn, iterations, repeats, sync):
    """Median over `repeats` of the mean time of `iterations` back-to-back calls."""
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        samples.append((time.perf_counter() - start) / iterations)
    return statistics.median(samples)


def paired_medians(fns, iterations, repeats, sync):
    """Median time per call of each function, measured in alternation (A, B, A, B, ...) so that
    a slow stretch of the machine lands on every contender alike."""
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            sync()
            start = time.perf_counter()
            for _ in range(iterations):
                fn()
            out.append((time.perf_counter() - start) / iterations)
    return [statistics.median(s) for s in samples]


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:g} {unit}"
        n /= 1024


def machine_line():
    import platform

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{time.strftime('%Y-%m-%d')}, nproc={os.cpu_count()}, {model}, Python {platform.python_version()}"


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(str(h).rjust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).rjust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()
