/* The persistent lane: a training loop's steady allreduces queued, or run, in C.
 *
 * A training loop makes the same allreduces every step. Once the engine has negotiated one and
 * taught its entry here the response cache bit, the call itself is C: a persistent allreduce's
 * start() (ringtrain.allreduce_init) is entry_start, and allreduce(_) and allreduce_async(_)
 * (with ringtrain.torch's) are lane_calls.c's calls, which queue here or run the round in the
 * caller's thread. No Python frame, no Request, no engine lock per call.
 *
 * The engine's next round on process set 0 (engine.py, Engine._lane_round) calls lane_round,
 * which runs the whole round in C when the queue is all that is pending: the bit vector of the
 * queued bits, the round's exchange, the agreed entries' allreduces grouped for fusion
 * (module.c, round_and_allreduce: exactly what the engine's general path sends for the same
 * tensors, so other ranks need not take this lane), then every Handle completed. Anything else
 * (a bit another rank did not propose for FALLBACK_ROUNDS, a slow path, a failure) hands the
 * queued entries back to Python as they are, and the engine goes on with them as ordinary
 * requests. Python keeps the truth about bits: it teaches an entry its bit after negotiating
 * it, and tells the lane which bits change hands whenever the response cache changes; an
 * entry whose bit changed since it learned it takes the Python path. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL RINGTRAIN_ARRAY_API  /* imported by module.c */
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <stdlib.h>
#include <string.h>
#include "binding.h"
#include "lane.h"

struct lane_state lane;

static PyObject *str_done, *str_result, *str_error, *str_entries, *str_allreduce;

static void entry_dealloc(LaneEntry *self) {
    Py_XDECREF(self->tensor);
    Py_XDECREF(self->output);
    Py_XDECREF(self->name);
    Py_XDECREF(self->engine);
    Py_XDECREF(self->handle);
    Py_XDECREF(self->descr);
    Py_XDECREF(self->adopted);
    Py_XDECREF(self->result);
    Py_XDECREF(self->source);
    Py_XDECREF(self->source_shape);
    Py_XDECREF(self->source_dtype);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* LaneEntry(tensor, output, dtype, op, prescale, postscale, name, set_id, engine, handle, generation[, call]):
 * the arrays already checked by collectives.PersistentAllreduce, or by an allreduce_async call
 * (call=True; handle None: the calls bring their own). */
static int entry_init(LaneEntry *self, PyObject *args, PyObject *kwds) {
    PyObject *tensor, *output, *name, *engine, *handle;
    int dtype, op, set_id, call = 0;
    double prescale, postscale;
    long long generation;
    if (!PyArg_ParseTuple(args, "OOiiddUiOOL|p", &tensor, &output, &dtype, &op, &prescale, &postscale, &name, &set_id,
                          &engine, &handle, &generation, &call))
        return -1;
    size_t src_bytes, dst_bytes;
    if (check_dtype(dtype) || check_op(op) || get_array(tensor, "tensor", 0, &self->src, &src_bytes) ||
        get_array(output, "output", 1, &self->dst, &dst_bytes))
        return -1;
    if (src_bytes != dst_bytes) {
        PyErr_Format(PyExc_ValueError, "output has %zu bytes, tensor %zu", dst_bytes, src_bytes);
        return -1;
    }
    PyArrayObject *array = (PyArrayObject *)tensor;
    if (PyArray_NDIM(array) > NPY_MAXDIMS) {
        PyErr_SetString(PyExc_ValueError, "tensor has too many dimensions");
        return -1;
    }
    if (handle == Py_None) handle = NULL;
    PyObject *descr = (PyObject *)PyArray_DESCR(array);
    PyObject *old[6] = {self->tensor, self->output, self->name, self->engine, self->handle, self->descr};
    Py_INCREF(tensor); Py_INCREF(output); Py_INCREF(name); Py_INCREF(engine); Py_XINCREF(handle); Py_INCREF(descr);
    self->tensor = tensor; self->output = output; self->name = name; self->engine = engine; self->handle = handle;
    self->descr = descr;
    for (int i = 0; i < 6; i++) Py_XDECREF(old[i]);
    self->ndim = PyArray_NDIM(array);
    memcpy(self->shape, PyArray_DIMS(array), (size_t)self->ndim * sizeof(npy_intp));
    self->call = call;
    if (call) {  /* a call brings its arrays: the caller's are not the lane's to keep */
        Py_CLEAR(self->tensor);
        Py_CLEAR(self->output);
    }
    self->nbytes = src_bytes;
    self->dtype = dtype;
    self->op = op;
    self->prescale = prescale;
    self->postscale = postscale;
    self->set_id = set_id;
    self->bit = -1;
    self->bit_generation = -1;
    self->generation = generation;
    return 0;
}

struct handle_slots_state handle_slots;

static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name) {
    PyObject *descr = _PyType_Lookup(type, name);  /* borrowed */
    if (!descr || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) return -1;
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    return member->type == T_OBJECT_EX ? member->offset : -1;
}

