"""The numba compression casts: round-trip error bounds and exact rounding (nearest even)."""
import numpy as np
import pytest

import ringtrain as rt
from ringtrain.train import compression_kernels as kernels


@pytest.mark.parametrize("name,compressor,bound,subnormal_step", [("fp16", rt.Compression.fp16, 2.0 ** -11, 2.0 ** -24),
                                                                   ("bf16", rt.Compression.bf16, 2.0 ** -8, 2.0 ** -133)])
def test_round_trip_error_is_within_half_an_ulp(name, compressor, bound, subnormal_step):
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    x *= 10.0 ** np.random.default_rng(1).integers(-6, 4, x.size)  # several magnitudes, subnormals included
    compressed, context = compressor.compress(x)
    assert compressed.nbytes == x.nbytes // 2
    back = compressor.decompress(compressed, context)
    assert back.dtype == np.float32
    # half an ulp relative to the value, or half a subnormal step, whichever is larger
    np.testing.assert_array_less(np.abs(back - x), np.maximum(np.abs(x) * bound, subnormal_step / 2) * 1.0001)


def test_float16_rounding_matches_numpy_on_random_bits():
    bits = np.random.default_rng(3).integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[~np.isnan(values)]
    ours = np.empty(values.shape, np.uint16)
    kernels.float32_to_float16_bits(values, ours)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(ours, values.astype(np.float16).view(np.uint16))


def test_casts_round_exactly_like_numpy_and_ml_dtypes():
    values = np.array([1.0009765625, 1.00048828125, 3.0e-39, -0.0, 65520.0, np.inf, -np.inf, 1e-8, 2049.0,
                       0.1, -7.5e-6], dtype=np.float32)
    half = np.empty(values.shape, np.uint16)
    kernels.float32_to_float16_bits(values, half)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(half, values.astype(np.float16).view(np.uint16))
    back = np.empty(values.shape, np.float32)
    kernels.float16_bits_to_float32(half, back)
    np.testing.assert_array_equal(back, half.view(np.float16).astype(np.float32))
    # every float16 value, through float32 and back, is itself
    every = np.arange(65536, dtype=np.uint16)
    wide, narrow = np.empty(every.shape, np.float32), np.empty(every.shape, np.uint16)
    kernels.float16_bits_to_float32(every, wide)
    np.testing.assert_array_equal(wide[~np.isnan(wide)], every.view(np.float16).astype(np.float32)[~np.isnan(wide)])
    kernels.float32_to_float16_bits(wide, narrow)
    finite = ~np.isnan(wide)
    np.testing.assert_array_equal(narrow[finite], every[finite])
    bits = np.empty(values.shape, np.uint16)
    kernels.float32_to_bfloat16_bits(values, bits)
    np.testing.assert_array_equal(bits, values.astype(rt.bfloat16).view(np.uint16))
    nan = np.empty(1, np.uint16)
    kernels.float32_to_bfloat16_bits(np.array([np.nan], np.float32), nan)
    assert np.isnan(nan.view(rt.bfloat16).astype(np.float32)).all()


def test_non_float32_tensors_pass_through():
    x = np.arange(5, dtype=np.int32)
    for compressor in (rt.Compression.none, rt.Compression.fp16, rt.Compression.bf16):
        compressed, context = compressor.compress(x)
        assert compressor.decompress(compressed, context) is compressed and (compressed == x).all()
