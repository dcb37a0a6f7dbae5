"""Behaviour of one plain Python process (size 1): init/shutdown, calls before init,
configuration errors, and the reduction kernels against numpy."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ringtrain as rt
from ringtrain.config import Config
from ringtrain.errors import ConfigurationError


def run_python(code, env=None, timeout=120):
    import os

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def test_calls_before_init_name_the_function():
    result = run_python("""
        import numpy as np, ringtrain as rt
        for name, call in [("allreduce", lambda: rt.allreduce(np.ones(2))), ("rank", rt.rank),
                           ("broadcast", lambda: rt.broadcast(np.ones(2), 0)), ("local_size", rt.local_size),
                           ("barrier", rt.barrier), ("allgather_object", lambda: rt.allgather_object(1))]:
            try:
                call()
            except ValueError as exc:
                assert str(exc) == f"ringtrain.{name}() was called before ringtrain.init()", exc
            else:
                raise SystemExit(f"{name} did not raise")
        assert not rt.is_initialized()
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_plain_process_is_a_job_of_one_and_can_restart():
    result = run_python("""
        import numpy as np, ringtrain as rt
        rt.init()
        assert (rt.rank(), rt.size(), rt.local_rank(), rt.local_size(), rt.cross_rank(), rt.cross_size()) == (0, 1, 0, 1, 0, 1)
        assert rt.allreduce(np.arange(3.0)).tolist() == [0.0, 1.0, 2.0]
        rt.shutdown(); assert not rt.is_initialized()
        rt.init(); rt.init()  # a second init() while initialised is a no-op
        assert rt.allgather(np.ones((2, 2))).shape == (2, 2)
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_a_persistent_allreduce_made_before_a_restart_says_to_make_it_again():
    result = run_python("""
        import numpy as np, ringtrain as rt
        rt.init()
        x = np.ones(3, np.float32)
        persistent = rt.allreduce_init(x, name="kept")
        rt.synchronize(persistent.start())
        rt.shutdown(); rt.init()
        try:
            persistent.start()
        except rt.RingtrainError as exc:
            assert "persistent allreduce 'kept' was made before ringtrain was shut down or re-initialized" in str(exc)
        else:
            raise SystemExit("a stale persistent allreduce started")
        assert rt.synchronize(rt.allreduce_init(x, name="kept").start()).tolist() == [1.0] * 3
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_importing_does_not_start_mpi():
    result = run_python("import sys, ringtrain; print('mpi4py.MPI' in sys.modules)")
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("variable,value", [("RINGTRAIN_SEGMENT_BYTES", "abc"), ("RINGTRAIN_SMALL_ALLREDUCE_THRESHOLD", "-5"),
                                             ("RINGTRAIN_SEGMENT_BYTES", "12"), ("RINGTRAIN_CYCLE_TIME", "abc"),
                                             ("RINGTRAIN_FUSION_THRESHOLD", "1.5M"), ("RINGTRAIN_AUTOTUNE", "maybe"),
                                             ("RINGTRAIN_STALL_CHECK_TIME", "-1")])
def test_invalid_environment_settings_fail_at_init(variable, value):
    result = run_python("import ringtrain as rt; rt.init()", env={variable: value})
    assert result.returncode != 0
    assert "ConfigurationError" in result.stderr, result.stderr
    assert f"{variable}={value!r}" in result.stderr, result.stderr


def test_config_parsing():
    assert Config.from_sources({}, environ={}) == Config()
    cfg = Config.from_sources({"segment_bytes": "64K"}, environ={"RINGTRAIN_SEGMENT_BYTES": "1M",
                                                                  "RINGTRAIN_SMALL_ALLREDUCE_THRESHOLD": "1024"})
    assert cfg.segment_bytes == 65536 and cfg.small_allreduce_threshold == 1024
    with pytest.raises(ConfigurationError, match=r"RINGTRAIN_SEGMENT_BYTES='abc' is not a valid segment bytes"):
        Config.from_sources({}, environ={"RINGTRAIN_SEGMENT_BYTES": "abc"})
    with pytest.raises(ConfigurationError, match=r"unknown init\(\) setting\(s\) \['fusion'\]"):
        Config.from_sources({"fusion": 1}, environ={})


def test_horovod_variables_are_honoured_with_a_notice_and_ringtrain_ones_win():
    cfg = Config.from_sources({}, environ={
        "HOROVOD_FUSION_THRESHOLD": "1048576", "HOROVOD_CYCLE_TIME": "5", "HOROVOD_STALL_CHECK_TIME_SECONDS": "9",
        "HOROVOD_STALL_CHECK_DISABLE": "1", "HOROVOD_CACHE_CAPACITY": "20", "RINGTRAIN_CACHE_CAPACITY": "10",
        "HOROVOD_HIERARCHICAL_ALLREDUCE": "0", "HOROVOD_HIERARCHICAL_ALLGATHER": "1", "HOROVOD_RANK": "0"})
    assert (cfg.fusion_threshold, cfg.cycle_time, cfg.stall_check_time, cfg.cache_capacity) == (1 << 20, 5.0, 0.0, 10)
    assert "HOROVOD_FUSION_THRESHOLD=1048576 is honoured as RINGTRAIN_FUSION_THRESHOLD=1048576" in cfg.notices
    assert "HOROVOD_STALL_CHECK_DISABLE=1 is honoured as RINGTRAIN_STALL_CHECK_TIME=0.0" in cfg.notices
    assert "HOROVOD_CACHE_CAPACITY is ignored: RINGTRAIN_CACHE_CAPACITY sets cache_capacity" in cfg.notices
    assert "HOROVOD_HIERARCHICAL_ALLREDUCE=0 is honoured as RINGTRAIN_HIERARCHICAL_ALLREDUCE=False" in cfg.notices
    assert cfg.hierarchical_allreduce is False
    assert "HOROVOD_HIERARCHICAL_ALLGATHER has no equivalent in ringtrain and is ignored" in cfg.notices
    assert not any("HOROVOD_RANK" in n for n in cfg.notices)  # set by Horovod's launcher, not a setting
    with pytest.raises(ConfigurationError, match=r"HOROVOD_CYCLE_TIME='fast' is not a valid cycle time"):
        Config.from_sources({}, environ={"HOROVOD_CYCLE_TIME": "fast"})


def test_horovod_notices_are_printed_at_init_and_a_disabled_cache_still_negotiates():
    result = run_python("import numpy as np, ringtrain as rt; rt.init(); "
                        "print([rt.allreduce(np.ones(2), op=rt.Sum, name='x').tolist() for _ in range(3)]); "
                        "print(rt.runtime.current('t').engine.sets[0].cache.bits_of)",
                        env={"HOROVOD_CACHE_CAPACITY": "0", "HOROVOD_HIERARCHICAL_ALLGATHER": "1"})
    assert result.returncode == 0, result.stderr
    assert "ringtrain: HOROVOD_CACHE_CAPACITY=0 is honoured as RINGTRAIN_CACHE_CAPACITY=0" in result.stderr
    assert "ringtrain: HOROVOD_HIERARCHICAL_ALLGATHER has no equivalent in ringtrain and is ignored" in result.stderr
    assert result.stdout.splitlines() == ["[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]", "{}"]  # nothing was cached


KERNEL_OPS = {rt.Sum: np.add, rt.Min: np.minimum, rt.Max: np.maximum, rt.Product: np.multiply}


@pytest.mark.parametrize("op", list(KERNEL_OPS), ids=lambda o: o.name)
@pytest.mark.parametrize("dtype", [np.float16, rt.bfloat16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                   np.int64, np.uint8, np.bool_], ids=lambda d: np.dtype(d).name)
def test_reduction_kernel_matches_numpy(dtype, op):
    from ringtrain.dtypes import CODES

    _core = rt.runtime.load_core()

    rng = np.random.default_rng(0)
    n = 10_001
    if np.dtype(dtype) == np.bool_:
        a, b = rng.random(n) < 0.5, rng.random(n) < 0.5
        expected = (a | b) if op in (rt.Sum, rt.Max) else (a & b)
    elif np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, n, endpoint=True).astype(dtype)
        b = rng.integers(info.min, info.max, n, endpoint=True).astype(dtype)
        with np.errstate(over="ignore"):
            expected = KERNEL_OPS[op](a, b)  # wraps around, as the kernel does
    else:
        a = (rng.standard_normal(n) * 100).astype(dtype)
        b = (rng.standard_normal(n) * 100).astype(dtype)
        # 16-bit floats: one float32 operation, rounded once to the storage type
        wide = np.float32 if np.dtype(dtype).itemsize == 2 else dtype
        with np.errstate(over="ignore"):
            expected = KERNEL_OPS[op](a.astype(wide), b.astype(wide)).astype(dtype)
    out = a.copy()
    _core.reduce(out, b, CODES[np.dtype(dtype)], int(op))
    np.testing.assert_array_equal(out, expected)


