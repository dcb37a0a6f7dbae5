/* Ring allreduce = ring reduce-scatter + ring allgather (Patarasuk & Yuan; the Horovod paper).
 * Each rank sends and receives 2(p-1)/p of the buffer: bandwidth-optimal for large messages.
 * Blocks are as even as possible (the first count % p ranks take one extra element), so any
 * length works, including lengths below p, where some blocks are empty. */
#include <stdlib.h>
#include "ringtrain.h"

int rt_ring_allreduce(const void *src, void *dst, size_t count, rt_dtype dtype, rt_op op,
                      size_t segment_bytes, MPI_Comm comm, const rt_span_io *io) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const size_t esize = rt_dtype_size(dtype);
    /* whole elements per segment in both halves: a segment unpacked (io) is finished element-wise */
    segment_bytes = segment_bytes < esize ? esize : segment_bytes - segment_bytes % esize;
    size_t *table = malloc(4 * (size_t)size * sizeof(size_t));
    if (!table) return MPI_ERR_NO_MEM;
    size_t *counts = table, *displs = table + size, *bytes = table + 2 * size, *byte_displs = table + 3 * size;
    size_t offset = 0;
    for (int b = 0; b < size; b++) {
        counts[b] = count / size + ((size_t)b < count % size);
        displs[b] = offset;
        bytes[b] = counts[b] * esize;
        byte_displs[b] = offset * esize;
        offset += counts[b];
    }
    char *own = (char *)dst + displs[rank] * esize;
    int err = rt_ring_reduce_scatter(src, own, counts, displs, dtype, op, segment_bytes, comm, io);
    if (!err) err = rt_ring_allgatherv(dst, bytes, byte_displs, segment_bytes, comm, io);
    free(table);
    return err;
}
