/*
 * test_shm_alloc.c - C tests for the shared segment's allocator (fc_shm.c),
 * no Python.
 *
 * Every test maps a real segment with fc_shm_open (a file in a private
 * temporary directory) and drives the allocator through the fc_mem it
 * returns, checking the whole heap with fc_shm_heap_check as it goes:
 *   - geometry: a fresh arena is one free block; 16-byte alignment; the
 *     payload of every request lies inside the arena; max_block is exact;
 *   - splitting, reuse of a freed block, and the four coalescing cases;
 *   - exhaustion and fragmentation: alloc fails only when no free block fits;
 *   - a randomized alloc/free stream against a model (an owner per 8 bytes):
 *     no overlap, payloads intact, and all memory reclaimable at the end
 *     (free everything -> one block -> a max_block allocation succeeds);
 *   - reset, reopening, and refusal of a segment of another layout;
 *   - the table on top: mixed value sizes keep most of the segment in use.
 *
 * Output: one line per failed check, a line per test, then a final line
 * "N passed, M failed"; the exit status is non-zero on any failure.
 */
#include "fc_shm.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Assertions                                                               */

#include "check.h"

/* heap consistent; fills *st */
#define CHECK_HEAP(mem, st)                                                                      \
    do {                                                                                         \
        int hrc_ = fc_shm_heap_check((mem), (st));                                               \
        if (hrc_ == 0)                                                                           \
            g_pass++;                                                                            \
        else {                                                                                   \
            g_fail++;                                                                            \
            fprintf(stderr, "%s:%d: fc_shm_heap_check returned %d\n", __FILE__, __LINE__, hrc_); \
        }                                                                                        \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Segments                                                                 */

static char g_dir[64];
static int g_seq;

typedef struct seg {
    fc_shm shm;
    fc_mem mem;
    fc_table t;
    char path[128];
} seg;

static int seg_open_path(seg *s, uint64_t bytes, char *err, size_t errlen)
{
    return fc_shm_open(&s->shm, &s->mem, &s->t, s->path, bytes, err, errlen);
}

static int seg_open(seg *s, uint64_t bytes)
{
    snprintf(s->path, sizeof s->path, "%s/seg%d", g_dir, g_seq++);
    char err[256] = "";
    int rc = seg_open_path(s, bytes, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "fc_shm_open(%s): %s\n", s->path, err);
    return rc;
}

static void seg_close(seg *s)
{
    fc_shm_close(&s->shm);
    unlink(s->path);
}

static const fc_shm_header *HDR_OF(const seg *s) { return s->shm.base; }

/* the arena's bounds, as the allocator sees them */
static uint64_t arena_lo(const seg *s) { return HDR_OF(s)->arena_start; }
static uint64_t arena_hi(const seg *s) { return HDR_OF(s)->arena_end; }

/* An allocation lies inside the arena, aligned, with room for n bytes. */
static int placed_ok(const seg *s, fc_off off, size_t n)
{
    return off != 0 && off % 16 == 0 && off >= arena_lo(s) + 16 && off + n <= arena_hi(s) - 8;
}

/* The block an allocation of n bytes takes: header + n, rounded to 16, at
 * least 32. */
static uint64_t block_of(uint64_t n)
{
    uint64_t b = (n + 8 + 15) & ~(uint64_t)15;
    return b < 32 ? 32 : b;
}

/* Splitmix64: deterministic random numbers. */
static uint64_t g_rng = 0x243f6a8885a308d3ULL;
static uint64_t rnd(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static uint64_t rnd_range(uint64_t lo, uint64_t hi) { return lo + rnd() % (hi - lo + 1); }

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */

static void test_fresh_segment(void)
{
    seg s;
    if (seg_open(&s, 1 << 20) != 0) {
        CHECK(0);
        return;
    }
    const fc_shm_header *h = HDR_OF(&s);
    CHECK_EQ(h->layout, 5);
    CHECK_EQ(FC_SHM_LAYOUT, 5);
    CHECK(s.shm.created);
    fc_shm_heap_stats st;
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.arena, arena_hi(&s) - arena_lo(&s) - 16);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.free_bytes, st.arena);
    CHECK_EQ(st.largest_free, st.arena);
    CHECK_EQ(st.used_blocks, 0);
    /* max_block: 4/5 of the arena, far from the whole of it */
    CHECK_EQ(s.mem.max_block, (arena_hi(&s) - arena_lo(&s)) / 5 * 4);
    CHECK(s.mem.max_block + 8 <= st.arena);
    seg_close(&s);
}

