"""Run on h1 by test_multihost.py: rt.run and @rt.distributed across hosts.

    python run_function_job.py LAUNCHER_EXEC ok|fail

Prints one JSON line: the layouts every rank returned, or the RemoteError caught."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ringtrain as rt  # noqa: E402
from layout_job import check_layout_and_collectives  # noqa: E402

launcher = sys.argv[1]
placement = {"launcher_command": launcher, "network_interface": "eth0"}


@rt.distributed(np=2, all_ranks=True, hosts="h1:1,h2:1", **placement)
def decorated():
    return check_layout_and_collectives()


if sys.argv[2] == "ok":
    run = rt.run(check_layout_and_collectives, np=4, all_ranks=True, hosts="h1:2,h2:2", timeout=120, **placement)
    print(json.dumps({"run": run, "decorated": decorated()}))
else:
    try:
        rt.run(check_layout_and_collectives, np=4, hosts="h1:2,h2:2", timeout=120, **placement)
    except rt.RemoteError as exc:
        print(json.dumps({"rank": exc.rank, "type_name": exc.type_name, "message": str(exc),
                          "traceback": exc.remote_traceback}))
