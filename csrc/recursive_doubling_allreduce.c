/* Recursive-doubling allreduce for small messages: ceil(log2 p) rounds, each exchanging the
 * whole buffer with the partner whose rank differs in one bit. Latency-optimal (one message per
 * round) at the price of sending the full buffer every round, so it is used below a threshold.
 *
 * When p is not a power of two, the first 2*rem ranks (rem = p - 2^k) pair up first: each even
 * one hands its data to its odd neighbour and sits out, and gets the result back at the end.
 * Every exchange reduces the same two operands on both sides and a op b == b op a for all our
 * ops, so every rank ends with bitwise the same result. The schedule (rt_recursive_doubling) is
 * shared with round_exchange.c, which must reduce in exactly this order. */
#include <string.h>
#include "ringtrain.h"

#define TAG_RECURSIVE_DOUBLING 13

int rt_recursive_doubling(const rt_recursive_doubling_steps *steps, MPI_Comm comm) {
    int rank, size, err = RT_OK;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int pof2 = 1;
    while (pof2 * 2 <= size) pof2 *= 2;
    const int rem = size - pof2;
    int new_rank;
    if (rank < 2 * rem) {
        if (rank % 2 == 0) {
            err = steps->transfer(steps->ctx, rank + 1, -1, 0);
            new_rank = -1;
        } else {
            err = steps->transfer(steps->ctx, -1, rank - 1, 0);
            if (!err) steps->combine(steps->ctx);
            new_rank = rank / 2;
        }
    } else {
        new_rank = rank - rem;
    }
    for (int mask = 1; new_rank >= 0 && mask < pof2 && !err; mask <<= 1) {
        int partner_new = new_rank ^ mask;
        int partner = partner_new < rem ? partner_new * 2 + 1 : partner_new + rem;
        err = steps->transfer(steps->ctx, partner, partner, 0);
        if (!err) steps->combine(steps->ctx);
    }
    if (!err && rank < 2 * rem) {
        if (rank % 2) err = steps->transfer(steps->ctx, rank - 1, -1, 0);
        else err = steps->transfer(steps->ctx, -1, rank + 1, 1);
    }
    return err;
}

typedef struct {
    void *dst, *incoming;
    size_t count, bytes;
    rt_dtype dtype;
    rt_op op;
    MPI_Comm comm;
} allreduce_state;

static int allreduce_transfer(void *ctx, int to, int from, int into_own) {
    allreduce_state *s = ctx;
    return rt_transfer_bytes(s->dst, to, s->bytes, into_own ? s->dst : s->incoming, from, s->bytes,
                             TAG_RECURSIVE_DOUBLING, s->comm);
}

static void allreduce_combine(void *ctx) {
    allreduce_state *s = ctx;
    rt_reduce_inplace(s->dst, s->incoming, s->count, s->dtype, s->op);
}

int rt_recursive_doubling_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                                    MPI_Comm comm) {
    int size;
    MPI_Comm_size(comm, &size);
    const size_t bytes = count * rt_dtype_size(dtype);
    if (src != dst) memcpy(dst, src, bytes);
    if (size == 1 || bytes == 0) return RT_OK;
    if (bytes > RT_MAX_MESSAGE_BYTES) return MPI_ERR_COUNT;
    void *incoming = rt_scratch(1, bytes);
    if (!incoming) return MPI_ERR_NO_MEM;
    allreduce_state state = {dst, incoming, count, bytes, dtype, op, comm};
    rt_recursive_doubling_steps steps = {&state, allreduce_transfer, allreduce_combine};
    return rt_recursive_doubling(&steps, comm);
}
