"""Model parallelism for fully connected layers: one layer's weight split across the ranks of a
process set, forward and backward in numpy, activations moved by ringtrain's collectives.

Two layouts (the Megatron-LM split, which the seed paper's "partitioned network" also uses):

- ColumnParallelLinear: rank r holds a slice of the *output* features (columns of W, and of b).
  Every rank sees the whole input. The output is either gathered along the features
  (allgather) or left split, ready for a RowParallelLinear. Backward: each rank's input
  gradient covers only its columns' contribution, so they are summed (allreduce).
- RowParallelLinear: rank r holds a slice of the *input* features (rows of W). Each rank's
  partial product covers its rows only, so the outputs are summed (allreduce); the bias is
  whole on every rank and added once, after the sum. Backward: the output gradient is the same
  on every rank, and each rank computes its own slice of the input gradient.

A ColumnParallelLinear(gather_output=False) followed by a RowParallelLinear(input_is_split=True)
costs one allreduce forward and one backward for the pair, whatever the hidden size.

Features are split as evenly as possible, lower ranks taking the extra one (the rule every
ringtrain collective uses), so sizes need not divide by the number of ranks. `params` and
`grads` list this rank's shards in a fixed order, for rt.optim and rt.DistributedOptimizer
(pass the data-parallel process set there to combine both kinds of parallelism)."""
import numpy as np

from .. import collectives
from ..engine.executor import split_rows
from ..reduce_ops import Sum
from ..process_sets import global_process_set


def feature_slice(features, parts, index):
    """The slice of `features` that part `index` of `parts` holds."""
    counts = split_rows(features, parts)
    start = int(counts[:index].sum())
    return slice(start, start + int(counts[index]))


def _check_input(x, features, what):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{what} must have shape (batch, {features}), got {x.shape}")
    return x


class _ShardedLinear:
    """What both layouts share: the process set, the shard, and the collectives' names."""

    split_axis = None  # 0: rows of W (input features), 1: columns of W (output features)

    def __init__(self, in_features, out_features, process_set, weight, bias, seed, dtype, name):
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{arg}={value!r} must be a positive int")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.process_set = process_set
        self.set_rank, self.set_size = process_set.rank(), process_set.size()
        split_features = self.in_features if self.split_axis == 0 else self.out_features
        self.shard = feature_slice(split_features, self.set_size, self.set_rank)
        self.name = name or f"{type(self).__name__}.{in_features}x{out_features}"
        dtype = np.dtype(dtype)
        if weight is None:
            # Every rank draws the same full matrix from the seed and keeps its slice, so the
            # split layer starts as exactly the unsplit one would.
            rng = np.random.default_rng(seed)
            weight = rng.normal(0.0, np.sqrt(2.0 / in_features), (in_features, out_features))
            bias = np.zeros(out_features) if bias is None else bias
        weight = np.asarray(weight)
        if weight.shape != (self.in_features, self.out_features):
            raise ValueError(f"weight must be the full ({in_features}, {out_features}) matrix, got {weight.shape}")
        bias = np.zeros(out_features) if bias is None else np.asarray(bias)
        if bias.shape != (self.out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {bias.shape}")
        index = (self.shard, slice(None)) if self.split_axis == 0 else (slice(None), self.shard)
        self.weight = np.ascontiguousarray(weight[index], dtype=dtype)
        self.bias = np.ascontiguousarray(bias if self.split_axis == 0 else bias[self.shard], dtype=dtype)
        self.params = [self.weight, self.bias]
        self.grads = [np.zeros_like(self.weight), np.zeros_like(self.bias)]
        self._x = None

    def _gather_features(self, local, what):
        """(batch, my features) on every rank -> (batch, all features): allgather concatenates
        along the first dimension, so the features travel first."""
        gathered = collectives.allgather(np.ascontiguousarray(local.T), name=f"{self.name}.{what}",
                                         process_set=self.process_set)
        return np.ascontiguousarray(gathered.T)

    def _sum(self, partial, what):
        return collectives.allreduce(np.ascontiguousarray(partial), op=Sum, name=f"{self.name}.{what}",
                                     process_set=self.process_set)

    def _saved_input(self):
        if self._x is None:
            raise RuntimeError(f"{self.name}: backward() before forward()")
        return self._x


class ColumnParallelLinear(_ShardedLinear):
    """y = x @ W + b with W's output features split across the process set's ranks.

    forward(x) takes the whole input (batch, in_features), the same on every rank of the set.
    With gather_output=True it returns the whole output (batch, out_features); with False, this
    rank's features only (batch, len(self.shard)), for a RowParallelLinear(input_is_split=True).
    backward(dy) takes the gradient of what forward returned and returns the whole input's
    gradient; it fills self.grads with this rank's slice of dW and db."""

    split_axis = 1

    def __init__(self, in_features, out_features, process_set=global_process_set, gather_output=True,
                 weight=None, bias=None, seed=0, dtype=np.float32, name=None):
        super().__init__(in_features, out_features, process_set, weight, bias, seed, dtype, name)
        self.gather_output = gather_output

    def forward(self, x):
        self._x = x = _check_input(x, self.in_features, f"{self.name}: input")
        local = x @ self.weight + self.bias
        return self._gather_features(local, "forward") if self.gather_output else local

    def backward(self, dy):
        x = self._saved_input()
        width = self.out_features if self.gather_output else self.weight.shape[1]
        dy = _check_input(dy, width, f"{self.name}: output gradient")
        if dy.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: output gradient has batch {dy.shape[0]}, the input had {x.shape[0]}")
        mine = dy[:, self.shard] if self.gather_output else dy
        np.matmul(x.T, mine, out=self.grads[0])
        np.sum(mine, axis=0, out=self.grads[1])
        # x reached every rank whole, so its gradient is the sum of every rank's columns' share
        return self._sum(mine @ self.weight.T, "backward")


class RowParallelLinear(_ShardedLinear):
    """y = x @ W + b with W's input features split across the process set's ranks.

    forward(x) takes this rank's slice of the input features (batch, len(self.shard)) when
    input_is_split=True (the output of a ColumnParallelLinear(gather_output=False)), or the
    whole input (batch, in_features) otherwise; it returns the whole output on every rank.
    backward(dy) takes the whole output's gradient (the same on every rank) and returns the
    input's gradient in the form forward took the input: split, or whole."""

    split_axis = 0

    def __init__(self, in_features, out_features, process_set=global_process_set, input_is_split=False,
                 weight=None, bias=None, seed=0, dtype=np.float32, name=None):
        super().__init__(in_features, out_features, process_set, weight, bias, seed, dtype, name)
        self.input_is_split = input_is_split

    def forward(self, x):
        if self.input_is_split:
            x = _check_input(x, self.weight.shape[0], f"{self.name}: input slice")
        else:
            x = _check_input(x, self.in_features, f"{self.name}: input")[:, self.shard]
        self._x = x
        # the bias is added after the sum, so it counts once and not once per rank
        return self._sum(x @ self.weight, "forward") + self.bias

    def backward(self, dy):
        x = self._saved_input()
        dy = _check_input(dy, self.out_features, f"{self.name}: output gradient")
        if dy.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: output gradient has batch {dy.shape[0]}, the input had {x.shape[0]}")
        np.matmul(x.T, dy, out=self.grads[0])
        np.sum(dy, axis=0, out=self.grads[1])
        dx = dy @ self.weight.T
        return dx if self.input_is_split else self._gather_features(dx, "backward")
