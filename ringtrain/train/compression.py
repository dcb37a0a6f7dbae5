"""Gradient compression for the wire, with Horovod's interface:

    opt = rt.DistributedOptimizer(opt, compression=rt.Compression.fp16)

A compressor turns a tensor into what is sent (compress -> (tensor, context)) and back
(decompress). fp16 and bf16 halve the bytes; the reduction still computes each partial sum in
float32 (see the core). Add your own by subclassing Compressor."""
import numpy as np

from ..dtypes import bfloat16
from . import compression_kernels


class Compressor:
    @staticmethod
    def compress(tensor):
        return tensor, None

    @staticmethod
    def decompress(tensor, context):
        return tensor


class NoneCompressor(Compressor):
    pass


class _HalfCompressor(Compressor):
    """float32 -> a 16-bit float on the wire, by a numba bit-level cast; other dtypes pass through."""

    wire_dtype = None
    to_bits = from_bits = None

    @classmethod
    def compress(cls, tensor):
        if tensor.dtype != np.float32:
            return tensor, None
        bits = np.empty(tensor.shape, dtype=np.uint16)
        cls.to_bits(np.ascontiguousarray(tensor).reshape(-1), bits.reshape(-1))
        return bits.view(cls.wire_dtype), np.float32

    @classmethod
    def decompress(cls, tensor, context):
        if context is None:
            return tensor
        out = np.empty(tensor.shape, dtype=np.float32)
        cls.from_bits(tensor.view(np.uint16).reshape(-1), out.reshape(-1))
        return out


class FP16Compressor(_HalfCompressor):
    wire_dtype = np.dtype(np.float16)
    to_bits = staticmethod(compression_kernels.float32_to_float16_bits)
    from_bits = staticmethod(compression_kernels.float16_bits_to_float32)


class BF16Compressor(_HalfCompressor):
    wire_dtype = bfloat16
    to_bits = staticmethod(compression_kernels.float32_to_bfloat16_bits)
    from_bits = staticmethod(compression_kernels.bfloat16_bits_to_float32)


class Compression:
    """The built-in compressors (Horovod's names)."""

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor
