"""The launch package's pure logic, without MPI: host lists, command lines, what the Spark driver
says when an attempt failed."""

import pytest

from ringtrain.launch.job import Hosts, JobService
from ringtrain.launch.mpiexec import mpiexec_command
from ringtrain.spark.driver import _what_failed


def test_hosts_from_a_list_and_a_hostfile(tmp_path):
    hosts = Hosts.parse("h1:2, h2", launcher_command="/bin/enter", network_interface="eth0")
    assert hosts.entries == (("h1", 2), ("h2", 1)) and hosts.slots == 3 and hosts.spec() == "h1:2,h2:1"
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# comment\nh1 slots=4\n\nh2:2  # two\n")
    assert Hosts.parse(hostfile=str(hostfile)).entries == (("h1", 4), ("h2", 2))
    assert Hosts.parse() is None
    with pytest.raises(ValueError, match="bad host entry 'h1:x'"):
        Hosts.parse("h1:x")
    with pytest.raises(ValueError, match="bad host entry 'h1:0'"):
        Hosts.parse("h1:0")
    with pytest.raises(ValueError, match="needs hosts"):
        Hosts.parse(network_interface="eth0")
    with pytest.raises(ValueError, match="-np 4 needs 4 slots, but the hosts offer 3: h1:2,h2:1"):
        hosts.check_slots(4)


def test_one_mpiexec_command_line_for_every_mode():
    hosts = Hosts.parse("h1:2,h2:2", launcher_command="/bin/enter", network_interface="eth0")
    argv = mpiexec_command(4, ["python", "x.py"], hosts=hosts)
    assert argv[1:8] == ["-hosts", "h1:2,h2:2", "-launcher", "ssh", "-launcher-exec", "/bin/enter", "-iface"]
    assert argv[-6:] == ["-n", "4", "-prepend-pattern", "\x1e%r\x1f", "python", "x.py"]
    manual = mpiexec_command(4, ["python"], manual_hosts="a:2,b:2", wdir="/tmp/job")
    assert manual[1:7] == ["-launcher", "manual", "-hosts", "a:2,b:2", "-wdir", "/tmp/job"]
    assert mpiexec_command(2, ["python"])[1:3] == ["-n", "2"]


def test_the_first_rank_to_fail_by_itself_is_named():
    service = JobService()
    try:
        service._handle({"type": "exit", "rank": 2, "status": -9, "time": 1.0, "host": "h2"}, b"", lambda *a: None)
        service._handle({"type": "exit", "rank": 3, "status": 1, "time": 2.0, "host": "h2"}, b"", lambda *a: None)
        service._handle({"type": "exit", "rank": 0, "status": 0, "time": 0.5, "host": "h1"}, b"", lambda *a: None)
        assert service.a_rank_failed() and service.first_failure() == (3, 1)
    finally:
        service.close()


def test_the_spark_driver_says_what_failed():
    never = {"exit": {"status": 255, "ranks_reported": 0, "ranks": 4, "failed_rank": None, "failed_status": None,
                      "mpiexec_said": ["[mpiexec@h1] launch failed"]},
             "proxies": [{"said": ["[proxy:1@h2] unable to change wdir to /x (No such file or directory)"]}]}
    text = _what_failed(never)
    assert "the MPI job never started its ranks" in text and "unable to change wdir" in text
    killed = {"exit": {"status": 137, "ranks_reported": 4, "ranks": 4, "failed_rank": 3, "failed_status": -9,
                       "mpiexec_said": []}, "proxies": []}
    assert _what_failed(killed) == " (rank 3 was killed by signal 9 without reporting an exception)"
    assert _what_failed({"exit": None, "proxies": []}) == ""


def test_horovodrun_spellings_of_the_settings_reach_the_ranks():
    from ringtrain.launch.cli import build_parser, rank_environment

    def settings(*flags):
        args = build_parser().parse_args(["run", "-np", "2", *flags, "python", "train.py"])
        return {k: v for k, v in rank_environment(args, base={}).items() if k.startswith("RINGTRAIN_")}

    assert settings("--stall-check-warning-time-seconds", "7", "--cache-capacity", "12") == {
        "RINGTRAIN_STALL_CHECK_TIME": "7.0", "RINGTRAIN_CACHE_CAPACITY": "12"}
    assert settings("--no-stall-check", "--disable-cache") == {
        "RINGTRAIN_STALL_CHECK_TIME": "0", "RINGTRAIN_CACHE_CAPACITY": "0"}
