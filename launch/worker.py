"""One rank of a function launched by ringtrain.run / @ringtrain.distributed / ringtrain.spark.run.

    python -m ringtrain.launch.worker

It fetches the function (ringtrain.launch.pickling.dumps_call's (fn, args, kwargs)) from the job's
launcher over the authenticated job channel, runs it, and sends back a record:
("ok", value) or ("error", type name, message, traceback text, the pickled exception if it
pickles). The launcher unpickles a record only after its frame verified. On an error the rank
exits at once (status 1), so the job ends instead of leaving the others waiting in a
collective."""
import os
import socket
import sys
import traceback

import cloudpickle

from ringtrain.launch.channel import Client
from ringtrain.launch.mpiexec import die_with_parent
from ringtrain.launch.pickling import loads_call


def main():
    client = Client.from_environment()
    if client is None:
        sys.exit("ringtrain.launch.worker: no job channel in the environment: it is started by ringtrain.run")
    import ringtrain as rt

    rt.init()
    rank = rt.rank()
    die_with_parent()  # this rank dies with mpiexec's proxy, whatever kills it
    try:
        _, payload = client.request({"type": "payload", "rank": rank})
        fn, args, kwargs = loads_call(payload)
        value = fn(*args, **kwargs)
        client.request({"type": "result", "rank": rank}, cloudpickle.dumps(("ok", value)))
    except KeyboardInterrupt:
        # SIGINT reaches a rank when its job is being stopped (mpiexec forwards Ctrl-C to every
        # rank once another has failed): a consequence, not the failure, so it is not reported
        os._exit(130)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        text = traceback.format_exc()
        message = str(exc)
        if isinstance(exc, ImportError):  # where it looked matters more than where it was called
            message += f" (on host {socket.gethostname()}, Python {sys.executable}, sys.path {sys.path})"
        try:
            pickled = cloudpickle.dumps(exc)
        except Exception:  # noqa: BLE001
            pickled = None
        client.request({"type": "result", "rank": rank},
                       cloudpickle.dumps(("error", type(exc).__name__, message, text, pickled)))
        sys.stderr.write(text)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    client.close()
    rt.shutdown()


if __name__ == "__main__":
    main()
