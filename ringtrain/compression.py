"""Gradient compression for the wire, with Horovod's interface:

    opt = rt.DistributedOptimizer(opt, compression=rt.Compression.fp16)

A compressor turns a tensor into what is sent (compress -> (tensor, context)) and back
(decompress). fp16 and bf16 halve the bytes; the reduction still computes each partial sum in
float32 (see the core). Add your own by subclassing Compressor."""
import numpy as np

from . import kernels
from .dtypes import bfloat16


class Compressor:
    @staticmethod
    def compress(tensor):
        return tensor, None

    @staticmethod
    def decompress(tensor, context):
        return tensor


class NoneCompressor(Compressor):
    pass


class FP16Compressor(Compressor):
    @staticmethod
    def compress(tensor):
        if tensor.dtype != np.float32:
            return tensor, None
        bits = np.empty(tensor.shape, dtype=np.uint16)
        kernels.float32_to_float16_bits(np.ascontiguousarray(tensor).reshape(-1), bits.reshape(-1))
        return bits.view(np.float16), np.float32

    @staticmethod
    def decompress(tensor, context):
        if context is None:
            return tensor
        out = np.empty(tensor.shape, dtype=np.float32)
        kernels.float16_bits_to_float32(tensor.view(np.uint16).reshape(-1), out.reshape(-1))
        return out


class BF16Compressor(Compressor):
    @staticmethod
    def compress(tensor):
        if tensor.dtype != np.float32:
            return tensor, None
        bits = np.empty(tensor.shape, dtype=np.uint16)
        kernels.float32_to_bfloat16_bits(np.ascontiguousarray(tensor).reshape(-1), bits.reshape(-1))
        return bits.view(bfloat16), np.float32

    @staticmethod
    def decompress(tensor, context):
        if context is None:
            return tensor
        out = np.empty(tensor.shape, dtype=np.float32)
        kernels.bfloat16_bits_to_float32(tensor.view(np.uint16).reshape(-1), out.reshape(-1))
        return out


class Compression:
    """The built-in compressors (Horovod's names)."""

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor
