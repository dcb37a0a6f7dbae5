"""The response cache: after a tensor has been negotiated once, the same (name, signature) gets
a bit, and later rounds agree on it with one bitwise-AND exchange instead of sending its
metadata to the coordinator. Bits are assigned by the coordinator in its responses, so every
rank's cache holds the same entries at the same bits.

A name may hold a bit for each of a few signatures (SIGNATURES_PER_NAME). Unnamed calls need
this: their names recur in call order from a window (requests.unnamed_name), so a loop whose
number of unnamed calls per step does not divide the window hands each name tensors of several
shapes in turn; with one entry per name every such call would be negotiated again. A named
tensor whose shape varies (the last, smaller batch) keeps its bits the same way. Bits are
reused: a name's newest signature beyond the limit takes its oldest's bit, bits freed by
failures are handed out again, and once every bit is taken a new entry takes the bit assigned
longest ago (so a full cache still caches what a loop repeats: unnamed names alone could fill
it). Assignments come from the coordinator's responses, which every rank applies in the same
order, so the choice is the same everywhere."""

# Bit 0: "this rank needs no slow path this round"; bit 1: "this rank has joined".
NO_SLOW_PATH_BIT = 0
JOINED_BIT = 1
FIRST_TENSOR_BIT = 2

SIGNATURES_PER_NAME = 8


class ResponseCache:
    def __init__(self, capacity=4096):
        self.capacity = capacity
        self.bits_of = {}       # name -> its bits, oldest first
        self.entry = {}         # bit -> (name, signature)
        self.free = set()       # bits below next_bit that no entry holds
        self.assigned = {}      # bit -> None, oldest assignment first (a dict keeps insertion order)
        self.next_bit = FIRST_TENSOR_BIT
        self.generation = 0     # changes whenever a bit is given or taken (Engine.allreduce_now's memo)
        self.on_change = None   # called with the new generation, words() and the bits that changed hands
                                # (process set 0: the persistent lane)

    def lookup(self, name, signature):
        """(bit, True) on a hit; (None, False) if this name has no bit for this signature."""
        bits = self.bits_of.get(name)
        if bits is not None:
            entry = self.entry
            for bit in bits:
                if entry[bit][1] == signature:
                    return bit, True
        return None, False

    def choose_bit(self, name, signature, taken):
        """The bit the coordinator gives (name, signature), or None when the cache is full;
        `taken`: bits already given in the same response (not yet assigned anywhere)."""
        bit, hit = self.lookup(name, signature)
        if hit:
            return bit
        bits = self.bits_of.get(name, ())
        if len(bits) >= SIGNATURES_PER_NAME:
            return bits[0]
        for bit in sorted(self.free - taken):
            return bit
        bit = max([self.next_bit - 1, *taken]) + 1
        if bit < self.capacity:
            return bit
        for bit in self.assigned:  # full: the entry assigned longest ago gives way
            if bit not in taken:
                return bit
        return None

    def assign(self, name, signature, bit):
        """The coordinator gave `bit` to (name, signature): whatever held it, or held this pair
        under another bit, lets go first. Giving a pair the bit it holds (a cached tensor that
        waited for late ranks and was announced again) only makes it the newest assignment: no
        bit changed hands, so the generation stays."""
        held = self.entry.get(bit)
        if held is not None and held[0] == name and held[1] == signature:
            del self.assigned[bit]
            self.assigned[bit] = None
            return
        self._release(bit)
        old, hit = self.lookup(name, signature)
        if hit:
            self._release(old)
            self.free.add(old)
        changed = (bit, old) if hit else (bit,)
        self.bits_of.setdefault(name, []).append(bit)
        self.entry[bit] = (name, signature)
        self.assigned[bit] = None
        self.free.discard(bit)
        for unused in range(self.next_bit, bit):
            self.free.add(unused)
        self.next_bit = max(self.next_bit, bit + 1)
        self._changed(changed)

    def evict(self, name):
        bits = self.bits_of.pop(name, None)
        if bits:
            for bit in bits:
                del self.entry[bit]
                del self.assigned[bit]
                self.free.add(bit)
            self._changed(bits)

    def _changed(self, bits):
        self.generation += 1
        if self.on_change is not None:
            self.on_change(self.generation, self.words(), tuple(bits))

    def _release(self, bit):
        held = self.entry.pop(bit, None)
        if held is not None:
            del self.assigned[bit]
            bits = self.bits_of[held[0]]
            bits.remove(bit)
            if not bits:
                del self.bits_of[held[0]]

    def words(self):
        """Number of 64-bit words a round's bit vector needs."""
        return self.next_bit // 64 + 1
