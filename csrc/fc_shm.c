/*
 * fc_shm.c - shared memory segments holding a fastcache table (see
 * fc_shm.h for the layout and the allocator).
 */
#include "fc_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char SHM_MAGIC[8] = {'F', 'C', 'S', 'H', 'M', 'E', 'M', '1'};

#define ALIGN_UP(x, a) (((x) + (a)-1) & ~((uint64_t)(a)-1))

static inline fc_shm_header *HDR(const fc_mem *mem) { return (fc_shm_header *)mem->base; }

/* ------------------------------------------------------------------------ */
/* Allocator (see fc_shm.h for the design).                                 */

#define INUSE 1u      /* this block is allocated */
#define PREV_INUSE 2u /* the block just before this one is allocated */
#define FLAGS 15u
#define MIN_BLOCK 32u     /* header, next, prev, footer */
#define FIT_SCAN 16       /* list nodes examined for a best fit in the own class */
#define FIT_SCAN_MAX 1024 /* ... and for any fit when no larger class has one */

/* The 8-byte word at offset off (block offsets are 8 mod 16; base is
 * page-aligned, so every word is naturally aligned). */
static inline uint64_t *W(const fc_mem *mem, fc_off off) { return (uint64_t *)FC_PTR(mem, off); }
static inline uint64_t bsize(const fc_mem *mem, fc_off b) { return *W(mem, b) & ~(uint64_t)FLAGS; }
/* free blocks: links right after the header */
static inline fc_off *NEXT(const fc_mem *mem, fc_off b) { return (fc_off *)FC_PTR(mem, b + 8); }
static inline fc_off *PREV(const fc_mem *mem, fc_off b) { return (fc_off *)FC_PTR(mem, b + 16); }

/* First block header and the end sentinel's header of the arena, from this
 * process's copy of the layout (mem_init), never read again from the
 * segment. */
static inline fc_off first_block(const fc_mem *mem) { return mem->lo + 8; }
static inline fc_off epilogue(const fc_mem *mem) { return mem->hi - 8; }

/* Damage checks (fc_table.h): the allocator follows free-list links and
 * block sizes only after these.  A block starts 8 mod 16 inside the arena,
 * before the sentinel; its size is a multiple of 16, at least MIN_BLOCK,
 * and ends at the sentinel at the latest. */
static inline int blk_ok(const fc_mem *mem, fc_off b)
{
    return b - first_block(mem) < epilogue(mem) - first_block(mem) && (b & 15) == 8;
}

static inline int size_ok(const fc_mem *mem, fc_off b, uint64_t size)
{
    return size >= MIN_BLOCK && (size & 15) == 0 && size <= epilogue(mem) - b;
}

/* A block a free list names: free, and whole. */
static inline int free_ok(const fc_mem *mem, fc_off b)
{
    return blk_ok(mem, b) && !(*W(mem, b) & INUSE) && size_ok(mem, b, bsize(mem, b));
}

/* Marks the memory damaged (the table repairs it: fc_table.h); returns 0. */
static int damaged(fc_mem *mem)
{
    mem->damaged = 1;
    return 0;
}

/* Free-list class of a block size (a multiple of 16, at least MIN_BLOCK):
 * exact 16-byte classes below 1 KiB, then eight per power of two. */
static unsigned size_class(uint64_t s)
{
    if (s < 1024)
        return (unsigned)(s >> 4);
    unsigned p = 63u - (unsigned)__builtin_clzll(s); /* >= 10 */
    return 64u + (p - 10u) * 8u + (unsigned)((s >> (p - 3u)) & 7u);
}

/* The block a request of n bytes needs: header + n, rounded up to 16, at
 * least MIN_BLOCK.  (n is at most max_block: no overflow.) */
static inline uint64_t block_need(uint64_t n)
{
    uint64_t need = ALIGN_UP(n + 8, 16);
    return need < MIN_BLOCK ? MIN_BLOCK : need;
}

