/* ringtrain core: shared types for the collective algorithms and reduction kernels.
 *
 * Where a tensor goes, from Python to the wire:
 *   ringtrain/collectives.py  validates arguments, resolves dtype/op codes
 *   csrc/module.c             thin binding: takes numpy arrays, releases the GIL
 *   csrc/<algorithm>.c        one collective algorithm per file, MPI point-to-point only
 *   csrc/reduce_kernels.c     the element-wise reductions every algorithm shares
 *
 * Every algorithm returns RT_OK or an MPI error code and never calls
 * MPI_Allreduce / MPI_Allgather / MPI_Bcast on the data path.
 */
#ifndef RINGTRAIN_H
#define RINGTRAIN_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <mpi.h>

#define RT_OK 0

/* Codes shared with ringtrain/dtypes.py: keep the two in step. */
typedef enum {
    RT_FLOAT16 = 0, RT_BFLOAT16 = 1, RT_FLOAT32 = 2, RT_FLOAT64 = 3,
    RT_INT8 = 4, RT_INT16 = 5, RT_INT32 = 6, RT_INT64 = 7,
    RT_UINT8 = 8, RT_BOOL = 9, RT_NUM_DTYPES = 10
} rt_dtype;

/* Codes shared with ringtrain/ops.py. */
typedef enum { RT_SUM = 0, RT_AVERAGE = 1, RT_MIN = 2, RT_MAX = 3, RT_PRODUCT = 4, RT_NUM_OPS = 5 } rt_op;

/* Which allreduce algorithm ran (reported back to Python for logs and the timeline). */
typedef enum {
    RT_ALGO_NONE = 0, RT_ALGO_RECURSIVE_DOUBLING = 1, RT_ALGO_RING = 2, RT_ALGO_SHARED_MEMORY = 3,
    RT_ALGO_HIERARCHICAL = 4
} rt_algorithm;

size_t rt_dtype_size(rt_dtype dtype);

/* --- reduce_kernels.c ---------------------------------------------------- */
/* inout[i] = inout[i] (op) in[i]; the buffers must not overlap. Average reduces as Sum. */
void rt_reduce_inplace(void *inout, const void *in, size_t count, rt_dtype dtype, rt_op op);
/* out[i] = a[i] (op) b[i]; out may not overlap a or b. */
void rt_reduce_into(void *out, const void *a, const void *b, size_t count, rt_dtype dtype, rt_op op);
/* out[i] = in[i] * factor (out may equal in). Integers are scaled in double and truncated. */
void rt_scale(void *out, const void *in, size_t count, rt_dtype dtype, double factor);
/* buf[i] /= divisor for integer dtypes (C division: truncates toward zero). */
void rt_divide_integers(void *buf, size_t count, rt_dtype dtype, int64_t divisor);

/* --- scratch.c ------------------------------------------------------------ */
/* One grow-only scratch area per slot, reused across calls so large collectives
 * do not pay page faults on fresh memory each time. Callers hold rt_lock(). */
void *rt_scratch(int slot, size_t bytes);
void rt_lock(void);
void rt_unlock(void);
/* The engine's control rounds have their own slot and lock: an idle round must not wait for a
 * data collective another thread runs (plan.measure_network times the algorithms directly while
 * the engine thread keeps its rounds), or two ranks deadlock on each other's locks. */
#define RT_ROUND_SLOT 4
void rt_round_lock(void);
void rt_round_unlock(void);

/* --- p2p.c: the transport. Every message of every algorithm goes through here ------------
 * Byte ranges over MPI point-to-point, and the one wait loop of the library. A wait that sees no
 * request complete for the progress deadline asks liveness.c whether a peer has stopped; if one
 * has (or the ranks wait on each other in a cycle), the wait gives up with RT_ERR_NO_PROGRESS,
 * cancelling its receives, and rt_stall_report() says who stopped. */
