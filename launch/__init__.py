"""ringtrain.launch: starting ringtrain jobs (installed as the subpackage ringtrain.launch).

mpiexec.py finds the mpiexec that matches mpi4py's MPI and runs commands under it with a
deadline, killing every process it started when the deadline passes."""
from .mpiexec import MPIRun, find_mpiexec, run_mpiexec

__all__ = ["MPIRun", "find_mpiexec", "run_mpiexec"]