static void list_insert(fc_mem *mem, fc_off b, uint64_t size)
{
    fc_shm_header *h = HDR(mem);
    unsigned c = size_class(size);
    fc_off head = h->free_heads[c];
    if (head && !blk_ok(mem, head)) {
        damaged(mem); /* b stays on no list until the repair */
        return;
    }
    *NEXT(mem, b) = head;
    *PREV(mem, b) = 0;
    if (head)
        *PREV(mem, head) = b;
    h->free_heads[c] = b;
    h->free_map[c >> 6] |= (uint64_t)1 << (c & 63);
}

/* 1 when b (a free block, free_ok) was taken off its list; 0 (damage, and
 * nothing written) when its neighbours on the list do not point back at it. */
static int list_unlink(fc_mem *mem, fc_off b)
{
    fc_shm_header *h = HDR(mem);
    fc_off next = *NEXT(mem, b), prev = *PREV(mem, b);
    unsigned c = size_class(bsize(mem, b));
    if ((next && (!blk_ok(mem, next) || *PREV(mem, next) != b)) ||
        (prev ? !blk_ok(mem, prev) || *NEXT(mem, prev) != b : h->free_heads[c] != b))
        return damaged(mem);
    if (next)
        *PREV(mem, next) = prev;
    if (prev)
        *NEXT(mem, prev) = next;
    else {
        h->free_heads[c] = next;
        if (!next)
            h->free_map[c >> 6] &= ~((uint64_t)1 << (c & 63));
    }
    return 1;
}

/* The lowest non-empty class >= c, or -1. */
static int next_class(const fc_shm_header *h, unsigned c)
{
    if (c >= FC_SHM_CLASSES)
        return -1;
    unsigned w = c >> 6;
    uint64_t bits = h->free_map[w] & (~(uint64_t)0 << (c & 63));
    for (;;) {
        if (bits)
            return (int)(w * 64 + (unsigned)__builtin_ctzll(bits));
        if (++w >= FC_SHM_MAPWORDS)
            return -1;
        bits = h->free_map[w];
    }
}

static fc_off shm_alloc(fc_mem *mem, size_t n)
{
    fc_shm_header *h = HDR(mem);
    if (n > mem->max_block)
        return 0;
    uint64_t need = block_need(n);
    unsigned c = size_class(need);
    /* best fit among the first few blocks of the request's own class (in the
     * exact classes below 1 KiB the first one fits) */
    fc_off b = 0;
    uint64_t size = UINT64_MAX;
    int k = 0;
    for (fc_off x = h->free_heads[c]; x && k < FIT_SCAN; x = *NEXT(mem, x), k++) {
        if (!free_ok(mem, x))
            return damaged(mem);
        uint64_t s = bsize(mem, x);
        if (s >= need && s < size) {
            b = x;
            size = s;
            if (s == need)
                break;
        }
    }
    if (!b) {
        /* else the first block of the next non-empty class: it fits */
        int c2 = next_class(h, c + 1);
        if (c2 >= 0) {
            b = h->free_heads[c2];
            if (!free_ok(mem, b))
                return damaged(mem);
            size = bsize(mem, b);
        }
        else {
            /* Nothing larger is free: before failing (and the table evicting
             * for it), the rest of the own class, first fit, up to a bound. */
            fc_off x = h->free_heads[c];
            for (k = 0; x && k < FIT_SCAN_MAX; x = *NEXT(mem, x), k++) {
                if (!free_ok(mem, x))
                    return damaged(mem);
                if (bsize(mem, x) >= need) {
                    b = x;
                    size = bsize(mem, x);
                    break;
                }
            }
            if (!b)
                return 0;
        }
    }
    if (size < need) /* a block of a larger class that is not */
        return damaged(mem);
    if (!list_unlink(mem, b))
        return 0;
    uint64_t prev_bit = *W(mem, b) & PREV_INUSE;
    if (size - need >= MIN_BLOCK) {
        /* split: the rest stays free (the block after it already knows) */
        fc_off r = b + need;
        uint64_t rsize = size - need;
        *W(mem, r) = rsize | PREV_INUSE;
        *W(mem, r + rsize - 8) = rsize;
        list_insert(mem, r, rsize);
        size = need;
    }
    else
        *W(mem, b + size) |= PREV_INUSE;
    *W(mem, b) = size | INUSE | prev_bit;
    return b + 8;
}

