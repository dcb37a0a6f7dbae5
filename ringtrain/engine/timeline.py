"""Chrome trace JSON (opens in Perfetto and chrome://tracing), written by rank 0.

The file is valid JSON at every moment, so a run killed midway still leaves a readable trace:
the closing bracket is always on disk, and each new event overwrites it and puts it back in a
single write. Each tensor gets its own row (a trace "process" named after the tensor)."""
import json
import threading
import time


class Timeline:
    def __init__(self, path, mark_cycles=False):
        self.path = path
        self.mark_cycles = mark_cycles
        self._file = open(path, "w", encoding="ascii")
        self._file.write("[\n]")
        self._file.flush()
        self._end = 1                 # where the closing "\n]" starts
        self._first = True
        self._rows = {}
        self._lock = threading.Lock()
        self._origin = time.perf_counter()

    def _emit(self, event):
        text = ("" if self._first else ",\n") + json.dumps(event)
        self._first = False
        self._file.seek(self._end)
        self._file.write(text + "\n]")
        self._file.flush()
        self._end += len(text)

    def span(self, tensor, phase, start, end, **args):
        """One phase of one tensor, from perf_counter() start to end."""
        with self._lock:
            if self._file is None:
                return
            row = self._rows.get(tensor)
            if row is None:
                row = self._rows[tensor] = len(self._rows) + 1
                self._emit({"name": "process_name", "ph": "M", "pid": row, "args": {"name": tensor}})
            event = {"name": phase, "ph": "X", "pid": row, "tid": 0,
                     "ts": round((start - self._origin) * 1e6, 3), "dur": round(max(end - start, 0.0) * 1e6, 3)}
            if args:
                event["args"] = args
            self._emit(event)

    def mark(self, name, at):
        """An instant across the whole trace (a negotiation cycle's start, say) at perf_counter() `at`."""
        with self._lock:
            if self._file is not None:
                self._emit({"name": name, "ph": "i", "s": "g", "pid": 0, "tid": 0,
                            "ts": round((at - self._origin) * 1e6, 3)})

    def close(self):
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
