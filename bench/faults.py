"""Faults, as a user meets them: for each case, how long until every surviving rank has a clear
error, how long until the whole job has ended, and what it left behind. 3 ranks on this host.

    python bench/faults.py

Each program writes the wall-clock time of its fault (just before a rank stops or dies, or when
the faulty call starts) and each rank the time it caught its error; the table gives the worst
rank. Frozen ranks use progress_timeout=3 (the default is 30 s)."""
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import machine_line, print_table  # noqa: E402

PRELUDE = """
import os, signal, sys, threading, time
import numpy as np, ringtrain as rt
def fault_now():
    print(f"T_FAULT {time.time():.6f}", flush=True)
def caught(error):
    print(f"T_ERROR {time.time():.6f} {type(error).__name__}: {error}", flush=True)
"""

CASES = {
    "rank 1 stopped (SIGSTOP) inside allreduces of 32 MB": """
        rt.init(progress_timeout=3)
        x = np.ones(8 << 20, dtype=np.float32)
        if rt.rank() == 1:
            threading.Timer(1.0, lambda: (fault_now(), os.kill(os.getpid(), signal.SIGSTOP))).start()
        try:
            while True:
                rt.allreduce_(x, name="x")
        except rt.RingtrainError as e:
            caught(e); sys.exit(3)
    """,
    "rank 1 stopped (SIGSTOP) before submitting": """
        rt.init(progress_timeout=3)
        if rt.rank() == 1:
            time.sleep(0.5); fault_now(); os.kill(os.getpid(), signal.SIGSTOP)
        try:
            rt.allreduce(np.ones(4), name="x")
        except rt.RingtrainError as e:
            caught(e); sys.exit(3)
    """,
    "rank 1 killed (SIGKILL) inside allreduces of 32 MB": """
        rt.init(progress_timeout=3)
        x = np.ones(8 << 20, dtype=np.float32)
        if rt.rank() == 1:
            threading.Timer(1.0, lambda: (fault_now(), os.kill(os.getpid(), signal.SIGKILL))).start()
        try:
            while True:
                rt.allreduce_(x, name="x")
        except rt.RingtrainError as e:
            caught(e); sys.exit(3)
    """,
    "process-set mismatch (rank 0 on [0, 1], the others on the global set)": """
        pair = rt.ProcessSet([0, 1])
        rt.init(process_sets=[pair])
        fault_now()
        try:
            rt.allreduce(np.ones(4), name="t", process_set=pair if rt.rank() == 0 else rt.global_process_set)
        except rt.RingtrainError as e:
            caught(e)
    """,
    "shape mismatch (rank 2 swaps the dimensions)": """
        rt.init()
        fault_now()
        try:
            rt.allreduce(np.zeros((64, 128) if rt.rank() == 2 else (128, 64)), name="grad")
        except rt.RingtrainError as e:
            caught(e)
    """,
    "rank 2 skips an allreduce and ends its program": """
        rt.init()
        fault_now()
        if rt.rank() != 2:
            try:
                rt.allreduce(np.ones(4), name="only_some")
            except rt.RingtrainError as e:
                caught(e); sys.exit(3)
    """,
}


def run_case(code):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PRELUDE + textwrap.dedent(code))
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "ringtrain", "run", "-np", "3", "python", f.name],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    ended = time.time()
    leftovers = subprocess.run(["pgrep", "-f", f.name], capture_output=True, text=True).stdout.split()
    os.unlink(f.name)
    out = proc.stdout + proc.stderr
    faults = [float(t) for t in re.findall(r"T_FAULT ([\d.]+)", out)]
    errors = re.findall(r"\[(\d+)\]: T_ERROR ([\d.]+) (.*)", out)
    fault = max(faults) if faults else started
    return {"errors": errors, "fault": fault, "ended": ended, "leftovers": leftovers, "status": proc.returncode,
            "launcher": [line for line in out.splitlines() if line.startswith("ringtrain run:")]}


def restart_times(repeats=3):
    """Seconds from a SIGKILL of a rank to the first training step after `ringtrain run
    --max-restarts` brought the job back from its last commit (tests/elastic/train.py)."""
    train = os.path.join(os.path.dirname(HERE), "tests", "elastic", "train.py")
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as commits:
            proc = subprocess.run([sys.executable, "-m", "ringtrain", "run", "-np", "3", "--max-restarts", "1",
                                   "--elastic-dir", commits, "python", train, "30", "3", "0:8:1"],
                                  capture_output=True, text=True, timeout=300)
        killed = float(re.search(r"KILL 0 at step 8 ([\d.]+)", proc.stdout).group(1))
        resumed = float(re.search(r"\[0\]: RESUMED 1 at step 7 ([\d.]+)", proc.stdout).group(1))
        seconds.append(resumed - killed)
    return seconds


def main():
    rows = []
    for case, code in CASES.items():
        print(f"# {case}", file=sys.stderr, flush=True)
        r = run_case(code)
        ranks = sorted(int(rank) for rank, _, _ in r["errors"])
        worst = max((float(t) - r["fault"] for _, t, _ in r["errors"]), default=float("nan"))
        example = r["errors"][0][2] if r["errors"] else (r["launcher"][0] if r["launcher"] else "")
        rows.append([case, ", ".join(map(str, ranks)) or "none", f"{worst:.2f}", f"{r['ended'] - r['fault']:.2f}",
                     r["status"], len(r["leftovers"]), example[:150].replace("|", "/")])
    print(f"# {machine_line()}; 3 ranks under `ringtrain run`")
    print_table(["case", "ranks with a clear error", "time to error, worst rank (s)", "job ended after (s)",
                 "exit status", "processes left", "what a rank (or the launcher) said"], rows)
    print("# rank 1 killed (SIGKILL) at step 8 of 30, commits every 3 steps, ringtrain run -np 3 --max-restarts 1")
    times = restart_times()
    print_table(["runs", "kill to first step after the restart, s (each run)", "median, s"],
                [[len(times), ", ".join(f"{t:.2f}" for t in times), f"{sorted(times)[len(times) // 2]:.2f}"]])


if __name__ == "__main__":
    main()
