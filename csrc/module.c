/* ringtrain._core: the thin Python binding over the C collectives.
 *
 * Arguments arrive already validated by ringtrain/collectives.py (dtype codes, contiguity,
 * sizes); this layer only re-checks what would be memory-unsafe, takes the data pointers,
 * releases the GIL for the whole collective and turns an MPI error code into an exception.
 * Communicators are passed as Fortran handles (mpi4py's Comm.py2f()), which works for every
 * MPI ABI without compiling against mpi4py. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL RINGTRAIN_ARRAY_API  /* shared with binding.c, which imports no API of its own */
#include <numpy/arrayobject.h>
#include <stdlib.h>
#include <string.h>
#include "ringtrain.h"
#include "binding.h"

/* A per-rank table of sizes (an int64 numpy array of length `size`). */
static size_t *get_table(PyObject *obj, const char *what, int size, size_t scale) {
    char *data;
    size_t nbytes;
    if (get_array(obj, what, 0, &data, &nbytes) < 0) return NULL;
    if (PyArray_TYPE((PyArrayObject *)obj) != NPY_INT64 || nbytes != (size_t)size * sizeof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "%s must be an int64 array with one entry per rank", what);
        return NULL;
    }
    size_t *table = malloc((size_t)size * sizeof(size_t));
    if (!table) { PyErr_NoMemory(); return NULL; }
    for (int i = 0; i < size; i++) table[i] = (size_t)((int64_t *)data)[i] * scale;
    return table;
}

static PyObject *py_allreduce(PyObject *self, PyObject *args) {
    int comm_f, dtype, op;
    PyObject *src_obj, *dst_obj;
    double prescale, postscale;
    Py_ssize_t small_bytes, segment_bytes, shm_bytes, hierarchical_bytes;
    if (!PyArg_ParseTuple(args, "iOOiiddnnnn", &comm_f, &src_obj, &dst_obj, &dtype, &op, &prescale, &postscale,
                          &small_bytes, &segment_bytes, &shm_bytes, &hierarchical_bytes))
        return NULL;
    char *src, *dst;
    size_t src_bytes, dst_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(src_obj, "tensor", 0, &src, &src_bytes) ||
        get_array(dst_obj, "output", 1, &dst, &dst_bytes))
        return NULL;
    if (src_bytes != dst_bytes) return PyErr_Format(PyExc_ValueError, "output has %zu bytes, tensor %zu", dst_bytes, src_bytes);
    const size_t count = src_bytes / rt_dtype_size(dtype);
    rt_tuning tuning = tuning_of(small_bytes, segment_bytes, shm_bytes, hierarchical_bytes);
    rt_algorithm used;
    int err;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    Py_BEGIN_ALLOW_THREADS
    rt_lock();
    err = rt_allreduce(src, dst, count, (rt_dtype)dtype, (rt_op)op, prescale, postscale, &tuning, comm, &used);
    rt_unlock();
    Py_END_ALLOW_THREADS
    if (err && raise_mpi_error("allreduce", err)) return NULL;
    return PyLong_FromLong(used);
}

static PyObject *py_reduce_scatter(PyObject *self, PyObject *args) {
    int comm_f, dtype, op;
    PyObject *src_obj, *dst_obj, *counts_obj;
    double prescale, postscale;
    Py_ssize_t segment_bytes;
    if (!PyArg_ParseTuple(args, "iOOOiiddn", &comm_f, &src_obj, &dst_obj, &counts_obj, &dtype, &op, &prescale,
                          &postscale, &segment_bytes))
        return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    int size = comm_size(comm), rank = 0;
    MPI_Comm_rank(comm, &rank);
    char *src, *dst;
    size_t src_bytes, dst_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(src_obj, "tensor", 0, &src, &src_bytes) ||
        get_array(dst_obj, "output", 1, &dst, &dst_bytes))
        return NULL;
    size_t *counts = get_table(counts_obj, "counts", size, 1);
    if (!counts) return NULL;
    const size_t esize = rt_dtype_size(dtype);
    size_t total = 0;
    for (int b = 0; b < size; b++) total += counts[b];
    if (total * esize != src_bytes || counts[rank] * esize != dst_bytes) {
        free(counts);
        return PyErr_Format(PyExc_ValueError, "counts do not match the tensor and output sizes");
    }
    int err;
    Py_BEGIN_ALLOW_THREADS
    rt_lock();
    err = rt_reduce_scatter(src, dst, counts, (rt_dtype)dtype, (rt_op)op, prescale, postscale,
                            (size_t)(segment_bytes > 0 ? segment_bytes : 1), comm);
    rt_unlock();
    Py_END_ALLOW_THREADS
    free(counts);
    if (err && raise_mpi_error("reducescatter", err)) return NULL;
    Py_RETURN_NONE;
}

