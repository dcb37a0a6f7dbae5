"""What runs inside each Spark barrier task: start the MPI job with no ssh and no mpirun on the
driver, feed it, and report.

Task 0 runs `mpiexec -launcher manual`: hydra prints one proxy command per host and waits. The
commands reach every task through BarrierTaskContext.allGather (Spark's own channel); on each
host, the task with the lowest index runs that host's proxy, which starts the host's ranks.
Ranks on a host belong to that host's tasks in index order, so task i's DataFrame partition
goes to a rank on its own machine, through a named pipe. Rank output arrives at task 0's
mpiexec, which relays it line by line to the driver over the authenticated channel.

Why this route and not Open_port/Accept/Connect: it starts every rank in one MPI_COMM_WORLD at
once (no one-by-one joins, which deadlocked with 3 tasks in earlier trials), and it is
MPICH's own launch protocol, so everything after start-up is plain MPI."""
import json
import os
import pickle
import shlex
import subprocess
import sys
import threading
import time

import cloudpickle

from .channel import Sender
from .feed import fifo_path, write_partition


def layout(task_hosts):
    """(hosts in order, tasks of each host, rank of each task)."""
    hosts, tasks_of = [], {}
    for task, host in enumerate(task_hosts):
        if host not in tasks_of:
            hosts.append(host)
            tasks_of[host] = []
        tasks_of[host].append(task)
    rank_of, next_rank = {}, 0
    for host in hosts:
        for task in tasks_of[host]:
            rank_of[task] = next_rank
            next_rank += 1
    return hosts, tasks_of, rank_of


def _kill_group(process):
    from ringtrain.launch.mpiexec import kill_process_group

    if process is not None:
        kill_process_group(process.pid)  # its own session: the proxy or mpiexec, and all it started
        process.wait()


