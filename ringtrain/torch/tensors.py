"""torch CPU tensors <-> numpy views of the same memory.

The core (ringtrain.collectives) takes numpy arrays and hands their data pointers to the C
engine, so a numpy view of a tensor's storage is all it takes to reduce a tensor in place: no
copy on the way in, and results come back as tensors over the core's output arrays. torch has
no numpy dtype for bfloat16, so bfloat16 goes through an int16 view re-typed as ml_dtypes'
bfloat16 (the same bits, still no copy)."""
import numpy as np
import torch

from ..dtypes import bfloat16 as _NUMPY_BFLOAT16


def _check_tensor(tensor, arg):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor, got {type(tensor).__name__}")


def to_numpy(tensor, arg="tensor"):
    """A numpy array sharing `tensor`'s memory (no copy, whatever the dtype)."""
    if type(tensor) is torch.Tensor and tensor.dtype is not torch.bfloat16:
        try:  # the common case in one call: numpy() itself refuses GPU, sparse and autograd tensors
            return tensor.numpy()
        except (TypeError, RuntimeError):
            pass  # the checks below say why, in ringtrain's words
    _check_tensor(tensor, arg)
    if not tensor.is_cpu:
        raise ValueError(f"{arg} is on device {tensor.device}; ringtrain.torch reduces CPU tensors only")
    if tensor.layout != torch.strided:
        raise TypeError(f"{arg} has layout {tensor.layout}; use sparse_allreduce_async for sparse tensors")
    if tensor.requires_grad:  # .numpy() refuses those; detach() is a new tensor object, so only then
        tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(_NUMPY_BFLOAT16)
    try:
        return tensor.numpy()
    except TypeError as exc:  # dtypes numpy cannot represent (complex32, ...)
        raise TypeError(f"{arg} has dtype {tensor.dtype}, which ringtrain does not support: {exc}") from None


def from_numpy(array):
    """A tensor over `array`'s memory (no copy)."""
    if array.dtype == _NUMPY_BFLOAT16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def contiguous(tensor, arg="tensor"):
    """`tensor` itself when it is contiguous; a contiguous copy only when it is not (the out-of-place
    collectives accept any layout, as Horovod's do)."""
    _check_tensor(tensor, arg)
    return tensor if tensor.layout != torch.strided or tensor.is_contiguous() else tensor.contiguous()