#define RT_ERR_NO_PROGRESS (-7)
/* Messages larger than this are split, so counts always fit MPI's int. */
#define RT_MAX_MESSAGE_BYTES ((size_t)1 << 30)
typedef struct {
    MPI_Request *items;
    int *peers;                 /* the rank (in comm) at the other end: who a stalled wait waits on */
    char *is_recv;              /* receives are cancelled if a wait gives up */
    size_t count, capacity;
    MPI_Comm comm;
} rt_requests;
int rt_isend_bytes(rt_requests *reqs, const void *buf, size_t bytes, int dest, int tag, MPI_Comm comm);
int rt_irecv_bytes(rt_requests *reqs, void *buf, size_t bytes, int source, int tag, MPI_Comm comm);
/* One blocking transfer: send out_bytes of `out` to `to` and/or receive up to in_capacity bytes
 * into `in` from `from` (-1: none), waited for under the progress deadline. */
int rt_transfer_bytes(const void *out, int to, size_t out_bytes, void *in, int from, size_t in_capacity, int tag,
                      MPI_Comm comm);
/* Fixed slots, for algorithms that reuse receive positions: rt_requests_reserve makes `n` empty
 * slots; rt_irecv_slot posts one receive (bytes <= RT_MAX_MESSAGE_BYTES) into a slot. */
int rt_requests_reserve(rt_requests *reqs, size_t n, MPI_Comm comm);
int rt_irecv_slot(rt_requests *reqs, size_t slot, void *buf, size_t bytes, int source, int tag);
int rt_wait_slot(rt_requests *reqs, size_t slot);
/* Every pending request; afterwards the set is empty (ready for reuse). */
int rt_wait_all(rt_requests *reqs);
/* Releases the set; receives still pending are cancelled first, so nothing writes into the
 * caller's memory after an algorithm gave up. */
void rt_requests_free(rt_requests *reqs);
/* A nonblocking collective (control rounds, barriers) waited for under the same deadline. */
int rt_wait_collective(MPI_Request *req, MPI_Comm comm);
/* Shared-memory flags: counters a rank raises (store-release) when its part of a step is done.
 * rt_wait_flags waits until every flags[i] >= target, spinning briefly, then under the same
 * yield/sleep policy and progress deadline as the request waits (peers[i]: flags[i]'s owner,
 * a rank of comm, for the verdict). */
typedef _Atomic uint64_t rt_flag;
int rt_wait_flags(const rt_flag *const *flags, const int *peers, size_t n, uint64_t target, MPI_Comm comm);
static inline void rt_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
/* Seconds without any completion before a wait consults liveness.c (0: wait for ever). */
void rt_set_progress_timeout(double seconds);
double rt_progress_timeout(void);
/* Waits of the calling thread sleep once quiet for a while instead of only yielding (for a
 * background thread: the engine's). */
void rt_set_gentle_waits(int on);
void rt_note_caller_waiting(int delta);
int rt_callers_waiting(void);
/* The longest stretch (seconds) a wait went without a completion and still completed, since
 * the last call (which resets it): what a deadline must stay above. */
double rt_take_longest_quiet(void);

