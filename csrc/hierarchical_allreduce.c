/* Hierarchical allreduce across hosts, through each host's shared segment (shm_segment.c):
 *   1. reduce inside the host: local rank r owns region r of the buffer (a 64-byte aligned 1/n
 *      of it) and reduces it, piece by piece through the segment, into its own output;
 *   2. across hosts: local rank r allreduces its whole region, in place, with local rank r of
 *      every other host (the ring, or recursive doubling if small, on the `cross` communicator
 *      of one rank per host) - one large call per rank, so the network sees long pipelined
 *      transfers, and every local rank carries 1/n of the data across at the same time (or,
 *      with one_leader, local rank 0 owns the whole buffer and alone crosses hosts);
 *   3. share inside the host: each rank puts its region back into the segment piece by piece,
 *      and copies the others' out.
 * Piece k holds sub-chunk k of every region (region r's at offset r*Q, Q = piece_bytes / n). Each
 * step of phases 1 and 3 raises one flag, the rank's `written` counter: a rank writes a buffer
 * for step s only after every peer raised s - 1, which each does only once it has finished
 * reading the buffers of step s - 2 (the same double buffering as shm_allreduce.c). Needs the
 * same number of ranks on every host (shm_segment.c checks; otherwise the flat ring runs). */
#include <string.h>
#include "ringtrain.h"

typedef struct {
    size_t start, length;  /* bytes of the buffer */
} region;

static region region_of(size_t count, size_t esize, int r, int n, int one_leader) {
    if (one_leader) return (region){0, r == 0 ? count * esize : 0};
    const size_t unit = 64 / esize, units = (count + unit - 1) / unit;
    size_t lo = units * (size_t)r / (size_t)n * unit, hi = units * (size_t)(r + 1) / (size_t)n * unit;
    lo = lo < count ? lo : count;
    hi = hi < count ? hi : count;
    return (region){lo * esize, (hi - lo) * esize};
}

/* Sub-chunk k of a region: [*offset, *offset + return) within it, empty past its end. */
static size_t chunk_of(region g, size_t chunk_bytes, size_t k, size_t *offset) {
    *offset = k * chunk_bytes;
    if (*offset >= g.length) return 0;
    return g.length - *offset < chunk_bytes ? g.length - *offset : chunk_bytes;
}

static int allreduce_across_hosts(void *buf, size_t count, rt_dtype dtype, rt_op op, const rt_tuning *tuning,
                                  MPI_Comm cross) {
    if (count == 0) return RT_OK;  /* the same region is empty on every host */
    if (count * rt_dtype_size(dtype) <= tuning->small_message_bytes)
        return rt_recursive_doubling_allreduce(buf, buf, count, dtype, op, cross);
    return rt_ring_allreduce(buf, buf, count, dtype, op, tuning->segment_bytes, cross);
}

int rt_hierarchical_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                              const rt_tuning *tuning) {
    const int n = shm->local_size, me = shm->local_rank;
    const size_t esize = rt_dtype_size(dtype);
    /* a multiple of 64, so of esize; a leader's region fills the whole piece */
    const size_t chunk_bytes = shm->one_leader ? shm->piece_bytes : (shm->piece_bytes / (size_t)n) & ~(size_t)63;
    const rt_flag *written[n > 1 ? n - 1 : 1];
    int peers[n > 1 ? n - 1 : 1];
    size_t npeers = 0;
    for (int r = 0; r < n; r++) {
        if (r == me) continue;
        written[npeers] = shm->flags[2 * r];
        peers[npeers++] = shm->peer_ranks[r];
    }
    region regions[n];
    size_t longest = 0;
    for (int r = 0; r < n; r++) {
        regions[r] = region_of(count, esize, r, n, shm->one_leader);
        longest = regions[r].length > longest ? regions[r].length : longest;
    }
    const size_t pieces = (longest + chunk_bytes - 1) / chunk_bytes;
    const region mine = regions[me];
    int err;

    for (size_t k = 0; k < pieces; k++) {  /* 1. reduce this host's contributions to my region */
        const uint64_t step = ++shm->pieces;
        char *own = rt_shm_buffer(shm, me, step);
        size_t offset, length;
        for (int r = 0; r < n; r++)
            if (r != me && (length = chunk_of(regions[r], chunk_bytes, k, &offset)))
                memcpy(own + (size_t)r * chunk_bytes, (const char *)src + regions[r].start + offset, length);
        atomic_store_explicit(shm->flags[2 * me], step, memory_order_release);
        if ((err = rt_wait_flags(written, peers, npeers, step, shm->comm))) return err;
        if (!(length = chunk_of(mine, chunk_bytes, k, &offset))) continue;
        char *out = (char *)dst + mine.start + offset;
        const char *in = (const char *)src + mine.start + offset;
        for (int r = 0, first = 1; r < n; r++) {
            if (r == me) continue;
            const char *theirs = rt_shm_buffer(shm, r, step) + (size_t)me * chunk_bytes;
            if (first) rt_reduce_into(out, in, theirs, length / esize, dtype, op);
            else rt_reduce_inplace(out, theirs, length / esize, dtype, op);
            first = 0;
        }
        if (n == 1 && out != in) memcpy(out, in, length);
    }

    /* 2. my region across hosts */
    if ((err = allreduce_across_hosts((char *)dst + mine.start, mine.length / esize, dtype, op, tuning, shm->cross)))
        return err;

    for (size_t k = 0; k < pieces; k++) {  /* 3. every region to every rank of the host */
        const uint64_t step = ++shm->pieces;
        size_t offset, length = chunk_of(mine, chunk_bytes, k, &offset);
        if (length) memcpy(rt_shm_buffer(shm, me, step) + (size_t)me * chunk_bytes, (char *)dst + mine.start + offset,
                           length);
        atomic_store_explicit(shm->flags[2 * me], step, memory_order_release);
        if ((err = rt_wait_flags(written, peers, npeers, step, shm->comm))) return err;
        for (int r = 0; r < n; r++)
            if (r != me && (length = chunk_of(regions[r], chunk_bytes, k, &offset)))
                memcpy((char *)dst + regions[r].start + offset, rt_shm_buffer(shm, r, step) + (size_t)r * chunk_bytes,
                       length);
    }
    return RT_OK;
}
