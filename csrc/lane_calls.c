/* The public calls of the persistent lane (persistent_lane.c), in C: ringtrain.allreduce(_) and
 * allreduce_async(_) of one tensor (lane_allreduce, lane_allreduce_async), and ringtrain.torch's
 * (lane_torch_allreduce, lane_torch_allreduce_async). A call whose name's entry the engine has
 * taught its cache bit, with exactly the signature it was negotiated with and nothing of its name
 * in flight, queues in the lane with a new Handle, or (synchronous, with nothing else in flight
 * on set 0) runs its round and allreduce in the caller's thread. Unnamed calls are named here
 * from the same counter as requests.unnamed_name. Anything else goes to the Python path, with
 * the name it got. A torch tensor takes the lane without tensor.numpy(): the binding's Python
 * path teaches its name's entry the tensor (lane_learn_source), and a later call with the same
 * tensor object over the same memory gets its numpy view made here (torch_view). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_22_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL RINGTRAIN_ARRAY_API  /* imported by module.c */
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#include <stdlib.h>
#include <string.h>
#include "binding.h"
#include "lane.h"

static PyObject *str_join_request, *str_allreduce_args, *str_last_round, *str_round_ended, *str_activity,
    *str_fallback;

/* A number as a double, for a scale factor: 1 if it is a float or an int, else 0 (the Python
 * path then checks it). */
