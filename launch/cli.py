"""The command line, in the manner of horovodrun:

    ringtrain run -np 4 [-H host1:2,host2:2 | --hostfile FILE] [tuning flags] python train.py
    ringtrain check            (also: ringtrain run --check-build)
    ringtrain plan -np 2 --sizes 2359296,512,... --compute-ms 120 --batch-size 32 [--validate]
    python -m ringtrain ...    (the same)

Tuning flags become RINGTRAIN_* environment variables of every rank. Output lines carry their
rank; the exit status is non-zero if any rank failed, and the failed rank's last lines are shown."""
import argparse
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import time

from ringtrain.config import LOG_LEVELS
from ringtrain.errors import RingtrainError

from .job import Hosts, run_job, with_restarts
from .mpiexec import MPIExecNotFound, find_mpiexec


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _non_negative(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="ringtrain", description="Launch and inspect ringtrain jobs.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command on N ranks under mpiexec",
                         description="Run COMMAND on -np ranks; tuning flags reach every rank as RINGTRAIN_* variables.")
    run.add_argument("-np", "--num-proc", dest="np", type=_positive_int, help="number of ranks")
    hosts = run.add_mutually_exclusive_group()
    hosts.add_argument("-H", "--hosts", help="host1:slots,host2:slots,...")
    hosts.add_argument("--hostfile", help="file with one 'host' or 'host:slots' per line")
    run.add_argument("--launcher-command", metavar="COMMAND",
                     help="how to start processes on the other hosts, called like ssh (COMMAND HOST COMMAND...); "
                          "default: ssh")
    run.add_argument("--network-interface", metavar="IFACE",
                     help="the network interface the hosts reach each other on (e.g. eth0)")
    run.add_argument("-p", "--ssh-port", type=_positive_int, help="ssh port on the hosts (given to the launcher as -p)")
    run.add_argument("--start-timeout", type=_non_negative, default=None,
                     help="seconds for every rank to start, else the job is stopped "
                          "(default: HOROVOD_START_TIMEOUT or 30; 0 waits for ever)")
    run.add_argument("--output-filename", metavar="DIR",
                     help="also write each rank's output to DIR/rank.N/stdout and DIR/rank.N/stderr")
    run.add_argument("--verbose", action="store_true",
                     help="say the mpiexec command line, and log at INFO on every rank (unless --log-level)")
    run.add_argument("--log-level", type=str.upper, choices=sorted(LOG_LEVELS),
                     help="the ringtrain logger's level on every rank")
    run.add_argument("--fusion-threshold-mb", type=_non_negative, help="Tensor Fusion buffer size in MB (0 disables)")
    run.add_argument("--cycle-time-ms", type=_non_negative, help="pause between negotiation rounds")
    run.add_argument("--timeline-filename", help="write a Chrome trace (rank 0)")
    run.add_argument("--timeline-mark-cycles", action="store_true", help="mark each negotiation round in the timeline")
    run.add_argument("--autotune", action="store_true", help="tune fusion and cycle time online")
    run.add_argument("--autotune-log-file", help="CSV of the autotune trials")
    run.add_argument("--stall-check-time-seconds", "--stall-check-warning-time-seconds", dest="stall_check_time_seconds",
                     type=_non_negative, help="warn about stalled tensors after this")
    run.add_argument("--stall-check-shutdown-time-seconds", type=_non_negative, help="fail stalled tensors after this")
    run.add_argument("--stall-check-disable", "--no-stall-check", dest="stall_check_disable", action="store_true",
                     help="no stall warnings")
    cache = run.add_mutually_exclusive_group()
    cache.add_argument("--cache-capacity", type=_non_negative_int, help="response cache entries (default 4096)")
    cache.add_argument("--disable-cache", action="store_true", help="no response cache: every round negotiates")
    run.add_argument("--progress-timeout-seconds", type=_non_negative,
                     help="give up on a wait after this long without progress if a rank has stopped (default 30)")
    elastic = run.add_argument_group("elastic recovery (restart from the last commit, see ringtrain.elastic)")
    elastic.add_argument("--max-restarts", "--reset-limit", dest="max_restarts", type=_non_negative_int, default=0,
                         help="start a failed job again up to this many times (torchrun's and horovodrun's names)")
    elastic.add_argument("--elastic-dir", help="directory every host reaches, for the persisted commits "
                                               "(sets RINGTRAIN_ELASTIC_DIR)")
    elastic.add_argument("--host-discovery-script", help="prints the usable hosts, one 'host:slots' per line; "
                                                         "run before every start, so a restart uses the hosts there are")
    elastic.add_argument("--min-np", type=_positive_int, help="fewest ranks to start with (default: -np)")
    elastic.add_argument("--max-np", type=_positive_int, help="most ranks to start with (default: -np)")
    elastic.add_argument("--elastic-timeout", type=_non_negative, default=600.0,
                         help="seconds to wait for --min-np slots from the discovery script (default 600)")
    run.add_argument("--mpi-args", default="", help="extra mpiexec arguments, as one string")
    run.add_argument("--check-build", action="store_true", help="print what this installation has, then exit")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command every rank runs")
    sub.add_parser("check", help="print the MPI library, the extension's algorithms, and optional components")
    add_plan_parser(sub)
    return parser