/* Seconds on the monotonic clock: the transport's and the heartbeats' common time. */
static inline double rt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --- liveness.c: heartbeats, and who has stopped --------------------------------------------
 * A thread sends every rank a tiny heartbeat (this rank's completion count and whom it waits on)
 * each period, so a rank that stopped (SIGSTOP, a hung host) is told apart from the ranks that
 * are only queued behind it: in a ring each rank sees nothing but its neighbour going quiet. */
#define RT_CHAIN_MAX 16
typedef enum {
    RT_CULPRIT_NONE = 0,        /* no verdict (no heartbeats running): only this rank's wait is known */
    RT_CULPRIT_SILENT = 1,      /* no heartbeat from it for `age` seconds: stopped, hung or gone */
    RT_CULPRIT_STUCK = 2,       /* heartbeats arrive, but it neither progresses nor waits in ringtrain */
    RT_CULPRIT_CYCLE = 3,       /* the chain of waits comes back on itself: nobody can progress */
    RT_CULPRIT_STALLED = 4      /* every rank alive, none has completed anything for `age` seconds */
} rt_culprit_kind;
typedef struct {
    double quiet;               /* seconds this rank's wait went without a completion */
    int waited_on;              /* world rank this rank waited on, -1 for a collective */
    int culprit;                /* world rank, -1 if none */
    rt_culprit_kind kind;
    double age;                 /* seconds since the culprit's last heartbeat (SILENT) or progress (STUCK) */
    int chain[RT_CHAIN_MAX];    /* the waits from this rank to the culprit, world ranks */
    int chain_length;
} rt_stall;
int rt_liveness_start(MPI_Comm world, double period, double stale);
void rt_liveness_stop(void);
/* Called by a wait that has been quiet for the deadline: 1 = give up (report filled), 0 = the
 * ranks it waits on are alive and progressing, keep waiting. `peers` are ranks of comm, or NULL
 * for a collective on comm. */
int rt_liveness_verdict(MPI_Comm comm, const int *peers, size_t npeers, double quiet, rt_stall *report);
/* What this rank publishes in its heartbeats. */
void rt_liveness_note_progress(size_t completions);  /* this many requests completed */
void rt_liveness_note_waiting(MPI_Comm comm, int peer);  /* peer: comm rank, -1 collective */
void rt_liveness_note_done_waiting(void);
const rt_stall *rt_stall_report(void);

/* Split `bytes` into segments of at most `segment_bytes`, aligned to `align`. */
size_t rt_segment_count(size_t bytes, size_t segment_bytes, size_t align);
size_t rt_segment_length(size_t bytes, size_t segment_bytes, size_t align, size_t index, size_t *offset);

/* Several arrays taken as one, back to back (a fusion group without its packing copy). */
typedef struct {
    char *const *data;
    const size_t *bytes;
    size_t count;
} rt_spans;

/* A fusion group's tensors around its packed buffer, for the ring (fusion_buffer.c). The ring
 * packs each range of the buffer from the tensors (prescaled) just before it first reads it, and
 * unpacks each range of the result into the outputs (finished: Average's division, postscale) as
 * soon as it is complete: the copies overlap the transfers instead of preceding and following
 * them. The buffer itself is left unfinished. */
typedef struct {
    rt_spans src, dst;
    rt_dtype dtype;
    rt_op op;
    double prescale, postscale;
    int size;  /* the ranks reducing (Average divides by it) */
} rt_span_io;

/* --- algorithms, one per file ---------------------------------------------- */
/* ring_reduce_scatter.c: block b (counts[b] elements at displs[b]) of the reduction of every
 * rank's `src` ends in `own_out` on rank b. No other output memory is written. With io (or
 * NULL), src is a fusion buffer packed range by range as it is read. */
int rt_ring_reduce_scatter(const void *src, void *own_out, const size_t *counts, const size_t *displs,
                           rt_dtype dtype, rt_op op, size_t segment_bytes, MPI_Comm comm, const rt_span_io *io);
/* ring_allgatherv.c: rank b's block (bytes[b] at displs[b] of buf) is already in place on rank b;
 * afterwards every rank has every block. With io (or NULL), each segment is unpacked as it is
 * complete (its blocks and segment_bytes then hold whole elements: rt_ring_allreduce's). */
int rt_ring_allgatherv(void *buf, const size_t *bytes, const size_t *displs, size_t segment_bytes, MPI_Comm comm,
                       const rt_span_io *io);
/* ring_allreduce.c: reduce-scatter then allgather, segmented and pipelined (with io: of a
 * fusion group, packed and unpacked as the ring goes). */
int rt_ring_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                      size_t segment_bytes, MPI_Comm comm, const rt_span_io *io);
/* recursive_doubling_allreduce.c: the recursive-doubling schedule, shared by every algorithm that
 * uses its pairing (so their results agree bitwise). The first 2*rem ranks (rem = p - 2^k) fold
 * pairwise, then a butterfly, then the folded ranks get the result. `transfer(ctx, to, from,
 * into_own)` sends this rank's buffer to `to` and/or receives from `from` (-1: none) into the
 * incoming buffer, or (into_own: the result, at the end) over its own; `combine(ctx)` reduces
 * the incoming buffer into its own. */
typedef struct {
    void *ctx;
    int (*transfer)(void *ctx, int to, int from, int into_own);
    void (*combine)(void *ctx);
} rt_recursive_doubling_steps;
int rt_recursive_doubling(const rt_recursive_doubling_steps *steps, MPI_Comm comm);
/* log2(p) exchanges of the whole buffer; for small messages. */
int rt_recursive_doubling_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                                    MPI_Comm comm);
/* gather_broadcast.c: the allgather and broadcast entry points (shared memory inside one host,
 * else the ring allgather and the tree). */