static int plain_number(PyObject *obj, double *value) {
    if (PyFloat_CheckExact(obj)) {
        *value = PyFloat_AS_DOUBLE(obj);
        return 1;
    }
    if (PyLong_CheckExact(obj)) {
        *value = PyLong_AsDouble(obj);
        if (*value == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    return 0;
}

/* The entry an allreduce_async call can queue on, or NULL (with an error set only if one
 * happened): its name's entry, taught its bit under the current cache, with the signature of
 * this call (dtype, shape, op, scale factors), on process set 0, and nothing of its name in
 * flight. Whatever does not match exactly goes to the Python path, which checks it fully. */
static LaneEntry *call_entry_of(LaneEntry *entry, PyObject *const *args, int in_place);

static LaneEntry *call_entry(PyObject *const *args, PyObject *name, int in_place) {
    if (!lane.calls || !PyUnicode_Check(name)) return NULL;
    PyObject *found = PyDict_GetItemWithError(lane.calls, name);  /* borrowed */
    if (!found || !PyObject_TypeCheck(found, &LaneEntryType)) return NULL;
    return call_entry_of((LaneEntry *)found, args, in_place);
}

/* The entry takes this call, its tensor apart (call_entry_of checks an array, torch_entry a torch
 * tensor): the lane open on set 0, the op and scale factors it was negotiated with, its bit
 * current, and nothing of its name in flight. 0 (an error set only if one happened) or 1. */
static int entry_takes(LaneEntry *entry, PyObject *const *args) {
    PyObject *op = args[1];
    if (!lane.open || !handle_slots.fresh || args[5] != lane.global_set) return 0;
    int code = -1;
    for (int i = 0; i < RT_NUM_OPS; i++)
        if (op == lane.ops[i]) code = i;
    double prescale, postscale;
    if (code < 0 || !plain_number(args[3], &prescale) || !plain_number(args[4], &postscale)) return 0;
    if (!entry->call || !bit_current(entry) || entry->op != code || entry->prescale != prescale ||
        entry->postscale != postscale)
        return 0;
    /* in flight: the Python path says so */
    if (entry->handle && handle_done(entry->handle) != 1) return 0;
    if (entry->adopted) {
        PyObject *last = PyWeakref_GetObject(entry->adopted);  /* borrowed; None once freed */
        if (!last || (last != Py_None && handle_done(last) != 1)) return 0;
    }
    return 1;
}

/* call_entry, its name's entry found. */
static LaneEntry *call_entry_of(LaneEntry *entry, PyObject *const *args, int in_place) {
    if (!PyArray_CheckExact(args[0])) return NULL;
    PyArrayObject *array = (PyArrayObject *)args[0];
    if (!PyArray_IS_C_CONTIGUOUS(array) || (in_place && !PyArray_ISWRITEABLE(array)) || PyArray_NDIM(array) != entry->ndim ||
        memcmp(PyArray_DIMS(array), entry->shape, (size_t)entry->ndim * sizeof(npy_intp)))
        return NULL;
    PyArray_Descr *descr = PyArray_DESCR(array);
    if ((PyObject *)descr != entry->descr && !PyArray_EquivTypes(descr, (PyArray_Descr *)entry->descr)) return NULL;
    return entry_takes(entry, args) ? entry : NULL;
}

/* lane_allreduce_async(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place)
 * -> Handle: ringtrain.allreduce_async(_) itself. A training loop's steady state (a named tensor
 * whose entry the engine has taught its bit) is queued in the lane with a new Handle, as a
 * persistent allreduce's start() is: no Request, no Python frame. Anything else goes to
 * collectives._allreduce_async, which checks everything and submits a Request. */
/* The call's name: its own, or (None, while the lane is open on set 0) the next unnamed one of
 * requests.unnamed_name, from the same counter: a new reference, or NULL with an error. */
static PyObject *call_name(PyObject *const *args) {
    PyObject *name = args[2];
    if (name != Py_None || !lane.open || args[5] != lane.global_set || !lane.unnamed_counter) {
        Py_INCREF(name);
        return name;
    }
    PyObject *number = PyIter_Next(lane.unnamed_counter);
    if (!number) return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_RuntimeError, "the unnamed counter ended");
    const Py_ssize_t n = PyList_GET_SIZE(lane.unnamed_names), i = PyLong_AsSsize_t(number) % n;
    Py_DECREF(number);
    if (i < 0) return NULL;
    PyObject *named = PyList_GET_ITEM(lane.unnamed_names, i);
    Py_INCREF(named);
    return named;
}

/* The Python path, with the name this call got (an unnamed call's counter moves only once). */
static PyObject *slow_path(PyObject *slow, PyObject *const *args, Py_ssize_t nargs, PyObject *name) {
    if (!slow) return PyErr_Format(PyExc_RuntimeError, "internal: the lane has no Python path");
    PyObject *with_name[7];
    for (Py_ssize_t i = 0; i < nargs && i < 7; i++) with_name[i] = args[i];
    with_name[2] = name;
    return PyObject_Vectorcall(slow, with_name, (size_t)nargs, NULL);
}

/* The call queued on its entry with a new Handle: src reduced into dst. tensor and output keep
 * them alive while queued (the same object in place); result: what the Handle completes with
 * instead of output (a torch call's tensor), or NULL; finish: the Handle's finish (torch: the
 * output array as a tensor), or NULL. */
static PyObject *queue_entry(LaneEntry *entry, PyObject *tensor, PyObject *output, char *src, char *dst,
                             PyObject *result, PyObject *finish) {
    PyObject *handle = new_handle(entry->name, entry->engine);
    if (!handle) return NULL;
    if (finish) set_slot(handle, handle_slots.finish, finish);
    Py_INCREF(tensor);
    Py_XSETREF(entry->tensor, tensor);
    Py_INCREF(output);
    Py_XSETREF(entry->output, output);
    Py_XSETREF(entry->handle, handle);
    Py_XINCREF(result);
    Py_XSETREF(entry->result, result);
    Py_CLEAR(entry->adopted);
    entry->src = src;
    entry->dst = dst;
    if (enqueue(entry)) return NULL;
    Py_INCREF(handle);
    return handle;
}

/* queue_entry for an array, reduced into a new array or into itself in place. */
static PyObject *queue_call(LaneEntry *entry, PyObject *tensor, int in_place, PyObject *result, PyObject *finish) {
    PyObject *output = tensor;
    if (in_place) Py_INCREF(output);
    else if (!(output = PyArray_NewLikeArray((PyArrayObject *)tensor, NPY_CORDER, NULL, 0))) return NULL;
    PyObject *handle = queue_entry(entry, tensor, output, PyArray_BYTES((PyArrayObject *)tensor),
                                   PyArray_BYTES((PyArrayObject *)output), result, finish);
    Py_DECREF(output);
    return handle;
}

static PyObject *py_lane_allreduce_async(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) return PyErr_Format(PyExc_TypeError, "lane_allreduce_async takes 7 arguments, got %zd", nargs);
    const int in_place = args[6] == Py_True;
    PyObject *name = call_name(args);
    if (!name) return NULL;
    LaneEntry *entry = call_entry(args, name, in_place);
    if (!entry) {
        PyObject *result = PyErr_Occurred() ? NULL : slow_path(lane.slow_call, args, nargs, name);
        Py_DECREF(name);
        return result;
    }
    Py_DECREF(name);
    return queue_call(entry, args[0], in_place, NULL, NULL);
}