/* The block, its neighbours and their sizes are checked before anything
 * is written; on damage it stops where it is, the memory marked damaged
 * (the table's repair rebuilds the lists). */
static void shm_free(fc_mem *mem, fc_off off, size_t n)
{
    fc_off b = off - 8;
    if (!blk_ok(mem, b)) {
        damaged(mem);
        return;
    }
    uint64_t hd = *W(mem, b), size = hd & ~(uint64_t)FLAGS;
    /* in use, and freed with the size it was allocated for: the block is
     * that size's, or (not split) less than MIN_BLOCK more */
    if (!(hd & INUSE) || !size_ok(mem, b, size) || n > mem->max_block || size < block_need(n) ||
        size >= block_need(n) + MIN_BLOCK) {
        damaged(mem);
        return;
    }
    /* a free block after it (the end sentinel is always in use) */
    fc_off nb = b + size;
    uint64_t nh = *W(mem, nb);
    int merge_next = !(nh & INUSE);
    if (merge_next && !free_ok(mem, nb)) {
        damaged(mem);
        return;
    }
    /* a free block before it, found through that block's footer */
    uint64_t psize = 0;
    if (!(hd & PREV_INUSE)) {
        psize = *W(mem, b - 8);
        if (psize < MIN_BLOCK || psize % 16 || psize > b - first_block(mem) ||
            !free_ok(mem, b - psize) || bsize(mem, b - psize) != psize) {
            damaged(mem);
            return;
        }
    }
    if (merge_next) {
        if (!list_unlink(mem, nb))
            return;
        size += nh & ~(uint64_t)FLAGS;
    }
    if (psize) {
        if (!list_unlink(mem, b - psize))
            return;
        b -= psize;
        size += psize;
    }
    /* two free blocks are never neighbours, so the one before is in use */
    *W(mem, b) = size | PREV_INUSE;
    *W(mem, b + size - 8) = size;
    *W(mem, b + size) &= ~(uint64_t)PREV_INUSE;
    list_insert(mem, b, size);
}

static void shm_reset(fc_mem *mem)
{
    fc_shm_header *h = HDR(mem);
    memset(h->free_heads, 0, sizeof h->free_heads);
    memset(h->free_map, 0, sizeof h->free_map);
    fc_off b = first_block(mem), end = epilogue(mem);
    uint64_t size = end - b;
    *W(mem, end) = 0 | INUSE; /* sentinel: size 0, in use, before it free */
    *W(mem, b) = size | PREV_INUSE;
    *W(mem, b + size - 8) = size;
    list_insert(mem, b, size);
}

int fc_shm_heap_check(const fc_mem *mem, fc_shm_heap_stats *st)
{
    const fc_shm_header *h = HDR(mem);
    fc_shm_heap_stats s = {0};
    fc_off b = first_block(mem), end = epilogue(mem);
    s.arena = end - b;
    int prev_inuse = 1;
    uint64_t nfree = 0;
    while (b < end) {
        uint64_t hd = *W(mem, b), size = hd & ~(uint64_t)FLAGS;
        if (size < MIN_BLOCK || size % 16 || size > end - b)
            return -1; /* bad size */
        if (!!(hd & PREV_INUSE) != prev_inuse)
            return -2; /* PREV_INUSE bit disagrees with the block before */
        if (hd & INUSE) {
            s.used_blocks++;
            s.used_bytes += size;
            prev_inuse = 1;
        }
        else {
            if (!prev_inuse)
                return -3; /* two free neighbours: not coalesced */
            if (*W(mem, b + size - 8) != size)
                return -4; /* footer */
            s.free_blocks++;
            s.free_bytes += size;
            if (size > s.largest_free)
                s.largest_free = size;
            prev_inuse = 0;
        }
        b += size;
    }
    if (b != end || *W(mem, end) != (INUSE | (prev_inuse ? PREV_INUSE : 0)))
        return -5; /* the blocks do not end exactly at the sentinel */
    for (unsigned c = 0; c < FC_SHM_CLASSES; c++) {
        int bit = !!(h->free_map[c >> 6] & ((uint64_t)1 << (c & 63)));
        if (bit != !!h->free_heads[c])
            return -6; /* class bitmap */
        fc_off prev = 0;
        for (fc_off x = h->free_heads[c]; x; x = *NEXT(mem, x)) {
            if (!blk_ok(mem, x))
                return -7; /* a link points outside the arena */
            if ((*W(mem, x) & INUSE) || size_class(bsize(mem, x)) != c)
                return -8; /* listed block is in use or in the wrong class */
            if (*PREV(mem, x) != prev)
                return -9; /* back link */
            if (++nfree > s.free_blocks)
                return -10; /* more listed than free (or a cycle) */
            prev = x;
        }
    }
    if (nfree != s.free_blocks)
        return -11; /* a free block on no list */
    if (st)
        *st = s;
    return 0;
}

