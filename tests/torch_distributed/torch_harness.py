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
