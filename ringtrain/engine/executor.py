"""Runs the collectives the coordinator agreed on, in order, on the background engine's thread
(or on a synchronous caller driving a round). Every rank runs the same list in the same order.

Allreduces that arrive together are fused: packed back to back into one buffer (in C), reduced
once, unpacked. Fusion groups are consecutive allreduces with the same dtype, op and scale
factors, cut at the fusion threshold; every rank forms the same groups from the same list."""
import time

import numpy as np

from ..dtypes import SUPPORTED
from .requests import zeros_like_signature

ALGORITHM_NAMES = {0: "LOCAL_ALLREDUCE", 1: "RECURSIVE_DOUBLING_ALLREDUCE", 2: "RING_ALLREDUCE",
                   3: "SHARED_MEMORY_ALLREDUCE", 4: "HIERARCHICAL_ALLREDUCE"}


def split_rows(rows, parts):
    """Horovod's rule: as even as possible, the first rows % parts parts take one extra row."""
    base, extra = divmod(rows, parts)
    return np.array([base + (i < extra) for i in range(parts)], dtype=np.int64)


class AgreedCollective:
    """One agreed collective as this rank runs it: its own request, or (for a rank that has
    joined) zeros shaped by the agreed signature. Its size and fusion key are computed once:
    a training step's round plans and runs hundreds of items."""

    __slots__ = ("name", "signature", "request", "tensors", "outputs", "ready_at", "nbytes", "fusion_key")

    def __init__(self, name, signature, request, ready_at):
        self.name, self.signature, self.request, self.ready_at = name, signature, request, ready_at
        if request is not None:
            self.tensors, self.outputs = request.tensors, request.outputs
        else:
            self.tensors = zeros_like_signature(signature)
            self.outputs = [np.empty_like(t) for t in self.tensors]
        self.nbytes = self.tensors[0].nbytes if len(self.tensors) == 1 else sum(t.nbytes for t in self.tensors)
        kind, code, _, op, _, pre, post = signature
        self.fusion_key = (code, op, pre, post) if kind == "allreduce" else None


def plan_fusion(items, threshold, direct_bytes):
    """Lists of items run as one collective each: runs of compatible allreduces under threshold.

    Fusion exists to amortise the per-collective cost of small tensors. A tensor of at least
    `direct_bytes` (one pipeline segment) already keeps the ring busy on its own, so it is
    reduced in place: packing it would only add two memcpys of its size."""
    groups, current, current_key, current_bytes = [], [], None, 0
    for item in items:
        key = item.fusion_key
        if key is not None and item.nbytes >= direct_bytes and len(item.tensors) == 1:
            key = None  # runs alone
        if current and key is not None and key == current_key and current_bytes + item.nbytes <= threshold:
            current.append(item)
            current_bytes += item.nbytes
            continue
        if current:
            groups.append(current)
        current, current_key, current_bytes = [item], key, item.nbytes
    if current:
        groups.append(current)
    return groups