def test_half_precision_special_values():
    """Rounding to nearest even, subnormals, overflow to inf and NaN, as numpy/ml_dtypes convert."""
    from ringtrain.dtypes import CODES

    _core = rt.runtime.load_core()

    for dtype in (np.float16, rt.bfloat16):
        values = np.array([0.0, -0.0, 1e-8, 6e-8, -6.1e-5, 65504.0, 65520.0, 1e38, np.inf, -np.inf, np.nan,
                           1.0009765625, 3.0e-39], dtype=np.float32)
        with np.errstate(over="ignore"):
            a = values.astype(dtype)
        b = np.full_like(a, -0.0)  # the additive identity for every value, -0.0 included
        out = a.copy()
        _core.reduce(out, b, CODES[np.dtype(dtype)], int(rt.Sum))
        np.testing.assert_array_equal(out.view(np.uint16)[~np.isnan(values)], a.view(np.uint16)[~np.isnan(values)])
        assert np.isnan(out.astype(np.float32)[np.isnan(values)]).all()
        # an exact tie between two float16 values rounds to the even one
        big = np.array([2048.0], dtype=dtype)
        one = np.array([1.0], dtype=dtype)
        _core.reduce(big, one, CODES[np.dtype(dtype)], int(rt.Sum))
        assert big.astype(np.float32)[0] == np.float32(np.array([2049.0], np.float32).astype(dtype)[0])


