"""One rank of a function launched by ringtrain.run / @ringtrain.distributed.

    python -m ringtrain.launch.worker JOB_DIR

JOB_DIR (created 0700 by the caller, on this machine) holds function.pkl, ringtrain.pickling.dumps_call's
(fn, args, kwargs). Each rank writes result-<rank>.pkl: ("ok", value) or ("error", type name,
message, traceback text, the pickled exception if it pickles). Nothing is read from a socket.
On an error the rank exits at once (status 1), so mpiexec stops the others instead of leaving
them waiting in a collective."""
import os
import sys
import traceback

import cloudpickle

from ringtrain.launch.mpiexec import die_with_parent
from ringtrain.pickling import loads_call


def _write(job_dir, rank, record):
    path = os.path.join(job_dir, f"result-{rank}.pkl")
    with open(path + ".tmp", "wb") as f:
        f.write(record)
    os.replace(path + ".tmp", path)


def main():
    job_dir = sys.argv[1]
    import ringtrain as rt

    rt.init()
    rank = rt.rank()
    die_with_parent()  # this rank dies with mpiexec's proxy, whatever kills it
    try:
        with open(os.path.join(job_dir, "function.pkl"), "rb") as f:
            fn, args, kwargs = loads_call(f.read())
        value = fn(*args, **kwargs)
        _write(job_dir, rank, cloudpickle.dumps(("ok", value)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        text = traceback.format_exc()
        try:
            pickled = cloudpickle.dumps(exc)
        except Exception:  # noqa: BLE001
            pickled = None
        _write(job_dir, rank, cloudpickle.dumps(("error", type(exc).__name__, str(exc), text, pickled)))
        sys.stderr.write(text)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    rt.shutdown()


if __name__ == "__main__":
    main()
