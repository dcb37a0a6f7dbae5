/* Allreduce among the ranks of one host through their shared segment (shm_segment.c): no MPI,
 * no copies through MPI's cells. The data goes in pieces of at most piece_bytes, each piece in
 * two steps separated by flags rather than barriers:
 *   1. every rank copies its piece into its own buffer (all but its own slice, which only it
 *      reads) and raises `written`;
 *   2. once every rank's `written` shows this piece, rank r reduces slice r of the piece (a
 *      64-byte aligned 1/n of it) from its own input and the peers' buffers, read directly,
 *      into its own buffer, and raises `reduced`;
 *   3. once every `reduced` shows it, each rank copies every slice from its owner's buffer.
 * Each slice is computed by one rank and copied by the others, so every rank ends with the
 * same bits. The flags are counters that only grow (one per piece, on every rank alike), so
 * nothing is reset between calls, and two buffers per rank alternate: a rank writes a buffer
 * again two pieces later, after every peer raised `written` for the piece in between, which it
 * does only once it has finished copying out of that buffer. Waits are rt_wait_flags: a short
 * spin, then the library's yield/sleep policy and progress deadline (a rank that stopped is
 * named, never waited for silently). The data may be spans, several arrays read or written as if
 * they were one after another (a fusion group, without packing it first). */
#include <string.h>
#include "ringtrain.h"

/* Where a byte offset of the spans' concatenation falls: span `index`, which starts at `start`.
 * The copies below move forward through the data, so a cursor only moves forward (or back to
 * the first span when a piece's copy-out starts over). */
typedef struct {
    size_t index, start;
} span_cursor;

static void seek(const rt_spans *spans, span_cursor *c, size_t from) {
    if (from < c->start) c->index = c->start = 0;
    while (c->index < spans->count && c->start + spans->bytes[c->index] <= from) c->start += spans->bytes[c->index++];
}

/* [from, from + length) of the concatenation, one contiguous part of a span at a time. */
#define FOR_EACH_PART(spans, cursor, from, length, part, part_bytes, done, body)                       \
    do {                                                                                             \
        seek(spans, cursor, from);                                                                   \
        size_t at_ = (from), left_ = (length), i_ = (cursor)->index, start_ = (cursor)->start;       \
        while (left_) {                                                                              \
            const size_t skip_ = at_ - start_;                                                       \
            size_t part_bytes = (spans)->bytes[i_] - skip_;                                          \
            if (part_bytes > left_) part_bytes = left_;                                              \
            char *part = (spans)->data[i_] + skip_;                                                  \
            const size_t done = at_ - (from);                                                        \
            body;                                                                                    \
            at_ += part_bytes;                                                                       \
            left_ -= part_bytes;                                                                     \
            start_ += (spans)->bytes[i_++];                                                          \
        }                                                                                            \
    } while (0)

int rt_shm_allreduce_spans(rt_shm *shm, const rt_spans *src, const rt_spans *dst, size_t count, rt_dtype dtype,
                           rt_op op) {
    const int n = shm->local_size, me = shm->local_rank;
    const size_t esize = rt_dtype_size(dtype), bytes = count * esize, piece_bytes = shm->piece_bytes;
    const rt_flag *written[RT_SHM_MAX_LOCAL], *reduced[RT_SHM_MAX_LOCAL];
    int peers[RT_SHM_MAX_LOCAL];
    const size_t npeers = rt_shm_peer_flags(shm, 0, written, peers);
    rt_shm_peer_flags(shm, 1, reduced, peers);
    span_cursor in = {0, 0}, out = {0, 0};
    for (size_t offset = 0; offset < bytes; offset += piece_bytes) {
        const size_t length = bytes - offset < piece_bytes ? bytes - offset : piece_bytes, elements = length / esize;
        const uint64_t piece = ++shm->pieces;
        char *own = rt_shm_buffer(shm, me, piece);
        size_t lo, hi;
        rt_shm_slice(elements, esize, me, n, &lo, &hi);
        /* only what the peers read: this rank's own slice is reduced from src directly */
        FOR_EACH_PART(src, &in, offset, lo * esize, part, part_bytes, done, memcpy(own + done, part, part_bytes));
        FOR_EACH_PART(src, &in, offset + hi * esize, length - hi * esize, part, part_bytes, done,
                      memcpy(own + hi * esize + done, part, part_bytes));
        atomic_store_explicit(shm->flags[2 * me], piece, memory_order_release);
        int err = rt_wait_flags(written, peers, npeers, piece, shm->comm);
        if (err) return err;

        for (int r = 0, first = 1; r < n && hi > lo; r++) {
            if (r == me) continue;
            char *theirs = rt_shm_buffer(shm, r, piece) + lo * esize, *slice = own + lo * esize;
            if (first)
                FOR_EACH_PART(src, &in, offset + lo * esize, (hi - lo) * esize, part, part_bytes, done,
                              rt_reduce_into(slice + done, part, theirs + done, part_bytes / esize, dtype, op));
            else
                rt_reduce_inplace(slice, theirs, hi - lo, dtype, op);
            first = 0;
        }
        atomic_store_explicit(shm->flags[2 * me + 1], piece, memory_order_release);
        if ((err = rt_wait_flags(reduced, peers, npeers, piece, shm->comm))) return err;

        for (int r = 0; r < n; r++) {
            rt_shm_slice(elements, esize, r, n, &lo, &hi);
            const char *slice = rt_shm_buffer(shm, r, piece) + lo * esize;
            FOR_EACH_PART(dst, &out, offset + lo * esize, (hi - lo) * esize, part, part_bytes, done,
                          memcpy(part, slice + done, part_bytes));
        }
    }
    return RT_OK;
}

int rt_shm_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op) {
    size_t bytes = count * rt_dtype_size(dtype);
    char *in = (char *)src, *out = dst;
    const rt_spans from = {&in, &bytes, 1}, to = {&out, &bytes, 1};
    return rt_shm_allreduce_spans(shm, &from, &to, count, dtype, op);
}
