/* A negotiation round's agreement and, when it is small, its data, in one recursive-doubling
 * exchange: the engine's steady state (the same small tensors every step) costs one message per
 * partner instead of a bit-vector collective followed by a data collective.
 *
 * Each rank's message is a header, its round words twice (once to AND, once complemented, so
 * the AND of complements gives the complement of the OR) and optionally its data, scaled by
 * prescale. Combining two messages ANDs both word arrays and reduces the data if both carry
 * data of the same dtype, op and length; otherwise the data is dropped. After the exchange every
 * rank holds the same combined message: when AND == OR every rank proposed the same words, so
 * (response cache bits being the same on every rank) the same tensors, and if the data survived
 * it is their allreduce. That decision is the same on every rank; nothing reaches the caller's
 * output unless it holds.
 *
 * The pairing is rt_recursive_doubling_allreduce's (the shared schedule rt_recursive_doubling),
 * so the result is bitwise what that algorithm gives. Receives are posted at the
 * largest message any rank may send (the data bound is the same on every rank); a shorter one
 * says its length in its header. All transfers go through the transport (p2p.c). */
#include <string.h>
#include "ringtrain.h"

#define TAG_ROUND_EXCHANGE 17

typedef struct {
    uint32_t carries;       /* 1: data follows the words */
    int32_t dtype, op;
    uint32_t reserved;
    uint64_t data_bytes;
} header;

static size_t message_bytes(const void *message, size_t nwords) {
    const header *h = message;
    return sizeof(header) + 2 * nwords * 8 + (h->carries ? (size_t)h->data_bytes : 0);
}

static uint64_t *and_words(void *m) { return (uint64_t *)((char *)m + sizeof(header)); }
static char *data_of(void *m, size_t nwords) { return (char *)m + sizeof(header) + 2 * nwords * 8; }

typedef struct {
    void *mine, *incoming;
    size_t nwords, capacity;
    MPI_Comm comm;
} exchange_state;

static int exchange_transfer(void *ctx, int to, int from, int into_own) {
    exchange_state *s = ctx;
    return rt_transfer_bytes(s->mine, to, message_bytes(s->mine, s->nwords), into_own ? s->mine : s->incoming, from,
                             s->capacity, TAG_ROUND_EXCHANGE, s->comm);
}

/* mine = mine combined with theirs */
static void exchange_combine(void *ctx) {
    exchange_state *s = ctx;
    void *mine = s->mine, *theirs = s->incoming;
    const size_t nwords = s->nwords;
    header *a = mine, *b = theirs;
    uint64_t *wa = and_words(mine), *wb = and_words(theirs);
    for (size_t i = 0; i < 2 * nwords; i++) wa[i] &= wb[i];
    if (a->carries && !(b->carries && a->dtype == b->dtype && a->op == b->op && a->data_bytes == b->data_bytes)) {
        a->carries = 0;
        return;
    }
    if (a->carries && a->data_bytes) {
        const size_t esize = rt_dtype_size((rt_dtype)a->dtype);
        rt_reduce_inplace(data_of(mine, nwords), data_of(theirs, nwords), a->data_bytes / esize, (rt_dtype)a->dtype,
                          (rt_op)a->op);
    }
}

int rt_round_exchange(uint64_t *words, size_t nwords, char *const *srcs, const size_t *src_bytes, size_t nsrcs,
                      rt_dtype dtype, rt_op op, double prescale, size_t data_bound, MPI_Comm comm, int *carried,
                      void **data) {
    int size, err = RT_OK;
    MPI_Comm_size(comm, &size);
    size_t total = 0;
    for (size_t i = 0; i < nsrcs; i++) total += src_bytes[i];
    const size_t capacity = sizeof(header) + 2 * nwords * 8 + data_bound;
    if (capacity > RT_MAX_MESSAGE_BYTES) return MPI_ERR_COUNT;
    char *buffers = rt_scratch(RT_ROUND_SLOT, 2 * capacity);
    if (!buffers) return MPI_ERR_NO_MEM;
    void *mine = buffers, *incoming = buffers + capacity;
    header *h = mine;
    memset(h, 0, sizeof *h);
    h->carries = nsrcs > 0 && total <= data_bound;
    h->dtype = (int32_t)dtype;
    h->op = (int32_t)op;
    h->data_bytes = h->carries ? total : 0;
    uint64_t *w = and_words(mine);
    for (size_t i = 0; i < nwords; i++) { w[i] = words[i]; w[nwords + i] = ~words[i]; }
    if (h->carries && total) {
        rt_pack(data_of(mine, nwords), srcs, src_bytes, nsrcs);
        if (prescale != 1.0) {
            char *d = data_of(mine, nwords);
            rt_scale(d, d, total / rt_dtype_size(dtype), dtype, prescale);
        }
    }

    if (size > 1) {
        exchange_state state = {mine, incoming, nwords, capacity, comm};
        rt_recursive_doubling_steps steps = {&state, exchange_transfer, exchange_combine};
        err = rt_recursive_doubling(&steps, comm);
    }
    if (err) return err;
    int all_equal = 1;
    for (size_t i = 0; i < nwords; i++) {
        words[i] = w[i];
        all_equal &= w[i] == ~w[nwords + i];
    }
    *carried = all_equal && h->carries;
    *data = data_of(mine, nwords);
    return RT_OK;
}
