"""The C reduction kernels (csrc/reduce_kernels.c) against numpy doing the same in-place
operation (np.add(a, b, out=a) etc.) on one core, 4 MB buffers (in cache-unfriendly size).

    python bench/kernels.py"""
import numpy as np

from common import machine_line, paired_medians, print_table

import ringtrain as rt
from ringtrain.dtypes import CODES
from ringtrain.runtime import load_core

NUMPY_OPS = {rt.Sum: np.add, rt.Max: np.maximum, rt.Product: np.multiply}


def main():
    core = load_core()
    nbytes = 4 << 20
    rows = []
    print(f"# {machine_line()}")
    for dtype in (np.float32, np.float64, np.float16, rt.bfloat16, np.int32, np.int8):
        dtype = np.dtype(dtype)
        n = nbytes // dtype.itemsize
        a = np.ones(n, dtype=dtype)
        b = np.ones(n, dtype=dtype)
        for op, ufunc in NUMPY_OPS.items():
            code = CODES[dtype]
            try:
                ufunc(a[:4], b[:4], out=a[:4])
                numpy_fn = lambda: ufunc(a, b, out=a)  # noqa: E731
            except TypeError:
                numpy_fn = None
            fns = [lambda: core.reduce(a, b, code, int(op))] + ([numpy_fn] if numpy_fn else [])
            times = paired_medians(fns, 20, 9, lambda: None)
            t_rt = times[0]
            t_np = times[1] if numpy_fn else float("nan")
            rows.append([dtype.name, op.name, f"{nbytes / t_rt / 1e9:.1f}", f"{nbytes / t_np / 1e9:.1f}",
                         f"{t_np / t_rt:.2f}"])
    print_table(["dtype", "op", "ringtrain GB/s", "numpy GB/s", "speedup vs numpy"], rows)


if __name__ == "__main__":
    main()
