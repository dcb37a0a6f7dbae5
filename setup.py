"""Build ringtrain's C extension (csrc/) against the MPI library that mpi4py uses.

By default that is the `mpich` wheel from PyPI (a build requirement, so nothing needs to be on
the machine but a C compiler). To build against a system MPI (Open MPI or MPICH) instead, set
RINGTRAIN_MPICC to its compiler wrapper, e.g. RINGTRAIN_MPICC=/usr/bin/mpicc, and point mpi4py
at the same library at run time (MPI4PY_LIBMPI, see README).
"""
import glob
import importlib.metadata
import os
import shlex
import subprocess
import sys

import numpy
from setuptools import Extension, setup


class MPINotFound(SystemExit):
    pass


def flags_from_wrapper(mpicc):
    """Compile and link flags from an MPI compiler wrapper (MPICH: -show, Open MPI: --showme)."""
    for option in ("-show", "--showme"):
        try:
            out = subprocess.run([mpicc, option], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        words = shlex.split(out)[1:]  # drop the underlying compiler's name
        include = [w[2:] for w in words if w.startswith("-I")]
        libdirs = [w[2:] for w in words if w.startswith("-L")]
        libs = [w[2:] for w in words if w.startswith("-l")]
        if libs:
            return include, libdirs, libs
    raise MPINotFound(
        f"ringtrain: RINGTRAIN_MPICC={mpicc!r} did not answer to -show or --showme with MPI link flags. "
        "Point it at the mpicc of an MPICH or Open MPI installation."
    )


def flags_from_mpich_wheel():
    """mpi.h and libmpi from the `mpich` wheel installed in this (build) environment."""
    looked = []
    try:
        dist = importlib.metadata.distribution("mpich")
        headers = [f for f in dist.files or () if f.name == "mpi.h"]
        libs = [f for f in dist.files or () if f.name.startswith("libmpi.so")]
        if headers and libs:
            include = os.path.dirname(os.path.realpath(dist.locate_file(headers[0])))
            libdir = os.path.dirname(os.path.realpath(dist.locate_file(libs[0])))
            return [include], [libdir], ["mpi"]
        looked.append(f"the files of the mpich {dist.version} wheel")
    except importlib.metadata.PackageNotFoundError:
        looked.append("an installed `mpich` wheel (not installed)")
    for prefix in {sys.prefix, sys.base_prefix}:
        header = os.path.join(prefix, "include", "mpi.h")
        looked.append(header)
        if os.path.exists(header) and glob.glob(os.path.join(prefix, "lib", "libmpi.so*")):
            return [os.path.dirname(header)], [os.path.join(prefix, "lib")], ["mpi"]
    raise MPINotFound(
        "ringtrain: cannot build the C extension: no MPI found. Looked for mpi.h and libmpi in "
        + "; ".join(looked)
        + ". Install the `mpich` wheel (pip install mpich), or set RINGTRAIN_MPICC to the mpicc "
        "of a system MPI (Open MPI or MPICH)."
    )


def mpi_flags():
    mpicc = os.environ.get("RINGTRAIN_MPICC")
    return flags_from_wrapper(mpicc) if mpicc else flags_from_mpich_wheel()


include_dirs, library_dirs, libraries = mpi_flags()
print(f"ringtrain: building against MPI headers in {include_dirs}, libraries {libraries} in {library_dirs}")

core = Extension(
    "ringtrain._core",
    sources=sorted(glob.glob("csrc/*.c")),
    depends=glob.glob("csrc/*.h"),
    include_dirs=["csrc", numpy.get_include(), *include_dirs],
    library_dirs=library_dirs,
    libraries=libraries,
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wno-unused-function", "-fno-strict-aliasing"],
)

setup(ext_modules=[core])
