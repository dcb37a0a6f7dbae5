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
 * named, never waited for silently). */
#include <string.h>
#include "ringtrain.h"

int rt_shm_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op) {
    const int n = shm->local_size, me = shm->local_rank;
    const size_t esize = rt_dtype_size(dtype), bytes = count * esize, piece_bytes = shm->piece_bytes;
    const rt_flag *written[RT_SHM_MAX_LOCAL], *reduced[RT_SHM_MAX_LOCAL];
    int peers[RT_SHM_MAX_LOCAL];
    const size_t npeers = rt_shm_peer_flags(shm, 0, written, peers);
    rt_shm_peer_flags(shm, 1, reduced, peers);
    for (size_t offset = 0; offset < bytes; offset += piece_bytes) {
        const size_t length = bytes - offset < piece_bytes ? bytes - offset : piece_bytes, elements = length / esize;
        const uint64_t piece = ++shm->pieces;
        char *own = rt_shm_buffer(shm, me, piece);
        const char *mine = (const char *)src + offset;
        size_t lo, hi;
        rt_shm_slice(elements, esize, me, n, &lo, &hi);
        /* only what the peers read: this rank's own slice is reduced from src directly */
        memcpy(own, mine, lo * esize);
        memcpy(own + hi * esize, mine + hi * esize, length - hi * esize);
        atomic_store_explicit(shm->flags[2 * me], piece, memory_order_release);
        int err = rt_wait_flags(written, peers, npeers, piece, shm->comm);
        if (err) return err;

        for (int r = 0, first = 1; r < n && hi > lo; r++) {
            if (r == me) continue;
            const char *theirs = rt_shm_buffer(shm, r, piece) + lo * esize;
            if (first) rt_reduce_into(own + lo * esize, mine + lo * esize, theirs, hi - lo, dtype, op);
            else rt_reduce_inplace(own + lo * esize, theirs, hi - lo, dtype, op);
            first = 0;
        }
        atomic_store_explicit(shm->flags[2 * me + 1], piece, memory_order_release);
        if ((err = rt_wait_flags(reduced, peers, npeers, piece, shm->comm))) return err;

        for (int r = 0; r < n; r++) {
            rt_shm_slice(elements, esize, r, n, &lo, &hi);
            if (hi > lo) memcpy((char *)dst + offset + lo * esize, rt_shm_buffer(shm, r, piece) + lo * esize, (hi - lo) * esize);
        }
    }
    return RT_OK;
}