/* allgatherv(comm, buf, bytes_per_rank, segment_bytes): blocks are laid out in rank order. */
static PyObject *py_allgatherv(PyObject *self, PyObject *args) {
    int comm_f;
    PyObject *buf_obj, *bytes_obj;
    Py_ssize_t segment_bytes;
    if (!PyArg_ParseTuple(args, "iOOn", &comm_f, &buf_obj, &bytes_obj, &segment_bytes)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    int size = comm_size(comm);
    char *buf;
    size_t nbytes;
    if (get_array(buf_obj, "output", 1, &buf, &nbytes)) return NULL;
    size_t *bytes = get_table(bytes_obj, "bytes", size, 1);
    if (!bytes) return NULL;
    size_t *displs = malloc((size_t)size * sizeof(size_t)), total = 0;
    if (!displs) { free(bytes); return PyErr_NoMemory(); }
    for (int b = 0; b < size; b++) { displs[b] = total; total += bytes[b]; }
    if (total != nbytes) {
        free(bytes); free(displs);
        return PyErr_Format(PyExc_ValueError, "output has %zu bytes, the blocks add up to %zu", nbytes, total);
    }
    int err;
    Py_BEGIN_ALLOW_THREADS
    rt_lock();
    err = rt_allgatherv(buf, bytes, displs, (size_t)(segment_bytes > 0 ? segment_bytes : 1), comm);
    rt_unlock();
    Py_END_ALLOW_THREADS
    free(bytes);
    free(displs);
    if (err && raise_mpi_error("allgather", err)) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_broadcast(PyObject *self, PyObject *args) {
    int comm_f, root;
    PyObject *buf_obj;
    Py_ssize_t segment_bytes;
    if (!PyArg_ParseTuple(args, "iOin", &comm_f, &buf_obj, &root, &segment_bytes)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    char *buf;
    size_t nbytes;
    if (get_array(buf_obj, "tensor", 1, &buf, &nbytes)) return NULL;
    if (root < 0 || root >= comm_size(comm)) return PyErr_Format(PyExc_ValueError, "root_rank %d out of range", root);
    int err;
    Py_BEGIN_ALLOW_THREADS
    rt_lock();
    err = rt_broadcast(buf, nbytes, root, (size_t)(segment_bytes > 0 ? segment_bytes : 1), comm);
    rt_unlock();
    Py_END_ALLOW_THREADS
    if (err && raise_mpi_error("broadcast", err)) return NULL;
    Py_RETURN_NONE;
}

/* alltoallv(comm, sendbuf, send_bytes, recvbuf, recv_bytes): slices laid out in rank order. */
static PyObject *py_alltoallv(PyObject *self, PyObject *args) {
    int comm_f;
    PyObject *send_obj, *send_bytes_obj, *recv_obj, *recv_bytes_obj;
    if (!PyArg_ParseTuple(args, "iOOOO", &comm_f, &send_obj, &send_bytes_obj, &recv_obj, &recv_bytes_obj)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    int size = comm_size(comm);
    char *sendbuf, *recvbuf;
    size_t send_total, recv_total;
    if (get_array(send_obj, "tensor", 0, &sendbuf, &send_total) || get_array(recv_obj, "output", 1, &recvbuf, &recv_total))
        return NULL;
    size_t *send_bytes = get_table(send_bytes_obj, "send_bytes", size, 1);
    size_t *recv_bytes = send_bytes ? get_table(recv_bytes_obj, "recv_bytes", size, 1) : NULL;
    size_t *displs = malloc(2 * (size_t)size * sizeof(size_t));
    if (!send_bytes || !recv_bytes || !displs) {
        free(send_bytes); free(recv_bytes); free(displs);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    size_t *send_displs = displs, *recv_displs = displs + size, s_total = 0, r_total = 0;
    for (int b = 0; b < size; b++) {
        send_displs[b] = s_total; s_total += send_bytes[b];
        recv_displs[b] = r_total; r_total += recv_bytes[b];
    }
    int err = 0;
    if (s_total != send_total || r_total != recv_total) {
        PyErr_Format(PyExc_ValueError, "alltoall slices do not add up to the buffer sizes");
        err = -1;
    } else {
        Py_BEGIN_ALLOW_THREADS
        rt_lock();
        err = rt_pairwise_alltoallv(sendbuf, send_bytes, send_displs, recvbuf, recv_bytes, recv_displs, comm);
        rt_unlock();
        Py_END_ALLOW_THREADS
        if (err) raise_mpi_error("alltoall", err);
    }
    free(send_bytes); free(recv_bytes); free(displs);
    if (err) return NULL;
    Py_RETURN_NONE;
}

/* reduce(inout, in, dtype, op): the local kernel, exposed for benchmarks and tests. */
static PyObject *py_reduce(PyObject *self, PyObject *args) {
    PyObject *inout_obj, *in_obj;
    int dtype, op;
    if (!PyArg_ParseTuple(args, "OOii", &inout_obj, &in_obj, &dtype, &op)) return NULL;
    char *inout, *in;
    size_t a_bytes, b_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(inout_obj, "inout", 1, &inout, &a_bytes) ||
        get_array(in_obj, "in", 0, &in, &b_bytes))
        return NULL;
    if (a_bytes != b_bytes) return PyErr_Format(PyExc_ValueError, "inout and in differ in size");
    Py_BEGIN_ALLOW_THREADS
    rt_reduce_inplace(inout, in, a_bytes / rt_dtype_size(dtype), (rt_dtype)dtype, (rt_op)op);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* The data pointers and sizes of a list of arrays (freed with free(*data)); -1 with an error set. */
static int get_array_list(PyObject *list, const char *what, int writable, char ***data, size_t **bytes,
                          size_t *total) {
    Py_ssize_t n = PyList_GET_SIZE(list);
    *data = malloc((n ? n : 1) * (sizeof(char *) + sizeof(size_t)));
    if (!*data) { PyErr_NoMemory(); return -1; }
    *bytes = (size_t *)(*data + (n ? n : 1));
    *total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (get_array(PyList_GET_ITEM(list, i), what, writable, &(*data)[i], &(*bytes)[i])) {
            free(*data);
            *data = NULL;
            return -1;
        }
        *total += (*bytes)[i];
    }
    return 0;
}

/* A fusion group's tensors and outputs, one output of the same size per tensor: their pointers
 * (srcs and dsts, freed with free()), sizes and total; -1 with an error set. */
static int get_tensor_pairs(PyObject *srcs_obj, PyObject *dsts_obj, char ***srcs, char ***dsts, size_t **bytes,
                            size_t *total) {
    Py_ssize_t n = PyList_GET_SIZE(srcs_obj);
    size_t dst_total, *dst_bytes;
    *srcs = *dsts = NULL;
    if (n < 1 || PyList_GET_SIZE(dsts_obj) != n) {
        PyErr_Format(PyExc_ValueError, "tensors and outputs: one output per tensor");
        return -1;
    }
    if (get_array_list(srcs_obj, "tensor", 0, srcs, bytes, total)) return -1;
    if (get_array_list(dsts_obj, "output", 1, dsts, &dst_bytes, &dst_total)) goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((*bytes)[i] != dst_bytes[i]) {
            PyErr_Format(PyExc_ValueError, "output %zd has %zu bytes, its tensor %zu", i, dst_bytes[i], (*bytes)[i]);
            goto fail;
        }
    return 0;
fail:
    free(*srcs);
    free(*dsts);
    *srcs = *dsts = NULL;
    return -1;
}

/* allreduce_fused(comm_f, tensors, outputs, fused, dtype, op, prescale, postscale, small, segment,
 * shm, hierarchical) -> algorithm: a fusion group's allreduce (rt_allreduce_fused: packed into
 * `fused`, or, in shared memory inside one host, taken where the tensors are). */
static PyObject *py_allreduce_fused(PyObject *self, PyObject *args) {
    int comm_f, dtype, op, err;
    PyObject *srcs_obj, *dsts_obj, *fused_obj;
    double prescale, postscale;
    Py_ssize_t small_bytes, segment_bytes, shm_bytes, hierarchical_bytes;
    if (!PyArg_ParseTuple(args, "iO!O!Oiiddnnnn", &comm_f, &PyList_Type, &srcs_obj, &PyList_Type, &dsts_obj,
                          &fused_obj, &dtype, &op, &prescale, &postscale, &small_bytes, &segment_bytes, &shm_bytes,
                          &hierarchical_bytes))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(srcs_obj);
    char **srcs, **dsts, *fused;
    size_t src_total, fused_bytes, *src_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(fused_obj, "fusion buffer", 1, &fused, &fused_bytes) ||
        get_tensor_pairs(srcs_obj, dsts_obj, &srcs, &dsts, &src_bytes, &src_total))
        return NULL;
    if (fused_bytes < src_total) {
        PyErr_Format(PyExc_ValueError, "fusion buffer holds %zu bytes, tensors need %zu", fused_bytes, src_total);
        goto fail;
    }
    rt_tuning tuning = tuning_of(small_bytes, segment_bytes, shm_bytes, hierarchical_bytes);
    rt_algorithm used;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    Py_BEGIN_ALLOW_THREADS
    rt_lock();
    err = rt_allreduce_fused(srcs, dsts, src_bytes, (size_t)n, fused, (rt_dtype)dtype, (rt_op)op, prescale, postscale,
                             &tuning, comm, &used);
    rt_unlock();
    Py_END_ALLOW_THREADS
    free(srcs);
    free(dsts);
    if (err && raise_mpi_error("allreduce", err)) return NULL;
    return PyLong_FromLong(used);
fail:
    free(srcs);
    free(dsts);
    return NULL;
}

/* pack(buffer, tensors) / unpack(buffer, tensors): tensors back to back from the buffer's start. */
static PyObject *fusion_copy(PyObject *args, int packing) {
    PyObject *buf_obj, *list;
    if (!PyArg_ParseTuple(args, "OO!", &buf_obj, &PyList_Type, &list)) return NULL;
    char *buffer, **tensors;
    size_t capacity, total, *bytes;
    if (get_array(buf_obj, "buffer", 1, &buffer, &capacity)) return NULL;
    if (get_array_list(list, "fused tensor", !packing, &tensors, &bytes, &total)) return NULL;
    if (total > capacity) {
        free(tensors);
        return PyErr_Format(PyExc_ValueError, "fusion buffer holds %zu bytes, tensors need %zu", capacity, total);
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    Py_BEGIN_ALLOW_THREADS
    if (packing) rt_pack(buffer, tensors, bytes, (size_t)n);
    else rt_unpack(buffer, tensors, bytes, (size_t)n);
    Py_END_ALLOW_THREADS
    free(tensors);
    Py_RETURN_NONE;
}

static PyObject *py_pack(PyObject *self, PyObject *args) { return fusion_copy(args, 1); }
static PyObject *py_unpack(PyObject *self, PyObject *args) { return fusion_copy(args, 0); }

static PyObject *py_barrier(PyObject *self, PyObject *args) {
    int comm_f, err;
    if (!PyArg_ParseTuple(args, "i", &comm_f)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    MPI_Request req;
    Py_BEGIN_ALLOW_THREADS
    rt_lock();
    err = MPI_Ibarrier(comm, &req);
    if (!err) err = rt_wait_collective(&req, comm);
    rt_unlock();
    Py_END_ALLOW_THREADS
    if (err && raise_mpi_error("barrier", err)) return NULL;
    Py_RETURN_NONE;
}

/* --- the engine's control rounds: small nonblocking collectives, waited for under the deadline.
 * They run on the control communicators only, never interleaved with blocking collectives. */
static PyObject *control_done(const char *what, int err) {
    if (err && raise_mpi_error(what, err)) return NULL;
    Py_RETURN_NONE;
}

/* control_band(comm_f, words, small): a round's bit vector ANDed across the communicator, in
 * place (round_exchange.c, carrying no data; `small` bounds what other ranks' messages carry). */
static PyObject *py_control_band(PyObject *self, PyObject *args) {
    int comm_f, err, carried;
    PyObject *obj;
    Py_ssize_t small_bytes;
    if (!PyArg_ParseTuple(args, "iOn", &comm_f, &obj, &small_bytes)) return NULL;
    char *words;
    size_t nbytes;
    if (get_array(obj, "words", 1, &words, &nbytes)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    void *data;
    Py_BEGIN_ALLOW_THREADS
    rt_round_lock();
    err = rt_round_exchange((uint64_t *)words, nbytes / 8, NULL, NULL, 0, RT_UINT8, RT_SUM, 1.0,
                            round_data_bound(small_bytes), comm, &carried, &data);
    rt_round_unlock();
    Py_END_ALLOW_THREADS
    return control_done("a negotiation round", err);
}

/* round_allreduce(ctrl_f, words, comm_f, srcs, dsts, fused, dtype, op, prescale, postscale, small,
 * segment, shm, hierarchical) -> bool: round_and_allreduce (below) with the GIL released once. */
static PyObject *py_round_allreduce(PyObject *self, PyObject *args) {
    int ctrl_f, comm_f, dtype, op, err = 0;
    PyObject *words_obj, *srcs_obj, *dsts_obj, *fused_obj;
    double prescale, postscale;
    Py_ssize_t small_bytes, segment_bytes, shm_bytes, hierarchical_bytes;
    if (!PyArg_ParseTuple(args, "iOiO!O!Oiiddnnnn", &ctrl_f, &words_obj, &comm_f, &PyList_Type, &srcs_obj, &PyList_Type,
                          &dsts_obj, &fused_obj, &dtype, &op, &prescale, &postscale, &small_bytes, &segment_bytes,
                          &shm_bytes, &hierarchical_bytes))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(srcs_obj);
    char *words, **srcs, **dsts, *fused = NULL;
    size_t word_bytes, src_total, fused_bytes = 0, *src_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(words_obj, "words", 1, &words, &word_bytes) ||
        get_tensor_pairs(srcs_obj, dsts_obj, &srcs, &dsts, &src_bytes, &src_total))
        return NULL;
    if (n > 1 && (get_array(fused_obj, "fusion buffer", 1, &fused, &fused_bytes) || fused_bytes < src_total)) {
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "fusion buffer holds %zu bytes, tensors need %zu",
                                            fused_bytes, src_total);
        goto fail;
    }
    rt_tuning tuning = tuning_of(small_bytes, segment_bytes, shm_bytes, hierarchical_bytes);
    int agreed = 0, in_data = 0;
    Py_BEGIN_ALLOW_THREADS
    err = round_and_allreduce(MPI_Comm_f2c(ctrl_f), (uint64_t *)words, word_bytes / 8, MPI_Comm_f2c(comm_f), srcs,
                              dsts, src_bytes, (size_t)n, src_total, fused, dtype, op, prescale, postscale,
                              round_data_bound(small_bytes), &tuning, &agreed, &in_data);
    Py_END_ALLOW_THREADS
    free(srcs);
    free(dsts);
    if (err && raise_mpi_error(in_data ? "allreduce" : "a negotiation round", err)) return NULL;
    if (err == -1) return PyErr_NoMemory();
    return PyBool_FromLong(agreed);
fail:
    free(srcs);
    free(dsts);
    return NULL;
}

/* round_allreduce_one(ctrl_f, words, comm_f, src, dst, dtype, op, prescale, postscale, small,
 * segment, shm, hierarchical) -> bool: round_allreduce of one tensor, the engine's steady path
 * for a synchronous call (Engine.allreduce_now), taking its arguments without a tuple to parse
 * or lists to build: on a 4-byte allreduce they were a tenth of the call. */
static PyObject *py_round_allreduce_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 13) return PyErr_Format(PyExc_TypeError, "round_allreduce_one takes 13 arguments, got %zd", nargs);
    const int ctrl_f = (int)PyLong_AsLong(args[0]), comm_f = (int)PyLong_AsLong(args[2]);
    const int dtype = (int)PyLong_AsLong(args[5]), op = (int)PyLong_AsLong(args[6]);
    const double prescale = PyFloat_AsDouble(args[7]), postscale = PyFloat_AsDouble(args[8]);
    const Py_ssize_t small_bytes = PyLong_AsSsize_t(args[9]), segment_bytes = PyLong_AsSsize_t(args[10]),
                     shm_bytes = PyLong_AsSsize_t(args[11]), hierarchical_bytes = PyLong_AsSsize_t(args[12]);
    if (PyErr_Occurred()) return NULL;
    char *words, *src, *dst;
    size_t word_bytes, src_bytes, dst_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(args[1], "words", 1, &words, &word_bytes) ||
        get_array(args[3], "tensor", 0, &src, &src_bytes) || get_array(args[4], "output", 1, &dst, &dst_bytes))
        return NULL;
    if (src_bytes != dst_bytes) return PyErr_Format(PyExc_ValueError, "output has %zu bytes, tensor %zu", dst_bytes, src_bytes);
    rt_tuning tuning = tuning_of(small_bytes, segment_bytes, shm_bytes, hierarchical_bytes);
    int err, agreed = 0, in_data = 0;
    Py_BEGIN_ALLOW_THREADS
    err = round_and_allreduce(MPI_Comm_f2c(ctrl_f), (uint64_t *)words, word_bytes / 8, MPI_Comm_f2c(comm_f), &src, &dst,
                              &src_bytes, 1, src_bytes, NULL, dtype, op, prescale, postscale,
                              round_data_bound(small_bytes), &tuning, &agreed, &in_data);
    Py_END_ALLOW_THREADS
    if (err && raise_mpi_error(in_data ? "allreduce" : "a negotiation round", err)) return NULL;
    if (err == -1) return PyErr_NoMemory();
    return PyBool_FromLong(agreed);
}

/* control_gatherv(comm_f, payload, out, sizes, root): payloads (uint8) concatenated on root, whose
 * `sizes` (int64, one per rank) say how long each is; elsewhere out and sizes are ignored. */
static PyObject *py_control_gatherv(PyObject *self, PyObject *args) {
    int comm_f, root, err = 0;
    PyObject *payload_obj, *out_obj, *sizes_obj;
    if (!PyArg_ParseTuple(args, "iOOOi", &comm_f, &payload_obj, &out_obj, &sizes_obj, &root)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    int rank = 0, size = comm_size(comm);
    MPI_Comm_rank(comm, &rank);
    char *payload, *out = NULL;
    size_t payload_bytes, out_bytes = 0;
    if (get_array(payload_obj, "payload", 0, &payload, &payload_bytes)) return NULL;
    int *counts = NULL, *displs = NULL;
    if (rank == root) {
        if (get_array(out_obj, "out", 1, &out, &out_bytes)) return NULL;
        size_t *sizes = get_table(sizes_obj, "sizes", size, 1);
        if (!sizes) return NULL;
        counts = malloc(2 * (size_t)size * sizeof(int));
        if (!counts) { free(sizes); return PyErr_NoMemory(); }
        displs = counts + size;
        size_t total = 0;
        for (int r = 0; r < size; r++) { counts[r] = (int)sizes[r]; displs[r] = (int)total; total += sizes[r]; }
        free(sizes);
        if (total > out_bytes) { free(counts); return PyErr_Format(PyExc_ValueError, "out is too small"); }
    }
    MPI_Request req;
    Py_BEGIN_ALLOW_THREADS
    err = MPI_Igatherv(payload, (int)payload_bytes, MPI_BYTE, out, counts, displs, MPI_BYTE, root, comm, &req);
    if (!err) err = rt_wait_collective(&req, comm);
    Py_END_ALLOW_THREADS
    free(counts);
    return control_done("a negotiation round", err);
}

/* control_bcast(comm_f, buf, root): MPI_Ibcast of a byte buffer. */
static PyObject *py_control_bcast(PyObject *self, PyObject *args) {
    int comm_f, root, err;
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "iOi", &comm_f, &obj, &root)) return NULL;
    char *buf;
    size_t nbytes;
    if (get_array(obj, "buffer", 1, &buf, &nbytes)) return NULL;
    MPI_Comm comm = MPI_Comm_f2c(comm_f);
    MPI_Request req;
    Py_BEGIN_ALLOW_THREADS
    err = MPI_Ibcast(buf, (int)nbytes, MPI_BYTE, root, comm, &req);
    if (!err) err = rt_wait_collective(&req, comm);
    Py_END_ALLOW_THREADS
    return control_done("a negotiation round", err);
}