/* What torch_view asks a tensor, as torch.Tensor's own descriptors (looked up once, by
 * lane_configure_torch): asking them directly skips the generic lookup, which looks in the
 * instance's __dict__ first, and halves the cost of each question. */
enum { ASK_DATA_PTR, ASK_DTYPE, ASK_NBYTES, ASK_IS_CONTIGUOUS, ASK_SHAPE, ASK_COUNT };
static const char *const ask_names[ASK_COUNT] = {"data_ptr", "dtype", "nbytes", "is_contiguous", "shape"};
static const int ask_calls[ASK_COUNT] = {1, 0, 0, 1, 0};
static PyObject *torch_descrs[ASK_COUNT];

/* The answer, or NULL with the error cleared (a tensor that cannot answer is one the Python path
 * handles). */
static PyObject *ask(PyObject *tensor, int what) {
    PyObject *descr = torch_descrs[what], *value;
    if (ask_calls[what]) value = PyObject_Vectorcall(descr, &tensor, 1, NULL);
    else value = Py_TYPE(descr)->tp_descr_get(descr, tensor, (PyObject *)Py_TYPE(tensor));
    if (!value) PyErr_Clear();
    return value;
}

/* A numpy array over the memory of a torch tensor that the name's last call reduced, the tensor
 * its base; NULL otherwise, with no error (the call then takes the binding's Python path). What
 * tensor.numpy() makes, without its cost. The same tensor object (the binding's Python path
 * taught it, lane_learn_source), still contiguous over the same bytes with the same dtype: each
 * question costs about 50 ns in torch, so in place the shape is not asked: reshaped in place to
 * the same size, a contiguous tensor keeps its elements in the same order, and the call reduces
 * them as before into the tensor itself. An out-of-place call's output takes the shape, so there
 * it must not have changed. */
static LaneEntry *torch_entry(PyObject *tensor, PyObject *name, int in_place) {
    if (!lane.torch_type || Py_TYPE(tensor) != lane.torch_type || !lane.calls || !PyUnicode_Check(name)) return NULL;
    PyObject *found = PyDict_GetItemWithError(lane.calls, name);  /* borrowed */
    if (!found || !PyObject_TypeCheck(found, &LaneEntryType)) {
        PyErr_Clear();
        return NULL;
    }
    LaneEntry *entry = (LaneEntry *)found;
    if (!entry->source || PyWeakref_GetObject(entry->source) != tensor) return NULL;
    PyObject *data = ask(tensor, ASK_DATA_PTR), *dtype = NULL, *nbytes = NULL, *contiguous = NULL, *shape = NULL;
    int same = data && PyLong_AsVoidPtr(data) == entry->source_data &&
               (dtype = ask(tensor, ASK_DTYPE)) == entry->source_dtype &&
               (nbytes = ask(tensor, ASK_NBYTES)) && PyLong_AsSize_t(nbytes) == entry->nbytes &&
               (contiguous = ask(tensor, ASK_IS_CONTIGUOUS)) == Py_True &&
               (in_place || ((shape = ask(tensor, ASK_SHAPE)) &&
                             PyObject_RichCompareBool(shape, entry->source_shape, Py_EQ) == 1));
    Py_XDECREF(data); Py_XDECREF(dtype); Py_XDECREF(nbytes); Py_XDECREF(contiguous); Py_XDECREF(shape);
    PyErr_Clear();
    return same ? entry : NULL;
}