int rt_allgatherv(void *buf, const size_t *bytes, const size_t *displs, size_t segment_bytes, MPI_Comm comm);
int rt_broadcast(void *buf, size_t bytes, int root, size_t segment_bytes, MPI_Comm comm);
/* tree_broadcast.c: segmented binomial tree. */
int rt_tree_broadcast(void *buf, size_t bytes, int root, size_t segment_bytes, MPI_Comm comm);
/* pairwise_alltoallv.c: every pair exchanges its slice directly. */
int rt_pairwise_alltoallv(const void *sendbuf, const size_t *send_bytes, const size_t *send_displs,
                          void *recvbuf, const size_t *recv_bytes, const size_t *recv_displs, MPI_Comm comm);

/* round_exchange.c: a negotiation round's words (AND across ranks, in place) and, if every rank
 * carries data of the same dtype/op/length (the packed srcs, prescaled; at most data_bound bytes,
 * a bound the same on every rank), its reduction, in one recursive-doubling exchange. *carried is
 * 1 (on every rank alike) when all ranks proposed the same words and all carried data: then
 * *data (scratch RT_ROUND_SLOT, caller holds rt_round_lock) holds the reduced, not yet postscaled, data. */
#define RT_ROUND_DATA_MAX 65536
int rt_round_exchange(uint64_t *words, size_t nwords, char *const *srcs, const size_t *src_bytes, size_t nsrcs,
                      rt_dtype dtype, rt_op op, double prescale, size_t data_bound, MPI_Comm comm, int *carried,
                      void **data);

/* shm_segment.c: a communicator's ranks on one host share a segment (POSIX shm, unlinked as soon
 * as all of them mapped it); found again from the communicator by rt_shm_find. */
typedef enum { RT_SHM_UNAVAILABLE = -1, RT_SHM_OFF = 0, RT_SHM_ONE_HOST = 1, RT_SHM_HIERARCHICAL = 2 } rt_shm_mode;
#define RT_SHM_MAX_LOCAL 256    /* local ranks a segment serves (more: the path is off) */
typedef struct {
    size_t piece_bytes;     /* per rank and buffer: the segment holds 2 * local ranks of them */
    int hierarchical;       /* across hosts: 1 allows the hierarchical allreduce */
    int one_leader;         /* ... in which local rank 0 alone crosses hosts (0: every local rank, 1/n each) */
} rt_shm_settings;
typedef struct rt_shm {
    MPI_Comm comm;          /* the data communicator it serves */
    MPI_Comm node;          /* comm's ranks on this host */
    MPI_Comm cross;         /* comm's ranks with this local rank, one per host (MPI_COMM_NULL: one host) */
    int local_rank, local_size, hosts, one_leader;
    int *peer_ranks;        /* comm rank of each local rank */
    size_t piece_bytes;
    char *base;
    size_t mapped;
    rt_flag **flags;        /* local rank r: flags[2r] written, flags[2r + 1] reduced */
    char *buffers;          /* local rank r's buffer b at buffers + (2r + b) * piece_bytes */
    uint64_t pieces;        /* pieces this rank has started: the flags' next value */
} rt_shm;
/* Collective over comm. RT_OK with *mode saying what was set up (the same on every rank), and
 * `reason` why not if OFF or UNAVAILABLE (a failure worth a warning: /dev/shm too small, say);
 * *failed_here is 1 on the first rank of each host where the segment could not be set up. */
int rt_shm_attach(MPI_Comm comm, const rt_shm_settings *settings, rt_shm_mode *mode, char *reason,
                  size_t reason_len, int *failed_here);
static inline char *rt_shm_buffer(const rt_shm *shm, int local_rank, uint64_t step) {  /* double buffered */
    return shm->buffers + ((size_t)local_rank * 2 + (step & 1)) * shm->piece_bytes;
}
/* The other local ranks' flag `which` (0 written, 1 reduced) and their ranks in comm, for
 * rt_wait_flags; returns how many (local_size - 1). */
size_t rt_shm_peer_flags(const rt_shm *shm, int which, const rt_flag **flags, int *peers);
/* Elements [*lo, *hi) of `count` that local rank r of n owns: 64-byte units dealt out evenly. */
static inline void rt_shm_slice(size_t count, size_t esize, int r, int n, size_t *lo, size_t *hi) {
    const size_t unit = 64 / esize, units = (count + unit - 1) / unit;
    *lo = units * (size_t)r / (size_t)n * unit;
    *hi = units * (size_t)(r + 1) / (size_t)n * unit;
    if (*lo > count) *lo = count;
    if (*hi > count) *hi = count;
}
void rt_shm_detach(MPI_Comm comm);  /* attach and detach take rt_lock to change the registry */
rt_shm *rt_shm_find(MPI_Comm comm);   /* callers hold rt_lock */