def test_adasum_arithmetic():
    """Parallel gradients average, orthogonal ones add; four ranks combine (0+1)+(2+3)."""
    from ringtrain.engine import adasum
    np.testing.assert_allclose(adasum.combine(np.array([[2.0, 0.0], [2.0, 0.0]])), [2.0, 0.0])
    np.testing.assert_allclose(adasum.combine(np.array([[1.0, 0.0], [0.0, 3.0]])), [1.0, 3.0])
    rows = np.random.default_rng(0).standard_normal((4, 5))
    np.testing.assert_allclose(adasum.combine(rows),
                               adasum.pair(adasum.pair(rows[0], rows[1]), adasum.pair(rows[2], rows[3])))
    np.testing.assert_allclose(adasum.combine(np.zeros((2, 3))), np.zeros(3))
    with pytest.raises(ValueError, match="power-of-two number of ranks.*has 3"):
        adasum.check(3, [np.float32])
    with pytest.raises(TypeError, match=r"tensors\[1\] has dtype int32"):
        adasum.check(2, [np.float16, np.int32])
    adasum.check(4, [np.float32, np.float16, rt.bfloat16])


@pytest.mark.parametrize("call", ["allreduce", "allreduce_async", "grouped_allreduce", "allgather", "broadcast"])
def test_a_result_is_freed_as_soon_as_the_caller_drops_it(call):
    """No reference cycle keeps an output alive until the cyclic garbage collector runs: a loop
    of large out-of-place calls must reuse freed memory, not fault in fresh pages every time."""
    import gc
    import weakref

    rt.init()
    x = np.ones(1000, np.float32)
    gc.disable()
    try:
        if call == "allreduce_async":
            result = rt.synchronize(rt.allreduce_async(x, name="freed.async"))
        elif call == "grouped_allreduce":
            result = rt.grouped_allreduce([x], name="freed.grouped")[0]
        elif call == "broadcast":
            result = rt.broadcast(x, root_rank=0, name="freed.broadcast")
        else:
            result = getattr(rt, call)(x, name=f"freed.{call}")
        alive = weakref.ref(result)
        del result
        assert alive() is None, [type(r).__name__ for r in gc.get_referrers(alive())]
    finally:
        gc.enable()


def test_synchronize_and_poll_take_only_handles():
    rt.init()
    for bad in (None, 3, "h"):
        with pytest.raises(TypeError, match=r"synchronize\(\) takes the Handle that a \*_async call returned"):
            rt.synchronize(bad)
        with pytest.raises(TypeError, match=r"poll\(\) takes the Handle"):
            rt.poll(bad)