def barrier_task(job, secret, payload):
    """The function Spark ships to every barrier task (it carries the secret in its closure)."""

    def run(rows):
        from pyspark import BarrierTaskContext

        from ringtrain.launch.job import a_rank_failed, end_after_a_failure
        from ringtrain.launch.mpiexec import die_with_parent, find_mpiexec
        from ringtrain.launch.rank_output import PREPEND_PATTERN, RankLines

        ctx = BarrierTaskContext.get()
        index = ctx.partitionId()
        task_hosts = [info.address.rsplit(":", 1)[0] for info in ctx.getTaskInfos()]
        hosts, tasks_of, rank_of = layout(task_hosts)
        my_host = task_hosts[index]
        leader = tasks_of[my_host][0] == index
        sender = Sender(tuple(job["driver"]), secret)
        sender.send({"job": job["id"], "type": "started", "task": index})
        env = dict(os.environ, **job["env"], PYTHONUNBUFFERED="1")
        mpiexec = proxy = None
        job_dir = None
        finished = threading.Event()
        try:
            # One Spark barrier sync in all (each costs about a second): task 0 names this
            # attempt's job directory and starts mpiexec, then sends both with the proxy commands.
            message = {}
            if index == 0:
                job_dir = os.path.join("/tmp", f"ringtrain-spark-{job['id']}-{ctx.taskAttemptId()}")
                os.makedirs(job_dir, mode=0o700, exist_ok=True)
                spec = ",".join(f"{h}:{len(tasks_of[h])}" for h in hosts)
                mpiexec = subprocess.Popen(
                    [find_mpiexec(), "-launcher", "manual", "-hosts", spec, "-n", str(len(task_hosts)),
                     "-prepend-pattern", PREPEND_PATTERN, sys.executable, "-m", "ringtrain.launch.rank_exec", job_dir,
                     sys.executable, "-m", "ringtrain.launch.worker", job_dir],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                    env=dict(env, RINGTRAIN_JOB_DIR=job_dir), start_new_session=True, preexec_fn=die_with_parent)
                commands = []
                for line in iter(mpiexec.stdout.readline, b""):
                    text = line.decode().strip()
                    if text.startswith("HYDRA_LAUNCH:"):
                        commands.append(text.split(":", 1)[1].strip())
                    elif text == "HYDRA_LAUNCH_END":
                        break
                message = {"job_dir": job_dir, "commands": commands}
            message = json.loads(ctx.allGather(json.dumps(message))[0])
            job_dir, commands = message["job_dir"], message["commands"]
            attempt = os.path.basename(job_dir).rsplit("-", 1)[1]
            if leader:  # everything this host's ranks need, before they start
                os.makedirs(job_dir, mode=0o700, exist_ok=True)
                with open(os.path.join(job_dir, "function.pkl"), "wb") as f:
                    f.write(payload)
                if job["dataframe"]:
                    for task in tasks_of[my_host]:
                        os.mkfifo(fifo_path(job_dir, rank_of[task]), 0o600)
                proxy = subprocess.Popen(shlex.split(commands[hosts.index(my_host)]), env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
                # hydra's own kill-the-rest races (see launch/job.py): a rank of this host that
                # failed ends this host's ranks (and mpiexec, on task 0), this task fails, and
                # Spark ends the other tasks
                watchdog = threading.Thread(target=end_after_a_failure, daemon=True, args=(
                    lambda: a_rank_failed(job_dir), finished, lambda: [_kill_group(p) for p in (proxy, mpiexec)]))
                watchdog.start()
            feeder = None
            if job["dataframe"]:
                fifo = fifo_path(job_dir, rank_of[index])
                while not os.path.exists(fifo):  # the leader makes it
                    time.sleep(0.01)
                feeder = threading.Thread(target=write_partition, args=(rows, fifo, finished.is_set), daemon=True)
                feeder.start()
            if index == 0:
                _relay_output(mpiexec, sender, job["id"], RankLines)
                mpiexec.wait()
            done = os.path.join(job_dir, "done")
            if proxy is not None:
                proxy.wait()
                host_failed = proxy.returncode != 0 or a_rank_failed(job_dir)
                with open(done + ".tmp", "w") as f:
                    f.write("failed" if host_failed else "ok")
                os.replace(done + ".tmp", done)
            else:  # keep this task (and its partition's feeder) alive until this host's ranks are done
                while not os.path.exists(done):
                    time.sleep(0.02)
                with open(done) as f:
                    host_failed = f.read() != "ok"
            finished.set()
            if feeder is not None:
                feeder.join(timeout=5)
            # Every task of a failed job fails, not only the leaders: Spark then retries the whole
            # barrier stage. A task that succeeded would keep its map output, and the retry would
            # be a stage of the failed tasks only, which waits for ever in its barrier.
            failed = host_failed or (mpiexec is not None and mpiexec.returncode != 0)
            records = []
            if leader:
                for task in tasks_of[my_host]:
                    path = os.path.join(job_dir, f"result-{rank_of[task]}.pkl")
                    if os.path.exists(path):
                        with open(path, "rb") as f:  # written by this host's own ranks, in a 0700 dir
                            data = f.read()
                        record = pickle.loads(data)
                        if record[0] == "error":
                            _, type_name, message_text, text, _ = record
                            sender.send({"job": job["id"], "type": "failure", "rank": rank_of[task], "attempt": attempt,
                                         "type_name": type_name, "message": message_text, "traceback": text})
                        records.append((rank_of[task], data))
                # the other tasks of this host acknowledge "done" before the directory goes away
                acks = [os.path.join(job_dir, f"ack-{task}") for task in tasks_of[my_host] if task != index]
                deadline = time.monotonic() + 10
                while not all(os.path.exists(a) for a in acks) and time.monotonic() < deadline:
                    time.sleep(0.01)
            else:
                open(os.path.join(job_dir, f"ack-{index}"), "w").close()
            if failed:
                if index == 0:
                    sender.send({"job": job["id"], "type": "exit", "status": mpiexec.returncode, "attempt": attempt})
                raise RuntimeError(f"ringtrain: the MPI job failed (task {index}, mpiexec status "
                                   f"{mpiexec.returncode if mpiexec else None}, proxy status "
                                   f"{proxy.returncode if proxy else None})")
            return iter(records)
        finally:
            finished.set()
            _kill_group(mpiexec)
            _kill_group(proxy)
            sender.close()
            if leader and job_dir:
                import shutil

                shutil.rmtree(job_dir, ignore_errors=True)

    return run


def _relay_output(mpiexec, sender, job_id, RankLines):
    """Every rank's lines, as they come, to the driver."""

    def pump(stream, name):
        lines = RankLines()
        for chunk in iter(lambda: stream.read1(65536), b""):
            for rank, line in lines.feed(chunk):
                sender.send({"job": job_id, "type": "log", "rank": rank, "stream": name, "line": line})
        for rank, line in lines.flush():
            sender.send({"job": job_id, "type": "log", "rank": rank, "stream": name, "line": line})

    threads = [threading.Thread(target=pump, args=(mpiexec.stdout, "stdout"), daemon=True),
               threading.Thread(target=pump, args=(mpiexec.stderr, "stderr"), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


__all__ = ["barrier_task", "layout", "cloudpickle"]
