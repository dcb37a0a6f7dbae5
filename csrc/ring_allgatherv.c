/* Ring allgather(v), segmented and pipelined.
 *
 * At step s (0 .. p-2) rank r sends block (r-s) right and receives block (r-1-s) from the left.
 * Every receive lands directly in its final place, so all of them are posted up front; each
 * received segment is forwarded as soon as it arrives, which pipelines the ring: a block's first
 * segment can be p-1 hops along while its last is still leaving its owner. */
#include <stdlib.h>
#include "ringtrain.h"

#define TAG_ALLGATHER 12

int rt_ring_allgatherv(void *buf, const size_t *bytes, const size_t *displs, size_t segment_bytes, MPI_Comm comm,
                       const rt_span_io *io) {
    int rank, size, err = RT_OK;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (size == 1) {
        if (io && bytes[0]) rt_span_unpack(io, buf, displs[0], bytes[0]);
        return RT_OK;
    }
    if (segment_bytes > RT_MAX_MESSAGE_BYTES) segment_bytes = RT_MAX_MESSAGE_BYTES;
    const int right = (rank + 1) % size, left = (rank - 1 + size) % size;
    char *base = (char *)buf;

    size_t total_segments = 0;
    for (int b = 0; b < size; b++) total_segments += rt_segment_count(bytes[b], segment_bytes, 1);
    size_t *first_req = malloc((size_t)size * sizeof(size_t)); /* index of step s's first receive */
    rt_requests recvs = {0}, sends = {0};
    if (!first_req) return MPI_ERR_NO_MEM;
    err = rt_requests_reserve(&recvs, total_segments, comm);

    size_t nreq = 0;
    for (int s = 0; s < size - 1 && !err; s++) {
        size_t b = (size_t)(((rank - 1 - s) % size + size) % size), off;
        first_req[s] = nreq;
        size_t n = rt_segment_count(bytes[b], segment_bytes, 1);
        for (size_t k = 0; k < n && !err; k++) {
            size_t len = rt_segment_length(bytes[b], segment_bytes, 1, k, &off);
            err = rt_irecv_slot(&recvs, nreq++, base + displs[b] + off, len, left, TAG_ALLGATHER);
        }
    }
    {   /* step 0: the rank's own block */
        size_t off, n = rt_segment_count(bytes[rank], segment_bytes, 1);
        for (size_t k = 0; k < n && !err; k++) {
            size_t len = rt_segment_length(bytes[rank], segment_bytes, 1, k, &off);
            err = rt_isend_bytes(&sends, base + displs[rank] + off, len, right, TAG_ALLGATHER, comm);
        }
        if (io && !err && bytes[rank]) rt_span_unpack(io, base, displs[rank], bytes[rank]);  /* while it is sent */
    }
    for (int s = 0; s < size - 1 && !err; s++) {
        size_t b = (size_t)(((rank - 1 - s) % size + size) % size), off;
        size_t n = rt_segment_count(bytes[b], segment_bytes, 1);
        for (size_t k = 0; k < n && !err; k++) {
            size_t len = rt_segment_length(bytes[b], segment_bytes, 1, k, &off);
            err = rt_wait_slot(&recvs, first_req[s] + k);
            if (!err && s + 1 < size - 1) /* forward: it is what the right neighbour needs next */
                err = rt_isend_bytes(&sends, base + displs[b] + off, len, right, TAG_ALLGATHER, comm);
            if (!err && io) rt_span_unpack(io, base, displs[b] + off, len);
        }
    }
    if (!err) err = rt_wait_all(&sends);
    rt_requests_free(&sends);
    rt_requests_free(&recvs);  /* after an error: no receive is left pointing into the caller's memory */
    free(first_req);
    return err;
}
