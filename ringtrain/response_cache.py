"""The response cache: after a tensor has been negotiated once, the same (name, signature) gets
a bit, and later rounds agree on it with one bitwise-AND allreduce instead of sending its
metadata to the coordinator. Bits are assigned by the coordinator in its responses, so every
rank's cache holds the same entries at the same bits."""

# Bit 0: "this rank needs no slow path this round"; bit 1: "this rank has joined".
NO_SLOW_PATH_BIT = 0
JOINED_BIT = 1
FIRST_TENSOR_BIT = 2


class ResponseCache:
    def __init__(self, capacity=4096):
        self.capacity = capacity
        self.bit_of = {}        # name -> bit
        self.entry = {}         # bit -> (name, signature)
        self.next_bit = FIRST_TENSOR_BIT
        self.generation = 0     # changes whenever a bit is given or taken (Engine.allreduce_now's memo)

    def lookup(self, name, signature):
        """(bit, True) on a hit; (bit, False) if the name is cached with another signature;
        (None, False) if it is not cached."""
        bit = self.bit_of.get(name)
        if bit is None:
            return None, False
        return bit, self.entry[bit][1] == signature

    def assign(self, name, signature, bit):
        self.evict(name)
        self.generation += 1
        self.bit_of[name] = bit
        self.entry[bit] = (name, signature)
        self.next_bit = max(self.next_bit, bit + 1)

    def evict(self, name):
        bit = self.bit_of.pop(name, None)
        if bit is not None:
            del self.entry[bit]
            self.generation += 1

    def words(self):
        """Number of 64-bit words a round's bit vector needs."""
        return self.next_bit // 64 + 1
