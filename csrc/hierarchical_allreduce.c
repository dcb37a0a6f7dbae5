/* Hierarchical allreduce across hosts: inside each host the shared-memory allreduce
 * (shm_allreduce.c) reduces slice r of every piece on local rank r; between that and the copy
 * out, local rank r allreduces its slice with the local rank r of every other host (the
 * `cross` communicator, one rank per host). So every local rank carries 1/n of the data over
 * the network at the same time, where a flat ring sends twice across hosts for every
 * host boundary it crosses. Needs the same number of ranks on every host (shm_segment.c checks;
 * otherwise the flat ring runs). */
#include "ringtrain.h"

typedef struct {
    rt_dtype dtype;
    rt_op op;
    const rt_tuning *tuning;
    MPI_Comm cross;
} across_hosts;

static int allreduce_slice(void *ctx, void *slice, size_t count) {
    const across_hosts *a = ctx;
    const size_t bytes = count * rt_dtype_size(a->dtype);
    if (count == 0) return RT_OK;  /* the same slice is empty on every host */
    if (bytes <= a->tuning->small_message_bytes)
        return rt_recursive_doubling_allreduce(slice, slice, count, a->dtype, a->op, a->cross);
    return rt_ring_allreduce(slice, slice, count, a->dtype, a->op, a->tuning->segment_bytes, a->cross);
}

int rt_hierarchical_allreduce(rt_shm *shm, const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                              const rt_tuning *tuning) {
    across_hosts a = {dtype, op, tuning, shm->cross};
    rt_slice_step step = {&a, allreduce_slice};
    return rt_shm_allreduce(shm, src, dst, count, dtype, op, &step);
}