static PyObject *torch_view(PyObject *tensor, PyObject *name, int in_place, LaneEntry **found_entry) {
    LaneEntry *entry = torch_entry(tensor, name, in_place);
    PyObject *view = entry ? lane_view(entry, entry->source_data, tensor) : NULL;
    if (view) *found_entry = entry;
    return view;
}

/* The arguments with the tensor replaced by its view. */
static void with_view(PyObject **into, PyObject *const *args, Py_ssize_t nargs, PyObject *view) {
    for (Py_ssize_t i = 0; i < nargs && i < 7; i++) into[i] = args[i];
    into[0] = view;
}

/* lane_torch_allreduce_async(tensor, op, name, prescale_factor, postscale_factor, process_set,
 * in_place) -> Handle: ringtrain.torch's allreduce_async(_) of one tensor. A tensor the name's
 * last call reduced queues as lane_allreduce_async queues an array; its Handle completes with
 * the tensor itself (in place) or turns the output into a tensor. Anything else: the binding's
 * Python path (mpi_ops._allreduce_async_one), with the call's name. */
static PyObject *py_lane_torch_allreduce_async(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) return PyErr_Format(PyExc_TypeError, "lane_torch_allreduce_async takes 7 arguments, got %zd", nargs);
    const int in_place = args[6] == Py_True;
    PyObject *name = call_name(args);
    if (!name) return NULL;
    LaneEntry *entry = NULL;
    PyObject *view = NULL, *viewed[7], *result = NULL;
    if (in_place) {  /* queued over the tensor's own memory, no view: the lane's entries() make one if asked */
        entry = torch_entry(args[0], name, 1);
        if (entry && !entry_takes(entry, args)) entry = NULL;
        if (entry) result = queue_entry(entry, args[0], args[0], entry->source_data, entry->source_data, args[0], NULL);
    } else if ((view = torch_view(args[0], name, 0, &entry))) {
        with_view(viewed, args, nargs, view);
        entry = call_entry_of(entry, viewed, 0);
        if (entry) result = queue_call(entry, view, 0, NULL, lane.torch_from_numpy);
    }
    if (!entry) result = PyErr_Occurred() ? NULL : slow_path(lane.torch_slow_call, args, nargs, name);
    Py_XDECREF(view);
    Py_DECREF(name);
    return result;
}

/* Set 0 has nothing in flight in Python (Engine.allreduce_now's condition): 1, 0, or -1. */
static int engine_idle(void) {
    if (!lane.open || lane.length || !lane.state || PyDict_GET_SIZE(lane.pending)) return 0;
    Py_ssize_t queued = PyObject_Length(lane.requests);
    if (queued) return queued < 0 ? -1 : 0;
    PyObject *join = PyObject_GetAttr(lane.state, str_join_request);
    if (!join) return -1;
    Py_DECREF(join);
    return join == Py_None;
}

static int set_float(PyObject *obj, PyObject *attr, double value) {
    PyObject *number = PyFloat_FromDouble(value);
    if (!number) return -1;
    const int err = PyObject_SetAttr(obj, attr, number);
    Py_DECREF(number);
    return err;
}

/* lane_allreduce(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place)
 * -> the result: ringtrain.allreduce(_) itself. The steady path of Engine.allreduce_now without
 * its Python: a tensor whose name's entry the engine has taught its bit, with nothing else in
 * flight on set 0, is reduced in this thread by one round that carries its bit (and, if small,
 * its data). The other ranks see exactly the round the general path would run. If they
 * proposed something else, or the round failed, Engine._direct_round_ended goes on from there
 * in Python; anything else goes to collectives._allreduce_sync. */
/* The synchronous call of `args` (its tensor an array) under `name` (a new reference, released
 * here): run here if entry (or NULL) may, else slow(caller_args) with the name. */
