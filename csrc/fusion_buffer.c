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

/* The pieces of bytes [offset, end) of the spans taken as one, span by span: next_piece gives the
 * next one's address in its span and its range [from, to) of the whole, or NULL after the last. */
typedef struct {
    const rt_spans *spans;
    size_t i, start, offset, end;  /* span i begins at byte `start` of the whole */
} piece_walk;

static piece_walk walk_pieces(const rt_spans *spans, size_t offset, size_t len) {
    piece_walk walk = {spans, 0, 0, offset, offset + len};
    while (walk.i < spans->count && walk.start + spans->bytes[walk.i] <= offset) walk.start += spans->bytes[walk.i++];
    return walk;
}

static char *next_piece(piece_walk *walk, size_t *from, size_t *to) {
    while (walk->i < walk->spans->count && walk->start < walk->end) {
        const size_t start = walk->start, bytes = walk->spans->bytes[walk->i];
        char *data = walk->spans->data[walk->i];
        walk->start += bytes;
        walk->i++;
        *from = walk->offset > start ? walk->offset : start;
        *to = walk->end < start + bytes ? walk->end : start + bytes;
        if (*to > *from) return data + (*from - start);
    }
    return NULL;
}

void rt_span_pack(const rt_span_io *io, char *buffer, size_t offset, size_t len) {
    const size_t esize = rt_dtype_size(io->dtype);
    piece_walk walk = walk_pieces(&io->src, offset, len);
    size_t from, to;
    for (const char *own; (own = next_piece(&walk, &from, &to));) {
        if (io->prescale != 1.0) rt_scale(buffer + from, own, (to - from) / esize, io->dtype, io->prescale);
        else memcpy(buffer + from, own, to - from);
    }
}

void rt_span_unpack(const rt_span_io *io, const char *buffer, size_t offset, size_t len) {
    const size_t esize = rt_dtype_size(io->dtype);
    piece_walk walk = walk_pieces(&io->dst, offset, len);
    size_t from, to;
    for (char *out; (out = next_piece(&walk, &from, &to));)
        rt_finish_into(out, buffer + from, (to - from) / esize, io->dtype, io->op, io->postscale, io->size);
}

void rt_span_reduce(const rt_span_io *io, char *into, char *received, size_t offset, size_t len) {
    const size_t esize = rt_dtype_size(io->dtype);
    piece_walk walk = walk_pieces(&io->src, offset, len);
    size_t from, to;
    for (const char *own; (own = next_piece(&walk, &from, &to));) {
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