static void test_alignment_and_sizes(void)
{
    seg s;
    if (seg_open(&s, 1 << 20) != 0) {
        CHECK(0);
        return;
    }
    fc_shm_heap_stats st;
    static fc_off offs[2100];
    int bad = 0, n = 0;
    for (size_t sz = 0; sz <= 300; sz++) {
        fc_off o = s.mem.alloc(&s.mem, sz);
        bad += !placed_ok(&s, o, sz);
        if (o)
            memset(FC_PTR(&s.mem, o), 0xA5, sz);
        offs[n++] = o;
    }
    CHECK_EQ(bad, 0);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.used_blocks, 301);
    /* consecutive allocations from a fresh arena are packed: a block is the
     * request + 8 rounded up to 16, at least 32 */
    bad = 0;
    for (size_t sz = 1; sz <= 300; sz++)
        bad += offs[sz] - offs[sz - 1] != block_of(sz - 1);
    CHECK_EQ(bad, 0);
    for (int i = 0; i < n; i++)
        s.mem.free(&s.mem, offs[i], (size_t)i);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.used_blocks, 0);
    /* every power of two and its neighbours up to max_block */
    bad = 0;
    for (uint64_t p = 1; p <= s.mem.max_block; p <<= 1) {
        for (uint64_t d = 0; d < 3; d++) {
            size_t sz = (size_t)(p - 1 + d);
            if (sz > s.mem.max_block)
                continue;
            fc_off o = s.mem.alloc(&s.mem, sz);
            bad += !placed_ok(&s, o, sz);
            if (o) {
                memset(FC_PTR(&s.mem, o), 0x5A, sz);
                s.mem.free(&s.mem, o, sz);
            }
        }
    }
    CHECK_EQ(bad, 0);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    seg_close(&s);
}

static void test_max_block(void)
{
    uint64_t sizes[] = {1 << 20, (1 << 20) + 12345, 3 << 20, 16 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        seg s;
        if (seg_open(&s, sizes[i]) != 0) {
            CHECK(0);
            continue;
        }
        size_t mb = s.mem.max_block;
        CHECK_EQ(s.mem.alloc(&s.mem, mb + 1), 0);
        CHECK_EQ(s.mem.alloc(&s.mem, SIZE_MAX), 0);
        CHECK_EQ(s.mem.alloc(&s.mem, SIZE_MAX - 7), 0);
        fc_off o = s.mem.alloc(&s.mem, mb);
        CHECK(placed_ok(&s, o, mb));
        /* while it is there, nothing of that size fits */
        CHECK_EQ(s.mem.alloc(&s.mem, mb), 0);
        fc_shm_heap_stats st;
        CHECK_HEAP(&s.mem, &st);
        if (o) {
            memset(FC_PTR(&s.mem, o), 1, mb);
            s.mem.free(&s.mem, o, mb);
        }
        CHECK_HEAP(&s.mem, &st);
        CHECK_EQ(st.free_blocks, 1);
        /* a small block in the middle of the arena blocks a max one */
        fc_off a = s.mem.alloc(&s.mem, st.arena / 2);
        fc_off b = s.mem.alloc(&s.mem, 100);
        s.mem.free(&s.mem, a, st.arena / 2);
        CHECK_EQ(s.mem.alloc(&s.mem, mb), 0);
        s.mem.free(&s.mem, b, 100);
        o = s.mem.alloc(&s.mem, mb);
        CHECK(placed_ok(&s, o, mb));
        s.mem.free(&s.mem, o, mb);
        CHECK_HEAP(&s.mem, &st);
        CHECK_EQ(st.free_blocks, 1);
        seg_close(&s);
    }
}