static PyObject *sync_call(PyObject *const *args, PyObject *const *caller_args, Py_ssize_t nargs, PyObject *name,
                           LaneEntry *entry, PyObject *slow) {
    const int in_place = args[6] == Py_True;
    int idle = entry ? engine_idle() : 0;
    PyObject *locked = NULL;
    if (idle > 0) {  /* not while the engine thread is in a round: the call then queues like any other */
        locked = PyObject_CallOneArg(lane.lock_acquire, Py_False);
        if (!locked) idle = -1;
        else if (locked != Py_True) idle = 0;
        else if ((idle = engine_idle()) <= 0) {
            PyObject *released = PyObject_CallNoArgs(lane.lock_release);
            if (!released) idle = -1;
            Py_XDECREF(released);
        }
        Py_XDECREF(locked);
    }
    if (idle <= 0 || PyErr_Occurred()) {
        PyObject *result = idle < 0 || PyErr_Occurred() ? NULL : slow_path(slow, caller_args, nargs, name);
        Py_DECREF(name);
        return result;
    }
    /* the round lock is held from here until the call is done or handed to Python */
    PyObject *tensor = args[0], *output = tensor, *result = NULL, *error = NULL, *args_tuple = NULL;
    Py_ssize_t tuning_values[4] = {0};
    if (in_place) Py_INCREF(output);
    else output = PyArray_NewLikeArray((PyArrayObject *)tensor, NPY_CORDER, NULL, 0);
    PyObject *allreduce_args = output ? PyObject_GetAttr(lane.tuning, str_allreduce_args) : NULL;
    if (allreduce_args && PyTuple_Check(allreduce_args) && PyTuple_GET_SIZE(allreduce_args) == 4)
        for (int i = 0; i < 4; i++) tuning_values[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(allreduce_args, i));
    else if (allreduce_args)
        PyErr_SetString(PyExc_TypeError, "internal: tuning.allreduce_args is not 4 numbers");
    Py_XDECREF(allreduce_args);
    const double started = rt_now();
    if (!PyErr_Occurred() && lane.words_capacity < lane.nwords) {
        uint64_t *grown = realloc(lane.words, lane.nwords * sizeof *grown);
        if (!grown) PyErr_NoMemory();
        else {
            lane.words = grown;
            lane.words_capacity = lane.nwords;
        }
    }
    if (PyErr_Occurred() || set_float(lane.engine, str_last_round, started) ||
        set_float(lane.engine, str_round_ended, started))
        goto release;
    const size_t nwords = lane.nwords;
    uint64_t *words = lane.words;
    memset(words, 0, nwords * sizeof *words);
    words[0] |= 1;  /* NO_SLOW_PATH_BIT */
    words[entry->bit / 64] |= (uint64_t)1 << (entry->bit % 64);
    char *src = PyArray_BYTES((PyArrayObject *)tensor), *dst = PyArray_BYTES((PyArrayObject *)output);
    size_t bytes = entry->nbytes;
    const int dtype = entry->dtype, op = entry->op;
    const double prescale = entry->prescale, postscale = entry->postscale;
    rt_tuning tuning = tuning_of(tuning_values[0], tuning_values[1], tuning_values[2], tuning_values[3]);
    int err, agreed = 0, in_data = 0;
    MPI_Comm ctrl = lane.ctrl, comm = lane.comm;
    Py_BEGIN_ALLOW_THREADS
    err = round_and_allreduce(ctrl, words, nwords, comm, &src, &dst, &bytes, 1, bytes, NULL, dtype, op, prescale,
                              postscale, round_data_bound(tuning_values[0]), &tuning, &agreed, &in_data);
    Py_END_ALLOW_THREADS
    if (!err && agreed) {
        lane.direct_calls++;
        if (PyObject_SetAttr(lane.engine, str_activity, Py_True) == 0) {
            result = output;
            Py_INCREF(result);
        }
        goto release;
    }
    /* the others proposed something else (words hold the agreed bits), or the round failed:
     * the engine goes on in Python, and releases the lock */
    if (err) {
        if (err == -1) PyErr_NoMemory();
        else raise_mpi_error(in_data ? "allreduce" : "a negotiation round", err);
        PyObject *type, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        PyErr_NormalizeException(&type, &error, &traceback);
        if (error && traceback) PyException_SetTraceback(error, traceback);
        Py_XDECREF(type);
        Py_XDECREF(traceback);
    }
    npy_intp n = (npy_intp)nwords;
    PyObject *agreed_words = PyArray_SimpleNew(1, &n, NPY_UINT64);
    if (agreed_words) {
        memcpy(PyArray_DATA((PyArrayObject *)agreed_words), words, nwords * sizeof *words);
        PyObject *started_obj = PyFloat_FromDouble(started);
        PyObject *code = PyLong_FromLong(dtype), *op_code = PyLong_FromLong(op);
        PyObject *pre = PyFloat_FromDouble(prescale), *post = PyFloat_FromDouble(postscale);
        if (started_obj && code && op_code && pre && post)
            args_tuple = PyTuple_Pack(11, name, tensor, output, code, op_code, pre, post, agreed_words, started_obj,
                                      error ? error : Py_None, in_place ? Py_True : Py_False);
        Py_XDECREF(started_obj); Py_XDECREF(code); Py_XDECREF(op_code); Py_XDECREF(pre); Py_XDECREF(post);
        Py_DECREF(agreed_words);
    }
    if (args_tuple) {
        PyObject *method = PyObject_GetAttr(lane.engine, str_fallback);
        if (method) {
            result = PyObject_Call(method, args_tuple, NULL);  /* releases the lock */
            Py_DECREF(method);
            Py_DECREF(args_tuple);
            Py_XDECREF(error);
            Py_XDECREF(output);
            Py_DECREF(name);
            return result;
        }
        Py_DECREF(args_tuple);
    }
    Py_XDECREF(error);
release:
    {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject *released = PyObject_CallNoArgs(lane.lock_release);
        Py_XDECREF(released);
        if (type) {
            Py_XDECREF(result);
            result = NULL;
            PyErr_Restore(type, value, traceback);
        } else if (!released) {
            Py_CLEAR(result);
        }
    }
    Py_XDECREF(output);
    Py_DECREF(name);
    return result;
}

