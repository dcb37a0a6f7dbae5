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
#include <stdint.h>
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
typedef enum { RT_ALGO_NONE = 0, RT_ALGO_RECURSIVE_DOUBLING = 1, RT_ALGO_RING = 2 } rt_algorithm;

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

/* --- p2p.c: byte ranges over MPI point-to-point --------------------------- */
/* Messages larger than this are split, so counts always fit MPI's int. */
#define RT_MAX_MESSAGE_BYTES ((size_t)1 << 30)
typedef struct {
    MPI_Request *items;
    size_t count, capacity;
} rt_requests;
int rt_isend_bytes(rt_requests *reqs, const void *buf, size_t bytes, int dest, int tag, MPI_Comm comm);
int rt_irecv_bytes(rt_requests *reqs, void *buf, size_t bytes, int source, int tag, MPI_Comm comm);
int rt_wait_all(rt_requests *reqs);
void rt_requests_free(rt_requests *reqs);
/* Split `bytes` into segments of at most `segment_bytes`, aligned to `align`. */
size_t rt_segment_count(size_t bytes, size_t segment_bytes, size_t align);
size_t rt_segment_length(size_t bytes, size_t segment_bytes, size_t align, size_t index, size_t *offset);

/* --- algorithms, one per file ---------------------------------------------- */
/* ring_reduce_scatter.c: block b (counts[b] elements at displs[b]) of the reduction of every
 * rank's `src` ends in `own_out` on rank b. No other output memory is written. */
int rt_ring_reduce_scatter(const void *src, void *own_out, const size_t *counts, const size_t *displs,
                           rt_dtype dtype, rt_op op, size_t segment_bytes, MPI_Comm comm);
/* ring_allgatherv.c: rank b's block (bytes[b] at displs[b] of buf) is already in place on rank b;
 * afterwards every rank has every block. */
int rt_ring_allgatherv(void *buf, const size_t *bytes, const size_t *displs, size_t segment_bytes, MPI_Comm comm);
/* ring_allreduce.c: reduce-scatter then allgather, segmented and pipelined. */
int rt_ring_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                      size_t segment_bytes, MPI_Comm comm);
/* recursive_doubling_allreduce.c: log2(p) exchanges of the whole buffer; for small messages. */
int rt_recursive_doubling_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                                    MPI_Comm comm);
/* tree_broadcast.c: segmented binomial tree. */
int rt_tree_broadcast(void *buf, size_t bytes, int root, size_t segment_bytes, MPI_Comm comm);
/* pairwise_alltoallv.c: every pair exchanges its slice directly. */
int rt_pairwise_alltoallv(const void *sendbuf, const size_t *send_bytes, const size_t *send_displs,
                          void *recvbuf, const size_t *recv_bytes, const size_t *recv_displs, MPI_Comm comm);

/* fusion_buffer.c: Tensor Fusion's pack / unpack copies (tensors laid out back to back). */
void rt_pack(char *buffer, char *const *tensors, const size_t *bytes, size_t count);
void rt_unpack(const char *buffer, char *const *tensors, const size_t *bytes, size_t count);

/* allreduce.c: scaling, averaging and the choice of algorithm by message size. */
typedef struct {
    size_t small_message_bytes;   /* at or below: recursive doubling; above: ring */
    size_t segment_bytes;         /* pipeline segment size for the ring */
} rt_tuning;
int rt_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                 double prescale, double postscale, const rt_tuning *tuning, MPI_Comm comm,
                 rt_algorithm *used);
int rt_reduce_scatter(const void *src, void *dst, const size_t *counts, rt_dtype dtype, rt_op op,
                      double prescale, double postscale, size_t segment_bytes, MPI_Comm comm);
/* Average and postscale applied after a Sum-reduction over `size` ranks. */
void rt_finish_reduction(void *buf, size_t count, rt_dtype dtype, rt_op op, double postscale, int size);

#endif
