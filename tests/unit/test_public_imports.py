"""The layers moved modules into engine/, train/ and planner/; what users import stays where the
README and the examples say it is."""
import importlib

import ringtrain as rt


def test_the_module_paths_users_import_from_still_work():
    from ringtrain.optim import SGD, Adam
    from ringtrain.sparse import CostModel, set_cost_model

    assert rt.optim.SGD is SGD and rt.optim.Adam is Adam
    assert importlib.import_module("ringtrain.elastic").State is rt.elastic.State
    assert importlib.import_module("ringtrain.sparse").set_cost_model is set_cost_model
    assert callable(CostModel)


def test_rt_plan_is_the_advisor_and_the_planner_is_a_package_of_its_own():
    from ringtrain.planner.advise import plan

    assert rt.plan is plan
    for module in ("costs", "measure", "advise", "validate", "plot"):
        importlib.import_module(f"ringtrain.planner.{module}")


def test_every_name_the_api_table_lists_is_exported():
    for name in ("init", "shutdown", "allreduce", "allreduce_", "allreduce_async", "grouped_allreduce", "allgather",
                 "broadcast", "alltoall", "reducescatter", "synchronize", "poll", "join", "barrier",
                 "add_process_set", "ProcessSet", "Handle", "Sum", "Average", "Adasum", "DistributedOptimizer",
                 "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object", "allgather_object",
                 "shard", "save_checkpoint", "load_checkpoint", "metric_average", "SparseGradient",
                 "sparse_allreduce", "ModelAveraging", "ColumnParallelLinear", "Compression", "run", "distributed",
                 "RingtrainError", "ProgressTimeoutError", "bfloat16"):
        assert hasattr(rt, name), name