static PyObject *py_lane_allreduce(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) return PyErr_Format(PyExc_TypeError, "lane_allreduce takes 7 arguments, got %zd", nargs);
    PyObject *name = call_name(args);
    if (!name) return NULL;
    LaneEntry *entry = call_entry(args, name, args[6] == Py_True);
    return sync_call(args, args, nargs, name, entry, lane.sync_slow_call);
}

/* lane_torch_allreduce(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place)
 * -> the tensor (in place) or a new one: ringtrain.torch's allreduce(_), as lane_allreduce runs
 * an array's, for a tensor the name's last call reduced; anything else goes to the binding's
 * Python path (mpi_ops._allreduce_now_one). */
static PyObject *py_lane_torch_allreduce(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) return PyErr_Format(PyExc_TypeError, "lane_torch_allreduce takes 7 arguments, got %zd", nargs);
    const int in_place = args[6] == Py_True;
    PyObject *name = call_name(args);
    if (!name) return NULL;
    LaneEntry *entry = NULL;
    PyObject *view = torch_view(args[0], name, in_place, &entry), *viewed[7];
    if (view) {
        with_view(viewed, args, nargs, view);
        entry = call_entry_of(entry, viewed, in_place);
    }
    if (!entry) {
        Py_XDECREF(view);
        PyObject *result = PyErr_Occurred() ? NULL : slow_path(lane.torch_sync_slow_call, args, nargs, name);
        Py_DECREF(name);
        return result;
    }
    /* (if it cannot run here after all, the numpy API's Python path takes the view) */
    PyObject *result = sync_call(viewed, viewed, nargs, name, entry, lane.sync_slow_call);
    Py_DECREF(view);
    if (!result) return NULL;
    if (in_place) {  /* the caller's tensor holds the result */
        Py_DECREF(result);
        Py_INCREF(args[0]);
        return args[0];
    }
    PyObject *tensor = PyObject_CallOneArg(lane.torch_from_numpy, result);
    Py_DECREF(result);
    return tensor;
}

/* lane_engine(engine, state, round_lock, tuning, ctrl_f, comm_f): set 0 of the engine that the
 * synchronous call serves (its pending requests, queue and join, its round lock, the tuning). */
