/* Segmented binomial-tree broadcast.
 *
 * Ranks are renumbered relative to the root (v = (r - root) mod p). A rank's parent is v with
 * its lowest set bit cleared; its children are v + 2^j for each 2^j below that bit. ceil(log2 p)
 * levels, so latency grows slowly with p; and since every segment is forwarded to the children
 * the moment it arrives, large buffers stream down the tree instead of waiting level by level. */
#include <stdlib.h>
#include "ringtrain.h"

#define TAG_BROADCAST 14

int rt_tree_broadcast(void *buf, size_t bytes, int root, size_t segment_bytes, MPI_Comm comm) {
    int rank, size, err = RT_OK;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (size == 1 || bytes == 0) return RT_OK;
    if (segment_bytes > RT_MAX_MESSAGE_BYTES) segment_bytes = RT_MAX_MESSAGE_BYTES;
    const int v = (rank - root + size) % size;
    int lowbit = 1;
    while (lowbit < size) lowbit <<= 1; /* for the root: above every child distance */
    if (v) lowbit = v & -v;
    const int parent = v ? ((v - lowbit) + root) % size : -1;

    int children[64], nchildren = 0;
    for (int mask = lowbit >> 1; mask > 0; mask >>= 1)
        if (v + mask < size) children[nchildren++] = (v + mask + root) % size;

    const size_t nseg = rt_segment_count(bytes, segment_bytes, 1);
    rt_requests recvs = {0}, sends = {0};
    char *base = (char *)buf;
    if (parent >= 0) {
        err = rt_requests_reserve(&recvs, nseg, comm);
        for (size_t k = 0; k < nseg && !err; k++) {
            size_t off, len = rt_segment_length(bytes, segment_bytes, 1, k, &off);
            err = rt_irecv_slot(&recvs, k, base + off, len, parent, TAG_BROADCAST);
        }
    }
    for (size_t k = 0; k < nseg && !err; k++) {
        size_t off, len = rt_segment_length(bytes, segment_bytes, 1, k, &off);
        if (parent >= 0) err = rt_wait_slot(&recvs, k);
        for (int c = 0; c < nchildren && !err; c++)
            err = rt_isend_bytes(&sends, base + off, len, children[c], TAG_BROADCAST, comm);
    }
    if (!err) err = rt_wait_all(&sends);
    rt_requests_free(&sends);
    rt_requests_free(&recvs);
    return err;
}
