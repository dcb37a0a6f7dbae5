/* Alltoallv by direct pairwise exchange: every rank posts all its receives, then sends to
 * rank+1, rank+2, ... in turn, so at any moment the ranks target different peers instead of
 * all hitting rank 0 first. The rank's own slice is a local copy. */
#include <string.h>
#include "ringtrain.h"

#define TAG_ALLTOALL 15

int rt_pairwise_alltoallv(const void *sendbuf, const size_t *send_bytes, const size_t *send_displs,
                          void *recvbuf, const size_t *recv_bytes, const size_t *recv_displs, MPI_Comm comm) {
    int rank, size, err = RT_OK;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    rt_requests reqs = {0};
    for (int i = 1; i < size && !err; i++) {
        int source = (rank - i + size) % size;
        err = rt_irecv_bytes(&reqs, (char *)recvbuf + recv_displs[source], recv_bytes[source], source, TAG_ALLTOALL, comm);
    }
    for (int i = 1; i < size && !err; i++) {
        int dest = (rank + i) % size;
        err = rt_isend_bytes(&reqs, (const char *)sendbuf + send_displs[dest], send_bytes[dest], dest, TAG_ALLTOALL, comm);
    }
    if (!err && send_bytes[rank])
        memcpy((char *)recvbuf + recv_displs[rank], (const char *)sendbuf + send_displs[rank], send_bytes[rank]);
    if (!err) err = rt_wait_all(&reqs);
    rt_requests_free(&reqs);
    return err;
}
