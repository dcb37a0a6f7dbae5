import numpy as np
import pytest

import ringtrain as rt
from ringtrain import runtime
from harness import ALL_DTYPES, ALL_OPS, DTYPE_IDS, MODES, assert_matches, lengths, rank_input, reference_reduce, tuned


# Every (dtype, op) pair but Average of bool, which is rejected (see test_bad_input.py).
DTYPE_OPS = [
    pytest.param(dtype, op, id=f"{name}-{op.name}")
    for dtype, name in zip(ALL_DTYPES, DTYPE_IDS)
    for op in ALL_OPS
    if not (op == rt.Average and np.dtype(dtype) == np.bool_)
]


@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
@pytest.mark.parametrize("dtype,op", DTYPE_OPS)
def test_allreduce_matches_numpy(dtype, op, in_place):
    size, rank = rt.size(), rt.rank()
    for mode, settings in MODES.items():
        with tuned(**settings):
            for n in lengths(size):
                inputs = [rank_input(dtype, (n,), q) for q in range(size)]
                expected = reference_reduce(op, inputs, dtype)
                mine = inputs[rank].copy()
                if in_place:
                    returned = rt.allreduce_(mine, op=op)
                    assert returned is mine
                    result = mine
                else:
                    result = rt.allreduce(mine, op=op)
                    np.testing.assert_array_equal(mine, inputs[rank], err_msg="input was modified")
                assert_matches(result, expected, dtype, size, f"{mode} n={n}")


@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
@pytest.mark.parametrize("dtype,op", DTYPE_OPS)
def test_repeated_calls_take_the_steady_path_and_match_numpy(dtype, op, in_place):
    """A name seen before with nothing else in flight runs in the caller's thread (the engine's
    allreduce_now): one exchange carries the round's bits and, up to the small-message threshold,
    the data. Its results match numpy and are bitwise those of the first (negotiated) call."""
    size, rank = rt.size(), rt.rank()
    engine = runtime.current("test").engine
    before = engine.direct_calls
    sizes = lengths(size)
    for n in sizes:
        name = f"steady.{np.dtype(dtype).name}.{op.name}.{in_place}.{n}"
        inputs = [rank_input(dtype, (n,), q, seed=3) for q in range(size)]
        expected = reference_reduce(op, inputs, dtype, prescale=2.0 if op != rt.Product else 1.0, postscale=0.5)
        results = []
        for step in range(3):
            mine = inputs[rank].copy()
            kwargs = dict(op=op, name=name, postscale_factor=0.5,
                          prescale_factor=2.0 if op != rt.Product else 1.0) if dtype != np.bool_ else dict(op=op, name=name)
            result = rt.allreduce_(mine, **kwargs) if in_place else rt.allreduce(mine, **kwargs)
            if not in_place:
                np.testing.assert_array_equal(mine, inputs[rank], err_msg="input was modified")
            results.append(np.array(result, copy=True))
        want = reference_reduce(op, inputs, dtype) if dtype == np.bool_ else expected
        assert_matches(results[-1], want, dtype, size, f"n={n}")
        for later in results[1:]:  # the steady path's bits are the negotiated path's bits
            assert later.tobytes() == results[0].tobytes(), f"n={n}: a repeated call differs from the first"
    # (a repeated call whose round met another rank's idle round goes the general way instead)
    assert engine.direct_calls - before >= 1, "no repeated call took the steady path"



@pytest.mark.parametrize("shape", [(3, 5), (4, 3, 7), (0, 3), (2, 0, 5), ()])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16], ids=["float32", "int64", "float16"])
def test_allreduce_keeps_shape(shape, dtype):
    inputs = [rank_input(dtype, shape, q) for q in range(rt.size())]
    result = rt.allreduce(inputs[rt.rank()], op=rt.Sum)
    assert_matches(result, reference_reduce(rt.Sum, inputs, dtype), dtype, rt.size())


@pytest.mark.parametrize("op", [rt.Sum, rt.Average, rt.Max], ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, rt.bfloat16, np.int32],
                         ids=["float32", "float64", "bfloat16", "int32"])
