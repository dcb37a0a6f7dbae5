"""A DataFrame partition streamed from its Spark task to its rank, through a named pipe on the
same host. The task writes batches of rows as numpy arrays (numpy's .npy format, no pickles);
the rank reads them as they come, so a share larger than memory works.

Frame: one JSON line {"rows": n, "columns": [...]} then one .npy array per column; the stream
ends with {"end": true}. Vector-valued columns (lists, arrays, ml Vectors) become 2-D arrays."""
import errno
import json
import os
import time

import numpy as np
from numpy.lib import format as npy

BATCH_ROWS = 1024


def fifo_path(job_dir, rank):
    return os.path.join(job_dir, f"partition-{rank}.fifo")


def _column(values):
    first = values[0]
    if hasattr(first, "toArray"):  # pyspark.ml.linalg vectors
        values = [v.toArray() for v in values]
    return np.asarray(values)


def write_partition(rows, path, stop, batch_rows=BATCH_ROWS):
    """Stream `rows` (pyspark Rows) into the pipe at `path`; gives up when stop() is true
    before the rank opens its end (the rank may never read its partition)."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or stop():
                return
            time.sleep(0.01)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as f:
        try:
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) == batch_rows:
                    _write_batch(f, batch)
                    batch = []
            if batch:
                _write_batch(f, batch)
            f.write(json.dumps({"end": True}).encode() + b"\n")
        except BrokenPipeError:
            pass  # the rank stopped reading
        except Exception:
            import sys
            import traceback

            sys.stderr.write("ringtrain.spark: feeding the partition failed:\n" + traceback.format_exc())
            raise


class _WriteStream:
    """Only .write(): numpy then writes to the pipe instead of seeking in it (tofile)."""

    def __init__(self, f):
        self.write = f.write


def _write_batch(f, batch):
    names = list(batch[0].__fields__)
    f.write(json.dumps({"rows": len(batch), "columns": names}).encode() + b"\n")
    stream = _WriteStream(f)
    for i, _ in enumerate(names):
        npy.write_array(stream, np.ascontiguousarray(_column([row[i] for row in batch])), allow_pickle=False)


class _ReadStream:
    """Only .read(): numpy then reads the pipe sequentially instead of seeking in it."""

    def __init__(self, f):
        self.read = f.read


def read_partition(path):
    """Batches of this rank's rows: dicts of column name -> numpy array."""
    with open(path, "rb") as f:
        stream = _ReadStream(f)
        while True:
            header = json.loads(f.readline())
            if header.get("end"):
                return
            yield {name: npy.read_array(stream, allow_pickle=False) for name in header["columns"]}