def _positive_float(text):
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _parameter_sizes(text):
    """'2359296,512,3x4096' -> [2359296, 512, 4096, 4096, 4096] (NxS repeats a size N times)."""
    sizes = []
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        count, _, size = item.rpartition("x")
        try:
            size, count = int(size), int(count or 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: expected a number of elements, or NxSIZE") from None
        if size < 1 or count < 1:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: sizes and counts must be positive")
        sizes += [size] * count
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return sizes


def add_plan_parser(sub):
    plan = sub.add_parser(
        "plan", help="measure the network on N ranks and predict data-parallel step time and scaling",
        description="Start a job of -np ranks, time short collectives, fit the ring model's latency, "
                    "bandwidth and reduction cost, then predict the step time, scaling efficiency and best "
                    "settings for a model with these parameter sizes.")
    plan.add_argument("-np", "--num-proc", dest="np", type=_positive_int, default=2,
                      help="ranks of the measurement job (at least 2; default 2)")
    plan.add_argument("--sizes", type=_parameter_sizes, required=True,
                      help="the parameters' sizes in elements, in the order their gradients are ready: "
                           "comma separated, NxSIZE for N equal tensors")
    plan.add_argument("--compute-ms", type=_positive_float, required=True,
                      help="one training step on one process (forward, backward, update), in ms")
    plan.add_argument("--batch-size", type=_positive_int, required=True, help="samples per step and rank")
    plan.add_argument("--bytes-per-element", type=_positive_int, default=4, help="4 for float32 gradients")
    plan.add_argument("--max-workers", type=_positive_int, default=64, help="largest number of workers considered")
    plan.add_argument("--min-efficiency", type=float, default=0.75,
                      help="a worker count is worthwhile while its scaling efficiency is at least this")
    plan.add_argument("--validate", action="store_true",
                      help="also time a real training step with these gradients (and --compute-ms of waiting) "
                           "on the job, next to its prediction")
    plan.add_argument("--verbose", action="store_true", help="print every timed collective next to the fit")
    plan.add_argument("--plot", metavar="FILE.png",
                      help="draw the fit's predictions against the measurements (and the validated step) to a PNG "
                           "(needs matplotlib: the [plot] extra)")
    return plan


def plan_command(args, parser):
    """ringtrain plan: one measurement job under mpiexec, then the table (and the validation, if
    asked). On Spark, call rt.plan(..., backend="spark") from the driver instead."""
    from ringtrain.launch.run_function import run
    from ringtrain.planner.advise import plan
    from ringtrain.planner.measure import measure_network
    from ringtrain.planner.plot import plot_predicted_vs_measured
    from ringtrain.planner.validate import validate

    if not 0 < args.min_efficiency < 1:
        parser.error(f"--min-efficiency must be between 0 and 1, got {args.min_efficiency}")
    if args.np < 2:
        parser.error("plan needs -np 2 or more: measuring the network takes two ranks")
    if args.validate and args.bytes_per_element != 4:
        parser.error("--validate trains float32 parameters: use --bytes-per-element 4")
    if args.plot and importlib.util.find_spec("matplotlib") is None:  # before the job, not after it
        parser.error('--plot needs matplotlib: pip install "ringtrain[plot]"')
    compute = args.compute_ms / 1e3
    if args.validate:
        validation = run(validate, args=(args.sizes, compute), np=args.np)
        network = validation.network
    else:
        network = run(measure_network, np=args.np)
    result = plan(args.sizes, compute, args.batch_size, np=args.np, network=network,
                  min_efficiency=args.min_efficiency, max_workers=args.max_workers,
                  bytes_per_element=args.bytes_per_element)
    print(result.table())
    if args.verbose:
        print("\n| timed | bytes | measured us | fitted us |\n|---|---|---|---|")
        for what, nbytes, measured, fitted in network.samples:
            print(f"| {what} | {nbytes} | {measured * 1e6:.1f} | {fitted * 1e6:.1f} |")
    if args.validate:
        print(validation.describe())
    if args.plot:
        print(f"plot: {plot_predicted_vs_measured(network, args.plot, validation if args.validate else None)}")
    return 0


def rank_environment(args, base=None):
    """The RINGTRAIN_* settings for every rank, from the tuning flags."""
    env = dict(os.environ if base is None else base)
    settings = {
        "RINGTRAIN_FUSION_THRESHOLD": None if args.fusion_threshold_mb is None
        else str(int(args.fusion_threshold_mb * 1024 * 1024)),
        "RINGTRAIN_CYCLE_TIME": None if args.cycle_time_ms is None else str(args.cycle_time_ms),
        "RINGTRAIN_TIMELINE": args.timeline_filename,
        "RINGTRAIN_TIMELINE_MARK_CYCLES": "1" if args.timeline_mark_cycles else None,
        "RINGTRAIN_LOG_LEVEL": args.log_level or ("INFO" if args.verbose else None),
        "RINGTRAIN_AUTOTUNE": "1" if args.autotune else None,
        "RINGTRAIN_AUTOTUNE_LOG": args.autotune_log_file,
        "RINGTRAIN_STALL_CHECK_TIME": "0" if args.stall_check_disable else (
            None if args.stall_check_time_seconds is None else str(args.stall_check_time_seconds)),
        "RINGTRAIN_STALL_SHUTDOWN_TIME": None if args.stall_check_shutdown_time_seconds is None
        else str(args.stall_check_shutdown_time_seconds),
        "RINGTRAIN_PROGRESS_TIMEOUT": None if args.progress_timeout_seconds is None
        else str(args.progress_timeout_seconds),
        "RINGTRAIN_ELASTIC_DIR": args.elastic_dir,
        "RINGTRAIN_CACHE_CAPACITY": "0" if args.disable_cache else (
            None if args.cache_capacity is None else str(args.cache_capacity)),
    }
    env.update({k: v for k, v in settings.items() if v is not None})
    env.setdefault("PYTHONUNBUFFERED", "1")  # rank output appears as it is written
    # `python` on the command line means this installation's Python, as in an activated venv
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def placement(args, parser):
    """The job's Hosts from -H / --hostfile and how to reach them (None: this host only), after
    checking there are slots for -np ranks."""
    from .channel import ChannelError

    try:
        hosts = Hosts.parse(args.hosts, args.hostfile, args.launcher_command, args.network_interface, args.ssh_port)
        if hosts is not None:
            hosts.check_slots(args.np)
            hosts.service_address()  # a --network-interface this host lacks, before anything starts
    except (OSError, ValueError, ChannelError) as exc:
        parser.error(str(exc))
    return hosts


def check():
    """What this installation has: MPI, the extension, and the optional components."""
    from ringtrain.runtime import load_core

    lines = []
    try:
        lines.append(f"mpiexec:          {find_mpiexec()}")
    except MPIExecNotFound as exc:
        lines.append(f"mpiexec:          MISSING ({exc})")
    core = load_core()
    lines.append(f"MPI library:      {core.MPI_LIBRARY_VERSION.splitlines()[0].strip()}")
    lines.append(f"ringtrain core:   {core.__file__}")
    lines.append(f"  allreduce algorithms: {', '.join(a for a in core.ALGORITHMS if a != 'none')} "
                 "(+ ring allgatherv, tree broadcast, pairwise alltoallv)")
    for module, label in (("numba", "numba"), ("pyspark", "pyspark"), ("torch", "torch (optional)")):
        spec = importlib.util.find_spec(module)
        if spec is None:
            lines.append(f"{label + ':':18}not installed")
            continue
        module_obj = __import__(module)
        lines.append(f"{label + ':':18}{getattr(module_obj, '__version__', 'installed')}")
    java = shutil.which("java")
    if java:
        version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr.splitlines()
        lines.append(f"java (for Spark): {version[0] if version else java}")
    else:
        lines.append("java (for Spark): MISSING: install Java 17 (e.g. apt-get install openjdk-17-jre-headless)")
    print("\n".join(lines))
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check" or getattr(args, "check_build", False):
        return check()
    if args.command == "plan":
        try:
            return plan_command(args, parser)
        except KeyboardInterrupt:
            print("ringtrain plan: interrupted; every rank was killed", file=sys.stderr)
            return 130
        except (MPIExecNotFound, RingtrainError) as exc:
            print(f"ringtrain plan: {exc}", file=sys.stderr)
            return 1
    if args.np is None:
        parser.error("run needs -np N")
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("run needs a command, e.g. ringtrain run -np 2 python train.py")
    if args.host_discovery_script and (args.hosts or args.hostfile):
        parser.error("--host-discovery-script finds the hosts itself: give it instead of -H/--hostfile")
    hosts = None if args.host_discovery_script else placement(args, parser)
    env = rank_environment(args)
    start_timeout = args.start_timeout
    if start_timeout is None:
        try:
            start_timeout = _non_negative(os.environ.get("HOROVOD_START_TIMEOUT", "30"))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"HOROVOD_START_TIMEOUT: {exc}")

    if args.host_discovery_script:
        env["RINGTRAIN_ELASTIC_DISCOVERY"] = "1"  # elastic commits ask the launcher for new hosts

    def attempt(restart):
        while True:  # a move to other hosts is not a failure: it does not count as a restart
            if not args.host_discovery_script:
                np, where, watch = args.np, hosts, None
            else:
                np, where = discovered_placement(args)
                watch = functools.partial(watch_hosts, args, np, where)
            result = run_job(np, command, env=dict(env, RINGTRAIN_RESTART=str(restart)), hosts=where,
                             mpi_args=args.mpi_args.split(), watch=watch, start_timeout=start_timeout,
                             output_dir=args.output_filename, verbose=args.verbose)
            if not result.resized:
                return result, (result.failure_report() if result.returncode != 0 else None)
            print("ringtrain run: the ranks stopped at a commit to move to the hosts discovery offers now; "
                  "starting the job there", file=sys.stderr, flush=True)

    try:
        result = with_restarts(attempt, args.max_restarts, "ringtrain run")
    except KeyboardInterrupt as exc:
        print(str(exc) or "ringtrain: interrupted; every rank was killed", file=sys.stderr)
        return 130
    except (MPIExecNotFound, OSError, ValueError) as exc:
        print(f"ringtrain: {exc}", file=sys.stderr)
        return 2
    if result.returncode != 0:
        print(f"ringtrain run: {result.failure_report()}", file=sys.stderr)
        status = result.failed_status if result.failed_status and result.failed_status > 0 else result.returncode
        return status if 0 < status < 256 else 1
    return 0