void set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    PyObject **slot = (PyObject **)((char *)obj + offset), *old = *slot;
    Py_INCREF(value);
    *slot = value;
    Py_XDECREF(old);
}

int set_handle(PyObject *handle, PyObject *done, PyObject *result, PyObject *error) {
    if (Py_TYPE(handle) == handle_slots.type) {
        set_slot(handle, handle_slots.error, error);
        set_slot(handle, handle_slots.result, result);
        set_slot(handle, handle_slots.done, done);
        return 0;
    }
    return PyObject_SetAttr(handle, str_error, error) || PyObject_SetAttr(handle, str_result, result) ||
           PyObject_SetAttr(handle, str_done, done) ? -1 : 0;
}

/* The entry's bit still stands for its name and signature: it has not changed hands since the
 * engine taught it (a change of other bits does not matter). */
int bit_current(const LaneEntry *entry) {
    if (entry->bit < 0 || entry->generation != lane.generation || entry->bit_generation < 0) return 0;
    const size_t bit = (size_t)entry->bit;
    return bit < lane.bits_known ? lane.bit_changed[bit] <= entry->bit_generation : 1;
}

/* A new pending Handle of an allreduce, as Handle("allreduce", name, engine=engine) would make it,
 * without running its __init__ (allocated and its slots filled here), or NULL with an error. */
PyObject *new_handle(PyObject *name, PyObject *engine) {
    PyTypeObject *type = handle_slots.type;
    PyObject *handle = type->tp_alloc(type, 0);
    if (!handle) return NULL;
    set_slot(handle, handle_slots.kind, str_allreduce);
    set_slot(handle, handle_slots.name, name);
    set_slot(handle, handle_slots.grouped, Py_False);
    set_slot(handle, handle_slots.done, Py_False);
    set_slot(handle, handle_slots.result, Py_None);
    set_slot(handle, handle_slots.error, Py_None);
    set_slot(handle, handle_slots.engine, engine);
    set_slot(handle, handle_slots.finish, Py_None);
    set_slot(handle, handle_slots.parts, Py_None);
    set_slot(handle, handle_slots.deferred, Py_None);
    return handle;
}

/* handle.done is True (a set slot of the Handle class; otherwise asked by getattr): 1, 0, or -1. */
int handle_done(PyObject *handle) {
    if (Py_TYPE(handle) == handle_slots.type) return *(PyObject **)((char *)handle + handle_slots.done) == Py_True;
    PyObject *done = PyObject_GetAttr(handle, str_done);
    if (!done) return -1;
    const int result = done == Py_True;
    Py_DECREF(done);
    return result;
}

/* The entry appended to the queue (a new reference), the engine woken if it dozes. */
int enqueue(LaneEntry *entry) {
    if (lane.length == lane.capacity) {
        Py_ssize_t capacity = lane.capacity ? 2 * lane.capacity : 64;
        LaneEntry **grown = realloc(lane.queue, (size_t)capacity * sizeof *grown);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        lane.queue = grown;
        lane.capacity = capacity;
    }
    Py_INCREF(entry);
    entry->waited = 0;
    lane.queue[lane.length++] = entry;
    lane.bytes += entry->nbytes;
    if (lane.doorbell) {  /* once: the engine is awake then, and a step's hundreds of starts ring no more */
        PyObject *doorbell = lane.doorbell, *rung;
        lane.doorbell = NULL;
        rung = PyObject_CallNoArgs(doorbell);
        Py_DECREF(doorbell);
        if (!rung) return -1;
        Py_DECREF(rung);
    }
    return 0;
}

