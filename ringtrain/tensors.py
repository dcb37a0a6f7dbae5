"""Turn what the user passed into a numpy view of the same memory, without copying.

Accepted: numpy arrays, objects with __array_interface__, DLPack (__dlpack__) and the buffer
protocol. A layout that would force a copy (non-contiguous) or a dtype the core cannot reduce
is rejected with an error naming the argument, before anything is sent."""
import numpy as np

from .dtypes import dtype_code


def as_array(tensor, arg="tensor", writable=False):
    """(numpy view of tensor, dtype code)."""
    if type(tensor) is np.ndarray:
        array = tensor
    else:
        array = _view(tensor, arg)
    code = dtype_code(array.dtype, arg)
    flags = array.flags  # (a new object on every access)
    if not flags.c_contiguous:
        raise ValueError(
            f"{arg} is not C-contiguous (shape {array.shape}, strides {array.strides}); "
            "ringtrain works on memory in place, pass np.ascontiguousarray(...) or a contiguous copy"
        )
    if writable and not flags.writeable:
        raise ValueError(f"{arg} is read-only, so it cannot be updated in place; use the out-of-place call")
    return array, code


def _view(tensor, arg):
    if isinstance(tensor, np.ndarray):  # subclasses
        return tensor.view(np.ndarray)
    if hasattr(tensor, "__array_interface__"):
        return np.asarray(tensor)
    if hasattr(tensor, "__dlpack__"):
        try:
            return np.from_dlpack(tensor)
        except (BufferError, TypeError, RuntimeError) as exc:
            raise TypeError(f"{arg}: cannot view this {type(tensor).__name__} through DLPack: {exc}") from None
    try:
        buffer = memoryview(tensor)
    except TypeError:
        raise TypeError(
            f"{arg} must be an array (numpy, buffer protocol, __array_interface__ or DLPack); "
            f"got {type(tensor).__name__}"
        ) from None
    return np.asarray(buffer)  # via memoryview: bytes must not become a numpy string scalar
