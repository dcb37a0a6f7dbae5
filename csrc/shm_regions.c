/* The two steps that the collectives inside a host are built from, through the host's shared
 * segment (shm_segment.c). Local rank r owns region r of a buffer (any byte range; empty for
 * ranks that own nothing):
 *   rt_shm_reduce_regions: the reduction over every local rank's `src` of region r ends in
 *     rank r's `own_out` (reducescatter inside a host; the first step of the hierarchical
 *     allreduce);
 *   rt_shm_share_regions: region r of rank r's `buf` is copied into every other rank's `buf`
 *     (allgather; broadcast, where the root owns everything; the hierarchical allreduce's last
 *     step).
 * Both go in steps of one piece per rank buffer. Every step raises the rank's `written` counter
 * once, and a rank writes a buffer for step s only after every peer raised s - 1, which each
 * does only once it has finished reading the buffers of step s - 2 (two buffers per rank
 * alternate). Every local rank takes every step, owning something or not, so the counters stay
 * in step. Region r is summed by rank r from its own values first, then the others' in local
 * rank order. */
#include <string.h>
#include "ringtrain.h"

typedef struct {
    const rt_flag *written[RT_SHM_MAX_LOCAL];
    int peers[RT_SHM_MAX_LOCAL];
    size_t count;
} peer_flags;

static void others(const rt_shm *shm, peer_flags *p) { p->count = rt_shm_peer_flags(shm, 0, p->written, p->peers); }

/* Bytes [*offset, *offset + return) of a region at step k, in chunks of chunk_bytes. */
static size_t chunk_of(rt_region g, size_t chunk_bytes, size_t k, size_t *offset) {
    *offset = k * chunk_bytes;
    if (*offset >= g.bytes) return 0;
    return g.bytes - *offset < chunk_bytes ? g.bytes - *offset : chunk_bytes;
}

static size_t steps_for(const rt_region *regions, int n, size_t chunk_bytes) {
    size_t longest = 0;
    for (int r = 0; r < n; r++) longest = regions[r].bytes > longest ? regions[r].bytes : longest;
    return (longest + chunk_bytes - 1) / chunk_bytes;
}

static int step_done(rt_shm *shm, const peer_flags *p, uint64_t step) {
    atomic_store_explicit(shm->flags[2 * shm->local_rank], step, memory_order_release);
    return rt_wait_flags(p->written, p->peers, p->count, step, shm->comm);
}

int rt_shm_reduce_regions(rt_shm *shm, const void *src, void *own_out, const rt_region *regions, rt_dtype dtype,
                          rt_op op) {
    const int n = shm->local_size, me = shm->local_rank;
    const size_t esize = rt_dtype_size(dtype);
    /* each rank's buffer holds a chunk of every region but its own: rank r's at r * chunk_bytes */
    const size_t chunk_bytes = (shm->piece_bytes / (size_t)n) & ~(size_t)63;
    const size_t steps = steps_for(regions, n, chunk_bytes);
    peer_flags p;
    others(shm, &p);
    for (size_t k = 0; k < steps; k++) {
        const uint64_t step = ++shm->pieces;
        char *own = rt_shm_buffer(shm, me, step);
        size_t offset, length;
        for (int r = 0; r < n; r++)
            if (r != me && (length = chunk_of(regions[r], chunk_bytes, k, &offset)))
                memcpy(own + (size_t)r * chunk_bytes, (const char *)src + regions[r].start + offset, length);
        int err = step_done(shm, &p, step);
        if (err) return err;
        if (!(length = chunk_of(regions[me], chunk_bytes, k, &offset))) continue;
        char *out = (char *)own_out + offset;
        const char *in = (const char *)src + regions[me].start + offset;
        if (n == 1 && out != in) memcpy(out, in, length);
        for (int r = 0, first = 1; r < n; r++) {
            if (r == me) continue;
            const char *theirs = rt_shm_buffer(shm, r, step) + (size_t)me * chunk_bytes;
            if (first) rt_reduce_into(out, in, theirs, length / esize, dtype, op);
            else rt_reduce_inplace(out, theirs, length / esize, dtype, op);
            first = 0;
        }
    }
    return RT_OK;
}

int rt_shm_share_regions(rt_shm *shm, void *buf, const rt_region *regions) {
    const int n = shm->local_size, me = shm->local_rank;
    const size_t chunk_bytes = shm->piece_bytes;  /* a rank's buffer carries only its own region */
    const size_t steps = steps_for(regions, n, chunk_bytes);
    peer_flags p;
    others(shm, &p);
    for (size_t k = 0; k < steps; k++) {
        const uint64_t step = ++shm->pieces;
        size_t offset, length = chunk_of(regions[me], chunk_bytes, k, &offset);
        if (length) memcpy(rt_shm_buffer(shm, me, step), (char *)buf + regions[me].start + offset, length);
        int err = step_done(shm, &p, step);
        if (err) return err;
        for (int r = 0; r < n; r++)
            if (r != me && (length = chunk_of(regions[r], chunk_bytes, k, &offset)))
                memcpy((char *)buf + regions[r].start + offset, rt_shm_buffer(shm, r, step), length);
    }
    return RT_OK;
}