static PyObject *py_lane_engine(PyObject *self, PyObject *args) {
    PyObject *engine, *state, *lock, *tuning;
    int ctrl_f, comm_f;
    if (!PyArg_ParseTuple(args, "OOOOii", &engine, &state, &lock, &tuning, &ctrl_f, &comm_f)) return NULL;
    PyObject *pending = PyObject_GetAttrString(state, "pending"), *queue = PyObject_GetAttrString(state, "queue"),
             *acquire = PyObject_GetAttrString(lock, "acquire"), *release = PyObject_GetAttrString(lock, "release");
    if (!pending || !queue || !acquire || !release || !PyDict_Check(pending)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "lane_engine: state.pending must be a dict");
        Py_XDECREF(pending); Py_XDECREF(queue); Py_XDECREF(acquire); Py_XDECREF(release);
        return NULL;
    }
    Py_INCREF(engine); Py_XSETREF(lane.engine, engine);
    Py_INCREF(state); Py_XSETREF(lane.state, state);
    Py_INCREF(tuning); Py_XSETREF(lane.tuning, tuning);
    Py_XSETREF(lane.pending, pending);
    Py_XSETREF(lane.requests, queue);
    Py_XSETREF(lane.lock_acquire, acquire);
    Py_XSETREF(lane.lock_release, release);
    lane.comm = MPI_Comm_f2c(comm_f);
    lane.ctrl = comm_size(lane.comm) == 1 ? MPI_COMM_NULL : MPI_Comm_f2c(ctrl_f);  /* one rank agrees with itself */
    Py_RETURN_NONE;
}

static PyObject *py_lane_direct_calls(PyObject *self, PyObject *unused) { return PyLong_FromLongLong(lane.direct_calls); }

static PyObject *py_lane_calls(PyObject *self, PyObject *unused) {
    if (!lane.calls && !(lane.calls = PyDict_New())) return NULL;
    Py_INCREF(lane.calls);
    return lane.calls;
}

/* lane_configure_torch(tensor_type, slow_call, sync_slow_call, from_numpy): ringtrain.torch's
 * calls, lane_torch_allreduce(_async), and the binding's Python paths for what they cannot take. */
static PyObject *py_lane_configure_torch(PyObject *self, PyObject *args) {
    PyTypeObject *type;
    PyObject *slow_call, *sync_slow_call, *from_numpy;
    if (!PyArg_ParseTuple(args, "O!OOO", &PyType_Type, &type, &slow_call, &sync_slow_call, &from_numpy)) return NULL;
    for (int i = 0; i < ASK_COUNT; i++) {
        PyObject *key = PyUnicode_InternFromString(ask_names[i]);
        if (!key) return NULL;
        PyObject *descr = _PyType_Lookup(type, key);  /* borrowed */
        Py_DECREF(key);
        if (!descr || (ask_calls[i] ? !PyCallable_Check(descr) : !Py_TYPE(descr)->tp_descr_get))
            return PyErr_Format(PyExc_TypeError, "%s has no %s", type->tp_name, ask_names[i]);
        Py_INCREF(descr);
        Py_XSETREF(torch_descrs[i], descr);
    }
    Py_INCREF(type);
    Py_XSETREF(lane.torch_type, type);
    Py_INCREF(slow_call);
    Py_XSETREF(lane.torch_slow_call, slow_call);
    Py_INCREF(sync_slow_call);
    Py_XSETREF(lane.torch_sync_slow_call, sync_slow_call);
    Py_INCREF(from_numpy);
    Py_XSETREF(lane.torch_from_numpy, from_numpy);
    Py_RETURN_NONE;
}

/* lane_learn_source(name, tensor, array) -> bool: the name's call entry remembers that `array`
 * (its call's array, tensor.numpy()) is a C-contiguous view of all of `tensor`'s memory, so that
 * the name's next call with the same tensor takes it without numpy() (torch_view). */
