"""Reduction operations, with Horovod's names. The integer values are the C core's codes
(csrc/ringtrain.h, rt_op), except Adasum's: it is not an element-wise reduction, and
ringtrain.collectives runs it as an allgather and a combination (ringtrain/engine/adasum.py)."""
import enum


class ReduceOp(enum.IntEnum):
    Sum = 0
    Average = 1
    Min = 2
    Max = 3
    Product = 4
    Adasum = 5

    def __repr__(self):
        return self.name


Sum = ReduceOp.Sum
Average = ReduceOp.Average
Min = ReduceOp.Min
Max = ReduceOp.Max
Product = ReduceOp.Product
Adasum = ReduceOp.Adasum


def as_op(op):
    """The ReduceOp for `op` (a ReduceOp, its value or its name), or ValueError naming it."""
    if type(op) is ReduceOp:  # the common case, on every call
        return op
    try:
        if isinstance(op, str):
            return ReduceOp[op.capitalize()]
        if isinstance(op, bool):  # bool is an int: True would silently mean Average
            raise ValueError
        return ReduceOp(op)
    except (KeyError, ValueError, TypeError):
        names = ", ".join(o.name for o in ReduceOp)
        raise ValueError(f"op={op!r} is not a reduction op; use one of {names}") from None
