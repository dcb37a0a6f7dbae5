"""The element types ringtrain reduces, and their codes in the C core (csrc/ringtrain.h, rt_dtype).
bfloat16 is ml_dtypes' numpy dtype."""
import ml_dtypes
import numpy as np

bfloat16 = np.dtype(ml_dtypes.bfloat16)

# numpy dtype -> C code, in the order of rt_dtype.
CODES = {
    np.dtype(np.float16): 0,
    bfloat16: 1,
    np.dtype(np.float32): 2,
    np.dtype(np.float64): 3,
    np.dtype(np.int8): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.uint8): 8,
    np.dtype(np.bool_): 9,
}
SUPPORTED = tuple(CODES)
BOOL_CODE = CODES[np.dtype(np.bool_)]


# Hashing a numpy dtype takes about a microsecond; its type number does not (this runs on every
# call). Equal dtypes can have different numbers (int64 is both 'l' and 'q' here), so a miss
# falls back to the dtype itself; a byte-swapped dtype shares its number but is not supported.
_CODES_BY_NUMBER = {dtype.num: code for dtype, code in CODES.items()}


def dtype_code(dtype, arg="tensor"):
    code = _CODES_BY_NUMBER.get(dtype.num) if dtype.isnative else None
    if code is None:
        code = CODES.get(dtype)
    if code is None:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise TypeError(f"{arg} has dtype {dtype}, which ringtrain does not support; supported: {names}")
    return code
