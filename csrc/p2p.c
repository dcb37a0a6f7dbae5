/* The transport: byte ranges over MPI point-to-point, and the library's one wait loop.
 *
 * Messages are split at RT_MAX_MESSAGE_BYTES so a count always fits MPI's int; both sides split
 * the same way, and MPI's non-overtaking rule keeps the pieces in order under one tag.
 *
 * Waiting: MPI's own waits spin without a limit, so a peer that stops (SIGSTOP, a hung host)
 * hangs every rank behind it. Here a wait tests its requests, spinning briefly and then
 * yielding the core (several ranks may share one), and when no request has completed for the
 * progress deadline it asks liveness.c whether the ranks it waits on are alive and progressing.
 * Only when one has stopped does it give up: a slow but live peer is waited for. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "ringtrain.h"

/* Between two tests that found nothing, the wait yields the core, like MPICH's own blocking
 * waits: when ranks outnumber cores (4 ranks on 2 cores), a waiter that spins holds the core its
 * peer needs for a whole time slice; measured across 2 emulated hosts x 2 ranks, spinning 2048
 * tests before yielding made a 4 B allreduce take 3 ms, yielding at once 150 us. With a core
 * to spare, sched_yield returns at once and costs about what a test does. */
#define PUBLISH_AFTER 0.001         /* a wait this long is published in the heartbeats */
#define RECHECK_EVERY 0.05          /* seconds between verdicts once past the deadline */

static _Atomic double progress_timeout = 0.0;
static _Atomic double longest_quiet = 0.0;

/* A background thread's waits (the engine's own rounds) sleep once quiet for GENTLE_AFTER: the
 * rank's main thread is computing meanwhile, and a waiter that only yields stays runnable and
 * takes its core (2 ranks on 2 cores: each rank's engine thread competed with both main
 * threads). A caller's own waits keep yielding: it has nothing else to do. */
#define GENTLE_AFTER 50e-6
#define GENTLE_SLEEP_NS 50000
static _Thread_local int gentle_waits = 0;
/* Threads of this rank blocked until a collective completes. While one is, nobody computes here,
 * and a gentle wait would only slow the transfer: across hosts MPI moves a large message's bytes
 * only while it is polled, and 50 us naps halved the throughput of a 10 Gbit/s link. */
static _Atomic int callers_waiting = 0;

void rt_set_gentle_waits(int on) { gentle_waits = on; }
void rt_note_caller_waiting(int delta) { atomic_fetch_add(&callers_waiting, delta); }
int rt_callers_waiting(void) { return callers_waiting; }

void rt_set_progress_timeout(double seconds) { progress_timeout = seconds > 0 ? seconds : 0.0; }
double rt_progress_timeout(void) { return progress_timeout; }

double rt_take_longest_quiet(void) { return atomic_exchange(&longest_quiet, 0.0); }

static int grow(rt_requests *reqs, size_t needed) {
    if (needed <= reqs->capacity) return RT_OK;
    size_t capacity = reqs->capacity ? reqs->capacity : 16;
    while (capacity < needed) capacity *= 2;
    MPI_Request *items = realloc(reqs->items, capacity * sizeof(MPI_Request));
    if (items) reqs->items = items;
    int *peers = items ? realloc(reqs->peers, capacity * sizeof(int)) : NULL;
    if (peers) reqs->peers = peers;
    char *is_recv = peers ? realloc(reqs->is_recv, capacity) : NULL;
    if (!is_recv) return MPI_ERR_NO_MEM;
    reqs->is_recv = is_recv;
    reqs->capacity = capacity;
    return RT_OK;
}

static int post(rt_requests *reqs, void *buf, size_t bytes, int peer, int tag, MPI_Comm comm, int receive) {
    reqs->comm = comm;
    for (size_t offset = 0; offset < bytes; offset += RT_MAX_MESSAGE_BYTES) {
        size_t n = bytes - offset < RT_MAX_MESSAGE_BYTES ? bytes - offset : RT_MAX_MESSAGE_BYTES;
        int err = grow(reqs, reqs->count + 1);
        if (err) return err;
        MPI_Request *r = &reqs->items[reqs->count];
        err = receive ? MPI_Irecv((char *)buf + offset, (int)n, MPI_BYTE, peer, tag, comm, r)
                      : MPI_Isend((char *)buf + offset, (int)n, MPI_BYTE, peer, tag, comm, r);
        if (err) return err;
        reqs->peers[reqs->count] = peer;
        reqs->is_recv[reqs->count] = (char)receive;
        reqs->count++;
    }
    return RT_OK;
}

int rt_isend_bytes(rt_requests *reqs, const void *buf, size_t bytes, int dest, int tag, MPI_Comm comm) {
    return post(reqs, (void *)buf, bytes, dest, tag, comm, 0);
}