def watch_hosts(args, np, hosts, service, ended, interval=1.0):
    """While a job runs: ask the discovery script every `interval` seconds; when it offers more
    slots than the job uses (up to --max-np), flag the job service, so that the ranks' next
    elastic commit moves them (a host that goes away ends the job by itself: its ranks die)."""
    max_np = args.max_np or args.np
    while not ended.wait(interval):
        try:
            found = subprocess.run([args.host_discovery_script], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        entries = [line.strip() for line in found.stdout.splitlines() if line.strip()]
        try:
            offered = Hosts.parse(",".join(entries), None, args.launcher_command, args.network_interface)
        except ValueError:
            continue
        if found.returncode == 0 and offered is not None and min(max_np, offered.slots) > np:
            print(f"ringtrain run: the discovery script offers {offered.spec()}; the ranks move there at their "
                  "next commit", file=sys.stderr, flush=True)
            service.hosts_changed = True
            return


def discovered_placement(args):
    """(np, Hosts) from --host-discovery-script, waiting up to --elastic-timeout for --min-np
    slots: a job restarted after a host went away runs on the hosts that are left, and one
    started after a host came back uses it again (up to --max-np)."""
    min_np, max_np = args.min_np or args.np, args.max_np or args.np
    deadline = time.monotonic() + args.elastic_timeout
    while True:
        found = subprocess.run([args.host_discovery_script], capture_output=True, text=True, timeout=60)
        if found.returncode != 0:
            raise OSError(f"--host-discovery-script {args.host_discovery_script} failed with status "
                          f"{found.returncode}: {found.stderr.strip()[-500:]}")
        entries = [line.strip() for line in found.stdout.splitlines() if line.strip()]
        hosts = Hosts.parse(",".join(entries), None, args.launcher_command, args.network_interface,
                            args.ssh_port) if entries else None
        slots = hosts.slots if hosts else 0
        if slots >= min_np:
            np = min(max_np, slots)
            print(f"ringtrain run: {np} ranks on {hosts.spec()} (from {args.host_discovery_script})",
                  file=sys.stderr, flush=True)
            return np, hosts
        if time.monotonic() > deadline:
            raise OSError(f"--host-discovery-script offered {slots} slots ({', '.join(entries) or 'no hosts'}), "
                          f"fewer than --min-np {min_np}, for --elastic-timeout {args.elastic_timeout:g} s")
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main())