/* start() -> Handle. Queued here when the engine's lane is open and the entry's bit is current;
 * otherwise (first start, cache changed, lane closed, stale, still in flight) the slow start
 * decides, raising what Python would raise. */
static PyObject *entry_start(LaneEntry *self, PyObject *Py_UNUSED(ignored)) {
    if (self->call) return PyErr_Format(PyExc_TypeError, "'%U' is an allreduce_async call's entry, not started", self->name);
    if (lane.open && bit_current(self)) {
        const int idle = handle_done(self->handle);
        if (idle < 0) return NULL;
        if (idle) {
            if (set_handle(self->handle, Py_False, Py_None, Py_None) || enqueue(self)) return NULL;
            Py_INCREF(self->handle);
            return self->handle;
        }
    }
    if (!lane.slow_start) return PyErr_Format(PyExc_RuntimeError, "internal: the persistent lane has no slow start");
    return PyObject_CallOneArg(lane.slow_start, (PyObject *)self);
}

/* adopt(handle): a call under this entry's name took the Python path with this Handle; a later
 * call may queue here only once it completed. A weak reference: the Handle holds its result,
 * which is the caller's to free. */
static PyObject *entry_adopt(LaneEntry *self, PyObject *handle) {
    PyObject *ref = PyWeakref_NewRef(handle, NULL);
    if (!ref) return NULL;
    Py_XSETREF(self->adopted, ref);
    Py_RETURN_NONE;
}

/* A numpy array over data (entry's dtype and shape) whose base is `base` (which keeps the memory
 * alive, as tensor.numpy() does), or NULL with an error. */
PyObject *lane_view(LaneEntry *entry, void *data, PyObject *base) {
    PyArray_Descr *descr = (PyArray_Descr *)entry->descr;
    Py_INCREF(descr);  /* stolen */
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, descr, entry->ndim, entry->shape, NULL, data,
                                          NPY_ARRAY_CARRAY, NULL);
    if (!view) return NULL;
    Py_INCREF(base);  /* stolen */
    if (PyArray_SetBaseObject((PyArrayObject *)view, base) < 0) {
        Py_DECREF(view);
        return NULL;
    }
    return view;
}

/* arrays() -> (tensor, output): the queued call's arrays. A torch tensor queued in place
 * (lane_torch_allreduce_async) is queued over its own memory, without an array: this makes its
 * view, the same one for both, for the general path (Engine._lane_requests). */
static PyObject *entry_arrays(LaneEntry *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *tensor = self->tensor ? self->tensor : Py_None, *output = self->output ? self->output : Py_None;
    if (tensor == Py_None || PyArray_Check(tensor)) return PyTuple_Pack(2, tensor, output);
    PyObject *view = lane_view(self, self->src, tensor);
    if (!view) return NULL;
    PyObject *pair = PyTuple_Pack(2, view, view);
    Py_DECREF(view);
    return pair;
}

