/* Grow-only scratch buffers and the lock that serialises collectives.
 * Fresh large allocations cost a page fault per 4 KB on first touch, which would show up
 * directly in allreduce bandwidth, so receive buffers are kept and reused between calls.
 * The lock makes concurrent callers from Python threads (the GIL is released during
 * communication) take turns instead of sharing scratch memory or interleaving messages. */
#include <stdlib.h>
#include <pthread.h>
#include "ringtrain.h"

#define RT_SCRATCH_SLOTS 5
static void *scratch[RT_SCRATCH_SLOTS];
static size_t scratch_bytes[RT_SCRATCH_SLOTS];
static pthread_mutex_t collective_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t round_lock = PTHREAD_MUTEX_INITIALIZER;

void *rt_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= RT_SCRATCH_SLOTS) return NULL;
    if (bytes <= scratch_bytes[slot] && scratch[slot]) return scratch[slot];
    free(scratch[slot]);
    size_t rounded = (bytes + 4095) & ~(size_t)4095;
    if (posix_memalign(&scratch[slot], 64, rounded ? rounded : 64) != 0) {
        scratch[slot] = NULL;
        scratch_bytes[slot] = 0;
        return NULL;
    }
    scratch_bytes[slot] = rounded;
    return scratch[slot];
}

void rt_lock(void) { pthread_mutex_lock(&collective_lock); }
void rt_unlock(void) { pthread_mutex_unlock(&collective_lock); }
void rt_round_lock(void) { pthread_mutex_lock(&round_lock); }
void rt_round_unlock(void) { pthread_mutex_unlock(&round_lock); }
