/* Tensor Fusion's copies: many small tensors packed back to back into one buffer, reduced once,
 * and unpacked again. Plain memcpy per tensor, but done here with the GIL released and without a
 * Python-level loop per tensor, which dominates for gradients of a few KB. */
#include <string.h>
#include "ringtrain.h"

void rt_pack(char *buffer, char *const *tensors, const size_t *bytes, size_t count) {
    size_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(buffer + offset, tensors[i], bytes[i]);
        offset += bytes[i];
    }
}

void rt_unpack(const char *buffer, char *const *tensors, const size_t *bytes, size_t count) {
    size_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(tensors[i], buffer + offset, bytes[i]);
        offset += bytes[i];
    }
}