static PyMethodDef entry_methods[] = {
    {"arrays", (PyCFunction)entry_arrays, METH_NOARGS, "arrays() -> (tensor, output): the queued call's arrays"},
    {"start", (PyCFunction)entry_start, METH_NOARGS, "start() -> Handle: run the allreduce on the arrays' contents now"},
    {"adopt", (PyCFunction)entry_adopt, METH_O, "adopt(handle): the Handle of a call that took the Python path"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef entry_members[] = {
    {"tensor", T_OBJECT, offsetof(LaneEntry, tensor), READONLY, NULL},
    {"output", T_OBJECT, offsetof(LaneEntry, output), READONLY, NULL},
    {"name", T_OBJECT, offsetof(LaneEntry, name), READONLY, NULL},
    {"engine", T_OBJECT, offsetof(LaneEntry, engine), READONLY, NULL},
    {"handle", T_OBJECT, offsetof(LaneEntry, handle), READONLY, NULL},
    {"result", T_OBJECT, offsetof(LaneEntry, result), READONLY,
     "what the queued call's Handle completes with instead of output (a torch call's tensor), or None"},
    {"code", T_INT, offsetof(LaneEntry, dtype), READONLY, NULL},
    {"op", T_INT, offsetof(LaneEntry, op), READONLY, NULL},
    {"set_id", T_INT, offsetof(LaneEntry, set_id), READONLY, NULL},
    {"prescale", T_DOUBLE, offsetof(LaneEntry, prescale), READONLY, NULL},
    {"postscale", T_DOUBLE, offsetof(LaneEntry, postscale), READONLY, NULL},
    {"generation", T_LONGLONG, offsetof(LaneEntry, generation), READONLY, NULL},
    {"call", T_INT, offsetof(LaneEntry, call), READONLY, "made by an allreduce_async call, not allreduce_init"},
    {"bit", T_INT, offsetof(LaneEntry, bit), 0, "response cache bit (-1: none yet)"},
    {"bit_generation", T_LONGLONG, offsetof(LaneEntry, bit_generation), 0, "cache generation the bit is valid for"},
    {NULL, 0, 0, 0, NULL}};

static PyObject *entry_shape(LaneEntry *self, void *closure) {
    PyObject *shape = PyTuple_New(self->ndim);
    for (int i = 0; shape && i < self->ndim; i++) {
        PyObject *dim = PyLong_FromSsize_t(self->shape[i]);
        if (!dim) Py_CLEAR(shape);
        else PyTuple_SET_ITEM(shape, i, dim);
    }
    return shape;
}

static PyGetSetDef entry_getset[] = {
    {"shape", (getter)entry_shape, NULL, "the tensor's shape when made", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject LaneEntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ringtrain._core.LaneEntry",
    .tp_doc = "A persistent allreduce as the persistent lane queues it (collectives.PersistentAllreduce)",
    .tp_basicsize = sizeof(LaneEntry),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)entry_init,
    .tp_dealloc = (destructor)entry_dealloc,
    .tp_methods = entry_methods,
    .tp_members = entry_members,
    .tp_getset = entry_getset,
};


/* The queue as a list (the references move to it), the queue left empty. */
static PyObject *take_queue(LaneEntry **entries, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(list, i, (PyObject *)entries[i]);
    return list;
}

static PyObject *py_lane_take(PyObject *self, PyObject *unused) {
    PyObject *list = take_queue(lane.queue, lane.length);
    if (list) {
        lane.length = 0;
        lane.bytes = 0;
    }
    return list;
}

/* Entries that wait another round, back at the head of the queue (before any started since). */
static int requeue(LaneEntry **waiting, Py_ssize_t count) {
    Py_ssize_t capacity = lane.length + count;
    LaneEntry **queue = malloc((size_t)(capacity > 64 ? capacity : 64) * sizeof *queue);
    if (!queue) {
        for (Py_ssize_t i = 0; i < count; i++) Py_DECREF(waiting[i]);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        waiting[i]->waited++;
        queue[i] = waiting[i];
        lane.bytes += waiting[i]->nbytes;
    }
    memcpy(queue + count, lane.queue, (size_t)lane.length * sizeof *queue);
    free(lane.queue);
    lane.queue = queue;
    lane.length = capacity;
    lane.capacity = capacity > 64 ? capacity : 64;
    return 0;
}

static int by_bit(const void *a, const void *b) {
    const LaneEntry *x = *(LaneEntry *const *)a, *y = *(LaneEntry *const *)b;
    return (x->bit > y->bit) - (x->bit < y->bit);
}

/* The end of the group that starts at entries[start], by the executor's rule (executor.py,
 * plan_fusion): a tensor of at least a segment runs alone; otherwise the entries after it join
 * while they have its dtype, op and scale factors, are under a segment, and the group stays
 * within the fusion threshold. */
static Py_ssize_t group_end(LaneEntry *const *entries, Py_ssize_t start, Py_ssize_t n, size_t threshold,
                            size_t segment) {
    const LaneEntry *first = entries[start];
    Py_ssize_t end = start + 1;
    if (first->nbytes >= segment) return end;
    for (size_t bytes = first->nbytes; end < n; end++) {
        const LaneEntry *e = entries[end];
        if (e->nbytes >= segment || e->dtype != first->dtype || e->op != first->op ||
            e->prescale != first->prescale || e->postscale != first->postscale || bytes + e->nbytes > threshold)
            break;
        bytes += e->nbytes;
    }
    return end;
}

/* The agreed entries' allreduces, group by group as the executor runs them: one tensor directly,
 * several as one fusion group (rt_allreduce_fused). Called with the GIL released. */
static int run_groups(LaneEntry *const *entries, char **srcs, char **dsts, size_t *bytes, Py_ssize_t n, char *fused,
                      size_t threshold, const rt_tuning *tuning, MPI_Comm comm) {
    int err = 0;
    rt_algorithm used;
    rt_lock();
    for (Py_ssize_t start = 0, end; start < n && !err; start = end) {
        end = group_end(entries, start, n, threshold, tuning->segment_bytes);
        const LaneEntry *first = entries[start];
        const rt_dtype dtype = (rt_dtype)first->dtype;
        const rt_op op = (rt_op)first->op;
        if (end - start == 1) {
            err = rt_allreduce(srcs[start], dsts[start], first->nbytes / rt_dtype_size(dtype), dtype, op,
                               first->prescale, first->postscale, tuning, comm, &used);
            continue;
        }
        err = rt_allreduce_fused(srcs + start, dsts + start, bytes + start, (size_t)(end - start), fused, dtype, op,
                                 first->prescale, first->postscale, tuning, comm, &used);
    }
    rt_unlock();
    return err;
}

/* lane_round(ctrl_f, words, comm_f, fused, fusion_threshold, fallback_rounds, small, segment, shm,
 * hierarchical): one round of process set 0 over the queued entries (the engine checked that
 * nothing else is pending), sending exactly what the engine's general path sends for the same
 * requests. None: an entry has waited fallback_rounds for the other ranks (the general path then
 * announces it, so that a mismatch or a stall is found), or two share a bit; nothing was sent
 * and the queue is as it was. An int (the bytes reduced): the agreed entries were reduced and
 * their Handles completed; those the other ranks did not propose yet stay queued for the next
 * round. A list of the entries: some rank asked for the slow path (words holds the agreed bits).
 * On an error the exception's `entries` holds them. */
static PyObject *py_lane_round(PyObject *self, PyObject *args) {
    int ctrl_f, comm_f;
    PyObject *words_obj, *fused_obj;
    Py_ssize_t fusion_threshold, small_bytes, segment_bytes, shm_bytes, hierarchical_bytes;
    int fallback_rounds;
    if (!PyArg_ParseTuple(args, "iOiOninnnn", &ctrl_f, &words_obj, &comm_f, &fused_obj, &fusion_threshold,
                          &fallback_rounds, &small_bytes, &segment_bytes, &shm_bytes, &hierarchical_bytes))
        return NULL;
    char *words, *fused = NULL;
    size_t word_bytes, fused_bytes = 0;
    if (get_array(words_obj, "words", 1, &words, &word_bytes)) return NULL;
    const Py_ssize_t n = lane.length;
    if (n == 0) return PyLong_FromLong(0);
    LaneEntry **entries = lane.queue;
    Py_ssize_t sorted = 1;  /* a loop starts its tensors in the same order every step: usually in bit order */
    while (sorted < n && entries[sorted - 1]->bit <= entries[sorted]->bit) sorted++;
    if (sorted < n) qsort(entries, (size_t)n, sizeof *entries, by_bit);  /* the general path runs them in bit order */
    const size_t nwords = word_bytes / 8;
    rt_tuning tuning = tuning_of(small_bytes, segment_bytes, shm_bytes, hierarchical_bytes);
    const size_t threshold = fusion_threshold > 0 ? (size_t)fusion_threshold : 0;
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const LaneEntry *e = entries[i];
        if ((i > 0 && e->bit == entries[i - 1]->bit) || (size_t)e->bit >= nwords * 64 || e->waited >= fallback_rounds)
            Py_RETURN_NONE;
        total += e->nbytes;
    }
    if (n > 1 && (get_array(fused_obj, "fusion buffer", 1, &fused, &fused_bytes) || fused_bytes < total)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* One group (a training step's small gradients): its data may travel with the round's bits. */
    const int one_group = group_end(entries, 0, n, threshold, tuning.segment_bytes) == n;
    char **pointers = malloc((size_t)n * (2 * sizeof(char *) + sizeof(size_t)));
    if (!pointers) return PyErr_NoMemory();
    char **srcs = pointers, **dsts = pointers + n;
    size_t *bytes = (size_t *)(pointers + 2 * n);
    memset(words, 0, word_bytes);
    uint64_t *bits = (uint64_t *)words;
    bits[0] |= 1;  /* NO_SLOW_PATH_BIT */
    for (Py_ssize_t i = 0; i < n; i++) {
        srcs[i] = entries[i]->src;
        dsts[i] = entries[i]->dst;
        bytes[i] = entries[i]->nbytes;
        bits[entries[i]->bit / 64] |= (uint64_t)1 << (entries[i]->bit % 64);
    }
    /* The round's entries leave the queue now: starts in other threads while the GIL is
     * released below queue for the next round. */
    lane.queue = NULL;
    lane.length = lane.capacity = 0;
    lane.bytes = 0;
    MPI_Comm ctrl = MPI_Comm_f2c(ctrl_f), comm = MPI_Comm_f2c(comm_f);
    if (comm_size(comm) == 1) ctrl = MPI_COMM_NULL;  /* one rank agrees with itself */
    const size_t bound = round_data_bound(small_bytes);
    int err = 0, agreed = 0, in_data = 0;
    Py_ssize_t reduced = n;  /* entries[0..reduced) were reduced, the rest wait for the next round */
    Py_BEGIN_ALLOW_THREADS
    if (one_group) {
        const LaneEntry *first = entries[0];
        err = round_and_allreduce(ctrl, bits, nwords, comm, srcs, dsts, bytes, (size_t)n, total, fused, first->dtype,
                                  first->op, first->prescale, first->postscale, bound, &tuning, &agreed, &in_data);
    } else if (ctrl != MPI_COMM_NULL) {  /* the bits alone, as the general path's round sends them */
        int carried;
        void *data;
        rt_round_lock();
        err = rt_round_exchange(bits, nwords, NULL, NULL, 0, RT_UINT8, RT_SUM, 1.0, bound, ctrl, &carried, &data);
        rt_round_unlock();
    }
    if (!err && !agreed && (bits[0] & 1)) {
        /* Nobody asked for the slow path: the agreed entries are what the general path reduces
         * now, in the same groups (a subset of one group is one group); the rest (a rank had not
         * started them yet) go back to the queue. */
        LaneEntry **later = malloc((size_t)n * sizeof *later);
        if (!later) {
            err = -1;
        } else {
            Py_ssize_t waiting = 0;
            size_t agreed_total = 0;
            reduced = 0;
            for (Py_ssize_t i = 0; i < n; i++) {
                LaneEntry *e = entries[i];
                if (bits[e->bit / 64] >> (e->bit % 64) & 1) {
                    entries[reduced] = e;
                    srcs[reduced] = e->src;
                    dsts[reduced] = e->dst;
                    bytes[reduced++] = e->nbytes;
                    agreed_total += e->nbytes;
                } else {
                    later[waiting++] = e;
                }
            }
            memcpy(entries + reduced, later, (size_t)waiting * sizeof *later);
            free(later);
            total = agreed_total;
            agreed = in_data = 1;
            err = run_groups(entries, srcs, dsts, bytes, reduced, fused, threshold, &tuning, comm);
        }
    }
    Py_END_ALLOW_THREADS
    free(pointers);
    PyObject *result = NULL;
    if (err) {
        if (err == -1) PyErr_NoMemory();
        else raise_mpi_error(in_data ? "allreduce" : "a negotiation round", err);
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        PyObject *list = take_queue(entries, n);
        if (list && value) PyObject_SetAttr(value, str_entries, list);
        Py_XDECREF(list);
        PyErr_Restore(type, value, traceback);
    } else if (!agreed) {
        result = take_queue(entries, n);
    } else {
        result = PyLong_FromSize_t(total);
        for (Py_ssize_t i = 0; i < reduced; i++) {
            LaneEntry *e = entries[i];
            if (result && set_handle(e->handle, Py_True, e->result ? e->result : e->output, Py_None)) Py_CLEAR(result);
            if (e->call) {  /* the caller's arrays are not the lane's to keep */
                Py_CLEAR(e->tensor);
                Py_CLEAR(e->output);
                Py_CLEAR(e->result);
                Py_CLEAR(e->handle);
            }
            Py_DECREF(e);
        }
        if (reduced < n && requeue(entries + reduced, n - reduced) < 0) Py_CLEAR(result);
    }
    free(entries);
    return result;
}

static Py_ssize_t named_slot(PyTypeObject *type, const char *name) {
    PyObject *key = PyUnicode_InternFromString(name);
    if (!key) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = slot_offset(type, key);
    Py_DECREF(key);
    return offset;
}

/* lane_configure(slow_start, handle_type, slow_call, global_process_set, ops): what start() and
 * lane_allreduce_async call when they cannot queue; the Handle class; the global process set;
 * the ReduceOp members in code order. */
static PyObject *py_lane_configure(PyObject *self, PyObject *args) {
    PyObject *slow_start, *slow_call, *sync_slow_call, *global_set, *ops, *counter, *names;
    PyTypeObject *handle_type;
    if (!PyArg_ParseTuple(args, "OO!OOOO!OO!", &slow_start, &PyType_Type, &handle_type, &slow_call, &sync_slow_call,
                          &global_set, &PyTuple_Type, &ops, &counter, &PyList_Type, &names))
        return NULL;
    if (PyTuple_GET_SIZE(ops) != RT_NUM_OPS)
        return PyErr_Format(PyExc_ValueError, "lane_configure needs the %d element-wise ops", RT_NUM_OPS);
    if (!PyIter_Check(counter) || PyList_GET_SIZE(names) == 0)
        return PyErr_Format(PyExc_TypeError, "lane_configure needs the unnamed counter and its names");
    Py_INCREF(slow_start);
    Py_XSETREF(lane.slow_start, slow_start);
    Py_INCREF(slow_call);
    Py_XSETREF(lane.slow_call, slow_call);
    Py_INCREF(sync_slow_call);
    Py_XSETREF(lane.sync_slow_call, sync_slow_call);
    Py_INCREF(counter);
    Py_XSETREF(lane.unnamed_counter, counter);
    Py_INCREF(names);
    Py_XSETREF(lane.unnamed_names, names);
    Py_INCREF(global_set);
    Py_XSETREF(lane.global_set, global_set);
    for (int i = 0; i < RT_NUM_OPS; i++) {
        PyObject *op = PyTuple_GET_ITEM(ops, i);
        Py_INCREF(op);
        Py_XSETREF(lane.ops[i], op);
    }
    if (handle_type != handle_slots.type) {
        Py_ssize_t done = slot_offset(handle_type, str_done), result = slot_offset(handle_type, str_result),
                   error = slot_offset(handle_type, str_error);
        Py_XDECREF(handle_slots.type);
        handle_slots.type = NULL;
        handle_slots.fresh = 0;
        if (done >= 0 && result >= 0 && error >= 0) {
            Py_INCREF(handle_type);
            handle_slots.type = handle_type;
            handle_slots.done = done;
            handle_slots.result = result;
            handle_slots.error = error;
            handle_slots.kind = named_slot(handle_type, "kind");
            handle_slots.name = named_slot(handle_type, "name");
            handle_slots.grouped = named_slot(handle_type, "grouped");
            handle_slots.engine = named_slot(handle_type, "engine");
            handle_slots.finish = named_slot(handle_type, "finish");
            handle_slots.parts = named_slot(handle_type, "parts");
            handle_slots.deferred = named_slot(handle_type, "deferred");
            handle_slots.fresh = handle_slots.kind >= 0 && handle_slots.name >= 0 && handle_slots.grouped >= 0 &&
                                 handle_slots.engine >= 0 && handle_slots.finish >= 0 && handle_slots.parts >= 0 &&
                                 handle_slots.deferred >= 0;
        }
    }
    Py_RETURN_NONE;
}


static PyObject *py_lane_open(PyObject *self, PyObject *arg) {
    lane.open = PyObject_IsTrue(arg) == 1;
    Py_RETURN_NONE;
}

static PyObject *py_lane_new_generation(PyObject *self, PyObject *unused) {
    PyObject *calls = PyDict_New();  /* an engine's calls start afresh */
    if (!calls) return NULL;
    Py_XSETREF(lane.calls, calls);
    Py_CLEAR(lane.engine);  /* an engine that stopped: lane_engine names the new one */
    Py_CLEAR(lane.state);
    Py_CLEAR(lane.pending);
    Py_CLEAR(lane.requests);
    Py_CLEAR(lane.lock_acquire);
    Py_CLEAR(lane.lock_release);
    Py_CLEAR(lane.tuning);
    lane.direct_calls = 0;
    lane.nwords = 1;
    if (lane.bits_known) memset(lane.bit_changed, 0, lane.bits_known * sizeof *lane.bit_changed);
    lane.open = 0;
    lane.cache_generation = 0;
    Py_CLEAR(lane.doorbell);
    for (Py_ssize_t i = 0; i < lane.length; i++) Py_DECREF(lane.queue[i]);  /* an engine that stopped left them */
    lane.length = 0;
    lane.bytes = 0;
    return PyLong_FromLongLong(++lane.generation);
}

static PyObject *py_lane_cache_generation(PyObject *self, PyObject *args) {
    long long generation;
    Py_ssize_t nwords;
    PyObject *bits;
    if (!PyArg_ParseTuple(args, "LnO!", &generation, &nwords, &PyTuple_Type, &bits)) return NULL;
    if (nwords < 1) return PyErr_Format(PyExc_ValueError, "a bit vector has at least one word");
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(bits); i++) {
        const Py_ssize_t bit = PyLong_AsSsize_t(PyTuple_GET_ITEM(bits, i));
        if (bit < 0) return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "bad bit %zd", bit);
        if ((size_t)bit >= lane.bits_known) {
            size_t known = lane.bits_known ? lane.bits_known : 64;
            while (known <= (size_t)bit) known *= 2;
            long long *grown = realloc(lane.bit_changed, known * sizeof *grown);
            if (!grown) return PyErr_NoMemory();
            memset(grown + lane.bits_known, 0, (known - lane.bits_known) * sizeof *grown);
            lane.bit_changed = grown;
            lane.bits_known = known;
        }
        lane.bit_changed[bit] = generation;
    }
    lane.cache_generation = generation;
    lane.nwords = (size_t)nwords;
    Py_RETURN_NONE;
}


static PyObject *py_lane_doorbell(PyObject *self, PyObject *arg) {
    if (arg == Py_None) {
        Py_CLEAR(lane.doorbell);
    } else {
        Py_INCREF(arg);
        Py_XSETREF(lane.doorbell, arg);
    }
    Py_RETURN_NONE;
}




static PyObject *py_lane_length(PyObject *self, PyObject *unused) { return PyLong_FromSsize_t(lane.length); }

static PyObject *py_lane_bytes(PyObject *self, PyObject *unused) { return PyLong_FromSize_t(lane.bytes); }

PyMethodDef lane_methods[] = {
    {"lane_round", py_lane_round, METH_VARARGS,
     "lane_round(ctrl_f, words, comm_f, fused, fusion_threshold, fallback_rounds, small, segment, shm, hierarchical) "
     "-> None | int | list"},
    {"lane_take", py_lane_take, METH_NOARGS, "lane_take() -> list: the queued entries, the queue emptied"},
    {"lane_configure", py_lane_configure, METH_VARARGS,
     "lane_configure(slow_start, handle_type, slow_call, global_process_set, ops): what start() and "
     "lane_allreduce_async call when they cannot queue; the Handle class; the global set; the ReduceOps by code"},
    {"lane_open", py_lane_open, METH_O, "lane_open(bool): whether starts may queue in the lane"},
    {"lane_new_generation", py_lane_new_generation, METH_NOARGS,
     "lane_new_generation() -> int: a new engine's generation (the lane closed, entries of older ones stale)"},
    {"lane_cache_generation", py_lane_cache_generation, METH_VARARGS,
     "lane_cache_generation(generation, words, bits): process set 0's response cache changed these bits' owners "
     "(its bit vector now has `words` words)"},
    {"lane_doorbell", py_lane_doorbell, METH_O, "lane_doorbell(callable or None): rung by a start while the engine dozes"},
    {"lane_length", py_lane_length, METH_NOARGS, "lane_length() -> int: entries queued"},
    {"lane_bytes", py_lane_bytes, METH_NOARGS, "lane_bytes() -> int: their bytes"},
    
    {NULL, NULL, 0, NULL}};

int lane_add_to_module(PyObject *module) {
    str_done = PyUnicode_InternFromString("done");
    str_result = PyUnicode_InternFromString("result");
    str_error = PyUnicode_InternFromString("error");
    str_entries = PyUnicode_InternFromString("entries");
    str_allreduce = PyUnicode_InternFromString("allreduce");
    lane.nwords = 1;
    if (!str_done || !str_result || !str_error || !str_entries || !str_allreduce || lane_calls_ready() < 0 ||
        PyType_Ready(&LaneEntryType) < 0)
        return -1;
    Py_INCREF(&LaneEntryType);
    return PyModule_AddObject(module, "LaneEntry", (PyObject *)&LaneEntryType);
}