static void mem_init(fc_mem *mem, void *base)
{
    fc_shm_header *h = base;
    mem->base = (uintptr_t)base;
    mem->alloc = shm_alloc;
    mem->free = shm_free;
    mem->reset = shm_reset;
    /* The largest value: 4/5 of the arena, as in layout 1, so that one
     * value never takes (nearly) the whole cache.  alloc refuses anything
     * larger, and an empty arena (one block of arena - 16 bytes, payload 8
     * less) always has room for it. */
    mem->max_block = (size_t)((h->arena_end - h->arena_start) / 5 * 4);
    mem->lo = h->arena_start;
    mem->hi = h->arena_end;
    mem->damaged = 0;
    mem->ctx = NULL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* What a damaged segment's error says to do. */
#define REMOVE_HINT                                                                         \
    "; the segment is damaged: delete the file (django_fastcache.remove_segment(LOCATION) " \
    "does) and the next process creates a fresh one"

/* Where the parts of a segment go.  A function of the size alone (for one
 * FC_SHM_LAYOUT), so that opening checks a segment's header against it. */
typedef struct layout {
    fc_off table, buckets, rings, arena_start, arena_end;
    uint64_t nbuckets, nrings;
} layout;

/* 0, or -1 when size is too small for a segment. */
static int plan_layout(uint64_t size, layout *l)
{
    uint64_t nb = 64;
    while (nb * 1024 < size && nb < ((uint64_t)1 << 32))
        nb <<= 1;
    l->table = ALIGN_UP(sizeof(fc_shm_header), 64);
    l->buckets = ALIGN_UP(l->table + sizeof(fc_header), 64);
    l->nbuckets = nb;
    /* One ring per process reading without the lock (fc_table.h), taking
     * at most 1/32 of the segment: 1 for 1 MiB, 10 for 8 MiB, 64 (the
     * most) from 50 MiB.  Processes beyond that take the lock to read. */
    uint64_t nrings = size / (32 * fc_rings_size(1));
    l->nrings = nrings < 1 ? 1 : nrings > 64 ? 64 : nrings;
    l->rings = ALIGN_UP(l->buckets + nb * sizeof(fc_off), 64);
    l->arena_start = ALIGN_UP(l->rings + fc_rings_size(l->nrings), 64);
    l->arena_end = size & ~(uint64_t)63;
    return l->arena_start + 4096 > l->arena_end ? -1 : 0;
}

static int init_segment(fc_shm *s, fc_mem *mem, fc_table *t, char *err, size_t errlen)
{
    fc_shm_header *h = s->base;
    memset(h, 0, sizeof *h);
    layout l;
    if (plan_layout(s->size, &l) != 0)
        return fail(err, errlen, "segment of %zu bytes is too small", s->size);
    h->size = s->size;
    h->table = l.table;
    h->buckets = l.buckets;
    h->nbuckets = l.nbuckets;
    h->arena_start = l.arena_start;
    h->arena_end = l.arena_end;
    h->sizeof_shm_header = sizeof(fc_shm_header);
    h->sizeof_table_header = sizeof(fc_header);
    h->sizeof_entry = sizeof(fc_entry);
    h->sizeof_mutex = sizeof(pthread_mutex_t);
    h->layout = FC_SHM_LAYOUT;
    memcpy(h->magic, SHM_MAGIC, sizeof SHM_MAGIC);
    mem_init(mem, s->base);
    shm_reset(mem);
    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        seed[1] = (uint64_t)(uintptr_t)s->base ^ 0x9e3779b97f4a7c15ULL;
    }
    if (fc_table_init_at(t, mem, l.table, l.buckets, l.nbuckets, l.rings, l.nrings, seed[0],
                         seed[1]) != FC_OK)
        return fail(err, errlen, "cannot initialise the segment's lock");
    __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
    return 0;
}

