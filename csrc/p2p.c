/* Byte ranges over MPI point-to-point, and the segmentation every pipelined algorithm uses.
 * Messages are split at RT_MAX_MESSAGE_BYTES so a count always fits MPI's int; both sides split
 * the same way, and MPI's non-overtaking rule keeps the pieces in order under one tag. */
#include <stdlib.h>
#include "ringtrain.h"

static int grow(rt_requests *reqs) {
    if (reqs->count < reqs->capacity) return RT_OK;
    size_t capacity = reqs->capacity ? reqs->capacity * 2 : 16;
    MPI_Request *items = realloc(reqs->items, capacity * sizeof(MPI_Request));
    if (!items) return MPI_ERR_NO_MEM;
    reqs->items = items;
    reqs->capacity = capacity;
    return RT_OK;
}

int rt_isend_bytes(rt_requests *reqs, const void *buf, size_t bytes, int dest, int tag, MPI_Comm comm) {
    for (size_t offset = 0; offset < bytes; offset += RT_MAX_MESSAGE_BYTES) {
        size_t n = bytes - offset < RT_MAX_MESSAGE_BYTES ? bytes - offset : RT_MAX_MESSAGE_BYTES;
        int err = grow(reqs);
        if (err) return err;
        err = MPI_Isend((const char *)buf + offset, (int)n, MPI_BYTE, dest, tag, comm, &reqs->items[reqs->count]);
        if (err) return err;
        reqs->count++;
    }
    return RT_OK;
}

int rt_irecv_bytes(rt_requests *reqs, void *buf, size_t bytes, int source, int tag, MPI_Comm comm) {
    for (size_t offset = 0; offset < bytes; offset += RT_MAX_MESSAGE_BYTES) {
        size_t n = bytes - offset < RT_MAX_MESSAGE_BYTES ? bytes - offset : RT_MAX_MESSAGE_BYTES;
        int err = grow(reqs);
        if (err) return err;
        err = MPI_Irecv((char *)buf + offset, (int)n, MPI_BYTE, source, tag, comm, &reqs->items[reqs->count]);
        if (err) return err;
        reqs->count++;
    }
    return RT_OK;
}

int rt_wait_all(rt_requests *reqs) {
    int err = reqs->count ? MPI_Waitall((int)reqs->count, reqs->items, MPI_STATUSES_IGNORE) : RT_OK;
    reqs->count = 0;
    return err;
}

void rt_requests_free(rt_requests *reqs) {
    free(reqs->items);
    reqs->items = NULL;
    reqs->count = reqs->capacity = 0;
}

size_t rt_segment_count(size_t bytes, size_t segment_bytes, size_t align) {
    if (bytes == 0) return 0;
    size_t seg = segment_bytes < align ? align : segment_bytes - segment_bytes % align;
    return (bytes + seg - 1) / seg;
}

size_t rt_segment_length(size_t bytes, size_t segment_bytes, size_t align, size_t index, size_t *offset) {
    size_t seg = segment_bytes < align ? align : segment_bytes - segment_bytes % align;
    *offset = index * seg;
    return bytes - *offset < seg ? bytes - *offset : seg;
}