class Executor:
    def __init__(self, core, tuning, timeline_of):
        self.core = core
        self.tuning = tuning            # live settings: fusion_threshold, small_allreduce_threshold, segment_bytes
        self.timeline_of = timeline_of  # () -> Timeline or None
        self._fusion_buffer = np.empty(0, dtype=np.uint8)
        self.bytes_reduced = 0          # for autotune

    def run(self, process_set, items):
        """Run the items; return {name: error} for those that failed (the rest completed)."""
        failures = {}
        for group in plan_fusion(items, self.tuning.fusion_threshold, self.tuning.segment_bytes):
            try:
                if group[0].fusion_key is not None:
                    self._allreduce(process_set, group)
                else:
                    item = group[0]
                    result = getattr(self, "_" + item.signature[0])(process_set, item)
                    if item.request is not None:
                        item.request.handle.complete(result)
            except self.core.NoProgressError as exc:  # a rank stopped: the engine cannot go on (engine.py)
                exc.items = group
                raise
            except Exception as exc:  # a failed collective fails its handles, not the engine
                for item in group:
                    failures[item.name] = exc
        return failures

    # --- allreduce, fused or not ---------------------------------------------------------
    def fusion_buffer(self, nbytes):
        if self._fusion_buffer.nbytes < nbytes:
            self._fusion_buffer = np.empty(max(nbytes, 2 * self._fusion_buffer.nbytes), dtype=np.uint8)
        return self._fusion_buffer

    def _allreduce(self, ps, group):
        timeline = self.timeline_of()
        _, code, _, op, _, pre, post = group[0].signature
        t = self.tuning
        started = time.perf_counter()
        tensors = [x for item in group for x in item.tensors]
        outputs = [x for item in group for x in item.outputs]
        if len(tensors) == 1:
            algorithm = self.core.allreduce(ps.handle, tensors[0], outputs[0], code, op, pre, post, *t.allreduce_args)
            copied_in = copied_out = started
        elif timeline is None:  # packed in C, or in shared memory not packed at all (rt_allreduce_fused)
            total = sum(item.nbytes for item in group)
            algorithm = self.core.allreduce_fused(ps.handle, tensors, outputs, self.fusion_buffer(total), code, op, pre,
                                                  post, *t.allreduce_args)
        else:  # the copies timed apart, for the timeline's spans
            total = sum(item.nbytes for item in group)
            fused = self.fusion_buffer(total)[:total].view(SUPPORTED[code])
            self.core.pack(fused, tensors)
            copied_in = time.perf_counter()
            algorithm = self.core.allreduce(ps.handle, fused, fused, code, op, pre, post, *t.allreduce_args)
            copied_out = time.perf_counter()
            self.core.unpack(fused, outputs)
        finished = time.perf_counter()
        for item in group:
            self.bytes_reduced += item.nbytes
            if timeline is not None:  # before complete(): a waiter may stop the timeline at once
                name = item.name
                if item.request is not None:
                    timeline.span(name, "NEGOTIATE_ALLREDUCE", item.request.submitted, item.ready_at)
                timeline.span(name, "WAIT_FOR_DATA", item.ready_at, started)
                if len(tensors) > 1:
                    timeline.span(name, "MEMCPY_IN_FUSION_BUFFER", started, copied_in, tensors=len(tensors))
                    timeline.span(name, ALGORITHM_NAMES[algorithm], copied_in, copied_out,
                                  bytes=int(total))
                    timeline.span(name, "MEMCPY_OUT_FUSION_BUFFER", copied_out, finished)
                else:
                    timeline.span(name, ALGORITHM_NAMES[algorithm], started, finished, bytes=int(tensors[0].nbytes))
            if item.request is not None:
                item.request.handle.complete(item.request.outputs[0] if len(item.request.outputs) == 1
                                             else list(item.request.outputs))

    # --- the other collectives -----------------------------------------------------------
    def _allgather(self, ps, item):
        """Every tensor of the item gathered along its first dimension; the row counts travel
        first (fused: one exchange for all tensors of a grouped allgather)."""
        tensors = item.tensors
        counts = np.empty((ps.size, len(tensors)), dtype=np.int64)
        counts[ps.rank] = [t.shape[0] for t in tensors]
        self.core.allgatherv(ps.handle, counts, np.full(ps.size, counts[0].nbytes, dtype=np.int64),
                             self.tuning.segment_bytes)
        row_bytes = [t.itemsize * int(np.prod(t.shape[1:])) for t in tensors]
        outputs = [np.empty((int(counts[:, i].sum()), *t.shape[1:]), dtype=t.dtype) for i, t in enumerate(tensors)]
        # One ring pass: rank r's block is its rows of every tensor, back to back.
        block_bytes = (counts * np.array(row_bytes, dtype=np.int64)).sum(axis=1)
        if len(tensors) == 1:
            out = outputs[0]
            start = int(counts[: ps.rank, 0].sum())
            out[start:start + tensors[0].shape[0]] = tensors[0]
            self.core.allgatherv(ps.handle, out, block_bytes, self.tuning.segment_bytes)
        else:
            staging = self.fusion_buffer(int(block_bytes.sum()))[: int(block_bytes.sum())]
            offset = int(block_bytes[: ps.rank].sum())
            self.core.pack(staging[offset:offset + int(block_bytes[ps.rank])], list(tensors))
            self.core.allgatherv(ps.handle, staging, block_bytes, self.tuning.segment_bytes)
            row_starts = np.zeros(len(tensors), dtype=np.int64)
            position = 0
            for r in range(ps.size):
                pieces = []
                for i, out in enumerate(outputs):
                    rows = int(counts[r, i])
                    pieces.append(out[row_starts[i]:row_starts[i] + rows])
                    row_starts[i] += rows
                self.core.unpack(staging[position:position + int(block_bytes[r])], pieces)
                position += int(block_bytes[r])
        return outputs[0] if len(outputs) == 1 else outputs

    def _broadcast(self, ps, item):
        src, out = item.tensors[0], item.outputs[0]
        if out is not src and ps.rank == item.signature[4]:
            np.copyto(out, src)
        self.core.broadcast(ps.handle, out, item.signature[4], self.tuning.segment_bytes)
        return out

    def _reducescatter(self, ps, item):
        _, code, _, op, _, pre, post = item.signature
        tensors = item.tensors
        shares = [split_rows(t.shape[0], ps.size) * int(np.prod(t.shape[1:])) for t in tensors]
        outputs = [np.empty((int(split_rows(t.shape[0], ps.size)[ps.rank]), *t.shape[1:]), dtype=t.dtype)
                   for t in tensors]
        if len(tensors) == 1:
            self.core.reduce_scatter(ps.handle, tensors[0], outputs[0], shares[0], code, op, pre, post,
                                     self.tuning.segment_bytes)
            return outputs[0]
        # Fused: regroup so that block r holds every tensor's rank-r rows, reduce-scatter once.
        itemsize = tensors[0].itemsize
        counts = np.sum(shares, axis=0)
        dtype = tensors[0].dtype
        total = int(counts.sum())
        fused = self.fusion_buffer(2 * total * itemsize)
        packed = fused[: total * itemsize].view(dtype)
        mine = fused[total * itemsize: total * itemsize + int(counts[ps.rank]) * itemsize].view(dtype)
        offsets = [np.concatenate([[0], np.cumsum(s)]) for s in shares]
        pieces = [t.reshape(-1)[offsets[i][r]:offsets[i][r + 1]] for r in range(ps.size) for i, t in enumerate(tensors)]
        self.core.pack(packed, pieces)
        self.core.reduce_scatter(ps.handle, packed, mine, counts, code, op, pre, post, self.tuning.segment_bytes)
        self.core.unpack(mine, [o.reshape(-1) for o in outputs])
        return outputs

    def _alltoall(self, ps, item):
        tensor = item.tensors[0]
        send_rows = item.request.splits
        recv_rows = np.empty(ps.size, dtype=np.int64)
        eight = np.full(ps.size, 8, dtype=np.int64)
        self.core.alltoallv(ps.handle, send_rows, eight, recv_rows, eight)
        row_bytes = tensor.itemsize * int(np.prod(tensor.shape[1:]))
        out = np.empty((int(recv_rows.sum()), *tensor.shape[1:]), dtype=tensor.dtype)
        self.core.alltoallv(ps.handle, tensor, send_rows * row_bytes, out, recv_rows * row_bytes)
        return out, recv_rows

    def _barrier(self, ps, item):
        self.core.barrier(ps.handle)
