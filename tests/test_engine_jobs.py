"""Engine features that are configured per job (environment or init() keywords), so each test
starts its own MPI job: autotune and the fusion / cycle-time settings."""
import csv
import os
import sys
import tempfile
import textwrap

from ringtrain.launch import run_mpiexec


def run_script(ranks, code, env=None, timeout=240):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(textwrap.dedent(code))
    try:
        return run_mpiexec(ranks, [sys.executable, f.name], timeout=timeout,
                           env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    finally:
        os.unlink(f.name)


def test_autotune_logs_trials_and_settles():
    log = os.path.join(tempfile.gettempdir(), f"ringtrain-autotune-{os.getpid()}.csv")
    run = run_script(2, """
        import numpy as np, ringtrain as rt
        from ringtrain import runtime
        from ringtrain.engine.autotune import CANDIDATES, WARMUP_ROUNDS, MEASURED_ROUNDS
        rt.init()
        grads = [np.full(n, 1.0, dtype=np.float32) for n in (10, 1000, 30000, 250000)]
        bound = sum(len(v) for v in CANDIDATES.values()) * (WARMUP_ROUNDS + MEASURED_ROUNDS + 2) + 20
        engine = runtime.current("t").engine
        for step in range(bound):
            handles = [rt.allreduce_async(g, op=rt.Sum, name=f"g{i}") for i, g in enumerate(grads)]
            for g, h in zip(grads, handles):
                assert (rt.synchronize(h) == 2.0).all()
            settled = rt.allgather_object(engine.autotuner.settled if engine.autotuner else None)[0]
            if settled:
                break
        assert settled, f"autotune did not settle within {bound} steps"
        params = rt.allgather_object({f: getattr(engine.tuning, f) for f in CANDIDATES})
        assert params[0] == params[1], params   # every rank switched to the same settings
        if rt.rank() == 0:
            print("settled at step", step, "with", params[0], flush=True)
    """, env={"RINGTRAIN_AUTOTUNE": "1", "RINGTRAIN_AUTOTUNE_LOG": log})
    assert run.ok, run.output[-4000:]
    with open(log) as f:
        rows = list(csv.DictReader(f))
    os.unlink(log)
    from ringtrain.engine.autotune import CANDIDATES

    assert len(rows) == sum(len(v) for v in CANDIDATES.values())
    assert {r["setting"] for r in rows} == set(CANDIDATES)
    assert all(float(r["bytes_per_second"]) > 0 for r in rows)
    assert "settled at step" in run.output


def test_settings_reach_the_engine_from_environment_and_init():
    run = run_script(2, """
        import numpy as np, ringtrain as rt
        from ringtrain import runtime
        rt.init(cycle_time=2.5)
        tuning = runtime.current("t").engine.tuning
        assert tuning.fusion_threshold == 1 << 20, tuning.fusion_threshold   # RINGTRAIN_FUSION_THRESHOLD=1M
        assert tuning.cycle_time == 2.5                                       # init() wins over the environment
        hs = [rt.allreduce_async(np.ones(100), op=rt.Sum, name=f"t{i}") for i in range(20)]
        assert all((rt.synchronize(h) == 2).all() for h in hs)
        print("settings ok", flush=True)
    """, env={"RINGTRAIN_FUSION_THRESHOLD": "1M", "RINGTRAIN_CYCLE_TIME": "7"})
    assert run.ok and run.output.count("settings ok") == 2, run.output[-3000:]


def test_process_sets_registered_at_init_run_independently():
    run = run_script(3, """
        import numpy as np, ringtrain as rt
        first, rest = rt.ProcessSet([0]), rt.ProcessSet([1, 2])
        rt.init(process_sets=[first, rest])
        mine = first if rt.rank() == 0 else rest
        # the two sets do different numbers of collectives, with the same names, at the same time
        steps = 1 if mine is first else 25
        for step in range(steps):
            out = rt.allreduce(np.full(4, float(rt.rank())), op=rt.Sum, name="grad", process_set=mine)
            assert out.tolist() == [float(sum(mine.ranks))] * 4, out
        assert rt.allreduce(np.ones(1), op=rt.Sum, name="everyone").tolist() == [3.0]
        print("independent ok", mine.ranks, flush=True)
    """)
    assert run.ok and run.output.count("independent ok") == 3, run.output[-3000:]
