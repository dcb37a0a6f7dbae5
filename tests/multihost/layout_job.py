"""One rank of a multi-host test job: prints its place in the layout and checks allreduce,
allgather and broadcast against numpy. RINGTRAIN_TEST_FAIL_RANK=r makes rank r raise."""
import json
import os
import socket

import numpy as np

import ringtrain as rt


def check_layout_and_collectives():
    rt.init()
    rank, size = rt.rank(), rt.size()
    x = np.arange(7, dtype=np.float32) + rank
    total = rt.allreduce(x, op=rt.Sum, name="layout.sum")
    expected = sum(np.arange(7, dtype=np.float32) + r for r in range(size))
    gathered = rt.allgather(np.full(rank + 1, rank, dtype=np.int64), name="layout.gather")
    root_value = rt.broadcast(np.full(3, rank * 10, dtype=np.int32), root_rank=size - 1, name="layout.bcast")
    print(f"rank {rank} of {size} on {socket.gethostname()}", flush=True)
    if os.environ.get("RINGTRAIN_TEST_FAIL_RANK") == str(rank):
        raise ValueError(f"rank {rank} fails on purpose on {socket.gethostname()}")
    return {"rank": rank, "size": size, "local_rank": rt.local_rank(), "local_size": rt.local_size(),
            "cross_rank": rt.cross_rank(), "cross_size": rt.cross_size(), "host": socket.gethostname(),
            "allreduce_ok": bool(np.array_equal(total, expected)),
            "allgather_ok": bool(np.array_equal(gathered, np.concatenate([np.full(r + 1, r) for r in range(size)]))),
            "broadcast_ok": bool(np.array_equal(root_value, np.full(3, (size - 1) * 10)))}


if __name__ == "__main__":
    print("LAYOUT " + json.dumps(check_layout_and_collectives()), flush=True)
    rt.shutdown()
