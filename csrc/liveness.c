/* Liveness: heartbeats between all ranks, and the verdict a stalled wait asks for.
 *
 * A thread (no GIL, its own communicator) sends every other rank, each period, this rank's count
 * of completed requests and whom it is waiting on, and records what it hears. A wait that has
 * seen nothing complete for the progress deadline (p2p.c) follows the chain of waits from the
 * ranks it waits on: a rank not heard from for `stale` seconds has stopped (SIGSTOP, a hung
 * host); a rank heard from but neither progressing nor waiting in ringtrain is stuck outside it
 * (its engine cannot run); a chain that comes back on itself is a cycle nobody can leave. Any of
 * these ends the wait with that rank named, as does a job in which no rank at all has completed
 * anything for `stale` seconds while every one is alive (a deadlock among live ranks). A rank that
 * is still completing requests (a long collective on another process set, a slow link) is
 * waited for.
 *
 * Every rank messages every other one: O(p^2) messages per period, fine at the sizes ringtrain
 * runs today; a tree would be the next step for thousands of ranks. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ringtrain.h"

#define TAG_HEARTBEAT 21
#define NOT_WAITING (-1)
#define IN_A_COLLECTIVE (-2)

typedef struct { int64_t completions, waiting_on; } beat;

static atomic_uint_fast64_t my_completions;
static atomic_int my_waiting_on = NOT_WAITING;
static rt_stall last_report = {.culprit = -1, .waited_on = -1};

static struct {
    MPI_Comm comm;
    int rank, size;
    double period, stale;
    pthread_t thread;
    atomic_int running;
    pthread_mutex_t lock;   /* guards the tables: written by the thread, read by verdicts */
    double *heard_at;       /* each rank's last heartbeat */
    int64_t *completions;   /* its completion count then */
    double *progressed_at;  /* when that count last changed */
    int *waiting_on;
    beat *outgoing;
    MPI_Request *sends;
    beat incoming;
    MPI_Request recv;
} hb = {.lock = PTHREAD_MUTEX_INITIALIZER};

void rt_liveness_note_progress(size_t completed) { atomic_fetch_add(&my_completions, completed); }

static int to_world(MPI_Comm comm, int rank) {
    if (!hb.running || rank < 0) return -1;
    if (comm == hb.comm) return rank;
    MPI_Group group, world;
    int out = -1;
    MPI_Comm_group(comm, &group);
    MPI_Comm_group(hb.comm, &world);
    MPI_Group_translate_ranks(group, 1, &rank, world, &out);
    MPI_Group_free(&group);
    MPI_Group_free(&world);
    return out == MPI_UNDEFINED ? -1 : out;
}

void rt_liveness_note_waiting(MPI_Comm comm, int peer) {
    int world = peer >= 0 ? to_world(comm, peer) : -1;
    my_waiting_on = world >= 0 ? world : IN_A_COLLECTIVE;
}

void rt_liveness_note_done_waiting(void) { my_waiting_on = NOT_WAITING; }

const rt_stall *rt_stall_report(void) { return &last_report; }

static void pause_for(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
}

static void *heartbeat_thread(void *unused) {
    (void)unused;
    double next_send = 0.0;
    MPI_Irecv(&hb.incoming, 2, MPI_INT64_T, MPI_ANY_SOURCE, TAG_HEARTBEAT, hb.comm, &hb.recv);
    while (hb.running) {
        double now = rt_now();
        if (now >= next_send) {
            for (int p = 0; p < hb.size; p++) {
                int idle = 1;
                if (p == hb.rank) continue;
                if (hb.sends[p] != MPI_REQUEST_NULL) MPI_Test(&hb.sends[p], &idle, MPI_STATUS_IGNORE);
                if (!idle) continue;  /* the last one is still on its way: a stopped rank is not sent more */
                hb.outgoing[p].completions = (int64_t)my_completions;
                hb.outgoing[p].waiting_on = my_waiting_on;
                MPI_Isend(&hb.outgoing[p], 2, MPI_INT64_T, p, TAG_HEARTBEAT, hb.comm, &hb.sends[p]);
            }
            next_send = now + hb.period;
        }
        for (;;) {
            int arrived = 0;
            MPI_Status status;
            if (MPI_Test(&hb.recv, &arrived, &status) != MPI_SUCCESS || !arrived) break;
            int from = status.MPI_SOURCE;
            pthread_mutex_lock(&hb.lock);
            now = rt_now();
            hb.heard_at[from] = now;
            if (hb.incoming.completions != hb.completions[from]) hb.progressed_at[from] = now;
            hb.completions[from] = hb.incoming.completions;
            hb.waiting_on[from] = (int)hb.incoming.waiting_on;
            pthread_mutex_unlock(&hb.lock);
            MPI_Irecv(&hb.incoming, 2, MPI_INT64_T, MPI_ANY_SOURCE, TAG_HEARTBEAT, hb.comm, &hb.recv);
        }
        pause_for(hb.period / 4);
    }
    MPI_Cancel(&hb.recv);
    MPI_Wait(&hb.recv, MPI_STATUS_IGNORE);
    for (int p = 0; p < hb.size; p++)
        if (hb.sends[p] != MPI_REQUEST_NULL) MPI_Request_free(&hb.sends[p]);
    return NULL;
}

