/* The allgather and broadcast entry points: among the ranks of one host, through their shared
 * segment (shm_regions.c: rank r's block is its region; for a broadcast the root owns the whole
 * buffer); otherwise the ring allgather and the segmented binomial tree. */
#include "ringtrain.h"

int rt_allgatherv(void *buf, const size_t *bytes, const size_t *displs, size_t segment_bytes, MPI_Comm comm) {
    int size;
    MPI_Comm_size(comm, &size);
    rt_shm *shm = size > 1 ? rt_shm_find(comm) : NULL;
    if (!shm || shm->cross != MPI_COMM_NULL) return rt_ring_allgatherv(buf, bytes, displs, segment_bytes, comm, NULL);
    rt_region regions[RT_SHM_MAX_LOCAL];  /* one host: local rank r is rank r */
    for (int b = 0; b < size; b++) regions[b] = (rt_region){displs[b], bytes[b]};
    return rt_shm_share_regions(shm, buf, regions);
}

int rt_broadcast(void *buf, size_t bytes, int root, size_t segment_bytes, MPI_Comm comm) {
    int size;
    MPI_Comm_size(comm, &size);
    rt_shm *shm = size > 1 ? rt_shm_find(comm) : NULL;
    if (!shm || shm->cross != MPI_COMM_NULL) return rt_tree_broadcast(buf, bytes, root, segment_bytes, comm);
    rt_region regions[RT_SHM_MAX_LOCAL] = {{0, 0}};
    regions[root] = (rt_region){0, bytes};
    return rt_shm_share_regions(shm, buf, regions);
}