@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
def test_prescale_and_postscale(op, dtype, in_place):
    size = rt.size()
    for n in (0, size + 1, 50_001):
        inputs = [rank_input(dtype, (n,), q, seed=7) for q in range(size)]
        expected = reference_reduce(op, inputs, dtype, prescale=3.0, postscale=0.5)
        mine = inputs[rt.rank()].copy()
        result = (rt.allreduce_ if in_place else rt.allreduce)(mine, op=op, prescale_factor=3.0, postscale_factor=0.5)
        assert_matches(np.asarray(result), expected, dtype, size, f"n={n}")


@pytest.mark.parametrize("dtype", [np.float16, rt.bfloat16, np.float32, np.float64], ids=DTYPE_IDS[:4])
def test_every_rank_gets_bitwise_identical_floats(dtype):
    """The ring reduces each element once and copies it; recursive doubling reduces the same
    pairs in both orders, so a op b must equal b op a bit for bit, signed zeros included."""
    rng = np.random.default_rng(rt.rank())
    x = rng.standard_normal(123_457).astype(dtype)
    x[::7] = np.where(rng.random(x[::7].shape) < 0.5, -0.0, 0.0).astype(dtype)  # +0/-0 ties for Min/Max
    for settings in MODES.values():
        with tuned(**settings):
            for op in (rt.Sum, rt.Min, rt.Max, rt.Product):
                result = rt.allreduce(x, op=op)
                everyone = rt.allgather(result.view(np.uint8)[None, :])
                assert (everyone == everyone[0]).all(), f"{op.name}: ranks disagree bitwise"


def test_accepts_buffer_protocol_array_interface_and_dlpack():
    size = rt.size()
    base = np.arange(10, dtype=np.float64) + rt.rank()
    expected = sum(np.arange(10, dtype=np.float64) + q for q in range(size))

    class ArrayInterfaceOnly:
        def __init__(self, a):
            self.__array_interface__ = a.__array_interface__

    class DLPackOnly:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kwargs):
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    for wrap in (memoryview, ArrayInterfaceOnly, DLPackOnly):
        buf = base.copy()
        out = rt.allreduce(wrap(buf), op=rt.Sum)
        np.testing.assert_array_equal(out, expected)
        rt.allreduce_(wrap(buf), op=rt.Sum)  # in place, through the same memory: no copy
        np.testing.assert_array_equal(buf, expected)
    raw = bytearray(np.arange(5, dtype=np.uint8).tobytes())
    rt.allreduce_(raw, op=rt.Max)
    assert list(raw) == [0, 1, 2, 3, 4]


def test_releases_the_gil_while_communicating():
    """A Python thread keeps running while the main thread is inside a large allreduce."""
    import threading

    ticks = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    thread = threading.Thread(target=count)
    data = np.ones(16 << 20, dtype=np.float32)  # 64 MB: long enough on any rank count
    thread.start()
    try:
        rt.barrier()
        before = ticks[0]
        rt.allreduce(data, op=rt.Sum)
        during = ticks[0] - before
    finally:
        stop.set()
        thread.join()
    assert during > 0, "the counting thread never ran during the allreduce: the GIL was held"


