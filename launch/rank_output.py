"""Per-rank lines out of mpiexec's merged output.

mpiexec is started with -prepend-pattern "\\x1e<rank>\\x1f": every chunk a rank writes arrives
behind that marker. The ASCII record/unit separators never occur in ordinary program output,
so the stream splits unambiguously; chunks are reassembled into whole lines per rank, which
are printed as "[rank]: line", and the last few lines of each rank are kept for error reports."""
import collections
import re

PREPEND_PATTERN = "\x1e%r\x1f"
_MARKER = re.compile(rb"\x1e(\d+)\x1f")
# mpiexec's own messages (hydra's banner when a rank dies) carry no marker.
_MPIEXEC_LINE = re.compile(r"^(=+$|=   |YOUR APPLICATION TERMINATED|This typically refers to a problem|"
                           r"Please see the FAQ page)")
MPIEXEC = "mpiexec"


class RankLines:
    def __init__(self, keep=20):
        self._partial = collections.defaultdict(bytes)
        self._rank = None
        self._carry = b""
        self.last = collections.defaultdict(lambda: collections.deque(maxlen=keep))

    def feed(self, data):
        """Bytes from the stream -> list of (rank, line) for every line now complete."""
        data, self._carry = self._carry + data, b""
        start = data.rfind(b"\x1e")
        if start != -1 and data.find(b"\x1f", start) == -1:  # a marker cut in half by the read
            data, self._carry = data[:start], data[start:]
        lines = []
        pieces = _MARKER.split(data)
        if pieces[0]:  # continuation of the previous chunk, or mpiexec talking before any rank
            lines += self._append(MPIEXEC if self._rank is None else self._rank, pieces[0])
        for marker, text in zip(pieces[1::2], pieces[2::2]):
            self._rank = int(marker)
            lines += self._append(self._rank, text)
        return lines

    def _append(self, rank, text):
        buffer = self._partial[rank] + text
        *complete, rest = buffer.split(b"\n")
        self._partial[rank] = rest
        out = []
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            if _MPIEXEC_LINE.match(line) or (not line.strip() and rank == MPIEXEC):
                out.append((MPIEXEC, line))
                continue
            self.last[rank].append(line)
            out.append((rank, line))
        return out

    def flush(self):
        out = []
        for rank, rest in self._partial.items():
            if rest:
                line = rest.decode("utf-8", "replace")
                self.last[rank].append(line)
                out.append((rank, line))
        self._partial.clear()
        return out