static PyObject *py_lane_learn_source(PyObject *self, PyObject *args) {
    PyObject *name, *tensor, *array;
    if (!PyArg_ParseTuple(args, "UOO!", &name, &tensor, &PyArray_Type, &array)) return NULL;
    PyObject *found = lane.calls ? PyDict_GetItemWithError(lane.calls, name) : NULL;
    if (!found || !PyObject_TypeCheck(found, &LaneEntryType) || !((LaneEntry *)found)->call ||
        !lane.torch_type || Py_TYPE(tensor) != lane.torch_type) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_FALSE;
    }
    LaneEntry *entry = (LaneEntry *)found;
    PyArrayObject *view = (PyArrayObject *)array;
    PyObject *data = ask(tensor, ASK_DATA_PTR), *dtype = ask(tensor, ASK_DTYPE), *shape = ask(tensor, ASK_SHAPE),
             *contiguous = ask(tensor, ASK_IS_CONTIGUOUS), *ref = NULL;
    const int fits = data && dtype && shape && contiguous == Py_True && PyArray_IS_C_CONTIGUOUS(view) &&
                     PyLong_AsVoidPtr(data) == PyArray_DATA(view) && PyArray_NDIM(view) == entry->ndim &&
                     !memcmp(PyArray_DIMS(view), entry->shape, (size_t)entry->ndim * sizeof(npy_intp)) &&
                     PyArray_EquivTypes(PyArray_DESCR(view), (PyArray_Descr *)entry->descr) &&
                     (ref = PyWeakref_NewRef(tensor, NULL));
    PyErr_Clear();
    if (fits) {
        Py_XSETREF(entry->source, ref);
        entry->source_data = PyArray_DATA(view);
        Py_INCREF(shape);
        Py_XSETREF(entry->source_shape, shape);
        Py_INCREF(dtype);
        Py_XSETREF(entry->source_dtype, dtype);
    }
    Py_XDECREF(data); Py_XDECREF(dtype); Py_XDECREF(shape); Py_XDECREF(contiguous);
    return PyBool_FromLong(fits);
}

PyMethodDef lane_call_methods[] = {
    {"lane_allreduce_async", (PyCFunction)(void (*)(void))py_lane_allreduce_async, METH_FASTCALL,
     "lane_allreduce_async(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place) -> Handle"},
    {"lane_calls", py_lane_calls, METH_NOARGS,
     "lane_calls() -> dict: name -> LaneEntry of allreduce_async calls (the engine's, made afresh per engine)"},
    {"lane_engine", py_lane_engine, METH_VARARGS,
     "lane_engine(engine, state, round_lock, tuning, ctrl_f, comm_f): set 0 of the engine lane_allreduce serves"},
    {"lane_allreduce", (PyCFunction)(void (*)(void))py_lane_allreduce, METH_FASTCALL,
     "lane_allreduce(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place) -> result"},
    {"lane_direct_calls", py_lane_direct_calls, METH_NOARGS, "lane_direct_calls() -> synchronous calls completed in C"},
    {"lane_configure_torch", py_lane_configure_torch, METH_VARARGS,
     "lane_configure_torch(tensor_type, slow_call, sync_slow_call, from_numpy): ringtrain.torch's lane calls"},
    {"lane_learn_source", py_lane_learn_source, METH_VARARGS,
     "lane_learn_source(name, tensor, array) -> bool: the name's next call with this tensor may skip numpy()"},
    {"lane_torch_allreduce_async", (PyCFunction)(void (*)(void))py_lane_torch_allreduce_async, METH_FASTCALL,
     "lane_torch_allreduce_async(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place) -> Handle"},
    {"lane_torch_allreduce", (PyCFunction)(void (*)(void))py_lane_torch_allreduce, METH_FASTCALL,
     "lane_torch_allreduce(tensor, op, name, prescale_factor, postscale_factor, process_set, in_place) -> tensor"},
    {NULL, NULL, 0, NULL}};

int lane_calls_ready(void) {
    str_join_request = PyUnicode_InternFromString("join_request");
    str_allreduce_args = PyUnicode_InternFromString("allreduce_args");
    str_last_round = PyUnicode_InternFromString("last_round");
    str_round_ended = PyUnicode_InternFromString("round_ended");
    str_activity = PyUnicode_InternFromString("_activity");
    str_fallback = PyUnicode_InternFromString("_direct_round_ended");
    return str_join_request && str_allreduce_args && str_last_round && str_round_ended && str_activity && str_fallback
               ? 0 : -1;
}
