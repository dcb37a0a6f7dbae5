/* What the persistent lane's two files share: persistent_lane.c (the lane: its entries, its
 * queue, the round that runs it) and lane_calls.c (the public calls that queue in it or run in
 * the caller's thread: allreduce(_), allreduce_async(_), and ringtrain.torch's). */
#ifndef RINGTRAIN_LANE_H
#define RINGTRAIN_LANE_H
#include <Python.h>
#include <stdint.h>
#include "ringtrain.h"  /* (after numpy/arrayobject.h, as each file includes it with its own API macros) */

typedef struct {
    PyObject_HEAD
    PyObject *tensor, *output, *name, *engine, *handle;  /* (a call's entry: NULL between calls) */
    PyObject *descr;            /* the tensor's dtype, and its shape: what a call's tensor must have */
    PyObject *adopted;          /* a weak reference to the Handle of the name's last call that took the Python path */
    PyObject *result;           /* what the call's Handle completes with, if not output (a torch call's tensor) */
    /* the framework tensor (torch) whose memory the name's last call reduced, as the binding's
     * Python path saw it: a weak reference, its data pointer, shape and dtype (lane_learn_source) */
    PyObject *source, *source_shape, *source_dtype;
    void *source_data;
    npy_intp shape[NPY_MAXDIMS];
    int ndim;
    int call;                   /* an allreduce_async call's entry (not allreduce_init's), see lane_allreduce_async */
    char *src, *dst;
    size_t nbytes;
    int dtype, op, set_id, bit;
    int waited;                 /* rounds this start has waited in the lane for the other ranks */
    double prescale, postscale;
    long long bit_generation;   /* the response cache's generation when the bit was learned */
    long long generation;       /* the lane's generation (one per engine) when made */
} LaneEntry;

struct lane_state {
    int open;                   /* the engine lets starts queue here (Engine._update_direct) */
    long long generation;       /* bumped for every engine: entries of an older one are stale */
    long long cache_generation; /* set 0's ResponseCache.generation, pushed on every change */
    long long *bit_changed;     /* per bit: the generation at which it last changed hands (0: never) */
    size_t bits_known;
    LaneEntry **queue;          /* started, not yet taken by a round (strong references) */
    Py_ssize_t length, capacity;
    size_t bytes;
    PyObject *doorbell;         /* wakes a dozing engine thread, or NULL */
    PyObject *slow_start;       /* collectives._start_slowly(entry): checks, a Request, submit */
    PyObject *calls;            /* name -> the entry of allreduce_async calls under that name (a dict, per engine) */
    PyObject *slow_call;        /* collectives._allreduce_async: what lane_allreduce_async cannot take */
    PyObject *global_set;       /* ringtrain.global_process_set */
    PyObject *ops[RT_NUM_OPS];  /* the ReduceOp members, by code */
    PyObject *unnamed_counter;  /* requests.unnamed_name's counter and names of ("allreduce", set 0) */
    PyObject *unnamed_names;
    /* the synchronous call (lane_allreduce): set 0's engine state, its round lock, the tuning */
    PyObject *sync_slow_call;   /* collectives._allreduce_sync */
    PyObject *engine, *state, *pending, *requests, *lock_acquire, *lock_release, *tuning;  /* requests: state.queue */
    uint64_t *words;            /* a round's bit vector, lane.nwords long */
    size_t nwords, words_capacity;
    MPI_Comm ctrl, comm;        /* set 0's control and data communicators (ctrl NULL on one rank) */
    long long direct_calls;     /* synchronous calls completed here (Engine.direct_calls adds them) */
    /* ringtrain.torch's calls (lane_configure_torch): torch.Tensor, the binding's Python paths,
     * and what turns an out-of-place call's output array into a tensor */
    PyTypeObject *torch_type;
    PyObject *torch_slow_call, *torch_sync_slow_call, *torch_from_numpy;
};
extern struct lane_state lane;

/* Handle (engine/requests.py) is a class with __slots__: its done, result and error live at
 * fixed offsets in the object, found once from the class's member descriptors, so a round that
 * completes hundreds of handles writes them directly. Any other object goes through setattr. */
struct handle_slots_state {
    PyTypeObject *type;
    Py_ssize_t done, result, error;
    int fresh;  /* every slot found too: lane_allreduce_async can make a Handle (new_handle) */
    Py_ssize_t kind, name, grouped, engine, finish, parts, deferred;
};
extern struct handle_slots_state handle_slots;

extern PyTypeObject LaneEntryType;

void set_slot(PyObject *obj, Py_ssize_t offset, PyObject *value);
int set_handle(PyObject *handle, PyObject *done, PyObject *result, PyObject *error);
int bit_current(const LaneEntry *entry);
PyObject *new_handle(PyObject *name, PyObject *engine);
int handle_done(PyObject *handle);
int enqueue(LaneEntry *entry);
/* A numpy array over data, shaped and typed as the entry's tensor, kept alive by base. */
PyObject *lane_view(LaneEntry *entry, void *data, PyObject *base);

/* lane_calls.c: its interned names made (lane_add_to_module): 0, or -1 with an error */
int lane_calls_ready(void);
#endif
