"""DistributedOptimizer (numpy): each update uses the gradient averaged over the ranks, with
gradient accumulation, compression and sparse gradients."""
import numpy as np

from .. import collectives, runtime
from ..reduce_ops import Adasum, Average, as_op
from .compression import Compression
from ..process_sets import global_process_set
from .sparse import METHODS as SPARSE_METHODS, SparseGradient, sparse_allreduce
from .sparse_kernels import scatter_add_rows, zero_rows

_FLOAT32 = np.dtype(np.float32)  # an identity test is quicker; any other float32 takes the general path


class DistributedOptimizer:
    """Wraps an optimizer (ringtrain.optim.SGD/Adam or anything with .params, .step(grads),
    .state_dict()) so that each update uses the gradient averaged over all ranks.

    Call grad_ready(i, grad) as soon as parameter i's gradient is computed (during the
    backward pass): its allreduce starts at once, in the background, while the rest of the
    backward pass runs. step() then waits for whatever is still in flight and applies the
    update. step(grads) does both for gradients not already handed over.

    backward_passes_per_step=k accumulates k passes locally (their mean) and communicates and
    updates only on every k-th step() call, which returns True when it updated.

    On a one-rank process set the local gradient is applied directly: the average over one rank
    is itself, and there is no wire to compress for. The result is the same; the cost is not.

    A gradient given as a ringtrain.SparseGradient (an embedding's rows) is reduced the sparse
    way (ringtrain/sparse.py, `sparse_method`, "auto" by default) in step(), uncompressed, and
    handed to the wrapped optimizer as a dense array whose untouched rows are zero."""

    def __init__(self, optimizer, named_parameters=None, backward_passes_per_step=1, op=Average,
                 compression=Compression.none, process_set=global_process_set, sparse_method="auto"):
        self.optimizer = optimizer
        n = len(optimizer.params)
        if named_parameters is not None:
            names = [name for name, _ in named_parameters]
            if len(names) != n or len(set(names)) != n:
                raise ValueError(f"named_parameters must name each of the {n} parameters once")
        else:
            names = [f"param.{i}" for i in range(n)]
        if not isinstance(backward_passes_per_step, int) or backward_passes_per_step < 1:
            raise ValueError(f"backward_passes_per_step={backward_passes_per_step!r} must be a positive int")
        self.names = [f"DistributedOptimizer.grad.{name}" for name in names]
        self.backward_passes_per_step = backward_passes_per_step
        self.op = as_op(op)
        self.compression = compression
        self.process_set = process_set
        self._accumulated = [None] * n
        self._seen = [False] * n      # which gradients arrived in the current pass
        self._count = 0
        self._passes = 0
        self._in_flight = [None] * n  # (handle, compression context), or (None, gradient)
        self._buffers = [None] * n    # per parameter, reused every step: accumulation and the wire
        self._persistent = [None] * n  # per parameter, the allreduce of its buffer (allreduce_init)
        self._alone = None            # a one-rank set: nothing to average, nothing to compress for
        self._direct = False          # ... and no accumulation: dense gradients pass straight through
        if sparse_method not in SPARSE_METHODS:
            raise ValueError(f"sparse_method={sparse_method!r} must be one of {', '.join(map(repr, SPARSE_METHODS))}")
        self.sparse_method = sparse_method
        self._sparse = {}             # parameter index -> its SparseGradients of this window
        self._dense_rows = {}         # parameter index -> (dense buffer, rows written into it last)

    @property
    def params(self):
        return self.optimizer.params

    def grad_ready(self, index, grad):
        if self._seen[index]:
            raise ValueError(f"gradient {index} ({self.names[index]}) was already given in this pass")
        self._seen[index] = True
        self._count += 1
        if self._direct and type(grad) is np.ndarray and grad.dtype is _FLOAT32:
            self._in_flight[index] = (None, grad)  # one rank, no accumulation: the gradient as it is
            return
        if type(grad) is not np.ndarray or grad.dtype != np.float32:
            if isinstance(grad, SparseGradient):
                if self._passes == 0 or index in self._sparse:
                    return self._sparse_ready(index, grad)
                grad = grad.to_dense()  # a dense window already started for this parameter
            grad = np.asarray(grad, dtype=np.float32)
        k = self.backward_passes_per_step
        if self._passes == 0:
            self._accumulated[index] = self._reusable(index, grad) if k > 1 else grad
        elif index in self._sparse:  # earlier passes of this window were sparse: fold them in
            grad = grad + sum(g.to_dense() for g in self._sparse.pop(index)).astype(np.float32)
            self._accumulated[index] = self._reusable(index, grad)
        else:
            self._accumulated[index] += grad
        if self._passes + 1 < k:
            return
        # last pass of the window: send now, while the rest of the backward pass runs
        if self._alone is None:
            self._alone = self.process_set.size() == 1
            self._direct = self._alone and k == 1
        if self._alone:  # the average over one rank is the local mean itself
            self._in_flight[index] = (None, self._accumulated[index] / k if k > 1 else self._accumulated[index])
            return
        accumulated = self._accumulated[index]
        tensor, context = self.compression.compress(np.ascontiguousarray(accumulated))
        if tensor is accumulated and tensor is not self._buffers[index]:
            tensor = self._reusable(index, tensor)  # the caller's own array: reduce a copy
        # in place, in a buffer kept across steps: a fresh output array each step costs page
        # faults that are slower than the copy
        if tensor is self._buffers[index] and self.op is not Adasum:
            handle = self._persistent_allreduce(index, tensor).start()
        else:
            handle = collectives.allreduce_async_(tensor, op=self.op, name=self.names[index], prescale_factor=1.0 / k,
                                                  process_set=self.process_set)
        self._in_flight[index] = (handle, context)

    def _persistent_allreduce(self, index, buffer):
        """Parameter `index`'s allreduce of its buffer, checked once (collectives.allreduce_init)
        and made again only if the buffer or the job changed (an elastic reset re-initializes)."""
        persistent = self._persistent[index]
        if (persistent is None or persistent.tensor is not buffer
                or persistent.engine is not runtime.current("DistributedOptimizer").engine):
            persistent = self._persistent[index] = collectives.allreduce_init(
                buffer, op=self.op, name=self.names[index], prescale_factor=1.0 / self.backward_passes_per_step,
                process_set=self.process_set)
        return persistent

    def _reusable(self, index, source):
        """`source` copied into parameter `index`'s persistent float32 buffer."""
        buffer = self._buffers[index]
        if buffer is None or buffer.shape != source.shape:
            buffer = self._buffers[index] = np.empty(source.shape, dtype=np.float32)
        np.copyto(buffer, source)
        return buffer

    def step(self, grads=None):
        n = len(self._seen)
        if self._count < n:
            missing = [i for i in range(n) if not self._seen[i]]
            if grads is None:
                raise ValueError(f"step() without grads, but gradients {missing[:5]} were never given to grad_ready()")
            for i in missing:
                self.grad_ready(i, grads[i])
        self._seen = [False] * n
        self._count = 0
        self._passes += 1
        if self._passes < self.backward_passes_per_step:
            return False
        flights, self._in_flight = self._in_flight, [None] * n
        if self._alone:
            averaged = [gradient for _, gradient in flights]
        else:
            decompress, synchronize = self.compression.decompress, collectives.synchronize
            averaged = [context if handle is None else decompress(synchronize(handle), context)
                        for handle, context in flights]
        if self._sparse:
            self._reduce_sparse(averaged)
        self._passes = 0
        self.optimizer.step(averaged)
        return True

    def _sparse_ready(self, index, grad):
        shape = self.optimizer.params[index].shape
        if grad.dense_shape != shape:
            self._seen[index] = False
            self._count -= 1
            raise ValueError(f"sparse gradient {index} ({self.names[index]}) has dense_shape={grad.dense_shape}, "
                             f"but the parameter has shape {shape}")
        self._sparse.setdefault(index, []).append(grad)
        self._in_flight[index] = (None, None)  # step() puts the reduced gradient here

    def _reduce_sparse(self, averaged):
        """Reduce each sparse gradient of the window, in parameter order (the same on every
        rank), and densify it for the wrapped optimizer."""
        pending, self._sparse = self._sparse, {}
        k = self.backward_passes_per_step
        alone = self.process_set.size() == 1
        for index in sorted(pending):
            grads = pending[index]
            grad = grads[0]
            if len(grads) > 1 or k > 1:
                grad = SparseGradient._trusted(np.concatenate([g.indices for g in grads]),
                                               np.concatenate([g.values for g in grads]) / k, grad.dense_shape)
            if not alone:  # on one rank the average is the gradient itself
                grad = sparse_allreduce(grad, op=self.op, method=self.sparse_method, name=self.names[index],
                                        process_set=self.process_set)
            averaged[index] = grad if isinstance(grad, np.ndarray) else self._densify(index, grad)

    def _densify(self, index, grad):
        """The gradient as a dense array, in a buffer kept per parameter: only the rows written
        last time are cleared, not the whole (mostly zero) array."""
        buffer, written = self._dense_rows.get(index, (None, None))
        if buffer is None:
            buffer = np.zeros(grad.dense_shape, dtype=np.float32)
        rows = buffer.reshape(grad.dense_shape[0], -1)
        if written is not None:
            zero_rows(rows, written)
        scatter_add_rows(rows, grad.indices, grad.rows())
        self._dense_rows[index] = (buffer, grad.indices.copy())
        return buffer

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)