@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_adasum_matches_reference_or_refuses_non_power_of_two(dtype, in_place):
    size, rank = rt.size(), rt.rank()
    inputs = [rank_input(dtype, (37,), q) for q in range(size)]
    mine = inputs[rank].copy()
    call = rt.allreduce_ if in_place else rt.allreduce
    if size & (size - 1):
        with pytest.raises(ValueError, match="power-of-two"):
            call(mine, op=rt.Adasum, name="adasum.refused")
        np.testing.assert_array_equal(mine, inputs[rank])  # nothing was touched
        return
    result = call(mine, op=rt.Adasum, prescale_factor=0.5, postscale_factor=3.0)
    assert (result is mine) == in_place
    # independent reference: pairwise (1 - a.b/2|a|^2) a + (1 - a.b/2|b|^2) b, in recursive-halving order
    level = [0.5 * x.astype(np.float64) for x in inputs]
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2]):
            dot = a @ b
            nxt.append((1 - dot / (2 * (a @ a))) * a + (1 - dot / (2 * (b @ b))) * b)
        level = nxt
    np.testing.assert_allclose(result, (3.0 * level[0]).astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-12)
    # grouped and async: one handle over both tensors' allgathers
    handle = rt.grouped_allreduce_async([inputs[rank], inputs[rank][:5].copy()], op=rt.Adasum, name="adasum.group")
    grouped = rt.synchronize(handle)
    assert rt.poll(handle) and len(grouped) == 2
    np.testing.assert_allclose(grouped[0], rt.allreduce(inputs[rank], op=rt.Adasum), rtol=0)
    with pytest.raises(ValueError, match="Adasum"):
        rt.reducescatter(np.ones(4, dtype), op=rt.Adasum)
    with pytest.raises(TypeError, match="floating-point"):
        rt.allreduce(np.ones(4, np.int32), op=rt.Adasum)


@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
@pytest.mark.parametrize("dtype,op", DTYPE_OPS)
def test_a_persistent_allreduce_matches_numpy_at_every_start(dtype, op, in_place):
    """allreduce_init checks once; each start() reduces the arrays' contents at that moment."""
    size, rank = rt.size(), rt.rank()
    for n in lengths(size):
        mine = np.empty(n, dtype=dtype)
        output = None if in_place else np.empty(n, dtype=dtype)
        persistent = rt.allreduce_init(mine, output, op=op, name=f"persistent.{np.dtype(dtype).name}.{op.name}.{n}")
        for step in range(3):
            inputs = [rank_input(dtype, (n,), q, seed=10 + step) for q in range(size)]
            mine[...] = inputs[rank]
            result = rt.synchronize(persistent.start())
            assert result is (mine if in_place else output)
            if not in_place:
                np.testing.assert_array_equal(mine, inputs[rank], err_msg="input was modified")
            assert_matches(result, reference_reduce(op, inputs, dtype), dtype, size, f"start {step} n={n}")


@pytest.mark.parametrize("dtype,op", DTYPE_OPS)
def test_persistent_allreduces_started_together_match_numpy_as_one_fusion_group(dtype, op):
    """Started together (once negotiated: in the C lane), same-dtype tensors are reduced as one
    fusion group; over 8 KB on one host, shared memory reads and writes them where they are."""
    size, rank = rt.size(), rt.rank()
    shapes = [(n,) for n in lengths(size)] + [(9001,)]
    mine = [np.empty(shape, dtype=dtype) for shape in shapes]
    outputs = [np.empty(shape, dtype=dtype) if i % 2 else None for i, shape in enumerate(shapes)]  # both kinds
    made = [rt.allreduce_init(m, o, op=op, name=f"fused.{np.dtype(dtype).name}.{op.name}.{i}")
            for i, (m, o) in enumerate(zip(mine, outputs))]
    for step in range(3):
        inputs = [[rank_input(dtype, shape, q, seed=20 + step + i) for q in range(size)] for i, shape in enumerate(shapes)]
        for m, each in zip(mine, inputs):
            m[...] = each[rank]
        handles = [p.start() for p in made]
        for i, (h, each) in enumerate(zip(handles, inputs)):
            result = rt.synchronize(h)
            assert result is (mine[i] if outputs[i] is None else outputs[i])
            assert_matches(result, reference_reduce(op, each, dtype), dtype, size, f"step {step} tensor {i}")


