"""Elastic recovery: a job whose ranks die comes back by itself from its last commit, under
`ringtrain run --max-restarts`, rt.run(max_restarts=...) and a host discovery script (Spark's
stage retries: tests/test_spark_retry.py). Kills are real SIGKILLs of a rank mid-training."""
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

import ringtrain as rt
from ringtrain.launch import run_mpiexec

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "elastic", "train.py")
STEPS, COMMIT_EVERY = 30, 3


def ringtrain_run(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "ringtrain", "run", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"))


def final_params(output):
    found = re.findall(r"\[0\]: FINAL ([0-9a-f]+)", output)
    assert len(found) == 1, output[-4000:]
    return found[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = ringtrain_run("-np", "3", "--elastic-dir", str(tmp_path_factory.mktemp("plain")), "python", TRAIN,
                        str(STEPS), str(COMMIT_EVERY))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return final_params(run.stdout)


def test_three_random_kills_end_with_the_parameters_of_an_uninterrupted_run(uninterrupted, tmp_path):
    chooser = random.Random(int.from_bytes(os.urandom(4), "little"))
    steps = sorted(chooser.sample(range(1, STEPS), 3))
    kills = [(restart, step, chooser.randrange(3)) for restart, step in enumerate(steps)]
    schedule = ",".join(f"{r}:{s}:{k}" for r, s, k in kills)
    run = ringtrain_run("-np", "3", "--max-restarts", "3", "--elastic-dir", str(tmp_path), "python", TRAIN,
                        str(STEPS), str(COMMIT_EVERY), schedule)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"kills {schedule}:\n{output[-4000:]}"
    assert output.count("restarting it from the last commit") == 3, output[-4000:]
    assert final_params(run.stdout) == uninterrupted, f"kills {schedule}"
    for restart, step, _ in kills:  # a kill comes before its step's commit: back to the one before
        resumed = re.search(rf"\[0\]: RESUMED {restart + 1} at step (\d+) ([\d.]+)", run.stdout)
        assert resumed and int(resumed.group(1)) == (step - 1) // COMMIT_EVERY * COMMIT_EVERY + 1, output[-4000:]
        killed = float(re.search(rf"KILL {restart} at step {step} ([\d.]+)", run.stdout).group(1))
        print(f"kill at step {step} -> first step after restart {float(resumed.group(2)) - killed:.2f} s later")


def test_a_host_that_goes_away_leaves_training_to_finish_on_fewer_ranks(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:3\n")
    discover = tmp_path / "discover"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(0o755)
    env = dict(os.environ, ELASTIC_HOSTS_AFTER_KILL=f"{hosts}=localhost:2")
    run = ringtrain_run("-np", "3", "--min-np", "2", "--max-restarts", "1", "--host-discovery-script", str(discover),
                        "--elastic-dir", str(tmp_path / "commits"), "python", TRAIN, str(STEPS), str(COMMIT_EVERY),
                        "0:8:2", env=env)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "ringtrain run: 3 ranks on localhost:3" in output and "ringtrain run: 2 ranks on localhost:2" in output
    assert re.search(r"\[0\]: RESUMED 1 at step 7 ", run.stdout), output[-4000:]  # from the commit at step 6
    assert "[0]: DONE on 2 ranks" in run.stdout
    final_params(run.stdout)


def train_and_die_once(elastic_dir):
    """Rank 1 is killed at step 11 of the first run."""
    sys.path.insert(0, os.path.join(HERE, "elastic"))
    os.environ["RINGTRAIN_ELASTIC_DIR"] = elastic_dir
    from train import train_steps

    return train_steps(STEPS, COMMIT_EVERY, kills={(0, 11, 1)})


def test_rt_run_restarts_a_function_from_its_last_commit(uninterrupted, tmp_path):
    params = rt.run(train_and_die_once, args=(str(tmp_path / "commits"),), np=3, max_restarts=1)
    assert params.tobytes().hex() == uninterrupted


def test_under_plain_mpiexec_running_the_job_again_resumes_from_its_last_commit(uninterrupted, tmp_path):
    # mpiexec cannot restart a job itself: its user (or a batch system's requeue) runs the same
    # command again, and @rt.elastic.run resumes from the directory's last commit
    env = dict(os.environ, RINGTRAIN_ELASTIC_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    first = run_mpiexec(3, [sys.executable, TRAIN, str(STEPS), str(COMMIT_EVERY), "0:11:1"], timeout=120, env=env)
    assert not first.ok and not first.timed_out, first.output[-4000:]
    assert "KILL 0 at step 11" in first.output and "FINAL" not in first.output, first.output[-4000:]
    again = run_mpiexec(3, [sys.executable, TRAIN, str(STEPS), str(COMMIT_EVERY)], timeout=120, env=env)
    assert again.ok, again.output[-4000:]
    assert "[0] STARTED at step 9" in again.output, again.output[-4000:]  # the commit before the kill
    assert final_params(again.output.replace("[0] FINAL", "[0]: FINAL")) == uninterrupted


def test_without_restarts_a_failure_still_ends_the_job(tmp_path):
    with pytest.raises(rt.RingtrainError, match="did not finish"):
        rt.run(train_and_die_once, args=(str(tmp_path / "commits"),), np=3)


def test_state_rejects_what_it_cannot_keep():
    with pytest.raises(ValueError, match="persist_every=0"):
        rt.elastic.State(persist_every=0)
    state = rt.elastic.State(params=np.zeros(2))
    with pytest.raises(AttributeError, match="has no value 'weights'"):
        state.weights


def torch_state_round_trip(elastic_dir):
    import torch

    import ringtrain.torch as hvd

    hvd.init()
    torch.manual_seed(hvd.rank())
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = hvd.elastic.TorchState(model, optimizer, directory=elastic_dir, epoch=0)

    @hvd.elastic.run
    def train(state):
        # after sync every rank has rank 0's weights
        weights = hvd.allgather_object(state.model.weight.detach().clone())
        assert all(torch.equal(w, weights[0]) for w in weights)
        loss = state.model(torch.ones(3, 4)).sum()
        loss.backward()
        state.optimizer.step()
        state.epoch = 1
        state.commit()
        committed = state.model.weight.detach().clone()
        noise = torch.rand(1)  # the RNG after the commit, which restore() brings back
        with torch.no_grad():
            state.model.weight.add_(1.0)
        state.epoch = 2
        state.restore()
        assert torch.equal(state.model.weight, committed) and state.epoch == 1
        assert torch.equal(torch.rand(1), noise)
        return state.optimizer.state_dict()["state"][0]["momentum_buffer"].sum().item()

    return train(state)


def test_torch_state_commits_and_restores_a_model_its_optimizer_and_the_rng(tmp_path):
    pytest.importorskip("torch", reason="the torch extra is not installed")
    values = rt.run(torch_state_round_trip, args=(str(tmp_path),), np=2, all_ranks=True)
    assert values[0] == values[1]
    assert (tmp_path / "LATEST").exists()


def test_a_host_that_comes_back_is_used_from_the_next_commit(tmp_path):
    # the discovery script offers 2 slots, then 3 (up to --max-np 3): the ranks stop together at
    # their next commit, and the job goes on from it on 3 ranks, without using up a restart
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:2\n")
    discover = tmp_path / "discover"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(0o755)
    env = dict(os.environ, ELASTIC_STEP_SECONDS="0.1", ELASTIC_HOSTS_AT_STEP=f"4={hosts}=localhost:3")
    run = ringtrain_run("-np", "2", "--max-np", "3", "--host-discovery-script", str(discover),
                        "--elastic-dir", str(tmp_path / "commits"), "python", TRAIN, str(STEPS), str(COMMIT_EVERY),
                        env=env)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "ringtrain run: 2 ranks on localhost:2" in output and "ringtrain run: 3 ranks on localhost:3" in output
    assert "the ranks move there at their next commit" in output
    started = [int(s) for s in re.findall(r"\[2\]: STARTED at step (\d+)", run.stdout)]
    assert len(started) == 1 and started[0] % COMMIT_EVERY == 0 and started[0] >= 6, output[-4000:]
    assert "[0]: DONE on 3 ranks" in run.stdout
    final_params(run.stdout)