static void test_split_and_reuse(void)
{
    seg s;
    if (seg_open(&s, 1 << 20) != 0) {
        CHECK(0);
        return;
    }
    fc_shm_heap_stats st;
    fc_off a = s.mem.alloc(&s.mem, 10000);
    fc_off guard = s.mem.alloc(&s.mem, 16);
    s.mem.free(&s.mem, a, 10000);
    /* a smaller request is carved from the front of the freed block */
    fc_off b = s.mem.alloc(&s.mem, 3000);
    CHECK_EQ(b, a);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 2); /* the rest of the 10000, and the tail */
    /* and the rest serves the next one, right after it */
    fc_off c = s.mem.alloc(&s.mem, 3000);
    CHECK_EQ(c, b + block_of(3000));
    /* a freed block of a size is reused for that size (exact classes) */
    fc_off x = s.mem.alloc(&s.mem, 200);
    fc_off y = s.mem.alloc(&s.mem, 200);
    s.mem.free(&s.mem, x, 200);
    CHECK_EQ(s.mem.alloc(&s.mem, 200), x);
    /* a remainder under 32 bytes is not split off: a 48-byte block serves a
     * request of 24 (a 32-byte block) whole */
    fc_off p = s.mem.alloc(&s.mem, 40);
    fc_off q = s.mem.alloc(&s.mem, 8);
    CHECK_EQ(block_of(40), 48);
    CHECK_EQ(q, p + 48);
    CHECK_HEAP(&s.mem, &st);
    uint64_t nfree = st.free_blocks, used = st.used_bytes;
    s.mem.free(&s.mem, p, 40);
    fc_off r = s.mem.alloc(&s.mem, 24);
    CHECK_EQ(r, p);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, nfree);
    CHECK_EQ(st.used_bytes, used);
    s.mem.free(&s.mem, r, 24); /* the size given to alloc, not the block's */
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, nfree + 1);
    (void)guard;
    (void)y;
    (void)q;
    s.mem.reset(&s.mem);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.free_bytes, st.arena);
    seg_close(&s);
}

/* The four cases: no free neighbour, free before, free after, both. */
static void test_coalescing(void)
{
    seg s;
    if (seg_open(&s, 1 << 20) != 0) {
        CHECK(0);
        return;
    }
    fc_shm_heap_stats st;
    fc_off x[6];
    for (int i = 0; i < 6; i++)
        x[i] = s.mem.alloc(&s.mem, 1000);
    /* x0 x1 x2 x3 x4 x5 tail */
    s.mem.free(&s.mem, x[1], 1000); /* neighbours in use */
    s.mem.free(&s.mem, x[3], 1000);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 3);
    CHECK_EQ(st.largest_free, st.arena - 6 * 1008);
    s.mem.free(&s.mem, x[2], 1000); /* both free: x1..x3 one block */
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 2);
    /* a request for 3 x 1008 - 8 bytes lands exactly in x1..x3 */
    fc_off big = s.mem.alloc(&s.mem, 3 * 1008 - 8);
    CHECK_EQ(big, x[1]);
    s.mem.free(&s.mem, big, 3 * 1008 - 8);
    s.mem.free(&s.mem, x[4], 1000); /* free before it: merges backward */
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 2);
    s.mem.free(&s.mem, x[5], 1000); /* both: x1..x5 and the tail */
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    s.mem.free(&s.mem, x[0], 1000); /* free after it: the whole arena */
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.largest_free, st.arena);
    /* free in reverse and in interleaved orders: always one block after */
    for (int order = 0; order < 3; order++) {
        fc_off y[64];
        for (int i = 0; i < 64; i++)
            y[i] = s.mem.alloc(&s.mem, (size_t)(100 + 37 * i));
        for (int k = 0; k < 64; k++) {
            int i = order == 0 ? 63 - k : order == 1 ? (k * 2) % 64 + (k >= 32) : (k * 29) % 64;
            s.mem.free(&s.mem, y[i], (size_t)(100 + 37 * i));
        }
        CHECK_HEAP(&s.mem, &st);
        CHECK_EQ(st.free_blocks, 1);
        CHECK_EQ(st.used_blocks, 0);
    }
    seg_close(&s);
}

/* Fill with equal blocks, free every other one: nothing twice as large fits
 * until a neighbour is freed too. */