def test_persistent_allreduces_started_together_are_scaled_and_fused():
    size, rank = rt.size(), rt.rank()
    # 16 KB together: on one host, shared memory reduces them in place of a packed copy
    buffers = [np.full(n, rank + 1.0, dtype=np.float32) for n in (1, 7, 1000, 3, 3000)]
    made = [rt.allreduce_init(b, op=rt.Sum, prescale_factor=0.5, postscale_factor=4.0) for b in buffers]
    assert len({p.name for p in made}) == len(made)  # unnamed ones get names of their own
    for step in range(4):
        for b in buffers:
            b[...] = rank + 1.0
        handles = [p.start() for p in made]
        for b, h in zip(buffers, handles):
            assert rt.synchronize(h) is b
            np.testing.assert_allclose(b, 0.5 * 4.0 * size * (size + 1) / 2)


def test_a_persistent_allreduce_refuses_bad_input_when_made_and_a_second_start_in_flight():
    x = np.arange(6, dtype=np.float32)
    with pytest.raises(ValueError, match=r"output must have the tensor's shape and dtype: tensor \(6,\) float32, "
                                         r"output \(5,\) float32"):
        rt.allreduce_init(x, np.empty(5, np.float32))
    with pytest.raises(ValueError, match="overlaps tensor"):
        rt.allreduce_init(x, x[::-1][::-1].view())
    readonly = np.ones(3, np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rt.allreduce_init(readonly)
    with pytest.raises(ValueError, match="Adasum"):
        rt.allreduce_init(x, op=rt.Adasum)
    with pytest.raises(TypeError, match="name"):
        rt.allreduce_init(x, name=3)
    assert x.tolist() == list(range(6))  # nothing was touched
    persistent = rt.allreduce_init(x, op=rt.Sum, name="persistent.twice")
    with runtime.current("test").engine._round_lock:  # no round: the first start cannot complete yet
        first = persistent.start()
        with pytest.raises(ValueError, match="'persistent.twice' was started again before its last start completed"):
            persistent.start()
    assert rt.synchronize(first).tolist() == [q * rt.size() for q in range(6)]
    assert rt.synchronize(persistent.start()) is x  # startable again once done


@pytest.mark.parametrize("in_place", [False, True], ids=["out-of-place", "in-place"])
@pytest.mark.parametrize("dtype,op", DTYPE_OPS)
def test_repeated_named_async_allreduces_match_numpy_at_every_step(dtype, op, in_place):
    """A named allreduce_async(_) seen before queues in the C lane with a new Handle (the call
    itself is csrc/persistent_lane.c's lane_allreduce_async). Started together they are reduced
    as fusion groups; the results match numpy at every step, with scale factors, and an
    out-of-place call's output is a new array each time."""
    size, rank = rt.size(), rt.rank()
    shapes = [(n,) for n in lengths(size)] + [(9001,), (3, 5)]
    scales = dict(prescale=2.0 if op != rt.Product else 1.0, postscale=0.5) if dtype != np.bool_ else {}
    factors = {f"{key}_factor": value for key, value in scales.items()}
    call = rt.allreduce_async_ if in_place else rt.allreduce_async
    names = [f"async.lane.{np.dtype(dtype).name}.{op.name}.{in_place}.{i}" for i in range(len(shapes))]
    mine = [np.empty(shape, dtype=dtype) for shape in shapes]
    last = [None] * len(shapes)
    for step in range(4):
        inputs = [[rank_input(dtype, shape, q, seed=40 + step + i) for q in range(size)]
                  for i, shape in enumerate(shapes)]
        for m, each in zip(mine, inputs):
            m[...] = each[rank]
        handles = [call(m, op=op, name=name, **factors) for m, name in zip(mine, names)]
        assert len({id(h) for h in handles}) == len(handles)
        for i, (h, each) in enumerate(zip(handles, inputs)):
            result = rt.synchronize(h)
            if in_place:
                assert result is mine[i]
            else:
                assert result is not mine[i] and result is not last[i]
                np.testing.assert_array_equal(mine[i], each[rank], err_msg="input was modified")
                last[i] = result
            assert_matches(result, reference_reduce(op, each, dtype, **scales), dtype, size, f"step {step} tensor {i}")
    calls = runtime.current("test").engine.lane_calls
    assert all(calls[name].bit >= 0 for name, m in zip(names, mine) if m.size), "no call was taught its bit"
