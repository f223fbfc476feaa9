/*
 * fc_shm.c - shared memory segments holding a fastcache table (see
 * fc_shm.h for the layout and the allocator).
 */
#include "fc_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char SHM_MAGIC[8] = {'F', 'C', 'S', 'H', 'M', 'E', 'M', '1'};

#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))

static inline fc_shm_header *HDR(fc_mem *mem) { return (fc_shm_header *)mem->base; }

/* Size class of a request and the block size it rounds to: 64 bytes, then
 * four classes per power of two (80, 96, 112, 128, 160, ...). */
static int size_class(uint64_t n, uint64_t *rounded)
{
    if (n <= 64) {
        *rounded = 64;
        return 0;
    }
    int p = 63 - __builtin_clzll(n - 1); /* 2^p < n <= 2^(p+1) */
    uint64_t base = (uint64_t)1 << p, step = base >> 2;
    uint64_t k = (n - base + step - 1) / step; /* 1..4 */
    *rounded = base + k * step;
    return 1 + (p - 6) * 4 + (int)(k - 1);
}

static fc_off shm_alloc(fc_mem *mem, size_t size)
{
    fc_shm_header *h = HDR(mem);
    uint64_t rounded;
    int c = size_class(size, &rounded);
    if (c >= FC_SHM_CLASSES)
        return 0;
    fc_off off = h->free_heads[c];
    if (off) {
        fc_off next;
        memcpy(&next, FC_PTR(mem, off), sizeof next);
        h->free_heads[c] = next;
        return off;
    }
    if (h->arena_end - h->top < rounded)
        return 0;
    off = h->top;
    h->top += rounded;
    return off;
}

static void shm_free(fc_mem *mem, fc_off off, size_t size)
{
    fc_shm_header *h = HDR(mem);
    uint64_t rounded;
    int c = size_class(size, &rounded);
    memcpy(FC_PTR(mem, off), &h->free_heads[c], sizeof(fc_off));
    h->free_heads[c] = off;
}

static void shm_reset(fc_mem *mem)
{
    fc_shm_header *h = HDR(mem);
    h->top = h->arena_start;
    memset(h->free_heads, 0, sizeof h->free_heads);
}

static void mem_init(fc_mem *mem, void *base)
{
    fc_shm_header *h = base;
    mem->base = (uintptr_t)base;
    mem->alloc = shm_alloc;
    mem->free = shm_free;
    mem->reset = shm_reset;
    /* rounding adds at most a quarter: anything up to 4/5 of the arena fits */
    mem->max_block = (size_t)((h->arena_end - h->arena_start) / 5 * 4);
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

static int init_segment(fc_shm *s, fc_mem *mem, fc_table *t, char *err, size_t errlen)
{
    fc_shm_header *h = s->base;
    memset(h, 0, sizeof *h);
    uint64_t nb = 64;
    while (nb * 1024 < s->size && nb < ((uint64_t)1 << 32))
        nb <<= 1;
    h->size = s->size;
    h->table = ALIGN_UP(sizeof(fc_shm_header), 64);
    h->buckets = ALIGN_UP(h->table + sizeof(fc_header), 64);
    h->nbuckets = nb;
    h->arena_start = ALIGN_UP(h->buckets + nb * sizeof(fc_off), 64);
    h->arena_end = s->size & ~(uint64_t)63;
    if (h->arena_start + 4096 > h->arena_end)
        return fail(err, errlen, "segment of %zu bytes is too small", s->size);
    h->top = h->arena_start;
    h->sizeof_shm_header = sizeof(fc_shm_header);
    h->sizeof_table_header = sizeof(fc_header);
    h->sizeof_entry = sizeof(fc_entry);
    h->sizeof_mutex = sizeof(pthread_mutex_t);
    h->layout = FC_SHM_LAYOUT;
    memcpy(h->magic, SHM_MAGIC, sizeof SHM_MAGIC);
    mem_init(mem, s->base);
    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        seed[1] = (uint64_t)(uintptr_t)s->base ^ 0x9e3779b97f4a7c15ULL;
    }
    if (fc_table_init_at(t, mem, h->table, h->buckets, nb, seed[0], seed[1]) != FC_OK)
        return fail(err, errlen, "cannot initialise the segment's lock");
    __atomic_store_n(&h->ready, 1, __ATOMIC_RELEASE);
    return 0;
}

static int check_segment(fc_shm *s, fc_mem *mem, fc_table *t, char *err, size_t errlen)
{
    fc_shm_header *h = s->base;
    if (memcmp(h->magic, SHM_MAGIC, sizeof SHM_MAGIC) != 0)
        return fail(err, errlen, "not a django-fastcache segment (bad magic)");
    if (h->layout != FC_SHM_LAYOUT || h->sizeof_shm_header != sizeof(fc_shm_header) ||
        h->sizeof_table_header != sizeof(fc_header) || h->sizeof_entry != sizeof(fc_entry) ||
        h->sizeof_mutex != sizeof(pthread_mutex_t))
        return fail(err, errlen,
                    "segment was created by an incompatible django-fastcache build "
                    "(layout %u, this build uses %u); remove it to start afresh",
                    h->layout, FC_SHM_LAYOUT);
    if (h->size != s->size || h->arena_end > s->size || h->table >= h->arena_start)
        return fail(err, errlen, "segment header does not match its size (%zu bytes)", s->size);
    mem_init(mem, s->base);
    if (fc_table_attach(t, mem, h->table) != FC_OK)
        return fail(err, errlen, "segment holds no valid table");
    return 0;
}

int fc_shm_open(fc_shm *s, fc_mem *mem, fc_table *t, const char *path, uint64_t max_bytes,
                char *err, size_t errlen)
{
    s->base = NULL;
    s->fd = -1;
    s->created = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &st) != 0) {
        fail(err, errlen, "cannot lock %s: %s", path, strerror(errno));
        goto error;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
        fail(err, errlen, "%s is not a regular file of this user with mode 0600", path);
        goto error;
    }
    int fresh = st.st_size == 0;
    if (fresh) {
        if (max_bytes < FC_SHM_MIN_BYTES) {
            fail(err, errlen, "MAX_BYTES must be at least %u", FC_SHM_MIN_BYTES);
            goto error;
        }
        int rc = posix_fallocate(fd, 0, (off_t)max_bytes);
        if (rc != 0) {
            fail(err, errlen, "cannot reserve %llu bytes for %s: %s",
                 (unsigned long long)max_bytes, path, strerror(rc));
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