int rt_liveness_start(MPI_Comm world, double period, double stale) {
    if (hb.running) return RT_OK;
    MPI_Comm_rank(world, &hb.rank);
    MPI_Comm_size(world, &hb.size);
    const size_t n = (size_t)hb.size;
    hb.comm = world;
    hb.period = period;
    hb.stale = stale;
    hb.heard_at = calloc(n, sizeof(double));
    hb.completions = calloc(n, sizeof(int64_t));
    hb.progressed_at = calloc(n, sizeof(double));
    hb.waiting_on = calloc(n, sizeof(int));
    hb.outgoing = calloc(n, sizeof(beat));
    hb.sends = calloc(n, sizeof(MPI_Request));
    if (!hb.heard_at || !hb.completions || !hb.progressed_at || !hb.waiting_on || !hb.outgoing || !hb.sends)
        return MPI_ERR_NO_MEM;
    const double now = rt_now();  /* everyone counts as just heard from: init() was collective */
    for (size_t p = 0; p < n; p++) {
        hb.heard_at[p] = hb.progressed_at[p] = now;
        hb.completions[p] = -1;
        hb.waiting_on[p] = NOT_WAITING;
        hb.sends[p] = MPI_REQUEST_NULL;
    }
    hb.running = 1;
    if (pthread_create(&hb.thread, NULL, heartbeat_thread, NULL) != 0) {
        hb.running = 0;
        return MPI_ERR_OTHER;
    }
    return RT_OK;
}

void rt_liveness_stop(void) {
    if (!hb.running) return;
    hb.running = 0;
    pthread_join(hb.thread, NULL);
    free(hb.heard_at); free(hb.completions); free(hb.progressed_at);
    free(hb.waiting_on); free(hb.outgoing); free(hb.sends);
    hb.heard_at = hb.progressed_at = NULL;
    hb.completions = NULL;
    hb.waiting_on = NULL;
    hb.outgoing = NULL;
    hb.sends = NULL;
}

/* Follows the waits from `start`; returns 1 with the report filled if they end at a rank that has
 * stopped, is stuck or closes a cycle, 0 if they end at a rank that is progressing. Holds hb.lock. */
static int follow(int start, double now, rt_stall *report) {
    int cur = start;
    report->chain_length = 0;
    for (int hop = 0; hop < RT_CHAIN_MAX; hop++) {
        report->chain[report->chain_length++] = cur;
        if (now - hb.heard_at[cur] > hb.stale) {
            report->culprit = cur, report->kind = RT_CULPRIT_SILENT, report->age = now - hb.heard_at[cur];
            return 1;
        }
        if (now - hb.progressed_at[cur] < hb.stale) return 0;
        int next = hb.waiting_on[cur];
        if (next == NOT_WAITING) {
            report->culprit = cur, report->kind = RT_CULPRIT_STUCK, report->age = now - hb.progressed_at[cur];
            return 1;
        }
        if (next == IN_A_COLLECTIVE) {  /* waits on every member: a silent rank anywhere explains it */
            for (int p = 0; p < hb.size; p++) {
                if (p != hb.rank && now - hb.heard_at[p] > hb.stale) {
                    if (report->chain_length < RT_CHAIN_MAX) report->chain[report->chain_length++] = p;
                    report->culprit = p, report->kind = RT_CULPRIT_SILENT, report->age = now - hb.heard_at[p];
                    return 1;
                }
            }
            /* every rank alive: it is only a wait worth keeping if some rank still progresses */
            double last = 0.0;
            for (int p = 0; p < hb.size; p++)
                if (p != hb.rank && hb.progressed_at[p] > last) last = hb.progressed_at[p];
            if (now - last < hb.stale) return 0;
            report->culprit = cur, report->kind = RT_CULPRIT_STALLED, report->age = now - last;
            return 1;
        }
        int seen = next == hb.rank;
        for (int i = 0; i < report->chain_length; i++) seen |= report->chain[i] == next;
        if (seen) {
            report->culprit = next, report->kind = RT_CULPRIT_CYCLE, report->age = now - hb.progressed_at[cur];
            return 1;
        }
        cur = next;
    }
    return 0;
}

int rt_liveness_verdict(MPI_Comm comm, const int *peers, size_t npeers, double quiet, rt_stall *report) {
    memset(report, 0, sizeof *report);
    report->quiet = quiet;
    report->culprit = -1;
    report->waited_on = peers && npeers ? to_world(comm, peers[0]) : -1;
    if (!hb.running) {  /* nothing to tell a slow peer from a stopped one: the deadline decides */
        report->kind = RT_CULPRIT_NONE;
        last_report = *report;
        return 1;
    }
    int size = 0;
    MPI_Comm_size(comm, &size);
    int verdict = 0;
    const double now = rt_now();
    pthread_mutex_lock(&hb.lock);
    const size_t count = peers ? npeers : (size_t)size;
    for (size_t i = 0; i < count && !verdict; i++) {  /* a silent rank among those waited on names itself */
        int world = to_world(comm, peers ? peers[i] : (int)i);
        if (world < 0 || world == hb.rank || now - hb.heard_at[world] <= hb.stale) continue;
        report->chain[0] = world;
        report->chain_length = 1;
        report->culprit = world, report->kind = RT_CULPRIT_SILENT, report->age = now - hb.heard_at[world];
        verdict = 1;
    }
    for (size_t i = 0; i < count && !verdict; i++) {
        int world = to_world(comm, peers ? peers[i] : (int)i);
        if (world < 0 || world == hb.rank) continue;
        verdict = follow(world, now, report);
    }
    pthread_mutex_unlock(&hb.lock);
    if (verdict) last_report = *report;
    return verdict;
}