/* An existing segment.  Its identity (magic, layout version, structure
 * sizes, size) must be right: else it is refused, as a foreign file, one
 * of another build, or one whose size is not its own (truncated).  Every
 * other field of the layout follows from the size: one that does not is
 * damage, and is put right (and the table, whose other parts may be damaged
 * too, repaired: fc_table_attach_at).  Then the table's starting points are
 * checked (fc_table_validate). */
static int check_segment(fc_shm *s, fc_mem *mem, fc_table *t, char *err, size_t errlen)
{
    fc_shm_header *h = s->base;
    if (memcmp(h->magic, SHM_MAGIC, sizeof SHM_MAGIC) != 0)
        return fail(err, errlen,
                    "not a django-fastcache segment (bad magic); if it is one that is "
                    "damaged, delete it (django_fastcache.remove_segment(LOCATION) does)");
    if (h->layout != FC_SHM_LAYOUT)
        return fail(err, errlen,
                    "segment was created by an incompatible django-fastcache build "
                    "(layout %u, this build uses %u); remove it to start afresh "
                    "(django_fastcache.remove_segment(LOCATION) deletes it)",
                    h->layout, FC_SHM_LAYOUT);
    if (h->sizeof_shm_header != sizeof(fc_shm_header) ||
        h->sizeof_table_header != sizeof(fc_header) || h->sizeof_entry != sizeof(fc_entry) ||
        h->sizeof_mutex != sizeof(pthread_mutex_t))
        return fail(err, errlen,
                    "segment header's structure sizes are not this build's (an incompatible "
                    "build for another platform, or damage); remove it to start afresh "
                    "(django_fastcache.remove_segment(LOCATION) deletes it)");
    layout l;
    if (h->size != s->size || plan_layout(s->size, &l) != 0)
        return fail(err, errlen, "segment header does not match its size (%zu bytes)" REMOVE_HINT,
                    s->size);
    int fixed = 0;
    if (h->table != l.table || h->buckets != l.buckets || h->nbuckets != l.nbuckets ||
        h->arena_start != l.arena_start || h->arena_end != l.arena_end) {
        /* Nobody reads these after opening (each process keeps its own
         * copy), and openers are serialised by the flock held here. */
        h->table = l.table;
        h->buckets = l.buckets;
        h->nbuckets = l.nbuckets;
        h->arena_start = l.arena_start;
        h->arena_end = l.arena_end;
        fixed = 1;
    }
    mem_init(mem, s->base);
    fc_table_attach_at(t, mem, l.table, l.buckets, l.nbuckets, l.rings, l.nrings);
    if (fixed)
        mem->damaged = 1;
    if (fc_table_validate(t) != FC_OK)
        return fail(err, errlen, "the segment's lock is unusable" REMOVE_HINT);
    return 0;
}

/* Whose the open file is: a regular file of this user, mode 0600, with
 * this one name.  Checked before anything waits for the file (a file that
 * another user planted at the path is refused at once, never waited for),
 * and again once it is locked.  0: it may be used; 1: it has no name any
 * more (removed meanwhile: open it again); -1: refused (message in err). */
static int check_owner(int fd, const char *path, struct stat *st, char *err, size_t errlen)
{
    if (fstat(fd, st) != 0)
        return fail(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(st->st_mode) || st->st_uid != geteuid() || (st->st_mode & 077) != 0)
        return fail(err, errlen, "%s is not a regular file of this user with mode 0600", path);
    if (st->st_nlink == 0)
        return 1;
    if (st->st_nlink != 1)
        return fail(err, errlen,
                    "%s has %ju hard links: refused, since a segment has one name and another "
                    "may be a file of this user linked there to be overwritten; delete this "
                    "name (django_fastcache.remove_segment(LOCATION) does)",
                    path, (uintmax_t)st->st_nlink);
    return 0;
}

