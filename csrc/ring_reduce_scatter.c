/* Ring reduce-scatter, segmented and pipelined.
 *
 * p ranks, p blocks. At step s (0 .. p-2) rank r sends block (r-1-s) to its right neighbour and
 * receives block (r-2-s) from its left neighbour, which it reduces with its own copy of that block.
 * After p-1 steps the block r has passed through every rank: rank r holds its full reduction.
 *
 * Pipelining: each block travels as segments. As soon as one received segment is reduced it is
 * sent on (it is exactly what the right neighbour needs at the next step), so reducing segment k
 * overlaps receiving segment k+1 and the right neighbour starts its step before ours ends.
 *
 * Memory: partial results live in three rotating receive buffers of one block each, never in the
 * caller's output: only the rank's own block is written to `own_out`. Three, because while step
 * s receives into one buffer, step s-1's buffer is still being sent from, and step s+1's receives
 * are already posted into the third. Before posting step s+1 into a buffer we wait for the sends
 * that were reading it (step s-1's), which is what makes the rotation safe. Every wait goes
 * through the transport (p2p.c), which gives up if a peer stops. */
#include <stdlib.h>
#include <string.h>
#include "ringtrain.h"

#define TAG_REDUCE_SCATTER 11

int rt_ring_reduce_scatter(const void *src, void *own_out, const size_t *counts, const size_t *displs,
                           rt_dtype dtype, rt_op op, size_t segment_bytes, MPI_Comm comm, const rt_span_io *io) {
    int rank, size, err = RT_OK;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const size_t esize = rt_dtype_size(dtype);
    const char *in = (const char *)src;
    if (size == 1) {
        if (io && counts[0]) rt_span_pack(io, (char *)in, displs[0] * esize, counts[0] * esize);
        if (own_out != src && counts[0]) memmove(own_out, in + displs[0] * esize, counts[0] * esize);
        return RT_OK;
    }
    if (segment_bytes > RT_MAX_MESSAGE_BYTES) segment_bytes = RT_MAX_MESSAGE_BYTES;

    const int right = (rank + 1) % size, left = (rank - 1 + size) % size;
    size_t max_block = 0;
    for (int b = 0; b < size; b++)
        if (counts[b] * esize > max_block) max_block = counts[b] * esize;
    const size_t max_segments = rt_segment_count(max_block, segment_bytes, esize);
    if (max_block == 0) return RT_OK;

    char *buffers = rt_scratch(0, 3 * max_block);
    rt_requests recvs = {0}, sends[2] = {{0}, {0}};
    if (!buffers) return MPI_ERR_NO_MEM;
    err = rt_requests_reserve(&recvs, 3 * max_segments, comm);

#define SEND_BLOCK(s) ((size_t)((rank - 1 - (s)) % size + size) % size)
#define RECV_BLOCK(s) ((size_t)((rank - 2 - (s)) % size + size) % size)
#define STEP_BUFFER(s) (buffers + ((s) % 3) * max_block)

    /* Post the receives of one step into its rotating buffer. */
#define POST_RECVS(s)                                                                          \
    do {                                                                                       \
        size_t bytes_ = counts[RECV_BLOCK(s)] * esize, off_;                                   \
        size_t n_ = rt_segment_count(bytes_, segment_bytes, esize);                            \
        for (size_t k = 0; k < n_ && !err; k++) {                                              \
            size_t len_ = rt_segment_length(bytes_, segment_bytes, esize, k, &off_);           \
            err = rt_irecv_slot(&recvs, ((s) % 3) * max_segments + k, STEP_BUFFER(s) + off_, len_, \
                                left, TAG_REDUCE_SCATTER);                                     \
        }                                                                                      \
    } while (0)

    const int steps = size - 1;
    /* a fusion group's own contributions to the blocks it receives are read where they are, not
     * packed first (unless prescaled: the packing scales them) */
    const int direct = io && io->prescale == 1.0;
    if (!err) POST_RECVS(0);
    {   /* step 0 sends the rank's own, unreduced copy of block r-1 straight from the input */
        size_t b = SEND_BLOCK(0), bytes = counts[b] * esize, off;
        size_t n = rt_segment_count(bytes, segment_bytes, esize);
        for (size_t k = 0; k < n && !err; k++) {
            size_t len = rt_segment_length(bytes, segment_bytes, esize, k, &off);
            if (io) rt_span_pack(io, (char *)in, displs[b] * esize + off, len);  /* each range is read once */
            err = rt_isend_bytes(&sends[0], in + displs[b] * esize + off, len, right, TAG_REDUCE_SCATTER, comm);
        }
    }
    for (int s = 0; s < steps && !err; s++) {
        if (s + 1 < steps) {
            err = rt_wait_all(&sends[(s + 1) % 2]); /* step s-1's sends read the buffer step s+1 reuses */
            if (!err) POST_RECVS(s + 1);
        }
        const size_t b = RECV_BLOCK(s), bytes = counts[b] * esize;
        const size_t n = rt_segment_count(bytes, segment_bytes, esize);
        char *buf = STEP_BUFFER(s);
        const int last = (s == steps - 1);
        for (size_t k = 0; k < n && !err; k++) {
            size_t off, len = rt_segment_length(bytes, segment_bytes, esize, k, &off);
            if (io && !direct) rt_span_pack(io, (char *)in, displs[b] * esize + off, len);  /* while the segment travels */
            err = rt_wait_slot(&recvs, (s % 3) * max_segments + k);
            if (err) break;
            const char *mine = in + displs[b] * esize + off;
            if (last) {
                char *out = (char *)own_out + off;
                if (direct) rt_span_reduce(io, out, buf + off, displs[b] * esize + off, len);
                else if (out == mine) rt_reduce_inplace(out, buf + off, len / esize, dtype, op);
                else rt_reduce_into(out, mine, buf + off, len / esize, dtype, op);
            } else {
                if (direct) rt_span_reduce(io, NULL, buf + off, displs[b] * esize + off, len);
                else rt_reduce_inplace(buf + off, mine, len / esize, dtype, op);
                err = rt_isend_bytes(&sends[(s + 1) % 2], buf + off, len, right, TAG_REDUCE_SCATTER, comm);
            }
        }
    }
    if (!err) err = rt_wait_all(&sends[0]);
    if (!err) err = rt_wait_all(&sends[1]);
    rt_requests_free(&sends[0]);  /* after an error: cancels what is still pending */
    rt_requests_free(&sends[1]);
    rt_requests_free(&recvs);
    return err;
#undef SEND_BLOCK
#undef RECV_BLOCK
#undef STEP_BUFFER
#undef POST_RECVS
}
