/*
 * fc_shm.h - a fastcache table in a shared memory segment.  Plain C.
 *
 * Layout of a segment (a file, normally under /dev/shm, mode 0600):
 *
 *   fc_shm_header   magic, layout version, the sizes of every structure that
 *                   is shared (so a build with another layout is refused),
 *                   the allocator state, and where the parts below are
 *   fc_header       the table header, with its process-shared robust mutex
 *   fc_off[n]       the bucket array (fixed: a shared table never grows it)
 *   arena           entries, from a size-class allocator (below)
 *
 * Allocator: blocks are rounded to one of four sizes per power of two and
 * taken from that class's free list or else from a bump pointer; a freed
 * block goes back on its class list (its first 8 bytes link it).  All of its
 * state is in the segment header and only changes with the table lock held;
 * when the table is empty and still nothing fits, the arena starts afresh.
 *
 * Creation is serialised with flock() on the file; the creator fills the
 * header and sets `ready` last, so a creator that died half way is noticed
 * and the segment is initialised again by the next opener.
 */
#ifndef FC_SHM_H
#define FC_SHM_H

#include "fc_table.h"

#define FC_SHM_LAYOUT 1
#define FC_SHM_CLASSES 192
#define FC_SHM_MIN_BYTES (1u << 20)

typedef struct fc_shm_header {
    char magic[8];
    uint32_t layout;
    uint32_t ready;
    uint64_t size;
    uint64_t sizeof_shm_header, sizeof_table_header, sizeof_entry, sizeof_mutex;
    fc_off table;
    fc_off buckets;
    uint64_t nbuckets;
    fc_off arena_start, arena_end;
    fc_off top;
    uint64_t pad_[4];
    fc_off free_heads[FC_SHM_CLASSES];
} fc_shm_header;

typedef struct fc_shm {
    void *base;
    size_t size;
    int fd;
    int created;
} fc_shm;

/* Opens (creating with max_bytes if absent) the segment at path and the
 * table in it.  0 on success; else -1 with a message in err. */
int fc_shm_open(fc_shm *s, fc_mem *mem, fc_table *t, const char *path, uint64_t max_bytes,
                char *err, size_t errlen);
void fc_shm_close(fc_shm *s);

#endif /* FC_SHM_H */
