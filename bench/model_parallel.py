"""Model parallelism for a fully connected pair (in -> hidden -> out): the hidden layer split
across the ranks (ColumnParallelLinear then RowParallelLinear) against the unsplit pair, side
by side on the same ranks, forward and backward.

    python bench/model_parallel.py     # relaunches itself under mpiexec -n 2 (BENCH_NP=3 for 3)

Every rank runs both, in alternation: the unsplit pair on its own (the peer: what each rank
would compute without model parallelism), and its slice of the split pair, including the two
allreduces inside the model-parallel group. BLAS runs one thread per rank, so ranks do not
fight over the cores."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS; inherited by the ranks
os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import ensure_mpi, machine_line, paired_medians, print_table  # noqa: E402

ensure_mpi(2)

import numpy as np  # noqa: E402

import ringtrain as rt  # noqa: E402
from ringtrain.train.model_parallel import ColumnParallelLinear, RowParallelLinear  # noqa: E402

BATCH = 64
SHAPES = [(512, 2048, 512), (1024, 4096, 1024), (1024, 8192, 1024)]


class Unsplit:
    def __init__(self, w1, b1, w2, b2):
        self.w1, self.b1, self.w2, self.b2 = w1, b1, w2, b2

    def step(self, x, dy):
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        y = h @ self.w2 + self.b2
        dh = (dy @ self.w2.T) * (h > 0)
        grads = (h.T @ dy, dy.sum(0), x.T @ dh, dh.sum(0))
        return y, dh @ self.w1.T, grads


class Split:
    def __init__(self, w1, b1, w2, b2, name):
        self.first = ColumnParallelLinear(*w1.shape, gather_output=False, weight=w1, bias=b1, name=f"{name}.1")
        self.second = RowParallelLinear(*w2.shape, input_is_split=True, weight=w2, bias=b2, name=f"{name}.2")

    def step(self, x, dy):
        h = np.maximum(self.first.forward(x), 0.0)
        y = self.second.forward(h)
        dx = self.first.backward(self.second.backward(dy) * (h > 0))
        return y, dx, None


def main():
    rt.init()
    rank, size = rt.rank(), rt.size()
    if rank == 0:
        print(f"# {machine_line()}; {size} ranks; batch {BATCH}; float32; one BLAS thread per rank", flush=True)
    rows = []
    for n_in, hidden, n_out in SHAPES:
        rng = np.random.default_rng(0)
        w1 = rng.standard_normal((n_in, hidden), dtype=np.float32) * 0.02
        w2 = rng.standard_normal((hidden, n_out), dtype=np.float32) * 0.02
        b1, b2 = np.zeros(hidden, np.float32), np.zeros(n_out, np.float32)
        x = rng.standard_normal((BATCH, n_in), dtype=np.float32)
        dy = rng.standard_normal((BATCH, n_out), dtype=np.float32)
        unsplit, split = Unsplit(w1, b1, w2, b2), Split(w1, b1, w2, b2, f"bench.{hidden}")
        y_ref, dx_ref, _ = unsplit.step(x, dy)
        y, dx, _ = split.step(x, dy)
        assert np.allclose(y, y_ref, atol=1e-3) and np.allclose(dx, dx_ref, atol=1e-3), "split != unsplit"
        t_unsplit, t_split = paired_medians([lambda: unsplit.step(x, dy), lambda: split.step(x, dy)], 5, 9,
                                            rt.barrier)
        weights = (w1.nbytes + w2.nbytes) / 2**20
        mine = (split.first.weight.nbytes + split.second.weight.nbytes) / 2**20
        rows.append([f"{n_in}-{hidden}-{n_out}", f"{weights:.0f} / {mine:.0f}", f"{t_unsplit * 1e3:.2f}",
                     f"{t_split * 1e3:.2f}", f"{t_unsplit / t_split:.2f}"])
        if rank == 0:
            print(f"# {n_in}-{hidden}-{n_out} done", flush=True)
    if rank == 0:
        print_table(["layers", "weights MB: unsplit / per rank", "unsplit ms", "split ms", "speedup unsplit/split"], rows)
    rt.shutdown()


if __name__ == "__main__":
    main()