int rt_irecv_bytes(rt_requests *reqs, void *buf, size_t bytes, int source, int tag, MPI_Comm comm) {
    return post(reqs, buf, bytes, source, tag, comm, 1);
}

int rt_transfer_bytes(const void *out, int to, size_t out_bytes, void *in, int from, size_t in_capacity, int tag,
                      MPI_Comm comm) {
    rt_requests reqs = {0};
    int err = RT_OK;
    if (from >= 0) err = rt_irecv_bytes(&reqs, in, in_capacity, from, tag, comm);
    if (!err && to >= 0) err = rt_isend_bytes(&reqs, out, out_bytes, to, tag, comm);
    if (!err) err = rt_wait_all(&reqs);
    rt_requests_free(&reqs);
    return err;
}

int rt_requests_reserve(rt_requests *reqs, size_t n, MPI_Comm comm) {
    int err = grow(reqs, n);
    if (err) return err;
    for (size_t i = 0; i < n; i++) { reqs->items[i] = MPI_REQUEST_NULL; reqs->peers[i] = -1; reqs->is_recv[i] = 0; }
    reqs->count = n;
    reqs->comm = comm;
    return RT_OK;
}

int rt_irecv_slot(rt_requests *reqs, size_t slot, void *buf, size_t bytes, int source, int tag) {
    if (slot >= reqs->count || bytes > RT_MAX_MESSAGE_BYTES) return MPI_ERR_ARG;
    reqs->peers[slot] = source;
    reqs->is_recv[slot] = 1;
    return MPI_Irecv(buf, (int)bytes, MPI_BYTE, source, tag, reqs->comm, &reqs->items[slot]);
}

/* What every wait does while nothing completes: yield (or, for a gentle waiter, sleep), publish
 * whom it waits on, and past the progress deadline ask liveness.c for a verdict. Shared by the
 * MPI request waits below and the shared-memory flag waits (rt_wait_flags). */
typedef struct {
    double since, next_verdict;
    int published;
} quiet_wait;

static void quiet_progress(quiet_wait *q, size_t completed) {
    rt_liveness_note_progress(completed);
    if (q->since > 0.0) {
        double quiet = rt_now() - q->since, longest = longest_quiet;
        while (quiet > longest && !atomic_compare_exchange_weak(&longest_quiet, &longest, quiet)) {}
    }
    q->since = 0.0;
}

/* Whom a wait still waits on: fills up to 64 ranks of comm, first-pending first, and returns how
 * many; -1 for a collective (no particular peer). Called only to publish or to ask for a verdict,
 * never on every turn of the loop. */
typedef long (*waited_on_fn)(const void *ctx, int *peers);

/* RT_ERR_NO_PROGRESS once a rank waited on has stopped. */
static int quiet_tick(quiet_wait *q, MPI_Comm comm, waited_on_fn waited_on, const void *ctx) {
    double now = rt_now();
    if (q->since == 0.0) q->since = now;
    if (gentle_waits && now - q->since > GENTLE_AFTER && callers_waiting == 0) {
        struct timespec pause = {0, GENTLE_SLEEP_NS};
        nanosleep(&pause, NULL);
    } else {
        sched_yield();
    }
    const double limit = progress_timeout;
    const int publish = !q->published && now - q->since > PUBLISH_AFTER;
    const int verdict = limit > 0.0 && now - q->since > limit && now >= q->next_verdict;
    if (!publish && !verdict) return RT_OK;
    int peers[64];
    const long npeers = waited_on(ctx, peers);
    if (publish) {
        rt_liveness_note_waiting(comm, npeers > 0 ? peers[0] : -1);
        q->published = 1;
    }
    if (verdict) {
        rt_stall report;
        if (rt_liveness_verdict(comm, npeers >= 0 ? peers : NULL, npeers > 0 ? (size_t)npeers : 0, now - q->since,
                                &report))
            return RT_ERR_NO_PROGRESS;
        q->next_verdict = now + RECHECK_EVERY;
    }
    return RT_OK;
}

static void quiet_end(quiet_wait *q) {
    if (q->published) rt_liveness_note_done_waiting();
}

typedef struct {
    const MPI_Request *items;
    const int *peers;
    size_t n;
    long target;
} pending_requests;

static long pending_peers(const void *ctx, int *out) {
    const pending_requests *p = ctx;
    if (!p->peers) return -1;
    long count = 0;
    for (size_t i = 0; i < p->n && count < 64; i++) {
        if (p->items[i] == MPI_REQUEST_NULL || (p->target >= 0 && (long)i != p->target)) continue;
        int seen = 0;
        for (long j = 0; j < count; j++) seen |= out[j] == p->peers[i];
        if (!seen) out[count++] = p->peers[i];
    }
    return count;
}