static void test_exhaustion_and_fragmentation(void)
{
    seg s;
    if (seg_open(&s, 1 << 20) != 0) {
        CHECK(0);
        return;
    }
    fc_shm_heap_stats st;
    static fc_off o[2000];
    int n = 0;
    while (n < 2000 && (o[n] = s.mem.alloc(&s.mem, 1000)) != 0)
        n++;
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(n, st.arena / 1008);
    CHECK(st.free_bytes < 1008);
    for (int i = 0; i < n; i += 2)
        s.mem.free(&s.mem, o[i], 1000);
    CHECK_HEAP(&s.mem, &st);
    CHECK(st.largest_free >= 1008 && st.largest_free < 2 * 1008);
    CHECK_EQ(st.free_blocks, (n + 1) / 2 + (n % 2 == 0 && st.free_bytes % 1008 != 0));
    CHECK_EQ(s.mem.alloc(&s.mem, 2000), 0);
    /* many free blocks, all the same size: the same size is found at once */
    fc_off again = s.mem.alloc(&s.mem, 1000);
    CHECK(again != 0);
    s.mem.free(&s.mem, again, 1000);
    /* freeing one odd block joins three: 2000 fits there now */
    s.mem.free(&s.mem, o[1], 1000);
    fc_off two = s.mem.alloc(&s.mem, 2000);
    CHECK_EQ(two, o[0]);
    s.mem.free(&s.mem, two, 2000);
    for (int i = 3; i < n; i += 2)
        s.mem.free(&s.mem, o[i], 1000);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    fc_off m = s.mem.alloc(&s.mem, s.mem.max_block);
    CHECK(m != 0);
    s.mem.free(&s.mem, m, s.mem.max_block);
    seg_close(&s);
}

/* A randomized stream of allocations and frees against a model that owns
 * every 16-byte granule of the arena: each allocation must be aligned,
 * inside the arena and on 8-byte units nobody owns; each payload is filled with
 * a pattern that must be intact when it is freed; alloc may fail only when
 * no free block is large enough; and freeing everything leaves one block. */
typedef struct live {
    fc_off off;
    size_t n;
    uint8_t pat;
} live;

static size_t random_size(int mix)
{
    uint64_t r = rnd() % 100;
    switch (mix) {
    case 0: /* the cache's mix: values of 100-30000 bytes plus an entry */
        return (size_t)rnd_range(64 + 100, 64 + 30000);
    case 1: /* mostly small, some large */
        if (r < 70)
            return (size_t)rnd_range(0, 300);
        if (r < 95)
            return (size_t)rnd_range(300, 8000);
        return (size_t)rnd_range(8000, 120000);
    default: { /* wide: every scale up to a quarter of a MiB */
        uint64_t scale = (uint64_t)1 << rnd_range(1, 18);
        return (size_t)(rnd() % scale);
    }
    }
}

