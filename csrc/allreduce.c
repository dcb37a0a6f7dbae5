/* The allreduce and reduce-scatter entry points: prescale, pick the algorithm by message size
 * (and, where the set's ranks share a host, shared memory: shm_segment.c; a reduce-scatter
 * inside one host always takes it), then average / postscale. Average is reduced as a Sum and divided afterwards: in floating
 * point by multiplying with postscale / p, for integers by exact division (truncating toward
 * zero, like C and torch's rounding_mode="trunc"), then postscale. */
#include <string.h>
#include "ringtrain.h"

static int is_integer(rt_dtype dtype) {
    return dtype == RT_INT8 || dtype == RT_INT16 || dtype == RT_INT32 || dtype == RT_INT64 || dtype == RT_UINT8;
}

void rt_finish_into(void *dst, const void *src, size_t count, rt_dtype dtype, rt_op op, double postscale, int size) {
    if (count == 0) return;
    if (op == RT_AVERAGE && is_integer(dtype)) {
        if (dst != src) memcpy(dst, src, count * rt_dtype_size(dtype));
        rt_divide_integers(dst, count, dtype, size);
        if (postscale != 1.0) rt_scale(dst, dst, count, dtype, postscale);
        return;
    }
    const double factor = op == RT_AVERAGE ? postscale / size : postscale;  /* 1 rank's average: no pass */
    if (factor != 1.0) rt_scale(dst, src, count, dtype, factor);  /* the copy and the scaling in one pass */
    else if (dst != src) memcpy(dst, src, count * rt_dtype_size(dtype));
}

void rt_finish_reduction(void *buf, size_t count, rt_dtype dtype, rt_op op, double postscale, int size) {
    rt_finish_into(buf, buf, count, dtype, op, postscale, size);
}

/* The algorithm for `bytes` on `size` ranks (shm: the set's shared memory, or NULL). Small
 * messages stay with recursive doubling even inside a host: the pairing a negotiation round
 * carries them with, so a call's result is bitwise the same on either path. */
static rt_algorithm algorithm_for(int size, size_t bytes, const rt_shm *shm, const rt_tuning *tuning) {
    if (size == 1 || bytes == 0) return RT_ALGO_NONE;
    if (shm && bytes > tuning->small_message_bytes &&
        bytes >= (shm->cross != MPI_COMM_NULL ? tuning->hierarchical_min_bytes : tuning->shm_min_bytes))
        return shm->cross != MPI_COMM_NULL ? RT_ALGO_HIERARCHICAL : RT_ALGO_SHARED_MEMORY;
    if (bytes <= tuning->small_message_bytes && bytes <= RT_MAX_MESSAGE_BYTES) return RT_ALGO_RECURSIVE_DOUBLING;
    return RT_ALGO_RING;
}

int rt_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                 double prescale, double postscale, const rt_tuning *tuning, MPI_Comm comm,
                 rt_algorithm *used) {
    int size, err = RT_OK;
    MPI_Comm_size(comm, &size);
    const size_t bytes = count * rt_dtype_size(dtype);
    if (prescale != 1.0) { /* scale into the output, then reduce it in place: the input stays untouched */
        rt_scale(dst, src, count, dtype, prescale);
        src = dst;
    }
    rt_shm *shm = size > 1 && count ? rt_shm_find(comm) : NULL;
    *used = algorithm_for(size, bytes, shm, tuning);
    switch (*used) {
    case RT_ALGO_NONE:
        if (src != dst && bytes) memcpy(dst, src, bytes);
        break;
    case RT_ALGO_HIERARCHICAL:
        err = rt_hierarchical_allreduce(shm, src, dst, count, dtype, op, tuning);
        break;
    case RT_ALGO_SHARED_MEMORY:
        err = rt_shm_allreduce(shm, src, dst, count, dtype, op);
        break;
    case RT_ALGO_RECURSIVE_DOUBLING:
        err = rt_recursive_doubling_allreduce(src, dst, count, dtype, op, comm);
        break;
    default:
        err = rt_ring_allreduce(src, dst, count, dtype, op, tuning->segment_bytes, comm, NULL);
    }
    if (!err) rt_finish_reduction(dst, count, dtype, op, postscale, size);
    return err;
}