/* --- liveness and the progress deadline ------------------------------------------------------ */
static PyObject *py_liveness_start(PyObject *self, PyObject *args) {
    int comm_f, err;
    double period, stale;
    if (!PyArg_ParseTuple(args, "idd", &comm_f, &period, &stale)) return NULL;
    err = rt_liveness_start(MPI_Comm_f2c(comm_f), period, stale);
    return control_done("starting the heartbeats", err);
}

static PyObject *py_liveness_stop(PyObject *self, PyObject *args) {
    Py_BEGIN_ALLOW_THREADS
    rt_liveness_stop();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_set_progress_timeout(PyObject *self, PyObject *args) {
    double seconds;
    if (!PyArg_ParseTuple(args, "d", &seconds)) return NULL;
    rt_set_progress_timeout(seconds);
    Py_RETURN_NONE;
}

static PyObject *py_set_gentle_waits(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    rt_set_gentle_waits(on);
    Py_RETURN_NONE;
}

static PyObject *py_note_caller_waiting(PyObject *self, PyObject *args) {
    int delta;
    if (!PyArg_ParseTuple(args, "i", &delta)) return NULL;
    rt_note_caller_waiting(delta);
    Py_RETURN_NONE;
}

static PyObject *py_callers_waiting(PyObject *self, PyObject *args) {
    return PyLong_FromLong(rt_callers_waiting());
}

static PyObject *py_take_longest_quiet(PyObject *self, PyObject *args) {
    return PyFloat_FromDouble(rt_take_longest_quiet());
}

/* stall_report() -> dict: what the last wait that gave up found (world ranks). */
static PyObject *py_stall_report(PyObject *self, PyObject *args) {
    const rt_stall *r = rt_stall_report();
    static const char *kinds[] = {"none", "silent", "stuck", "cycle", "stalled"};
    PyObject *chain = PyList_New(r->chain_length);
    if (!chain) return NULL;
    for (int i = 0; i < r->chain_length; i++) PyList_SET_ITEM(chain, i, PyLong_FromLong(r->chain[i]));
    return Py_BuildValue("{s:d,s:i,s:i,s:s,s:d,s:N}", "quiet", r->quiet, "waited_on", r->waited_on, "culprit",
                         r->culprit, "kind", kinds[r->kind], "age", r->age, "chain", chain);
}

/* shm_attach(comm_f, piece_bytes, hierarchical, one_leader) -> (mode, reason, failed_here):
 * collective over comm. */
static PyObject *py_shm_attach(PyObject *self, PyObject *args) {
    int comm_f, hierarchical, one_leader;
    Py_ssize_t piece_bytes;
    if (!PyArg_ParseTuple(args, "inpp", &comm_f, &piece_bytes, &hierarchical, &one_leader)) return NULL;
    if (piece_bytes < 64) return PyErr_Format(PyExc_ValueError, "piece_bytes must be at least 64");
    rt_shm_settings settings = {(size_t)piece_bytes, hierarchical, one_leader};
    rt_shm_mode mode;
    char reason[256];
    int err, failed_here = 0;
    Py_BEGIN_ALLOW_THREADS
    err = rt_shm_attach(MPI_Comm_f2c(comm_f), &settings, &mode, reason, sizeof reason, &failed_here);
    Py_END_ALLOW_THREADS
    if (err && raise_mpi_error("setting up shared memory", err)) return NULL;
    return Py_BuildValue("(isO)", (int)mode, reason, failed_here ? Py_True : Py_False);
}

static PyObject *py_shm_detach(PyObject *self, PyObject *args) {
    int comm_f;
    if (!PyArg_ParseTuple(args, "i", &comm_f)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rt_shm_detach(MPI_Comm_f2c(comm_f));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"allreduce", py_allreduce, METH_VARARGS,
     "allreduce(comm_f, src, dst, dtype, op, prescale, postscale, small_bytes, segment_bytes, shm_bytes, "
     "hierarchical_bytes) -> algorithm code"},
    {"reduce_scatter", py_reduce_scatter, METH_VARARGS,
     "reduce_scatter(comm_f, src, dst, counts, dtype, op, prescale, postscale, segment_bytes)"},
    {"allgatherv", py_allgatherv, METH_VARARGS, "allgatherv(comm_f, buf, bytes_per_rank, segment_bytes)"},
    {"broadcast", py_broadcast, METH_VARARGS, "broadcast(comm_f, buf, root, segment_bytes)"},
    {"alltoallv", py_alltoallv, METH_VARARGS, "alltoallv(comm_f, sendbuf, send_bytes, recvbuf, recv_bytes)"},
    {"reduce", py_reduce, METH_VARARGS, "reduce(inout, in, dtype, op): inout = inout op in"},
    {"barrier", py_barrier, METH_VARARGS, "barrier(comm_f)"},
    {"shm_attach", py_shm_attach, METH_VARARGS,
     "shm_attach(comm_f, piece_bytes, hierarchical, one_leader) -> (mode, reason, failed_here)"},
    {"shm_detach", py_shm_detach, METH_VARARGS, "shm_detach(comm_f): unmap the set's segment"},
    {"control_band", py_control_band, METH_VARARGS, "control_band(comm_f, words, small): bitwise AND of a round's uint64 words, in place"},
    {"round_allreduce", py_round_allreduce, METH_VARARGS,
     "round_allreduce(ctrl_f, words, comm_f, srcs, dsts, fused, dtype, op, prescale, postscale, small, segment, shm, hierarchical) -> "
     "agreed: a round's bit vector, then (if every rank proposed exactly these bits) one fusion group's allreduce"},
    {"round_allreduce_one", (PyCFunction)(void (*)(void))py_round_allreduce_one, METH_FASTCALL,
     "round_allreduce_one(ctrl_f, words, comm_f, src, dst, dtype, op, prescale, postscale, small, segment, shm, hierarchical) -> bool"},
    {"control_gatherv", py_control_gatherv, METH_VARARGS, "control_gatherv(comm_f, payload, out, sizes, root)"},
    {"control_bcast", py_control_bcast, METH_VARARGS, "control_bcast(comm_f, buf, root)"},
    {"liveness_start", py_liveness_start, METH_VARARGS, "liveness_start(comm_f, period, stale): start the heartbeats"},
    {"liveness_stop", py_liveness_stop, METH_NOARGS, "liveness_stop(): stop the heartbeats"},
    {"set_progress_timeout", py_set_progress_timeout, METH_VARARGS, "set_progress_timeout(seconds); 0 waits for ever"},
    {"set_gentle_waits", py_set_gentle_waits, METH_VARARGS,
     "set_gentle_waits(on): this thread's waits sleep once quiet (a background thread's)"},
    {"note_caller_waiting", py_note_caller_waiting, METH_VARARGS,
     "note_caller_waiting(delta): a thread starts (+1) or stops (-1) blocking on a collective; gentle waits "
     "do not sleep while one does"},
    {"callers_waiting", py_callers_waiting, METH_NOARGS, "callers_waiting(): threads now blocked on a collective"},
    {"take_longest_quiet", py_take_longest_quiet, METH_NOARGS,
     "take_longest_quiet() -> seconds: the longest quiet stretch of a wait that completed (resets it)"},
    {"stall_report", py_stall_report, METH_NOARGS, "stall_report() -> dict: who the last wait that gave up waited on"},
    {"allreduce_fused", py_allreduce_fused, METH_VARARGS,
     "allreduce_fused(comm_f, tensors, outputs, fused, dtype, op, prescale, postscale, small, segment, shm, hierarchical) -> algorithm"},
    {"pack", py_pack, METH_VARARGS, "pack(buffer, tensors): copy tensors back to back into buffer"},
    {"unpack", py_unpack, METH_VARARGS, "unpack(buffer, tensors): copy buffer back out into tensors"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_core", "ringtrain's C collectives over MPI", -1, methods};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    PyObject *m = PyModule_Create(&module);
    if (!m || PyModule_AddFunctions(m, lane_methods) < 0 || PyModule_AddFunctions(m, lane_call_methods) < 0 ||
        lane_add_to_module(m) < 0)
        return NULL;
    MPIError = PyErr_NewException("ringtrain._core.MPIError", PyExc_RuntimeError, NULL);
    Py_INCREF(MPIError);
    PyModule_AddObject(m, "MPIError", MPIError);
    NoProgressError = PyErr_NewException("ringtrain._core.NoProgressError", MPIError, NULL);
    Py_INCREF(NoProgressError);
    PyModule_AddObject(m, "NoProgressError", NoProgressError);
    PyModule_AddObject(m, "ALGORITHMS", Py_BuildValue("(sss)", "none", "recursive_doubling", "ring"));
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    PyModule_AddObject(m, "MPI_LIBRARY_VERSION", PyUnicode_FromStringAndSize(version, len));
    return m;
}
