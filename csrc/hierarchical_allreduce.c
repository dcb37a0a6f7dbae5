/* Hierarchical allreduce across hosts, through each host's shared segment (shm_segment.c):
 *   1. inside the host, local rank r reduces region r of the buffer (a 64-byte aligned 1/n of
 *      it) into its own output (rt_shm_reduce_regions);
 *   2. across hosts, local rank r allreduces its whole region, in place, with local rank r of
 *      every other host (the ring, or recursive doubling if small, on the `cross` communicator
 *      of one rank per host): one large call per rank, so the network sees long pipelined
 *      transfers, and every local rank carries 1/n of the data across at the same time (with
 *      one_leader, local rank 0 owns the whole buffer and alone crosses hosts);
 *   3. inside the host, every region goes to every rank (rt_shm_share_regions).
 * Needs the same number of ranks on every host (shm_segment.c checks; otherwise the flat ring
 * runs), so that region r is the same bytes on every host. */
#include "ringtrain.h"

int rt_hierarchical_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                              const rt_tuning *tuning) {
    const int n = shm->local_size, me = shm->local_rank;
    const size_t esize = rt_dtype_size(dtype);
    rt_region regions[RT_SHM_MAX_LOCAL];
    for (int r = 0; r < n; r++) {
        size_t lo = 0, hi = r == 0 ? count : 0;
        if (!shm->one_leader) rt_shm_slice(count, esize, r, n, &lo, &hi);
        regions[r] = (rt_region){lo * esize, (hi - lo) * esize};
    }
    char *mine = (char *)dst + regions[me].start;
    const size_t mine_count = regions[me].bytes / esize;
    int err = rt_shm_reduce_regions(shm, src, mine, regions, dtype, op);
    if (!err && mine_count) {  /* (a region is empty on every host alike) */
        if (regions[me].bytes <= tuning->small_message_bytes)
            err = rt_recursive_doubling_allreduce(mine, mine, mine_count, dtype, op, shm->cross);
        else
            err = rt_ring_allreduce(mine, mine, mine_count, dtype, op, tuning->segment_bytes, shm->cross, NULL);
    }
    return err ? err : rt_shm_share_regions(shm, dst, regions);
}
