"""ringtrain on Spark: run a training function as an MPI job inside a barrier stage.

    import ringtrain.spark
    results = ringtrain.spark.run(train, args=(...), num_proc=4)          # rank-ordered results
    ringtrain.spark.run(train, num_proc=4, df=dataframe)                  # each rank reads its rows:
        for batch in ringtrain.spark.partition(): ...                     # (inside train)

See ringtrain/spark/task.py for how MPI starts inside the tasks, and ringtrain/launch/channel.py for the one
authenticated channel back to the driver."""
import os

from .driver import run


def partition():
    """Inside a function started by run(..., df=...): this rank's rows, as batches (dicts of
    column name -> numpy array), streamed from its Spark task. Ranks may see different numbers
    of rows; use ringtrain.join() when a rank runs out (see README)."""
    from .. import runtime
    from .dataframe_feed import fifo_path, read_partition

    job_dir = os.environ.get("RINGTRAIN_JOB_DIR")
    if not job_dir:
        raise RuntimeError("ringtrain.spark.partition() works only inside ringtrain.spark.run(..., df=...)")
    return read_partition(fifo_path(job_dir, runtime.current("spark.partition").rank))


__all__ = ["run", "partition"]
