/* What the Python binding's files (module.c, persistent_lane.c, lane_calls.c) share: binding.c. */
#ifndef RINGTRAIN_BINDING_H
#define RINGTRAIN_BINDING_H
#include <Python.h>
#include "ringtrain.h"

extern PyObject *MPIError, *NoProgressError;

int raise_mpi_error(const char *collective, int err);
int get_array(PyObject *obj, const char *what, int writable, char **data, size_t *nbytes);
int check_dtype(int dtype);
int check_op(int op);
int comm_size(MPI_Comm comm);
rt_tuning tuning_of(Py_ssize_t small, Py_ssize_t segment, Py_ssize_t shm, Py_ssize_t hierarchical);
size_t round_data_bound(Py_ssize_t small_bytes);
int round_and_allreduce(MPI_Comm ctrl, uint64_t *words, size_t nwords, MPI_Comm comm, char **srcs, char **dsts,
                        size_t *bytes, size_t n, size_t total, char *fused, int dtype, int op, double prescale,
                        double postscale, size_t bound, const rt_tuning *tuning, int *agreed, int *in_data);

/* persistent_lane.c, lane_calls.c */
int lane_add_to_module(PyObject *module);
extern PyMethodDef lane_methods[], lane_call_methods[];
#endif
