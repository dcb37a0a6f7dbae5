"""Gradient compression for torch tensors, with horovod.torch's interface
(compress(tensor) -> (tensor, context); decompress(tensor, context) -> tensor).

The numpy core's compressors (ringtrain.train.compression) cast numpy float32 with numba kernels; for
torch tensors torch's own cast is the vectorised tool, so these are thin wrappers around it.
The reduction of float16/bfloat16 still computes each partial sum in float32 (the core)."""
import torch


class Compressor:
    @staticmethod
    def compress(tensor):
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor


class NoneCompressor(Compressor):
    """No compression."""


class _CastCompressor(Compressor):
    """Floating-point tensors go on the wire as `wire_dtype`; others pass through."""

    wire_dtype = None

    @classmethod
    def compress(cls, tensor):
        if tensor.dtype.is_floating_point and tensor.dtype != cls.wire_dtype:
            return tensor.type(cls.wire_dtype), tensor.dtype
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor if ctx is None else tensor.type(ctx)


class FP16Compressor(_CastCompressor):
    wire_dtype = torch.float16


class BF16Compressor(_CastCompressor):
    wire_dtype = torch.bfloat16


class Compression:
    """The built-in compressors (Horovod's names; bf16 is ringtrain's addition)."""

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor
