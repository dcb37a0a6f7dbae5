"""What runs inside each Spark barrier task: start the MPI job with no ssh and no mpirun on the
driver, feed it, and report.

Task 0 runs `mpiexec -launcher manual`: hydra prints one proxy command per host and waits. The
commands reach every task through BarrierTaskContext.allGather (Spark's own channel); on each
host, the task with the lowest index runs that host's proxy, which starts the host's ranks.
Ranks on a host belong to that host's tasks in index order, so task i's DataFrame partition
goes to a rank on its own machine, through a named pipe. Task 0 also runs the job service
(ringtrain.launch.job) that hands every rank the function and receives its exit record and
result, so nothing depends on a file system the hosts share; mpiexec's -wdir is this attempt's
job directory, which each host's leader makes. Rank output arrives at task 0's mpiexec, which
relays it line by line to the driver over the authenticated channel (ringtrain.launch.channel).

Why this route and not Open_port/Accept/Connect: it starts every rank in one MPI_COMM_WORLD at
once (no one-by-one joins, which deadlocked with 3 tasks in earlier trials), and it is
MPICH's own launch protocol, so everything after start-up is plain MPI."""
import glob
import json
import os
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

from ringtrain.launch.channel import Client

from .dataframe_feed import fifo_path, write_partition

JOB_DIR_PREFIX = "ringtrain-spark-"


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


def remove_abandoned_job_dirs(tmp="/tmp"):
    """Job directories of attempts whose leader task is gone (killed before its clean-up ran)."""
    for path in glob.glob(os.path.join(tmp, JOB_DIR_PREFIX + "*")):
        try:
            with open(os.path.join(path, "leader.pid")) as f:
                os.kill(int(f.read()), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (OSError, ValueError):
            pass  # not ours, or being made right now


def barrier_task(job, secret, payload):
    """The function Spark ships to every barrier task (it carries the secret in its closure)."""

    def run(rows):
        from pyspark import BarrierTaskContext

        from ringtrain.launch.job import HydraLeftovers, JobService, end_after_a_failure, pump_rank_lines, stop_mpiexec
        from ringtrain.launch.mpiexec import die_with_parent, mpiexec_command

        ctx = BarrierTaskContext.get()
        index = ctx.partitionId()
        task_hosts = [info.address.rsplit(":", 1)[0] for info in ctx.getTaskInfos()]
        hosts, tasks_of, rank_of = layout(task_hosts)
        my_host = task_hosts[index]
        leader = tasks_of[my_host][0] == index
        driver = Client(tuple(job["driver"]), secret)
        driver.send({"job": job["id"], "type": "started", "task": index})
        env = dict(os.environ, **job["env"], PYTHONUNBUFFERED="1")
        mpiexec = proxy = service = None
        job_dir = None
        hydra_files = HydraLeftovers()
        finished = threading.Event()
        try:
            # One Spark barrier sync in all (each costs about a second): task 0 names this
            # attempt's job directory, starts the job service and mpiexec, then sends both with
            # the proxy commands.
            message = {}
            if index == 0:
                job_dir = os.path.join("/tmp", f"{JOB_DIR_PREFIX}{job['id']}-{ctx.taskAttemptId()}")
                # the ranks fetch the function from here and report here, from every host
                service = JobService(payload, host=socket.gethostbyname(my_host))
                spec = ",".join(f"{h}:{len(tasks_of[h])}" for h in hosts)
                # -wdir: without it every host's proxy would enter this task's own directory,
                # which exists only on this host
                argv = mpiexec_command(len(task_hosts), [sys.executable, "-m", "ringtrain.launch.rank_exec",
                                                         sys.executable, "-m", "ringtrain.launch.worker"],
                                       manual_hosts=spec, wdir=job_dir)
                mpiexec = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
                                           env=dict(env, RINGTRAIN_JOB_DIR=job_dir, **service.environment()))
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
            proxy_lines = []
            if leader:  # everything this host's ranks need, before they start
                remove_abandoned_job_dirs()
                os.makedirs(job_dir, mode=0o700, exist_ok=True)
                with open(os.path.join(job_dir, "leader.pid"), "w") as f:
                    f.write(str(os.getpid()))
                if job["dataframe"]:
                    for task in tasks_of[my_host]:
                        os.mkfifo(fifo_path(job_dir, rank_of[task]), 0o600)
                if len(commands) != len(hosts):
                    raise RuntimeError(f"ringtrain: mpiexec gave {len(commands)} proxy commands for {len(hosts)} hosts")
                proxy = subprocess.Popen(shlex.split(commands[hosts.index(my_host)]), env=env, cwd=job_dir,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)
                # the proxy's own words (it could not start a rank, say) for the driver's report
                threading.Thread(target=_collect_proxy_output, args=(proxy, proxy_lines), daemon=True).start()
            if index == 0:
                # hydra's own kill-the-rest races (see launch/job.py): once a rank failed on any
                # host, the job ends; the other hosts' proxies end when mpiexec goes
                watchdog = threading.Thread(target=end_after_a_failure, daemon=True, args=(
                    service.a_rank_failed, finished, lambda: [stop_mpiexec(mpiexec), _kill_group(proxy)]))
                watchdog.start()
            feeder = None
            if job["dataframe"]:
                fifo = fifo_path(job_dir, rank_of[index])
                while not os.path.exists(fifo):  # the leader makes it
                    time.sleep(0.01)
                feeder = threading.Thread(target=write_partition, args=(rows, fifo, finished.is_set), daemon=True)
                feeder.start()
            hydra_lines = []
            if index == 0:
                hydra_lines = _relay_output(mpiexec, driver, job["id"], pump_rank_lines)
                mpiexec.wait()
            done = os.path.join(job_dir, "done")
            if proxy is not None:
                proxy.wait()
                host_failed = proxy.returncode != 0
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
            failed = host_failed or (mpiexec is not None and (mpiexec.returncode != 0 or service.a_rank_failed()))
            records = []
            if index == 0:  # every rank's record came to this task's job service
                for rank, data in sorted(service.results.items()):
                    record = pickle.loads(data)  # verified under this job's secret
                    if record[0] == "error":
                        _, type_name, message_text, text, _ = record
                        driver.send({"job": job["id"], "type": "failure", "rank": rank, "attempt": attempt,
                                     "type_name": type_name, "message": message_text, "traceback": text})
                    records.append((rank, data))
            if leader:  # the other tasks of this host acknowledge "done" before the directory goes away
                acks = [os.path.join(job_dir, f"ack-{task}") for task in tasks_of[my_host] if task != index]
                deadline = time.monotonic() + 10
                while not all(os.path.exists(a) for a in acks) and time.monotonic() < deadline:
                    time.sleep(0.01)
            else:
                open(os.path.join(job_dir, f"ack-{index}"), "w").close()
            if failed:
                if index == 0:
                    failed_rank, failed_status = service.first_failure()
                    driver.send({"job": job["id"], "type": "exit", "status": mpiexec.returncode, "attempt": attempt,
                                 "ranks_reported": len(service.exits), "ranks": len(task_hosts),
                                 "failed_rank": failed_rank, "failed_status": failed_status,
                                 "mpiexec_said": hydra_lines[-6:] + proxy_lines[-6:]})
                elif proxy is not None and proxy_lines:
                    driver.send({"job": job["id"], "type": "proxy", "host": my_host, "attempt": attempt,
                                 "status": proxy.returncode, "said": proxy_lines[-6:]})
                raise RuntimeError(f"ringtrain: the MPI job failed (task {index}, mpiexec status "
                                   f"{mpiexec.returncode if mpiexec else None}, proxy status "
                                   f"{proxy.returncode if proxy else None})")
            return iter(records)
        finally:
            finished.set()
            if mpiexec is not None:
                stop_mpiexec(mpiexec)
                mpiexec.wait()
            _kill_group(proxy)
            hydra_files.remove()
            if service is not None:
                service.close()
            driver.close()
            if leader and job_dir:
                shutil.rmtree(job_dir, ignore_errors=True)

    return run


def _collect_proxy_output(proxy, lines, keep=20):
    for raw in iter(proxy.stdout.readline, b""):
        lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        del lines[:-keep]


def _relay_output(mpiexec, driver, job_id, pump_rank_lines):
    """Every rank's lines, as they come, to the driver; returns mpiexec's own last lines."""
    hydra = []

    def pump(stream, name):
        def emit(rank, line):
            if rank == "mpiexec":
                hydra.append(line)
            driver.send({"job": job_id, "type": "log", "rank": rank, "stream": name, "line": line})
        pump_rank_lines(stream, emit)

    threads = [threading.Thread(target=pump, args=(mpiexec.stdout, "stdout"), daemon=True),
               threading.Thread(target=pump, args=(mpiexec.stderr, "stderr"), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return hydra


__all__ = ["barrier_task", "layout"]