static void random_stream(uint64_t seg_bytes, int mix, long ops)
{
    seg s;
    if (seg_open(&s, seg_bytes) != 0) {
        CHECK(0);
        return;
    }
    uint64_t lo = arena_lo(&s), hi = arena_hi(&s);
    size_t ngran = (size_t)((hi - lo) / 8);
    uint32_t *owner = calloc(ngran, sizeof *owner); /* 1 + index in lv, or 0 */
    if (!owner) {
        CHECK(0);
        seg_close(&s);
        return;
    }
    size_t cap = 1 << 16, nlive = 0;
    live *lv = malloc(cap * sizeof *lv);
    long bad_place = 0, overlap = 0, corrupt = 0, spurious_fail = 0, heap_bad = 0;
    long allocs = 0, fails = 0;
    fc_shm_heap_stats st;
    for (long op = 0; op < ops; op++) {
        int do_alloc = nlive == 0 || (nlive < cap && rnd() % 100 < (nlive < 20 ? 70 : 52));
        if (do_alloc) {
            size_t n = random_size(mix);
            fc_off o = s.mem.alloc(&s.mem, n);
            if (o) {
                allocs++;
                if (!placed_ok(&s, o, n)) {
                    bad_place++;
                    continue;
                }
                /* the block's 8-byte units: its header, then the payload */
                size_t g0 = (size_t)((o - 8 - lo) / 8), g1 = (size_t)((o + n + 7 - lo) / 8);
                for (size_t g = g0; g < g1 && g < ngran; g++) {
                    if (owner[g])
                        overlap++;
                    owner[g] = (uint32_t)(nlive + 1);
                }
                uint8_t pat = (uint8_t)rnd();
                memset(FC_PTR(&s.mem, o), pat, n);
                lv[nlive++] = (live){o, n, pat};
                if (op % 997 == 0 && fc_shm_heap_check(&s.mem, NULL) != 0)
                    heap_bad++;
                continue;
            }
            fails++;
            if (n <= s.mem.max_block &&
                (fc_shm_heap_check(&s.mem, &st) != 0 || st.largest_free >= block_of(n)))
                spurious_fail++;
            if (!nlive)
                continue;
            /* full: make room, as the table's eviction would */
        }
        size_t i = (size_t)(rnd() % nlive);
        live L = lv[i];
        const uint8_t *p = FC_PTR(&s.mem, L.off);
        for (size_t j = 0; j < L.n; j++)
            if (p[j] != L.pat) {
                corrupt++;
                break;
            }
        size_t g0 = (size_t)((L.off - 8 - lo) / 8), g1 = (size_t)((L.off + L.n + 7 - lo) / 8);
        for (size_t g = g0; g < g1 && g < ngran; g++)
            owner[g] = 0;
        s.mem.free(&s.mem, L.off, L.n);
        /* move the last one into slot i, renumbering its units */
        if (i != nlive - 1) {
            lv[i] = lv[nlive - 1];
            size_t h0 = (size_t)((lv[i].off - 8 - lo) / 8);
            size_t h1 = (size_t)((lv[i].off + lv[i].n + 7 - lo) / 8);
            for (size_t g = h0; g < h1 && g < ngran; g++)
                owner[g] = (uint32_t)(i + 1);
        }
        nlive--;
        if (op % 997 == 0 && fc_shm_heap_check(&s.mem, NULL) != 0)
            heap_bad++;
    }
    CHECK_EQ(bad_place, 0);
    CHECK_EQ(overlap, 0);
    CHECK_EQ(spurious_fail, 0);
    CHECK_EQ(heap_bad, 0);
    CHECK(allocs > ops / 3);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.used_blocks, nlive);
    CHECK_EQ(st.used_bytes + st.free_bytes, st.arena);
    /* free everything (in random order): one block, and max_block fits */
    while (nlive) {
        size_t i = (size_t)(rnd() % nlive);
        const uint8_t *p = FC_PTR(&s.mem, lv[i].off);
        for (size_t j = 0; j < lv[i].n; j++)
            if (p[j] != lv[i].pat) {
                corrupt++;
                break;
            }
        s.mem.free(&s.mem, lv[i].off, lv[i].n);
        lv[i] = lv[--nlive];
    }
    CHECK_EQ(corrupt, 0);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.used_blocks, 0);
    CHECK_EQ(st.free_bytes, st.arena);
    fc_off m = s.mem.alloc(&s.mem, s.mem.max_block);
    CHECK(placed_ok(&s, m, s.mem.max_block));
    s.mem.free(&s.mem, m, s.mem.max_block);
    printf("  stream seg=%llu mix=%d ops=%ld: %ld allocs, %ld failed (full)\n",
           (unsigned long long)seg_bytes, mix, ops, allocs, fails);
    free(owner);
    free(lv);
    seg_close(&s);
}

static long g_ops = 200000;

static void test_random_streams(void)
{
    random_stream(1 << 20, 0, g_ops);
    random_stream(1 << 20, 1, g_ops);
    random_stream((1 << 20) + 4000, 2, g_ops);
    random_stream(8 << 20, 1, g_ops / 2);
}

/* reset forgets everything; a reopened segment sees the same heap; another
 * layout is refused with a clear message. */
