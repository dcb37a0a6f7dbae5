/* Tensor Fusion's copies: many small tensors packed back to back into one buffer, reduced once,
 * and unpacked again. Plain memcpy per tensor, but done here with the GIL released and without a
 * Python-level loop per tensor, which dominates for gradients of a few KB. The ring packs and
 * unpacks range by range as it goes (rt_span_pack, rt_span_unpack), overlapping the copies with
 * its transfers, and reduces what it receives with the tensors where they are (rt_span_reduce). */
#include <string.h>
#include "ringtrain.h"

void rt_pack(char *buffer, char *const *tensors, const size_t *bytes, size_t count) {
    size_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(buffer + offset, tensors[i], bytes[i]);
        offset += bytes[i];
    }
}

/* The span holding byte `offset` of the spans taken as one, and where it starts. */
static size_t span_at(const rt_spans *spans, size_t offset, size_t *start) {
    size_t i = 0, at = 0;
    while (i < spans->count && at + spans->bytes[i] <= offset) at += spans->bytes[i++];
    *start = at;
    return i;
}

void rt_span_pack(const rt_span_io *io, char *buffer, size_t offset, size_t len) {
    const size_t esize = rt_dtype_size(io->dtype), end = offset + len;
    size_t start, i = span_at(&io->src, offset, &start);
    for (; i < io->src.count && start < end; start += io->src.bytes[i++]) {
        const size_t from = offset > start ? offset : start, to = end < start + io->src.bytes[i] ? end : start + io->src.bytes[i];
        if (to <= from) continue;
        if (io->prescale != 1.0)
            rt_scale(buffer + from, io->src.data[i] + (from - start), (to - from) / esize, io->dtype, io->prescale);
        else
            memcpy(buffer + from, io->src.data[i] + (from - start), to - from);
    }
}

void rt_span_unpack(const rt_span_io *io, const char *buffer, size_t offset, size_t len) {
    const size_t esize = rt_dtype_size(io->dtype), end = offset + len;
    size_t start, i = span_at(&io->dst, offset, &start);
    for (; i < io->dst.count && start < end; start += io->dst.bytes[i++]) {
        const size_t from = offset > start ? offset : start, to = end < start + io->dst.bytes[i] ? end : start + io->dst.bytes[i];
        if (to <= from) continue;
        rt_finish_into(io->dst.data[i] + (from - start), buffer + from, (to - from) / esize, io->dtype, io->op,
                       io->postscale, io->size);
    }
}

void rt_span_reduce(const rt_span_io *io, char *into, char *received, size_t offset, size_t len) {
    const size_t esize = rt_dtype_size(io->dtype), end = offset + len;
    size_t start, i = span_at(&io->src, offset, &start);
    for (; i < io->src.count && start < end; start += io->src.bytes[i++]) {
        const size_t from = offset > start ? offset : start, to = end < start + io->src.bytes[i] ? end : start + io->src.bytes[i];
        if (to <= from) continue;
        const char *own = io->src.data[i] + (from - start);
        if (into) rt_reduce_into(into + (from - offset), own, received + (from - offset), (to - from) / esize, io->dtype, io->op);
        else rt_reduce_inplace(received + (from - offset), own, (to - from) / esize, io->dtype, io->op);
    }
}

void rt_unpack(const char *buffer, char *const *tensors, const size_t *bytes, size_t count) {
    size_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(tensors[i], buffer + offset, bytes[i]);
        offset += bytes[i];
    }
}