/* shm_regions.c: the steps of the collectives inside a host. Local rank r owns region r (bytes
 * [start, start + bytes) of the buffer, possibly empty). reduce_regions: the reduction over
 * every local rank's src of region r ends in rank r's own_out. share_regions: region r of rank
 * r's buf is copied into every other local rank's buf. */
typedef struct {
    size_t start, bytes;
} rt_region;
int rt_shm_reduce_regions(rt_shm *shm, const void *src, void *own_out, const rt_region *regions, rt_dtype dtype,
                          rt_op op);
int rt_shm_share_regions(rt_shm *shm, void *buf, const rt_region *regions);

/* shm_allreduce.c: allreduce among one host's ranks (all of comm's) through the segment. */
int rt_shm_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op);
int rt_shm_allreduce_spans(rt_shm *shm, const rt_spans *src, const rt_spans *dst, size_t count, rt_dtype dtype,
                           rt_op op);

/* fusion_buffer.c: Tensor Fusion's pack / unpack copies (tensors laid out back to back). */
void rt_pack(char *buffer, char *const *tensors, const size_t *bytes, size_t count);
void rt_unpack(const char *buffer, char *const *tensors, const size_t *bytes, size_t count);
/* bytes [offset, offset + len) of io's packed buffer: packed from its tensors, or unpacked into
 * its outputs (element-aligned ranges). */
void rt_span_pack(const rt_span_io *io, char *buffer, size_t offset, size_t len);
void rt_span_unpack(const rt_span_io *io, const char *buffer, size_t offset, size_t len);
/* The rank's own contribution to bytes [offset, offset + len) of the packed buffer reduced with
 * what it received, read from io's tensors where they are instead of packed first (io->prescale
 * must be 1): into[] = own (op) received[] if into, else received[] = received[] (op) own, the
 * operands in the order the packed buffer's reduction takes them. into and received point at
 * byte `offset`'s place. */
void rt_span_reduce(const rt_span_io *io, char *into, char *received, size_t offset, size_t len);

/* allreduce.c: scaling, averaging and the choice of algorithm by message size (and shared memory). */
typedef struct {
    size_t small_message_bytes;   /* at or below: recursive doubling; above: ring */
    size_t segment_bytes;         /* pipeline segment size for the ring */
    size_t shm_min_bytes;         /* above small and at or above this, ranks sharing one host: shared memory */
    size_t hierarchical_min_bytes;  /* above small and at or above this, across hosts: hierarchical */
} rt_tuning;
int rt_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                 double prescale, double postscale, const rt_tuning *tuning, MPI_Comm comm,
                 rt_algorithm *used);
/* A fusion group's allreduce: the same algorithm and bits as packing the tensors into `fused`,
 * rt_allreduce of it and unpacking, which is what it does unless shared memory inside one host
 * takes the spans directly (no packing copies). */
int rt_allreduce_fused(char *const *srcs, char *const *dsts, const size_t *bytes, size_t n, char *fused,
                       rt_dtype dtype, rt_op op, double prescale, double postscale, const rt_tuning *tuning,
                       MPI_Comm comm, rt_algorithm *used);
/* hierarchical_allreduce.c: shared memory inside each host, a ring across hosts per local rank
 * (each on its 1/n of the buffer). */
int rt_hierarchical_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                              const rt_tuning *tuning);
int rt_reduce_scatter(const void *src, void *dst, const size_t *counts, rt_dtype dtype, rt_op op,
                      double prescale, double postscale, size_t segment_bytes, MPI_Comm comm);
/* Average and postscale applied after a Sum-reduction over `size` ranks. */
void rt_finish_reduction(void *buf, size_t count, rt_dtype dtype, rt_op op, double postscale, int size);
/* The same, from src into dst (which may be src): the bits rt_finish_reduction gives in place. */
void rt_finish_into(void *dst, const void *src, size_t count, rt_dtype dtype, rt_op op, double postscale, int size);

#endif
