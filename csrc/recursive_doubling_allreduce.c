/* Recursive-doubling allreduce for small messages: ceil(log2 p) rounds, each exchanging the
 * whole buffer with the partner whose rank differs in one bit. Latency-optimal (one message per
 * round) at the price of sending the full buffer every round, so it is used below a threshold.
 *
 * When p is not a power of two, the first 2*rem ranks (rem = p - 2^k) pair up first: each even
 * one hands its data to its odd neighbour and sits out, and gets the result back at the end.
 * Every exchange reduces the same two operands on both sides and a op b == b op a for all our
 * ops, so every rank ends with bitwise the same result. */
#include <string.h>
#include "ringtrain.h"

#define TAG_RECURSIVE_DOUBLING 13

/* One blocking transfer through the transport (so it waits under the progress deadline):
 * send `out` to `to` and/or receive into `in` from `from` (-1 for none). */
static int exchange(const void *out, int to, void *in, int from, size_t bytes, MPI_Comm comm) {
    rt_requests reqs = {0};
    int err = RT_OK;
    if (from >= 0) err = rt_irecv_bytes(&reqs, in, bytes, from, TAG_RECURSIVE_DOUBLING, comm);
    if (!err && to >= 0) err = rt_isend_bytes(&reqs, out, bytes, to, TAG_RECURSIVE_DOUBLING, comm);
    if (!err) err = rt_wait_all(&reqs);
    rt_requests_free(&reqs);
    return err;
}

int rt_recursive_doubling_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                                    MPI_Comm comm) {
    int rank, size, err = RT_OK;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const size_t bytes = count * rt_dtype_size(dtype);
    if (src != dst) memcpy(dst, src, bytes);
    if (size == 1 || bytes == 0) return RT_OK;
    if (bytes > RT_MAX_MESSAGE_BYTES) return MPI_ERR_COUNT;
    void *incoming = rt_scratch(1, bytes);
    if (!incoming) return MPI_ERR_NO_MEM;

    int pof2 = 1;
    while (pof2 * 2 <= size) pof2 *= 2;
    const int rem = size - pof2;
    int new_rank;
    if (rank < 2 * rem) {
        if (rank % 2 == 0) {
            err = exchange(dst, rank + 1, NULL, -1, bytes, comm);
            new_rank = -1;
        } else {
            err = exchange(NULL, -1, incoming, rank - 1, bytes, comm);
            if (!err) rt_reduce_inplace(dst, incoming, count, dtype, op);
            new_rank = rank / 2;
        }
    } else {
        new_rank = rank - rem;
    }
    if (new_rank >= 0) {
        for (int mask = 1; mask < pof2 && !err; mask <<= 1) {
            int partner_new = new_rank ^ mask;
            int partner = partner_new < rem ? partner_new * 2 + 1 : partner_new + rem;
            err = exchange(dst, partner, incoming, partner, bytes, comm);
            if (!err) rt_reduce_inplace(dst, incoming, count, dtype, op);
        }
    }
    if (!err && rank < 2 * rem) {
        if (rank % 2) err = exchange(dst, rank - 1, NULL, -1, bytes, comm);
        else err = exchange(NULL, -1, dst, rank + 1, bytes, comm);
    }
    return err;
}
