"""A deterministic elastic training loop for tests/test_elastic.py: a least-squares model on
per-rank random batches (numpy's global RNG, which commits save and restores bring back).

    python train.py STEPS COMMIT_EVERY [KILLS]

KILLS: "restart:step:rank,..." - that rank kills itself (SIGKILL) right after that step of that
run (before the step's commit), as a crash would; with ELASTIC_HOSTS_AFTER_KILL=PATH=TEXT it
first writes TEXT to PATH (a host discovery script's file: a host goes away). With
ELASTIC_HOSTS_AT_STEP=STEP=PATH=TEXT rank 0 of the first run writes TEXT to PATH after STEP (a
host comes back); ELASTIC_STEP_SECONDS slows every step down. Prints FINAL <params hex> from
rank 0."""
import os
import signal
import sys
import time

import numpy as np

import ringtrain as rt


def train_steps(steps, commit_every, kills=(), fail_once=None):
    """fail_once=(step, rank, flag_path): that rank raises at that step if flag_path does not
    exist yet (and creates it), for launchers that retry on an exception (Spark)."""
    rt.init()
    restart = rt.elastic.restart_count()
    np.random.seed(1234 + rt.rank())
    state = rt.elastic.State(params=np.random.randn(8), step=0)  # sync() gives every rank rank 0's

    @rt.elastic.run
    def train(state):
        print(f"STARTED at step {state.step}", flush=True)
        first = True
        while state.step < steps:
            x = np.random.randn(16, 8)
            grad = x.T @ (x @ state.params - 1.0) / len(x)
            rt.allreduce_(grad, name="grad", op=rt.Average)
            state.params -= 0.05 * grad
            state.step += 1
            time.sleep(float(os.environ.get("ELASTIC_STEP_SECONDS", "0")))
            if os.environ.get("ELASTIC_HOSTS_AT_STEP") and rt.rank() == 0 and restart == 0:
                at, path, text = os.environ["ELASTIC_HOSTS_AT_STEP"].split("=", 2)
                if state.step == int(at) and rt.size() < 3:
                    with open(path, "w") as f:
                        f.write(text + "\n")
            if first and restart > 0:
                print(f"RESUMED {restart} at step {state.step} {time.time():.6f}", flush=True)
            first = False
            if fail_once and (state.step, rt.rank()) == fail_once[:2] and not os.path.exists(fail_once[2]):
                open(fail_once[2], "w").close()
                raise RuntimeError(f"rank {rt.rank()} fails once at step {state.step}")
            if (restart, state.step, rt.rank()) in kills:
                if os.environ.get("ELASTIC_HOSTS_AFTER_KILL"):
                    path, text = os.environ["ELASTIC_HOSTS_AFTER_KILL"].split("=", 1)
                    with open(path, "w") as f:
                        f.write(text + "\n")
                print(f"KILL {restart} at step {state.step} {time.time():.6f}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            if state.step % commit_every == 0:
                state.commit()
        print(f"DONE on {rt.size()} ranks", flush=True)
        return state.params.copy()

    return train(state)


def parse_kills(text):
    return {tuple(int(v) for v in item.split(":")) for item in text.split(",") if item}


if __name__ == "__main__":
    params = train_steps(int(sys.argv[1]), int(sys.argv[2]), parse_kills(sys.argv[3] if len(sys.argv) > 3 else ""))
    if rt.rank() == 0:
        print("FINAL", params.tobytes().hex(), flush=True)
