/* The shared-memory segment of a communicator's ranks on one host, and the registry that finds
 * it from the communicator.
 *
 * rt_shm_attach (collective over comm, once per process set) splits comm by host. The first
 * rank of each host creates a POSIX segment named after its pid, reserves its pages with
 * posix_fallocate (a tmpfs that is too small fails here with ENOSPC, not later with SIGBUS),
 * the others map it, and it is unlinked as soon as every rank of the host has mapped it, so a
 * job killed at any later point leaves nothing in /dev/shm. Every rank of comm must agree on
 * the outcome (the algorithm a size picks must be the same everywhere, or messages would not
 * match), so a failure on any host turns the path off on all of them, with its reason.
 *
 * Layout: a line of flags per local rank (written, reduced: see shm_allreduce.c), then two
 * buffers of piece_bytes per local rank (double buffering between consecutive pieces). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ringtrain.h"

#define FLAG_LINE 128   /* bytes per local rank's flags: two cache lines, no false sharing between ranks */
#define MAX_SEGMENTS 64

static rt_shm *registry[MAX_SEGMENTS];

rt_shm *rt_shm_find(MPI_Comm comm) {
    for (int i = 0; i < MAX_SEGMENTS; i++)
        if (registry[i] && registry[i]->comm == comm) return registry[i];
    return NULL;
}

static void release(rt_shm *shm) {
    if (shm->base) munmap(shm->base, shm->mapped);
    if (shm->cross != MPI_COMM_NULL) MPI_Comm_free(&shm->cross);
    if (shm->node != MPI_COMM_NULL) MPI_Comm_free(&shm->node);
    free(shm->peer_ranks);
    free(shm->flags);
    free(shm);
}

/* The leader's part: create, reserve and map the segment; 0 or an errno, with `name` filled. */
static int create_segment(char *name, size_t name_len, size_t bytes, char **base) {
    static int created = 0;
    snprintf(name, name_len, "/ringtrain-%ld-%d", (long)getpid(), created++);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return errno;
    int err = ftruncate(fd, (off_t)bytes) ? errno : posix_fallocate(fd, 0, (off_t)bytes);
    if (!err) {
        *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (*base == MAP_FAILED) { err = errno; *base = NULL; }
    }
    close(fd);
    if (err) shm_unlink(name);
    return err;
}

static int open_segment(const char *name, size_t bytes, char **base) {
    int fd = shm_open(name, O_RDWR, 0600);
    if (fd < 0) return errno;
    *base = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = *base == MAP_FAILED ? errno : 0;
    if (err) *base = NULL;
    close(fd);
    return err;
}