int rt_allreduce_fused(char *const *srcs, char *const *dsts, const size_t *bytes, size_t n, char *fused,
                       rt_dtype dtype, rt_op op, double prescale, double postscale, const rt_tuning *tuning,
                       MPI_Comm comm, rt_algorithm *used) {
    const size_t esize = rt_dtype_size(dtype);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += bytes[i];
    int size;
    MPI_Comm_size(comm, &size);
    if (size == 1 || !total) {  /* nothing to send: each tensor scaled (or copied) where it is, no packing */
        for (size_t i = 0; i < n; i++)
            rt_allreduce(srcs[i], dsts[i], bytes[i] / esize, dtype, op, prescale, postscale, tuning, comm, used);
        *used = RT_ALGO_NONE;
        return RT_OK;
    }
    rt_shm *shm = rt_shm_find(comm);
    /* exactly rt_allreduce's choice for the packed buffer: shared memory inside one host */
    if (!shm || shm->cross != MPI_COMM_NULL || total <= tuning->small_message_bytes || total < tuning->shm_min_bytes) {
        if (algorithm_for(size, total, shm, tuning) == RT_ALGO_RING) {  /* packed and unpacked as the ring goes */
            const rt_span_io io = {{srcs, bytes, n}, {dsts, bytes, n}, dtype, op, prescale, postscale, size};
            *used = RT_ALGO_RING;
            return rt_ring_allreduce(fused, fused, total / esize, dtype, op, tuning->segment_bytes, comm, &io);
        }
        rt_pack(fused, srcs, bytes, n);
        int err = rt_allreduce(fused, fused, total / esize, dtype, op, prescale, postscale, tuning, comm, used);
        if (!err) rt_unpack(fused, dsts, bytes, n);
        return err;
    }
    *used = RT_ALGO_SHARED_MEMORY;
    if (prescale != 1.0) { /* scaled into the outputs, then reduced there: the inputs stay untouched */
        for (size_t i = 0; i < n; i++) rt_scale(dsts[i], srcs[i], bytes[i] / esize, dtype, prescale);
        srcs = dsts;
    }
    const rt_spans from = {srcs, bytes, n}, to = {dsts, bytes, n};
    int err = rt_shm_allreduce_spans(shm, &from, &to, total / esize, dtype, op);
    for (size_t i = 0; i < n && !err; i++) rt_finish_reduction(dsts[i], bytes[i] / esize, dtype, op, postscale, size);
    return err;
}

int rt_reduce_scatter(const void *src, void *dst, const size_t *counts, rt_dtype dtype, rt_op op,
                      double prescale, double postscale, size_t segment_bytes, MPI_Comm comm) {
    int rank, size, err;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const size_t esize = rt_dtype_size(dtype);
    size_t total = 0;
    size_t displs[size > 0 ? size : 1];
    for (int b = 0; b < size; b++) { displs[b] = total; total += counts[b]; }
    if (prescale != 1.0 && total) {
        void *scaled = rt_scratch(2, total * esize);
        if (!scaled) return MPI_ERR_NO_MEM;
        rt_scale(scaled, src, total, dtype, prescale);
        src = scaled;
    }
    rt_shm *shm = rt_shm_find(comm);
    if (shm && shm->cross == MPI_COMM_NULL) {  /* one host: local rank r is rank r, region r its block */
        rt_region regions[RT_SHM_MAX_LOCAL];
        for (int b = 0; b < size; b++) regions[b] = (rt_region){displs[b] * esize, counts[b] * esize};
        err = rt_shm_reduce_regions(shm, src, dst, regions, dtype, op);
    } else {
        err = rt_ring_reduce_scatter(src, dst, counts, displs, dtype, op, segment_bytes, comm, NULL);
    }
    if (!err) rt_finish_reduction(dst, counts[rank], dtype, op, postscale, size);
    return err;
}
