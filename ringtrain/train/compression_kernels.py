"""numba kernels of gradient compression: float32 to and from float16 / bfloat16 bits, one pass
over memory each, with numpy's rounding (nearest even). cache=True keeps the compiled code on disk."""
import numba
import numpy as np


@numba.njit(cache=True)
def float32_to_bfloat16_bits(src, dst):
    """Round to nearest even; NaN stays a quiet NaN."""
    bits = src.view(np.uint32)
    for i in range(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            dst[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x0040))
        else:
            rounding = np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))
            dst[i] = np.uint16((b + rounding) >> np.uint32(16))


@numba.njit(cache=True)
def bfloat16_bits_to_float32(src, dst):
    out = dst.view(np.uint32)
    for i in range(src.size):
        out[i] = np.uint32(src[i]) << np.uint32(16)


@numba.njit(cache=True)
def float32_to_float16_bits(src, dst):
    """IEEE float32 -> float16 bits, round to nearest even (numba has no float16 type on the
    CPU, so this is the bit-level conversion). Overflow gives inf, NaN stays NaN."""
    bits = src.view(np.uint32)
    for i in range(bits.size):
        f = bits[i]
        sign = (f >> np.uint32(16)) & np.uint32(0x8000)
        x = f & np.uint32(0x7FFFFFFF)
        if x >= np.uint32(0x7F800000):                   # inf or NaN
            h = np.uint32(0x7E00) if x > np.uint32(0x7F800000) else np.uint32(0x7C00)
        elif x >= np.uint32(0x477FF000):                 # >= 65520 rounds to inf
            h = np.uint32(0x7C00)
        elif x < np.uint32(0x38800000):                  # below 2**-14: subnormal or zero
            scaled = np.float64(src[i] if sign == 0 else -src[i]) * 16777216.0  # in units of 2**-24
            whole = np.floor(scaled)
            rest = scaled - whole
            if rest > 0.5 or (rest == 0.5 and whole % 2.0 == 1.0):
                whole += 1.0
            h = np.uint32(whole)
        else:                                            # normal: rebias, round half to even
            odd = (x >> np.uint32(13)) & np.uint32(1)
            h = (x - np.uint32(0x38000000) + np.uint32(0xFFF) + odd) >> np.uint32(13)
        dst[i] = np.uint16(h | sign)


@numba.njit(cache=True)
def float16_bits_to_float32(src, dst):
    out = dst.view(np.uint32)
    for i in range(src.size):
        h = np.uint32(src[i])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
        mantissa = h & np.uint32(0x3FF)
        if exponent == 0:                                # zero or subnormal: exact as mantissa * 2**-24
            dst[i] = np.float32(np.float64(mantissa) * 5.9604644775390625e-08)
            out[i] |= sign
        elif exponent == 31:
            out[i] = sign | np.uint32(0x7F800000) | (mantissa << np.uint32(13))
        else:
            out[i] = sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13))