/* The wait loop. `items[0..n)` are waited for (all of them, or until `target` completes if
 * target >= 0); `peers` name the other end of each (NULL: a collective). */
static int wait_loop(MPI_Request *items, const int *peers, size_t n, long target, MPI_Comm comm) {
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) pending += items[i] != MPI_REQUEST_NULL;
    if (target >= 0 && items[target] == MPI_REQUEST_NULL) return RT_OK;
    quiet_wait q = {0};
    const pending_requests still = {items, peers, n, target};
    int err = RT_OK;
    int *indices = NULL;
    if (target < 0 && n > 1 && !(indices = malloc(n * sizeof(int)))) return MPI_ERR_NO_MEM;
    while (pending) {
        int done = 0;
        size_t completed = 0;
        if (target >= 0 || n == 1) {
            size_t i = target >= 0 ? (size_t)target : 0;
            err = MPI_Test(&items[i], &done, MPI_STATUS_IGNORE);
            completed = done ? 1 : 0;
        } else {  /* MPI_Testsome releases what completed, so progress can be counted */
            int outcount = 0;
            err = MPI_Testsome((int)n, items, &outcount, indices, MPI_STATUSES_IGNORE);
            completed = (!err && outcount != MPI_UNDEFINED) ? (size_t)outcount : 0;
        }
        if (err) break;
        if (completed) {
            pending -= completed;
            quiet_progress(&q, completed);
            if (target >= 0) break;
            continue;
        }
        if ((err = quiet_tick(&q, comm, pending_peers, &still))) break;
    }
    quiet_end(&q);
    free(indices);
    return err;
}

typedef struct {
    const rt_flag *const *flags;
    const int *peers;
    size_t first, n;
    uint64_t target;
} pending_flags;

static long lagging_peers(const void *ctx, int *out) {
    const pending_flags *p = ctx;
    long count = 0;
    for (size_t i = p->first; i < p->n && count < 64; i++)
        if (atomic_load_explicit(p->flags[i], memory_order_relaxed) < p->target) out[count++] = p->peers[i];
    return count;
}

int rt_wait_flags(const rt_flag *const *flags, const int *peers, size_t n, uint64_t target, MPI_Comm comm) {
    quiet_wait q = {0};
    int err = RT_OK;
    size_t first = 0;  /* flags[0..first) have reached the target */
    while (first < n) {
        size_t before = first;
        for (int spin = 0; spin < 64 && first < n; spin++) {  /* a peer a few hundred ns behind: no syscall */
            while (first < n && atomic_load_explicit(flags[first], memory_order_acquire) >= target) first++;
            if (first < n) rt_cpu_relax();
        }
        if (first > before) {
            quiet_progress(&q, first - before);
            continue;
        }
        const pending_flags still = {flags, peers, first, n, target};
        if ((err = quiet_tick(&q, comm, lagging_peers, &still))) break;
    }
    quiet_end(&q);
    return err;
}

int rt_wait_slot(rt_requests *reqs, size_t slot) {
    if (slot >= reqs->count) return MPI_ERR_ARG;
    return wait_loop(reqs->items, reqs->peers, reqs->count, (long)slot, reqs->comm);
}

int rt_wait_all(rt_requests *reqs) {
    int err = reqs->count ? wait_loop(reqs->items, reqs->peers, reqs->count, -1, reqs->comm) : RT_OK;
    if (!err) reqs->count = 0;
    return err;
}

int rt_wait_collective(MPI_Request *req, MPI_Comm comm) { return wait_loop(req, NULL, 1, -1, comm); }

void rt_requests_free(rt_requests *reqs) {
    for (size_t i = 0; i < reqs->count; i++) {
        if (reqs->items[i] == MPI_REQUEST_NULL) continue;
        if (reqs->is_recv[i]) MPI_Cancel(&reqs->items[i]);
        MPI_Request_free(&reqs->items[i]);
    }
    free(reqs->items);
    free(reqs->peers);
    free(reqs->is_recv);
    reqs->items = NULL;
    reqs->peers = NULL;
    reqs->is_recv = NULL;
    reqs->count = reqs->capacity = 0;
}

size_t rt_segment_count(size_t bytes, size_t segment_bytes, size_t align) {
    if (bytes == 0) return 0;
    size_t seg = segment_bytes < align ? align : segment_bytes - segment_bytes % align;
    return (bytes + seg - 1) / seg;
}

size_t rt_segment_length(size_t bytes, size_t segment_bytes, size_t align, size_t index, size_t *offset) {
    size_t seg = segment_bytes < align ? align : segment_bytes - segment_bytes % align;
    *offset = index * seg;
    return bytes - *offset < seg ? bytes - *offset : seg;
}