/* Creating and checking a segment is serialised with flock(); a holder
 * keeps it for milliseconds.  Never waits without end: after
 * FC_SHM_LOCK_WAIT_MS (fc_shm.h) it fails, naming the file. */
static int lock_file(int fd, const char *path, char *err, size_t errlen)
{
    struct timespec start, now, nap = {0, 1000000}; /* 1 ms, doubling to 64 ms */
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return fail(err, errlen, "cannot lock %s: %s", path, strerror(errno));
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms =
            (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (ms >= FC_SHM_LOCK_WAIT_MS)
            return fail(err, errlen,
                        "%s stayed locked (flock) by another process for %d s, while creating "
                        "or opening a segment takes milliseconds: a stuck process or another "
                        "program holds it; end it, or delete the file "
                        "(django_fastcache.remove_segment(LOCATION) does)",
                        path, FC_SHM_LOCK_WAIT_MS / 1000);
        nanosleep(&nap, NULL);
        if (nap.tv_nsec < 64000000)
            nap.tv_nsec *= 2;
    }
}

/* Opens path and locks it, once its owner is checked; -1 on refusal. */
static int open_locked(const char *path, struct stat *st, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
        int rc = check_owner(fd, path, st, err, errlen);
        if (rc == 0)
            rc = lock_file(fd, path, err, errlen);
        if (rc == 0)
            rc = check_owner(fd, path, st, err, errlen); /* and its size now */
        if (rc == 0)
            return fd;
        close(fd);
        if (rc < 0)
            return -1;
    }
    return fail(err, errlen, "%s was removed while being opened, three times over", path);
}

int fc_shm_open(fc_shm *s, fc_mem *mem, fc_table *t, const char *path, uint64_t max_bytes,
                char *err, size_t errlen)
{
    s->base = NULL;
    s->fd = -1;
    s->created = 0;
    struct stat st;
    int fd = open_locked(path, &st, err, errlen);
    if (fd < 0)
        return -1;
    int fresh = st.st_size == 0;
    if (fresh) {
        if (max_bytes < FC_SHM_MIN_BYTES) {
            fail(err, errlen, "MAX_BYTES must be at least %u", FC_SHM_MIN_BYTES);
            goto error;
        }
        int rc = posix_fallocate(fd, 0, (off_t)max_bytes);
        if (rc != 0) {
            fail(err, errlen, "cannot reserve %llu bytes for %s: %s", (unsigned long long)max_bytes,
                 path, strerror(rc));
            ftruncate(fd, 0);
            goto error;
        }
        st.st_size = (off_t)max_bytes;
    }
    else if ((size_t)st.st_size < sizeof(fc_shm_header) + 4096) {
        fail(err, errlen, "%s is not a django-fastcache segment (too small)", path);
        goto error;
    }
    s->size = (size_t)st.st_size;
    s->base = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s->base == MAP_FAILED) {
        s->base = NULL;
        fail(err, errlen, "cannot map %s: %s", path, strerror(errno));
        goto error;
    }
    fc_shm_header *h = s->base;
    int rc;
    static const char zero[8] = {0};
    int unfinished = memcmp(h->magic, zero, sizeof zero) == 0 ||
                     (memcmp(h->magic, SHM_MAGIC, sizeof SHM_MAGIC) == 0 &&
                      !__atomic_load_n(&h->ready, __ATOMIC_ACQUIRE));
    if (fresh || unfinished) {
        /* new, or its creator died before finishing: (re)initialise */
        rc = init_segment(s, mem, t, err, errlen);
        s->created = 1;
    }
    else
        rc = check_segment(s, mem, t, err, errlen);
    if (rc != 0)
        goto error;
    flock(fd, LOCK_UN);
    s->fd = fd;
    return 0;
error:
    if (s->base != NULL)
        munmap(s->base, s->size);
    s->base = NULL;
    close(fd);
    return -1;
}

void fc_shm_close(fc_shm *s)
{
    if (s->base != NULL)
        munmap(s->base, s->size);
    if (s->fd >= 0)
        close(s->fd);
    s->base = NULL;
    s->fd = -1;
}
