"""One rank of the cross-host allreduce check: every dtype x op at lengths that do not divide by
the number of ranks (and span several shared-memory pieces), one call at a time and as one
fusion group, against numpy, bitwise the same on
every rank; on the global set, on a set spanning hosts, and on a set inside one host. Prints
`ALLREDUCE {json}`: the path each set took ("hierarchical", "one host" or "off") and the
failures."""
import json
import os
import sys

import numpy as np

import ringtrain as rt
from ringtrain import runtime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "distributed"))
from harness import ALL_DTYPES, ALL_OPS, assert_matches, rank_input, reference_reduce  # noqa: E402

LENGTHS = (1, 4099, 100_003, 300_007)


def check(process_set, members, label, failures):
    rank = rt.rank()
    me = members.index(rank)
    for dtype in ALL_DTYPES:
        for op in ALL_OPS:
            if op == rt.Average and np.dtype(dtype) == np.bool_:
                continue
            for n in LENGTHS + (len(members) + 1,):
                inputs = [rank_input(dtype, (n,), q, seed=11) for q in members]
                result = rt.allreduce(inputs[me], op=op, process_set=process_set)
                what = f"{label} {np.dtype(dtype).name} {op.name} n={n}"
                try:
                    assert_matches(result, reference_reduce(op, inputs, dtype), dtype, len(members), what)
                except AssertionError as exc:
                    failures.append(str(exc)[:300])
                rows = rt.allgather(result.view(np.uint8).reshape(1, -1), process_set=process_set)
                if not all(np.array_equal(row, rows[0]) for row in rows):
                    failures.append(f"{what}: ranks differ")
            # the same lengths submitted together: one fusion group, packed and unpacked by the
            # ring range by range (csrc/fusion_buffer.c), its pieces cut across tensor boundaries
            shapes = [(n,) for n in LENGTHS + (len(members) + 1, 0)]
            inputs = [[rank_input(dtype, shape, q, seed=13 + i) for q in members] for i, shape in enumerate(shapes)]
            handles = [rt.allreduce_async(tensors[me], op=op, name=f"{label}.fused.{i}", process_set=process_set)
                       for i, tensors in enumerate(inputs)]
            for i, (handle, tensors) in enumerate(zip(handles, inputs)):
                result = rt.synchronize(handle)
                try:
                    assert_matches(result, reference_reduce(op, tensors, dtype), dtype, len(members),
                                   f"{label} fused {np.dtype(dtype).name} {op.name} n={shapes[i][0]}")
                except AssertionError as exc:
                    failures.append(str(exc)[:300])


def main():
    rt.init()
    size, rank = rt.size(), rt.rank()
    spanning = [0, size - 1]  # the first and the last rank: on different hosts
    first_host = rt.broadcast_object(rt.local_size(), root_rank=0)
    local = list(range(first_host)) if first_host > 1 else None  # the first host's ranks
    sets = {"spanning": rt.add_process_set(spanning)}
    if local and size > len(local):
        sets["first host"] = rt.add_process_set(local)
    engine = runtime.current("allreduce_job").engine
    paths = {"global": engine.sets[0].shared_memory}
    failures = []
    check(rt.global_process_set, list(range(size)), "global", failures)
    for label, members in (("spanning", spanning), ("first host", local)):
        if label in sets and rank in members:
            paths[label] = engine.sets[sets[label].process_set_id].shared_memory
            check(sets[label], members, label, failures)
    print("ALLREDUCE " + json.dumps({"rank": rank, "host": os.uname().nodename, "paths": paths,
                                     "failures": failures[:5], "failed": len(failures)}), flush=True)
    for process_set in sets.values():
        rt.remove_process_set(process_set)
    rt.shutdown()


if __name__ == "__main__":
    main()
