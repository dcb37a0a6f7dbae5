/* What the binding's files share: the exceptions, the checks on arrays and arguments, and a
 * negotiation round with its allreduce (the engine's steady path and the persistent lane). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL RINGTRAIN_ARRAY_API
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <stdlib.h>
#include <string.h>
#include "binding.h"

PyObject *MPIError, *NoProgressError;

int raise_mpi_error(const char *collective, int err) {
    char text[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (err == RT_ERR_NO_PROGRESS) {  /* the engine builds the full story from stall_report() */
        char message[200];  /* PyErr_Format has no %f */
        snprintf(message, sizeof message, "%s made no progress for %.1f s", collective, rt_stall_report()->quiet);
        PyErr_SetString(NoProgressError, message);
        return -1;
    }
    if (err == MPI_ERR_NO_MEM) snprintf(text, sizeof text, "out of memory");
    else if (MPI_Error_string(err, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error code %d", err);
    PyErr_Format(MPIError, "%s failed in MPI: %s", collective, text);
    return -1;
}

/* A C-contiguous numpy array, writable if asked: anything else is a bug in the Python layer. */
int get_array(PyObject *obj, const char *what, int writable, char **data, size_t *nbytes) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy array", what);
        return -1;
    }
    PyArrayObject *arr = (PyArrayObject *)obj;
    if (!PyArray_IS_C_CONTIGUOUS(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous", what);
        return -1;
    }
    if (writable && !PyArray_ISWRITEABLE(arr)) {
        PyErr_Format(PyExc_ValueError, "%s must be writable", what);
        return -1;
    }
    *data = PyArray_BYTES(arr);
    *nbytes = (size_t)PyArray_NBYTES(arr);
    return 0;
}

int check_dtype(int dtype) {
    if (dtype < 0 || dtype >= RT_NUM_DTYPES) { PyErr_Format(PyExc_ValueError, "bad dtype code %d", dtype); return -1; }
    return 0;
}

int check_op(int op) {
    if (op < 0 || op >= RT_NUM_OPS) { PyErr_Format(PyExc_ValueError, "bad op code %d", op); return -1; }
    return 0;
}

int comm_size(MPI_Comm comm) { int size = 0; MPI_Comm_size(comm, &size); return size; }

/* The algorithm settings every allreduce call passes (ringtrain/engine.py Tuning.allreduce_args). */
rt_tuning tuning_of(Py_ssize_t small, Py_ssize_t segment, Py_ssize_t shm, Py_ssize_t hierarchical) {
    return (rt_tuning){(size_t)(small > 0 ? small : 0), (size_t)(segment > 0 ? segment : 1), (size_t)(shm > 0 ? shm : 0),
                       (size_t)(hierarchical > 0 ? hierarchical : 0)};
}

size_t round_data_bound(Py_ssize_t small_bytes) {
    return small_bytes < 0 ? 0 : (size_t)small_bytes < RT_ROUND_DATA_MAX ? (size_t)small_bytes : RT_ROUND_DATA_MAX;
}

/* A negotiation round's bit vector and, if every rank proposed exactly these bits, the one
 * allreduce they stand for (py_round_allreduce, and the persistent lane's rounds). Called with
 * the GIL released. Up to `bound` bytes the data travels with the bit vector (round_exchange.c:
 * one exchange); above, or when some rank carried no data but all agreed, the allreduce follows.
 * When this rank's proposal is not what every rank proposed, words holds the AND and the outputs
 * are untouched. *in_data: an error came from the allreduce, not the round. -1: out of memory.
 * ctrl MPI_COMM_NULL: a set of one rank, no round. */
int round_and_allreduce(MPI_Comm ctrl, uint64_t *words, size_t nwords, MPI_Comm comm, char **srcs, char **dsts,
                        size_t *bytes, size_t n, size_t total, char *fused, int dtype, int op, double prescale,
                        double postscale, size_t bound, const rt_tuning *tuning, int *agreed, int *in_data) {
    uint64_t proposal_small[8], *proposal = nwords <= 8 ? proposal_small : malloc(nwords * 8);
    if (!proposal) return -1;
    memcpy(proposal, words, nwords * 8);
    rt_algorithm used;
    int err, carried = 0;
    const size_t count = total / rt_dtype_size(dtype);
    void *reduced = NULL;
    *agreed = *in_data = 0;
    if (ctrl == MPI_COMM_NULL) {  /* one rank agrees with itself */
        err = 0;
        *agreed = 1;
    } else {
        rt_round_lock();
        err = rt_round_exchange(words, nwords, srcs, bytes, n, (rt_dtype)dtype, (rt_op)op, prescale, bound, ctrl,
                                &carried, &reduced);
        *agreed = !err && (carried || memcmp(proposal, words, nwords * 8) == 0);
        if (carried) {
            rt_finish_reduction(reduced, count, (rt_dtype)dtype, (rt_op)op, postscale, comm_size(comm));
            rt_unpack(reduced, dsts, bytes, n);
        }
        rt_round_unlock();
    }
    if (*agreed && !carried) {  /* what the executor does with one fusion group: one tensor directly, several packed */
        *in_data = 1;
        rt_lock();
        if (n == 1)
            err = rt_allreduce(srcs[0], dsts[0], count, (rt_dtype)dtype, (rt_op)op, prescale, postscale, tuning, comm,
                               &used);
        else
            err = rt_allreduce_fused(srcs, dsts, bytes, n, fused, (rt_dtype)dtype, (rt_op)op, prescale, postscale,
                                     tuning, comm, &used);
        rt_unlock();
    }
    if (proposal != proposal_small) free(proposal);
    return err;
}
