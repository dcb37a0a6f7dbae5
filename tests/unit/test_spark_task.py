"""Which Spark barrier task becomes which MPI rank (ringtrain.spark.task.layout), without Spark.

mpiexec is given the hosts as "h1:2,h2:1" in the order layout returns and fills them in that
order, so the ranks of a host must be one consecutive block, given to its tasks in index order:
task i then feeds its DataFrame partition to a rank on its own machine."""
from ringtrain.spark.task import layout


def local_ranks(tasks_of):
    return {task: local for tasks in tasks_of.values() for local, task in enumerate(tasks)}


def hydra_ranks(hosts, tasks_of):
    """The ranks mpiexec starts on each host for the spec "host:count,...", in order."""
    ranks, start = {}, 0
    for host in hosts:
        ranks[host] = list(range(start, start + len(tasks_of[host])))
        start += len(tasks_of[host])
    return ranks


def test_one_host_keeps_task_order():
    hosts, tasks_of, rank_of = layout(["h1", "h1", "h1"])
    assert hosts == ["h1"]
    assert tasks_of == {"h1": [0, 1, 2]}
    assert rank_of == {0: 0, 1: 1, 2: 2}
    assert local_ranks(tasks_of) == {0: 0, 1: 1, 2: 2}


def test_two_interleaved_hosts_get_one_block_of_ranks_each():
    hosts, tasks_of, rank_of = layout(["h1", "h2", "h1", "h2"])
    assert hosts == ["h1", "h2"]
    assert tasks_of == {"h1": [0, 2], "h2": [1, 3]}
    assert rank_of == {0: 0, 2: 1, 1: 2, 3: 3}
    assert local_ranks(tasks_of) == {0: 0, 2: 1, 1: 0, 3: 1}


def test_hosts_come_in_the_order_of_their_first_task():
    hosts, tasks_of, rank_of = layout(["h2", "h1", "h1"])
    assert hosts == ["h2", "h1"]
    assert rank_of == {0: 0, 1: 1, 2: 2}
    hosts, tasks_of, rank_of = layout(["b", "a", "b", "a", "c"])
    assert hosts == ["b", "a", "c"]
    assert rank_of == {0: 0, 2: 1, 1: 2, 3: 3, 4: 4}


def test_uneven_hosts():
    task_hosts = ["h1", "h2", "h2", "h3", "h2", "h1"]
    hosts, tasks_of, rank_of = layout(task_hosts)
    assert hosts == ["h1", "h2", "h3"]
    assert tasks_of == {"h1": [0, 5], "h2": [1, 2, 4], "h3": [3]}
    assert rank_of == {0: 0, 5: 1, 1: 2, 2: 3, 4: 4, 3: 5}
    assert local_ranks(tasks_of) == {0: 0, 5: 1, 1: 0, 2: 1, 4: 2, 3: 0}
    assert ",".join(f"{h}:{len(tasks_of[h])}" for h in hosts) == "h1:2,h2:3,h3:1"


def test_every_task_gets_a_rank_on_its_own_host():
    for task_hosts in (["a"], ["a", "b"], ["a", "b", "a", "b"], ["c", "a", "a", "b", "c", "a", "b"], ["x"] * 5):
        hosts, tasks_of, rank_of = layout(task_hosts)
        assert sorted(rank_of) == list(range(len(task_hosts)))
        assert sorted(rank_of.values()) == list(range(len(task_hosts)))
        on_host = hydra_ranks(hosts, tasks_of)
        for task, host in enumerate(task_hosts):
            assert rank_of[task] in on_host[host], (task_hosts, task)
        # the leader (the task that runs the host's proxy) is the host's lowest task
        assert {h: tasks_of[h][0] for h in hosts} == {h: task_hosts.index(h) for h in hosts}