static void test_reset_reopen_layout(void)
{
    seg s;
    if (seg_open(&s, 2 << 20) != 0) {
        CHECK(0);
        return;
    }
    fc_shm_heap_stats st, st2;
    for (int i = 0; i < 100; i++)
        s.mem.alloc(&s.mem, (size_t)(i * 131));
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.used_blocks, 100);
    /* a second mapping (as another process would) sees the same heap */
    seg s2;
    memcpy(s2.path, s.path, sizeof s.path);
    char err[256] = "";
    CHECK_EQ(seg_open_path(&s2, 0, err, sizeof err), 0);
    CHECK(!s2.shm.created);
    CHECK_HEAP(&s2.mem, &st2);
    CHECK_EQ(st2.used_blocks, 100);
    CHECK_EQ(st2.free_bytes, st.free_bytes);
    CHECK_EQ(s2.mem.max_block, s.mem.max_block);
    fc_off o = s2.mem.alloc(&s2.mem, 5000);
    CHECK(o != 0);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.used_blocks, 101);
    s.mem.reset(&s.mem);
    CHECK_HEAP(&s2.mem, &st2);
    CHECK_EQ(st2.free_blocks, 1);
    CHECK_EQ(st2.used_blocks, 0);
    fc_shm_close(&s2.shm);
    /* a layout 1 segment is refused */
    ((fc_shm_header *)s.shm.base)->layout = 1;
    msync(s.shm.base, 4096, MS_SYNC);
    CHECK(seg_open_path(&s2, 0, err, sizeof err) != 0);
    CHECK(strstr(err, "incompatible") != NULL);
    CHECK(strstr(err, "layout 1") != NULL);
    ((fc_shm_header *)s.shm.base)->layout = FC_SHM_LAYOUT;
    CHECK_EQ(seg_open_path(&s2, 0, err, sizeof err), 0);
    fc_shm_close(&s2.shm);
    seg_close(&s);
}

/* The table on top of it (the Python test's measurement, in C): a 1 MiB
 * segment fed 4000 values of 100-30000 bytes keeps most of it in use. */
static void test_table_mixed_sizes_fill(void)
{
    seg s;
    if (seg_open(&s, 1 << 20) != 0) {
        CHECK(0);
        return;
    }
    fc_table *t = &s.t;
    static char val[30000];
    memset(val, 'x', sizeof val);
    double sum = 0;
    uint64_t mn = UINT64_MAX;
    long samples = 0, failures = 0, checks_bad = 0;
    for (int i = 0; i < 4000; i++) {
        char key[32];
        int kn = snprintf(key, sizeof key, ":1:k%d", i);
        fc_key k = {key, (size_t)kn, 0};
        k.hash = fc_hash(t, key, (size_t)kn);
        size_t vlen = (size_t)rnd_range(100, 30000);
        if (fc_table_lock(t) != FC_OK) {
            failures++;
            continue;
        }
        int rc = fc_set_lock_held(t, &k, FC_VT_STR, val, vlen, 1, 0, 100000, 3);
        failures += rc != FC_OK;
        if (i % 97 == 0) {
            checks_bad += fc_table_check(t) != 0;
            checks_bad += fc_shm_heap_check(&s.mem, NULL) != 0;
        }
        if (i >= 1000 && i % 10 == 0) {
            sum += (double)t->h->bytes;
            if (t->h->bytes < mn)
                mn = t->h->bytes;
            samples++;
        }
        fc_table_unlock(t);
    }
    double mean = sum / (double)samples;
    printf("  table fill: mean %.1f%%, min %.1f%% of 1 MiB, %llu evictions\n",
           100.0 * mean / (1 << 20), 100.0 * (double)mn / (1 << 20),
           (unsigned long long)t->h->stats.evictions);
    CHECK_EQ(failures, 0);
    CHECK_EQ(checks_bad, 0);
    CHECK(mean > (1 << 20) / 2);
    CHECK(mn > (1 << 20) / 4);
    /* clear frees every entry: one block again */
    fc_shm_heap_stats st;
    CHECK_EQ(fc_table_lock(t), FC_OK);
    fc_clear_lock_held(t);
    CHECK_HEAP(&s.mem, &st);
    CHECK_EQ(st.free_blocks, 1);
    CHECK_EQ(st.used_blocks, 0);
    fc_table_unlock(t);
    seg_close(&s);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        g_ops = atol(argv[1]);
    snprintf(g_dir, sizeof g_dir, "/tmp/fc_shm_alloc.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"fresh_segment", test_fresh_segment},
        {"alignment_and_sizes", test_alignment_and_sizes},
        {"max_block", test_max_block},
        {"split_and_reuse", test_split_and_reuse},
        {"coalescing", test_coalescing},
        {"exhaustion_and_fragmentation", test_exhaustion_and_fragmentation},
        {"random_streams", test_random_streams},
        {"reset_reopen_layout", test_reset_reopen_layout},
        {"table_mixed_sizes_fill", test_table_mixed_sizes_fill},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        long f0 = g_fail;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        printf("%-38s %-6s %8.1f ms\n", tests[i].name, g_fail == f0 ? "ok" : "FAILED", ms);
    }
    rmdir(g_dir);
    printf("%ld passed, %ld failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
