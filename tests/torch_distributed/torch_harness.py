"""Per-rank inputs every rank can regenerate for every other rank, so the torch reference needs
no communication."""
import torch

import ringtrain.torch as hvd

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES + [torch.bool]


def rank_tensor(rank, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) < 0.5
    if dtype == torch.uint8:
        return torch.randint(0, 4, shape, generator=g).to(dtype)
    if not dtype.is_floating_point:
        return torch.randint(-3, 4, shape, generator=g).to(dtype)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype)


def all_inputs(shape, dtype, seed=0, ranks=None):
    ranks = range(hvd.size()) if ranks is None else ranks
    return [rank_tensor(r, shape, dtype, seed) for r in ranks]


def reference(op, inputs, dtype):
    """torch's answer, computed in float64 (int64 for integers)."""
    if dtype == torch.bool:
        stack = torch.stack(inputs)
        return stack.any(0) if op in (hvd.Sum, hvd.Max) else stack.all(0)
    stack = torch.stack([t.to(torch.float64 if dtype.is_floating_point else torch.int64) for t in inputs])
    if op == hvd.Sum:
        return stack.sum(0)
    if op == hvd.Min:
        return stack.min(0).values
    if op == hvd.Max:
        return stack.max(0).values
    if op == hvd.Product:
        return stack.prod(0)
    total = stack.sum(0)
    return total / len(inputs) if dtype.is_floating_point else torch.div(total, len(inputs), rounding_mode="trunc")


def assert_close(result, expected, dtype, what=""):
    assert result.dtype == dtype, f"{what}: dtype {result.dtype} != {dtype}"
    assert result.shape == expected.shape, f"{what}: shape {tuple(result.shape)} != {tuple(expected.shape)}"
    if dtype.is_floating_point:
        rtol = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-6, torch.float64: 1e-12}[dtype]
        torch.testing.assert_close(result.to(torch.float64), expected.to(torch.float64), rtol=rtol, atol=0, msg=what)
    else:
        assert torch.equal(result, expected.to(dtype)), f"{what}: {result} != {expected}"


def even_odd_sets():
    """(this rank's set, its global ranks): evens and odds, registered on every rank."""
    evens = [r for r in range(hvd.size()) if r % 2 == 0]
    odds = [r for r in range(hvd.size()) if r % 2 == 1]
    sets = [hvd.add_process_set(evens)] + ([hvd.add_process_set(odds)] if odds else [])
    mine = sets[hvd.rank() % 2]
    return sets, mine, (evens if hvd.rank() % 2 == 0 else odds)


# The order of a 16-bit sum (README, "Coming from Horovod"): each addition is done in float32 and
# rounded to the 16-bit type, as Horovod's float16 MPI op does, so at 3 or more ranks the order
# matters. These follow ringtrain's allreduce algorithms addition by addition.
def _add_rounded(a, b, dtype):
    return (a.to(torch.float32) + b.to(torch.float32)).to(dtype)


def ring_order_sum(inputs, dtype):
    """Ring (buffers above RINGTRAIN_SMALL_ALLREDUCE_THRESHOLD; reducescatter always): the flat
    buffer is cut into p blocks, the first len % p one element longer; block b starts on rank
    b+1 and each next rank round the ring adds its own, ending with rank b."""
    p, flat = len(inputs), [t.reshape(-1) for t in inputs]
    n, out, start = flat[0].numel(), [], 0
    for b in range(p):
        count = n // p + (b < n % p)
        acc = flat[(b + 1) % p][start:start + count]
        for k in range(2, p + 1):
            acc = _add_rounded(acc, flat[(b + k) % p][start:start + count], dtype)
        out.append(acc)
        start += count
    return torch.cat(out).reshape(inputs[0].shape)


def shared_memory_sum(inputs, dtype, piece_bytes=256 * 1024):
    """Shared memory (buffers above the threshold, ranks of one host): the flat buffer goes in
    pieces of piece_bytes; each piece is cut into n slices of whole 64-byte units (slice r from
    unit floor(units*r/n)); slice r starts with rank r's values and adds the other ranks' in
    rank order."""
    p, flat = len(inputs), [t.reshape(-1) for t in inputs]
    n, esize = flat[0].numel(), flat[0].element_size()
    per_piece, unit, out = piece_bytes // esize, 64 // esize, []
    for offset in range(0, n, per_piece):
        m = min(per_piece, n - offset)
        units = -(-m // unit)
        for r in range(p):
            lo, hi = min(m, units * r // p * unit), min(m, units * (r + 1) // p * unit)
            acc = flat[r][offset + lo:offset + hi]
            for q in range(p):
                if q != r:
                    acc = _add_rounded(acc, flat[q][offset + lo:offset + hi], dtype)
            out.append(acc)
    return torch.cat(out).reshape(inputs[0].shape)


def recursive_doubling_sum(inputs, dtype):
    """Recursive doubling (small buffers): with p = 2^k + rem, ranks 2i and 2i+1 (i < rem) first
    add into one, then the 2^k survivors add pairwise with the partner whose index differs in
    one bit, for each bit in turn."""
    p = len(inputs)
    pof2 = 1
    while pof2 * 2 <= p:
        pof2 *= 2
    rem = p - pof2
    values = [_add_rounded(inputs[2 * i], inputs[2 * i + 1], dtype) for i in range(rem)] + list(inputs[2 * rem:])
    mask = 1
    while mask < pof2:
        values = [_add_rounded(values[i], values[i ^ mask], dtype) for i in range(pof2)]
        mask <<= 1
    return values[0]