int rt_shm_attach(MPI_Comm comm, const rt_shm_settings *settings, rt_shm_mode *mode, char *reason,
                  size_t reason_len, int *failed_here) {
    int rank, size, err;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    *mode = RT_SHM_OFF;
    *failed_here = 0;
    reason[0] = '\0';
    rt_shm *shm = calloc(1, sizeof *shm);
    if (!shm) return MPI_ERR_NO_MEM;
    shm->comm = comm;
    shm->node = shm->cross = MPI_COMM_NULL;
    shm->piece_bytes = (settings->piece_bytes + 63) & ~(size_t)63;
    shm->one_leader = settings->one_leader;
    if ((err = MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &shm->node))) goto fail;
    MPI_Comm_rank(shm->node, &shm->local_rank);
    MPI_Comm_size(shm->node, &shm->local_size);
    if (shm->piece_bytes < (size_t)shm->local_size * 64)  /* a piece holds 64 bytes of every local rank's region */
        shm->piece_bytes = (size_t)shm->local_size * 64;
    int mine[3] = {shm->local_rank == 0, shm->local_size, -shm->local_size}, all[3];
    if ((err = MPI_Allreduce(mine, all, 1, MPI_INT, MPI_SUM, comm)) ||
        (err = MPI_Allreduce(mine + 1, all + 1, 2, MPI_INT, MPI_MAX, comm)))
        goto fail;
    shm->hosts = all[0];
    const int uniform = all[1] == -all[2];  /* the largest host equals the smallest */
    if (shm->hosts == size) {
        snprintf(reason, reason_len, "one rank per host: nothing to share");
        goto off;
    }
    if (all[1] > RT_SHM_MAX_LOCAL) {
        snprintf(reason, reason_len, "more than %d ranks on one host", RT_SHM_MAX_LOCAL);
        goto off;
    }
    if (shm->hosts > 1 && !settings->hierarchical) {
        snprintf(reason, reason_len, "hierarchical allreduce is off: the ring spans the %d hosts", shm->hosts);
        goto off;
    }
    if (shm->hosts > 1 && !uniform) {  /* ranks with the same local rank pair up across hosts */
        snprintf(reason, reason_len, "hosts have different numbers of ranks (%d to %d): the ring spans them",
                 -all[2], all[1]);
        goto off;
    }

    /* the segment: created by the host's first rank, its name sent to the others */
    const size_t flags_bytes = ((size_t)shm->local_size * FLAG_LINE + 4095) & ~(size_t)4095;
    shm->mapped = flags_bytes + (size_t)shm->local_size * 2 * shm->piece_bytes;
    char name[64] = {0};
    int failed = 0;
    if (shm->local_rank == 0) failed = create_segment(name, sizeof name, shm->mapped, &shm->base);
    if ((err = MPI_Bcast(name, sizeof name, MPI_CHAR, 0, shm->node)) ||
        (err = MPI_Bcast(&failed, 1, MPI_INT, 0, shm->node)))
        goto fail;
    if (!failed && shm->local_rank != 0) failed = open_segment(name, shm->mapped, &shm->base);
    if ((err = MPI_Barrier(shm->node))) goto fail;  /* everyone here has mapped it (or failed to) */
    if (shm->local_rank == 0 && name[0] && !failed) shm_unlink(name);
    int worst = failed, any;
    if ((err = MPI_Allreduce(&worst, &any, 1, MPI_INT, MPI_MAX, comm))) goto fail;
    if (any) {
        if (failed == ENOSPC)
            snprintf(reason, reason_len, "/dev/shm has less than %zu MB free for the shared-memory segment "
                     "(docker: --shm-size)", (shm->mapped >> 20) + 1);
        else if (failed)
            snprintf(reason, reason_len, "the shared-memory segment could not be set up: %s", strerror(failed));
        else
            snprintf(reason, reason_len, "another host could not set up its shared-memory segment");
        *failed_here = failed && shm->local_rank == 0;  /* one report per host that failed */
        release(shm);
        *mode = RT_SHM_UNAVAILABLE;
        return RT_OK;
    }

    shm->peer_ranks = malloc((size_t)shm->local_size * sizeof(int));
    shm->flags = malloc((size_t)shm->local_size * 2 * sizeof(rt_flag *));
    if (!shm->peer_ranks || !shm->flags) { err = MPI_ERR_NO_MEM; goto fail; }
    if ((err = MPI_Allgather(&rank, 1, MPI_INT, shm->peer_ranks, 1, MPI_INT, shm->node))) goto fail;
    for (int r = 0; r < shm->local_size; r++) {
        shm->flags[2 * r] = (rt_flag *)(shm->base + (size_t)r * FLAG_LINE);
        shm->flags[2 * r + 1] = (rt_flag *)(shm->base + (size_t)r * FLAG_LINE + 64);
    }
    shm->buffers = shm->base + flags_bytes;
    if (shm->hosts > 1 && (err = MPI_Comm_split(comm, shm->local_rank, rank, &shm->cross))) goto fail;
    rt_lock();  /* the registry's readers (rt_allreduce, any thread) hold it */
    int slot = 0;
    while (slot < MAX_SEGMENTS && registry[slot]) slot++;
    if (slot < MAX_SEGMENTS) registry[slot] = shm;
    rt_unlock();
    if (slot == MAX_SEGMENTS) {
        snprintf(reason, reason_len, "more than %d process sets use shared memory", MAX_SEGMENTS);
        goto off;  /* (the same on every rank: sets are created in the same order everywhere) */
    }
    *mode = shm->hosts > 1 ? RT_SHM_HIERARCHICAL : RT_SHM_ONE_HOST;
    return RT_OK;
off:
    release(shm);
    return RT_OK;
fail:
    release(shm);
    return err;
}

size_t rt_shm_peer_flags(const rt_shm *shm, int which, const rt_flag **flags, int *peers) {
    size_t count = 0;
    for (int r = 0; r < shm->local_size; r++) {
        if (r == shm->local_rank) continue;
        flags[count] = shm->flags[2 * r + which];
        peers[count++] = shm->peer_ranks[r];
    }
    return count;
}

void rt_shm_detach(MPI_Comm comm) {
    rt_lock();
    for (int i = 0; i < MAX_SEGMENTS; i++)
        if (registry[i] && registry[i]->comm == comm) {
            release(registry[i]);
            registry[i] = NULL;
        }
    rt_unlock();
}
