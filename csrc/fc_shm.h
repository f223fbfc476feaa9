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
 *   arena           entries, from a coalescing allocator (below)
 *
 * Allocator: boundary-tag blocks on segregated free lists, all in the
 * segment and reached by offsets, changed only with the table lock held.
 *
 *   block     [header][payload ...........................]
 *   free      [header][next][prev][ ........... ][footer]
 *
 *   - A block starts 8 bytes before a 16-byte boundary and its size (header
 *     included) is a multiple of 16, at least 32, so every payload (the
 *     offset alloc returns, header + 8) is 16-byte aligned.  An allocation
 *     costs 8 bytes of header and at most 15 of rounding.
 *   - The header holds the size and two bits: INUSE, and PREV_INUSE (the
 *     block just before is allocated).  Only a free block has a footer (its
 *     size, in its last 8 bytes), so freeing finds a free neighbour before
 *     it through that footer and one after it through the size.
 *   - The arena is a contiguous run of blocks ending in a sentinel header
 *     (size 0, INUSE), so merging forward always stops; the first block
 *     always has PREV_INUSE.
 *   - free merges the block at once with free neighbours on either side, so
 *     two free blocks are never adjacent and freeing everything leaves one
 *     block spanning the arena (what reset also makes).  free reads the size
 *     from the header, and checks it against the size argument.
 *   - Free blocks are on doubly linked lists (offsets; 0 ends a list) of
 *     FC_SHM_CLASSES size classes: exact 16-byte steps below 1 KiB, then
 *     eight classes per power of two; a bitmap marks the non-empty ones.
 *   - alloc takes the best fit among the first 16 blocks of the request's
 *     own class (in an exact class the first fits), else the first block of
 *     the next non-empty class (found in the bitmap; it always fits), and
 *     when there is none, the first fit among the first 1024 of its own
 *     class.  It splits off the rest as a free block when that is at least
 *     32 bytes.  alloc and free are O(1): they never walk the arena, and a
 *     list walk is bounded (16 nodes; 1024 only when alloc would otherwise
 *     fail and the table evict).  So alloc fails only when no free block
 *     fits, unless one class holds over a thousand free blocks.
 *   - max_block, the largest request alloc accepts, is 4/5 of the arena
 *     (as in layout 1: one value never flushes nearly the whole cache); an
 *     empty arena always has room for it, so it is exactly the largest
 *     request that can ever succeed.
 *
 * The allocator never repairs itself: when a lock holder dies mid-operation
 * (the table's `dirty` flag), the next locker drops every entry and calls
 * reset, which rebuilds the lists from nothing.  fc_shm_heap_check walks
 * the arena and the lists and verifies all of the above.
 *
 * Damage (fc_table.h): the bounds every check uses are this process's copy
 * of the arena (fc_mem lo and hi, from the header as checked at opening).
 * alloc and free check every free-list link (a block inside the arena,
 * whose neighbours on its list point back at it), every block header they
 * read (in use or free as expected, a size that stays in the arena) and
 * footer, before writing; on damage they mark the memory damaged and return
 * (alloc: 0), and the table repairs it with reset.  The layout is a
 * function of the segment's size (for one FC_SHM_LAYOUT): opening refuses
 * a segment whose magic, layout version, structure sizes or size are not
 * right, and puts back any other layout field that differs from what the
 * size gives (marking the table for repair).
 *
 * Creation is serialised with flock() on the file; the creator fills the
 * header and sets `ready` last, so a creator that died half way is noticed
 * and the segment is initialised again by the next opener.  Before any lock
 * is taken, the open file must be a regular file of this user with mode
 * 0600 and one link (a file someone else planted at the path is refused,
 * never waited for); the flock is then tried without blocking, for at most
 * FC_SHM_LOCK_WAIT_MS, after which opening fails naming the file.
 */
#ifndef FC_SHM_H
#define FC_SHM_H

#include "fc_table.h"

#define FC_SHM_LAYOUT 5    /* 4: FC_VT_CODEC values; 5: entries' serve-stale grace */
#define FC_SHM_CLASSES 496 /* 64 exact, then 8 per power of two up to 2^64 */
#define FC_SHM_MAPWORDS ((FC_SHM_CLASSES + 63) / 64)
#define FC_SHM_MIN_BYTES (1u << 20)
#define FC_SHM_LOCK_WAIT_MS 10000 /* the longest opening waits for another's flock */

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
    uint64_t pad_[4];
    uint64_t free_map[FC_SHM_MAPWORDS]; /* bit c: free_heads[c] != 0 */
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

/* Allocator walk, for tests and debugging (the table lock must be held, or
 * the segment private to the caller).  0 when every block and free list is
 * consistent (and then *st, when not NULL, is filled), else a negative
 * number naming the first broken rule (see fc_shm.c). */
typedef struct fc_shm_heap_stats {
    uint64_t arena; /* bytes from the first block to the sentinel */
    uint64_t used_blocks, used_bytes;
    uint64_t free_blocks, free_bytes, largest_free;
} fc_shm_heap_stats;
int fc_shm_heap_check(const fc_mem *mem, fc_shm_heap_stats *st);

#endif /* FC_SHM_H */
