/*
 * test_table.c - C tests for the fc_table contract (fc_table.h), no Python.
 *
 * Every test uses injected `now` values, so nothing depends on the clock.
 * After each mutation the table invariants are checked with fc_table_check
 * (the 100k-entry growth test checks every 1000 operations instead, since a
 * check walks the whole table).
 *
 * Memory: most tests use fc_mem_heap_init; a checking wrapper (chk_mem)
 * verifies that every free gets the size its block was allocated with, that
 * nothing leaks, and can make allocations fail to test FC_ENOMEM; an arena
 * with a non-zero base (arena_mem) proves entries are linked by offsets, and
 * backs the cross-process tests of shared (robust) tables.
 *
 * Output: one line per failed check (file:line: expression), then a final
 * line "N passed, M failed"; the exit status is non-zero on any failure.
 */
#include "fc_table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Assertions                                                               */

#include "check.h"

#define CHECK_TABLE(t)                                                                         \
    do {                                                                                       \
        int crc_ = fc_table_check(t);                                                          \
        if (crc_ == 0)                                                                         \
            g_pass++;                                                                          \
        else {                                                                                 \
            g_fail++;                                                                          \
            fprintf(stderr, "%s:%d: fc_table_check(%s) returned %d\n", __FILE__, __LINE__, #t, \
                    crc_);                                                                     \
        }                                                                                      \
    } while (0)

/* LRU order as "k1 k2 k3" (most recent first); keys are printed as-is, so
 * only use it on tables whose keys are printable. */
#define CHECK_ORDER(t, expected)                                                              \
    do {                                                                                      \
        char got_[4096];                                                                      \
        order_str((t), got_, sizeof got_);                                                    \
        if (strcmp(got_, (expected)) == 0)                                                    \
            g_pass++;                                                                         \
        else {                                                                                \
            g_fail++;                                                                         \
            fprintf(stderr, "%s:%d: LRU order \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    got_, (expected));                                                        \
        }                                                                                     \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

#define NOW 1000000.0
#define BIG INT64_MAX /* max_entries that never culls */

static fc_key mk(const fc_table *t, const void *p, size_t n)
{
    fc_key k = {p, n, fc_hash(t, p, n)};
    return k;
}

static fc_key ks(const fc_table *t, const char *s) { return mk(t, s, strlen(s)); }

struct order_buf {
    char *p;
    size_t n, used;
};

static int order_cb(const fc_entry *e, void *arg)
{
    struct order_buf *b = arg;
    int w = snprintf(b->p + b->used, b->n - b->used, "%s%.*s", b->used ? " " : "", (int)e->klen,
                     fc_entry_key(e));
    if (w < 0 || (size_t)w >= b->n - b->used)
        return 1;
    b->used += (size_t)w;
    return 0;
}

static void order_str(fc_table *t, char *out, size_t n)
{
    struct order_buf b = {out, n, 0};
    out[0] = '\0';
    fc_foreach_lock_held(t, order_cb, &b);
}

/* The mutating helpers below check the invariants after each call, so that
 * a test's set-up steps are checked too (a failure names the helper line). */
static void check_after(fc_table *t, const char *what)
{
    int rc = fc_table_check(t);
    if (rc == 0)
        g_pass++;
    else {
        g_fail++;
        fprintf(stderr, "%s:%d: fc_table_check after %s returned %d\n", __FILE__, __LINE__, what,
                rc);
    }
}

/* set with a string value, no culling. */
static int sset(fc_table *t, const char *k, const char *v, int never, double expires)
{
    fc_key key = ks(t, k);
    int rc = fc_set_lock_held(t, &key, FC_VT_STR, v, strlen(v), never, expires, BIG, 3);
    check_after(t, "sset");
    return rc;
}

/* set under max_entries / cull_frequency, never expiring. */
static int cset(fc_table *t, const char *k, int64_t max_entries, int64_t cull_frequency)
{
    fc_key key = ks(t, k);
    int rc = fc_set_lock_held(t, &key, FC_VT_STR, "v", 1, 1, 0.0, max_entries, cull_frequency);
    check_after(t, "cset");
    return rc;
}

static int iset(fc_table *t, const char *k, int64_t v, int never, double expires)
{
    fc_key key = ks(t, k);
    int rc = fc_set_lock_held(t, &key, FC_VT_INT64, &v, sizeof v, never, expires, BIG, 3);
    check_after(t, "iset");
    return rc;
}

static fc_entry *sget(fc_table *t, const char *k, double now, int lru)
{
    fc_key key = ks(t, k);
    fc_entry *e = fc_get_lock_held(t, &key, now, lru);
    check_after(t, "sget");
    return e;
}

static fc_entry *speek(fc_table *t, const char *k)
{
    fc_key key = ks(t, k);
    return fc_peek_lock_held(t, &key);
}

static int sdel(fc_table *t, const char *k)
{
    fc_key key = ks(t, k);
    int rc = fc_delete_lock_held(t, &key);
    check_after(t, "sdel");
    return rc;
}

/* The entry's value equals the string v (and has vtype FC_VT_STR). */
static int val_is(const fc_entry *e, const char *v)
{
    return e != NULL && e->vtype == FC_VT_STR && e->vlen == strlen(v) &&
           memcmp(fc_entry_value(e), v, e->vlen) == 0;
}

static int64_t ival(const fc_entry *e)
{
    int64_t v;
    memcpy(&v, fc_entry_value(e), sizeof v);
    return v;
}

static void table_new(fc_table *t, fc_mem *mem)
{
    fc_mem_heap_init(mem);
    int rc = fc_table_init(t, mem, 0, 0x0123456789abcdefULL, 0xfedcba9876543210ULL);
    if (rc != FC_OK) {
        fprintf(stderr, "fc_table_init failed: %d\n", rc);
        exit(2);
    }
}

/* ------------------------------------------------------------------------ */
/* Checking memory: a heap wrapper that verifies free sizes, counts live    */
/* blocks, and can fail allocations on demand.                              */

typedef struct chk_ctx {
    long live_blocks;
    long long live_bytes;
    long bad_frees;
    long fail_after; /* < 0: never fail; else allocations left before failing */
    long allocs;
    long long budget; /* > 0: fail when live_bytes would exceed it */
} chk_ctx;

#define CHK_HDR 16

static fc_off chk_alloc(fc_mem *mem, size_t size)
{
    chk_ctx *c = mem->ctx;
    if (c->fail_after == 0)
        return 0;
    if (c->fail_after > 0)
        c->fail_after--;
    if (c->budget > 0 && c->live_bytes + (long long)size > c->budget)
        return 0;
    unsigned char *p = malloc(size + CHK_HDR);
    if (p == NULL)
        return 0;
    memcpy(p, &size, sizeof size);
    c->live_blocks++;
    c->live_bytes += (long long)size;
    c->allocs++;
    return (fc_off)(uintptr_t)(p + CHK_HDR);
}

static void chk_free(fc_mem *mem, fc_off off, size_t size)
{
    chk_ctx *c = mem->ctx;
    unsigned char *p = (unsigned char *)(uintptr_t)off - CHK_HDR;
    size_t stored;
    memcpy(&stored, p, sizeof stored);
    if (stored != size) {
        c->bad_frees++;
        fprintf(stderr, "chk_free: block of %zu bytes freed as %zu\n", stored, size);
    }
    c->live_blocks--;
    c->live_bytes -= (long long)stored;
    free(p);
}

static void chk_mem_init(fc_mem *mem, chk_ctx *c)
{
    memset(c, 0, sizeof *c);
    memset(mem, 0, sizeof *mem);
    c->fail_after = -1;
    mem->base = 0;
    mem->alloc = chk_alloc;
    mem->free = chk_free;
    mem->reset = NULL;
    mem->max_block = SIZE_MAX;
    mem->ctx = c;
}

/* ------------------------------------------------------------------------ */
/* Arena memory: a bump allocator over one mapping; offsets are relative to */
/* the mapping, so base != 0.  MAP_SHARED so forked children share it.      */

typedef struct arena {
    size_t size;
    size_t used;      /* next free offset */
    size_t watermark; /* end of the table's fixed parts (reset goes back here) */
    long resets;
} arena; /* lives at the start of the mapping */

static fc_off arena_alloc(fc_mem *mem, size_t size)
{
    arena *a = (arena *)mem->base;
    size = (size + 15) & ~(size_t)15;
    if (a->used + size > a->size)
        return 0;
    fc_off off = a->used;
    a->used += size;
    return off;
}

static void arena_free(fc_mem *mem, fc_off off, size_t size)
{
    (void)mem;
    (void)off;
    (void)size; /* a bump allocator never reuses memory */
}

static void arena_reset(fc_mem *mem)
{
    arena *a = (arena *)mem->base;
    a->used = a->watermark;
    a->resets++;
}

/* Call after the table is initialised: what is allocated so far is the
 * table's fixed part. */
static void arena_fix(fc_mem *mem)
{
    arena *a = (arena *)mem->base;
    a->watermark = a->used;
}

static arena *arena_of(fc_mem *mem) { return (arena *)mem->base; }

static int arena_mem_init(fc_mem *mem, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    memset(mem, 0, sizeof *mem);
    arena *a = p;
    a->size = size;
    a->used = 64; /* offset 0 is the null offset */
    a->watermark = 64;
    a->resets = 0;
    mem->base = (uintptr_t)p;
    mem->alloc = arena_alloc;
    mem->free = arena_free;
    mem->reset = arena_reset;
    mem->max_block = size - 64;
    mem->lo = 64;
    mem->hi = size;
    mem->ctx = NULL;
    return 0;
}

static void arena_mem_release(fc_mem *mem)
{
    munmap((void *)mem->base, ((arena *)mem->base)->size);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */

static void test_init_destroy(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 1, 2), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 0);
    CHECK_EQ(t.h->bytes, 0);
    CHECK_EQ(t.h->stats.hits + t.h->stats.misses + t.h->stats.sets + t.h->stats.deletes +
                 t.h->stats.evictions + t.h->stats.expirations,
             0);
    CHECK_ORDER(&t, "");
    CHECK(sget(&t, "x", NOW, 1) == NULL);
    CHECK(speek(&t, "x") == NULL);
    for (int i = 0; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ(sset(&t, k, "value", 1, 0), FC_OK);
    }
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
    CHECK(t.h == NULL);
    fc_table_destroy(&t); /* idempotent */
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);

    /* init fails cleanly when memory runs out at each allocation */
    for (long n = 0; n < 2; n++) {
        chk_mem_init(&mem, &c);
        c.fail_after = n;
        CHECK_EQ(fc_table_init(&t, &mem, 0, 1, 2), FC_ENOMEM);
        CHECK_EQ(c.live_blocks, 0);
    }
}

static void test_set_get_peek(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    CHECK_EQ(sset(&t, "a", "alpha", 1, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 1);
    CHECK_EQ(t.h->bytes, 1 + 5);
    fc_entry *e = sget(&t, "a", NOW, 1);
    CHECK(val_is(e, "alpha"));
    CHECK(e != NULL && e->klen == 1 && memcmp(fc_entry_key(e), "a", 1) == 0);
    CHECK(e != NULL && e->never == 1);
    CHECK(speek(&t, "a") == e);
    CHECK(sget(&t, "b", NOW, 1) == NULL);
    CHECK(speek(&t, "b") == NULL);

    /* expiry stored as given */
    CHECK_EQ(sset(&t, "b", "beta", 0, NOW + 30), FC_OK);
    CHECK_TABLE(&t);
    e = speek(&t, "b");
    CHECK(e != NULL && e->never == 0 && e->expires == NOW + 30);
    CHECK(val_is(sget(&t, "b", NOW + 29.999, 1), "beta"));

    /* every value type round-trips its bytes and tag */
    static const int types[] = {FC_VT_PICKLE, FC_VT_NONE,  FC_VT_TRUE, FC_VT_FALSE,
                                FC_VT_INT64,  FC_VT_FLOAT, FC_VT_STR,  FC_VT_BYTES};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char k[32], v[16];
        snprintf(k, sizeof k, "t%zu", i);
        memset(v, (int)('A' + i), sizeof v);
        size_t vlen = types[i] == FC_VT_NONE ? 0 : 8;
        fc_key key = ks(&t, k);
        CHECK_EQ(fc_set_lock_held(&t, &key, types[i], v, vlen, 1, 0, BIG, 3), FC_OK);
        CHECK_TABLE(&t);
        e = fc_get_lock_held(&t, &key, NOW, 1);
        CHECK(e != NULL && e->vtype == types[i] && e->vlen == vlen &&
              memcmp(fc_entry_value(e), v, vlen) == 0);
    }

    /* peek has no side effects: no LRU move, no expiry removal */
    fc_table_destroy(&t);
    table_new(&t, &mem);
    sset(&t, "x", "1", 0, NOW - 5);
    sset(&t, "y", "2", 1, 0);
    CHECK_ORDER(&t, "y x");
    fc_stats before = t.h->stats;
    e = speek(&t, "x");
    CHECK(val_is(e, "1"));
    CHECK_ORDER(&t, "y x");
    CHECK_EQ(t.h->count, 2);
    CHECK(memcmp(&before, &t.h->stats, sizeof before) == 0);
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

static void test_overwrite(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 7, 8), FC_OK);

    char big[1000], big2[3000];
    memset(big, 'B', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memset(big2, 'C', sizeof big2 - 1);
    big2[sizeof big2 - 1] = '\0';

    sset(&t, "k", "0123456789", 1, 0);
    sset(&t, "other", "o", 1, 0);
    CHECK_ORDER(&t, "other k");
    uint64_t gen0 = speek(&t, "k")->gen;

    /* same size */
    CHECK_EQ(sset(&t, "k", "abcdefghij", 0, NOW + 10), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "k"), "abcdefghij"));
    CHECK_ORDER(&t, "k other");
    CHECK_EQ(t.h->count, 2);
    CHECK_EQ(t.h->bytes, 1 + 10 + 5 + 1);
    CHECK(speek(&t, "k")->never == 0 && speek(&t, "k")->expires == NOW + 10);
    uint64_t gen1 = speek(&t, "k")->gen;
    CHECK(gen1 != gen0);

    /* bigger */
    sset(&t, "other", "o", 1, 0);
    CHECK_EQ(sset(&t, "k", big, 1, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "k"), big));
    CHECK_ORDER(&t, "k other");
    CHECK_EQ(t.h->count, 2);
    CHECK_EQ(t.h->bytes, 1 + 999 + 5 + 1);
    CHECK(speek(&t, "k")->never == 1);
    uint64_t gen2 = speek(&t, "k")->gen;
    CHECK(gen2 != gen1 && gen2 != gen0);

    /* much bigger */
    CHECK_EQ(sset(&t, "k", big2, 1, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "k"), big2));
    CHECK_EQ(t.h->bytes, 1 + 2999 + 5 + 1);

    /* smaller, then empty */
    sset(&t, "other", "o", 1, 0);
    CHECK_EQ(sset(&t, "k", "s", 0, NOW + 1), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "k"), "s"));
    CHECK_ORDER(&t, "k other");
    CHECK_EQ(t.h->bytes, 1 + 1 + 5 + 1);
    CHECK(speek(&t, "k")->never == 0 && speek(&t, "k")->expires == NOW + 1);
    CHECK_EQ(sset(&t, "k", "", 1, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "k"), ""));
    CHECK_EQ(t.h->bytes, 1 + 0 + 5 + 1);

    /* overwriting changes vtype */
    int64_t n = 42;
    fc_key key = ks(&t, "k");
    CHECK_EQ(fc_set_lock_held(&t, &key, FC_VT_INT64, &n, 8, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "k")->vtype == FC_VT_INT64 && ival(speek(&t, "k")) == 42);

    /* overwriting an expired entry revives it with the new expiry */
    sset(&t, "k", "old", 0, NOW - 1);
    CHECK_EQ(sset(&t, "k", "new", 0, NOW + 100), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(sget(&t, "k", NOW, 1), "new"));

    /* many overwrites of alternating sizes: memory stays bounded */
    for (int i = 0; i < 2000; i++) {
        sset(&t, "k", (i & 1) ? big : "x", 1, 0);
        if (i % 100 == 0)
            CHECK_TABLE(&t);
    }
    CHECK_EQ(t.h->count, 2);
    CHECK(c.live_blocks < 10);
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

static void test_lru(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    sset(&t, "a", "1", 1, 0);
    sset(&t, "b", "2", 1, 0);
    sset(&t, "c", "3", 1, 0);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "c b a");

    CHECK(val_is(sget(&t, "a", NOW, 1), "1")); /* get: moves */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "a c b");
    CHECK(val_is(sget(&t, "a", NOW, 1), "1")); /* already front */
    CHECK_ORDER(&t, "a c b");
    CHECK(val_is(sget(&t, "b", NOW, 0), "2")); /* has_key: doesn't */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "a c b");
    CHECK(val_is(sget(&t, "c", NOW, 1), "3")); /* middle to front */
    CHECK_ORDER(&t, "c a b");

    sset(&t, "b", "22", 1, 0); /* set existing: moves */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "b c a");

    iset(&t, "n", 1, 1, 0);
    sset(&t, "z", "z", 1, 0);
    CHECK_ORDER(&t, "z n b c a");
    int64_t r = 0;
    fc_entry *found = NULL;
    fc_key kn = ks(&t, "n");
    CHECK_EQ(fc_incr_lock_held(&t, &kn, 1, NOW, &r, &found), FC_OK); /* incr: moves */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "n z b c a");

    /* tail to front and back */
    CHECK(sget(&t, "a", NOW, 1) != NULL);
    CHECK_ORDER(&t, "a n z b c");
    CHECK(sget(&t, "c", NOW, 1) != NULL);
    CHECK_ORDER(&t, "c a n z b");
    CHECK_TABLE(&t);

    /* delete at head, middle, tail keeps the list linked */
    CHECK_EQ(sdel(&t, "c"), 1);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "a n z b");
    CHECK_EQ(sdel(&t, "n"), 1);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "a z b");
    CHECK_EQ(sdel(&t, "b"), 1);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "a z");
    CHECK_EQ(sdel(&t, "a"), 1);
    CHECK_EQ(sdel(&t, "z"), 1);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "");
    sset(&t, "q", "q", 1, 0);
    CHECK_ORDER(&t, "q");
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

static long queue_len(const fc_table *t)
{
    long n = 0;
    for (fc_off eo = t->h->queue; eo; eo = ((const fc_entry *)FC_PTR(t->mem, eo))->qnext)
        n++;
    return n;
}

/* A shared table orders its LRU list lazily: a use is queued, the list is
 * put in order before anything reads it, and a removed entry that is still
 * queued is freed only then.  (The orders checked are LocMemCache's, as in
 * test_lru; the fuzzer compares long random streams with its model.) */
static void test_lazy_lru(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 1, 5, 6), FC_OK);
    long fixed = c.live_blocks; /* header and buckets */

    sset(&t, "a", "1", 1, 0);
    sset(&t, "b", "2", 1, 0);
    sset(&t, "c", "3", 1, 0);
    sset(&t, "d", "4", 1, 0);
    CHECK_EQ(queue_len(&t), 4); /* new entries are uses too */
    CHECK(sget(&t, "c", NOW, 1) != NULL);
    CHECK(sget(&t, "a", NOW, 1) != NULL);
    CHECK(sget(&t, "c", NOW, 1) != NULL);
    CHECK(sget(&t, "b", NOW, 0) != NULL); /* has_key: not a use */
    CHECK_EQ(queue_len(&t), 4);
    CHECK_ORDER(&t, "c a d b"); /* drained */
    CHECK_EQ(t.h->queue, 0);
    CHECK_EQ(queue_len(&t), 0);

    /* queued once however often it is used */
    for (int i = 0; i < 100; i++)
        CHECK(sget(&t, "b", NOW, 1) != NULL);
    CHECK_EQ(queue_len(&t), 1);

    /* a queued entry deleted: gone at once, its memory freed at the drain */
    CHECK_EQ(sdel(&t, "b"), 1);
    CHECK_EQ(t.h->count, 3);
    CHECK(speek(&t, "b") == NULL);
    CHECK_EQ(c.live_blocks, fixed + 4);
    CHECK_ORDER(&t, "c a d");
    CHECK_EQ(c.live_blocks, fixed + 3);
    /* one that is not queued is freed at once */
    CHECK_EQ(sdel(&t, "d"), 1);
    CHECK_EQ(c.live_blocks, fixed + 2);

    /* culling puts the list in order first: the victim is the exact LRU */
    sset(&t, "x", "x", 1, 0);
    CHECK(sget(&t, "c", NOW, 1) != NULL); /* c x a */
    CHECK_EQ(cset(&t, "y", 3, 3), FC_OK); /* culls 3 // 3 = 1 */
    CHECK(speek(&t, "a") == NULL);
    CHECK_ORDER(&t, "y c x");

    /* an expired queued entry removed by a get: a zombie until the drain */
    CHECK_EQ(sset(&t, "e", "5", 0, NOW + 1), FC_OK);
    CHECK(sget(&t, "e", NOW + 2, 1) == NULL);
    CHECK_TABLE(&t);
    CHECK_EQ(c.live_blocks, fixed + 4);
    CHECK_ORDER(&t, "y c x");
    CHECK_EQ(c.live_blocks, fixed + 3);

    /* a value too large for its block: a new entry, the old one a zombie */
    char big[200];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(sget(&t, "x", NOW, 1) != NULL);
    CHECK_EQ(sset(&t, "x", big, 1, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(c.live_blocks, fixed + 4);
    CHECK_ORDER(&t, "x y c");
    CHECK_EQ(c.live_blocks, fixed + 3);

    /* clear frees the zombies too */
    CHECK(sget(&t, "y", NOW, 1) != NULL);
    CHECK_EQ(sdel(&t, "y"), 1);
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->queue, 0);
    CHECK_EQ(c.live_blocks, fixed);
    sset(&t, "z", "z", 1, 0);
    CHECK(sget(&t, "z", NOW, 1) != NULL);
    CHECK_EQ(sdel(&t, "z"), 1);
    fc_table_destroy(&t); /* and so does destroy */
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

static void test_add(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    fc_key ka = ks(&t, "a");

    /* absent: stored */
    CHECK_EQ(fc_add_lock_held(&t, &ka, FC_VT_STR, "first", 5, 0, NOW + 10, BIG, 3, NOW), 1);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "a"), "first"));
    CHECK(speek(&t, "a")->expires == NOW + 10);

    /* live: not stored, value, expiry and position unchanged */
    sset(&t, "b", "b", 1, 0);
    CHECK_ORDER(&t, "b a");
    CHECK_EQ(fc_add_lock_held(&t, &ka, FC_VT_STR, "second", 6, 1, 0, BIG, 3, NOW + 9.5), 0);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "a"), "first"));
    CHECK(speek(&t, "a")->never == 0 && speek(&t, "a")->expires == NOW + 10);
    CHECK_ORDER(&t, "b a");
    CHECK_EQ(t.h->count, 2);

    /* expired (expires == now): stored, moved to the front */
    CHECK_EQ(fc_add_lock_held(&t, &ka, FC_VT_STR, "third", 5, 1, 0, BIG, 3, NOW + 10), 1);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "a"), "third"));
    CHECK(speek(&t, "a")->never == 1);
    CHECK_ORDER(&t, "a b");
    CHECK_EQ(t.h->count, 2);

    /* never-expiring: not stored however late */
    CHECK_EQ(fc_add_lock_held(&t, &ka, FC_VT_STR, "fourth", 6, 1, 0, BIG, 3, 1e300), 0);
    CHECK(val_is(speek(&t, "a"), "third"));

    /* add culls like set when full (count >= max_entries) */
    fc_table_destroy(&t);
    table_new(&t, &mem);
    cset(&t, "x", BIG, 3);
    cset(&t, "y", BIG, 3);
    cset(&t, "z", BIG, 3);
    fc_key kw = ks(&t, "w");
    CHECK_EQ(fc_add_lock_held(&t, &kw, FC_VT_STR, "w", 1, 1, 0, 3, 3, NOW), 1);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "w z y");
    /* a refused add does not cull */
    CHECK_EQ(fc_add_lock_held(&t, &kw, FC_VT_STR, "w", 1, 1, 0, 3, 3, NOW), 0);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "w z y");
    fc_table_destroy(&t);
}

static void test_touch(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    fc_key ka = ks(&t, "a"), kz = ks(&t, "zz");

    sset(&t, "a", "1", 0, NOW + 5);
    sset(&t, "b", "2", 1, 0);
    CHECK_ORDER(&t, "b a");

    /* live: new expiry, no LRU move, value untouched */
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 0, NOW + 50, NOW), 1);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "a")->never == 0 && speek(&t, "a")->expires == NOW + 50);
    CHECK_ORDER(&t, "b a");
    CHECK(val_is(speek(&t, "a"), "1"));
    CHECK(val_is(sget(&t, "a", NOW + 49, 0), "1"));

    /* to never, and back */
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 1, 0, NOW), 1);
    CHECK(speek(&t, "a")->never == 1);
    CHECK(sget(&t, "a", 1e300, 0) != NULL);
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 0, NOW + 1, NOW), 1);
    CHECK(speek(&t, "a")->never == 0 && speek(&t, "a")->expires == NOW + 1);
    CHECK_TABLE(&t);

    /* touch to the past (timeout 0 -> -1): the entry is then expired */
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 0, -1, NOW), 1);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "a") != NULL);

    /* expired: 0, and the entry stays where it was with its old expiry */
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 0, NOW + 100, NOW), 0);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "a") != NULL && speek(&t, "a")->expires == -1);
    CHECK_EQ(t.h->count, 2);
    CHECK_ORDER(&t, "b a");
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 1, 0, NOW), 0);
    CHECK(speek(&t, "a")->never == 0);

    /* boundary: expires == now is expired */
    sset(&t, "c", "3", 0, NOW);
    fc_key kc = ks(&t, "c");
    CHECK_EQ(fc_touch_lock_held(&t, &kc, 1, 0, NOW), 0);
    CHECK_EQ(fc_touch_lock_held(&t, &kc, 1, 0, NOW - 0.5), 1);
    CHECK_TABLE(&t);

    /* absent */
    CHECK_EQ(fc_touch_lock_held(&t, &kz, 1, 0, NOW), 0);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 3);
    fc_table_destroy(&t);
}

/* Serve-stale: an entry marked with a grace outlives its expiry for
 * get_stale only; get, has_key (get without LRU) and incr answer a miss and
 * leave it; a write resets the grace; past the grace it goes as usual. */
static void test_stale(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    fc_key ka = ks(&t, "a"), kb = ks(&t, "b"), kz = ks(&t, "zz");
    int stale = -1;

    sset(&t, "a", "1", 0, NOW + 10);
    sset(&t, "b", "2", 0, NOW + 10);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &ka, 5), 1);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &kz, 5), 0);
    CHECK(speek(&t, "a")->stale == 5 && speek(&t, "b")->stale == 0);
    CHECK_TABLE(&t);

    /* live: both gets hit, get_stale says live */
    CHECK(val_is(fc_get_stale_lock_held(&t, &ka, NOW + 9, &stale), "1") && stale == 0);
    CHECK(val_is(sget(&t, "a", NOW + 9, 1), "1"));

    /* expired within the grace: get misses and keeps it; get_stale serves it */
    uint64_t count = t.h->count, expirations = t.h->stats.expirations;
    CHECK(sget(&t, "a", NOW + 12, 1) == NULL);
    CHECK(sget(&t, "a", NOW + 12, 0) == NULL);
    CHECK_EQ(t.h->count, count);
    CHECK_EQ(t.h->stats.expirations, expirations);
    CHECK_ORDER(&t, "a b");
    CHECK(val_is(fc_get_stale_lock_held(&t, &kb, NOW + 12, &stale), "2") == 0);
    CHECK(val_is(fc_get_stale_lock_held(&t, &ka, NOW + 12, &stale), "1") && stale == 1);
    CHECK_EQ(t.h->count, count - 1); /* b had no grace: removed */
    CHECK_TABLE(&t);

    /* incr on it: a miss, and it stays */
    int64_t r;
    fc_entry *found;
    CHECK_EQ(fc_incr_lock_held(&t, &ka, 1, NOW + 12, &r, &found), FC_MISS);
    CHECK(speek(&t, "a") != NULL);
    /* touch: an expired entry is not touched (LocMemCache), grace kept */
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 0, NOW + 100, NOW + 12), 0);
    CHECK(speek(&t, "a")->stale == 5);

    /* a set resets the grace: after its expiry the entry goes at once */
    sset(&t, "a", "3", 0, NOW + 20);
    CHECK(speek(&t, "a")->stale == 0);
    CHECK(fc_get_stale_lock_held(&t, &ka, NOW + 21, &stale) == NULL);
    CHECK(speek(&t, "a") == NULL);
    CHECK_TABLE(&t);

    /* past the grace (boundary: expires + stale == now is past it) */
    sset(&t, "a", "4", 0, NOW + 10);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &ka, 5), 1);
    CHECK(fc_get_stale_lock_held(&t, &ka, NOW + 15, &stale) == NULL);
    CHECK(speek(&t, "a") == NULL);

    /* get past the grace removes it like any expired entry */
    sset(&t, "a", "5", 0, NOW + 10);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &ka, 5), 1);
    CHECK(sget(&t, "a", NOW + 16, 1) == NULL && speek(&t, "a") == NULL);

    /* add over a kept entry stores (it is expired), grace from the add */
    sset(&t, "a", "6", 0, NOW + 10);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &ka, 5), 1);
    CHECK_EQ(fc_add_lock_held(&t, &ka, FC_VT_STR, "7", 1, 0, NOW + 30, BIG, 3, NOW + 12), 1);
    CHECK(val_is(speek(&t, "a"), "7") && speek(&t, "a")->stale == 0);

    /* no grace for entries that never expire, nor a negative or NaN one */
    sset(&t, "n", "8", 1, 0);
    fc_key kn = ks(&t, "n");
    CHECK_EQ(fc_mark_stale_lock_held(&t, &kn, 5), 1);
    CHECK(speek(&t, "n")->stale == 0);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &ka, -1), 1);
    CHECK(speek(&t, "a")->stale == 0);
    CHECK_EQ(fc_mark_stale_lock_held(&t, &ka, 0.0 / 0.0), 1);
    CHECK(speek(&t, "a")->stale == 0);
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

static void test_delete(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    sset(&t, "live", "1", 1, 0);
    sset(&t, "dead", "2", 0, NOW - 100);
    sset(&t, "keep", "3", 1, 0);
    CHECK_EQ(t.h->bytes, 4 + 1 + 4 + 1 + 4 + 1);

    CHECK_EQ(sdel(&t, "live"), 1);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "live") == NULL);
    CHECK(sget(&t, "live", NOW, 1) == NULL);
    CHECK_EQ(sdel(&t, "dead"), 1); /* expired entries are still present */
    CHECK_TABLE(&t);
    CHECK(speek(&t, "dead") == NULL);
    CHECK_EQ(sdel(&t, "live"), 0);
    CHECK_EQ(sdel(&t, "never-was"), 0);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 1);
    CHECK_EQ(t.h->bytes, 4 + 1);
    CHECK(val_is(speek(&t, "keep"), "3"));

    /* a deleted key can be stored again */
    CHECK_EQ(sset(&t, "live", "again", 1, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(sget(&t, "live", NOW, 1), "again"));
    CHECK_ORDER(&t, "live keep");
    fc_table_destroy(&t);
}

static void test_expiry(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    /* never: expires is ignored */
    sset(&t, "never", "n", 1, NOW - 1000);
    CHECK(sget(&t, "never", NOW, 1) != NULL);
    CHECK(sget(&t, "never", 1e300, 1) != NULL);

    /* expires > now: live; expires == now: expired (removed on get) */
    sset(&t, "edge", "e", 0, NOW);
    CHECK(sget(&t, "edge", NOW - 0.001, 1) != NULL);
    CHECK_EQ(t.h->count, 2);
    CHECK(sget(&t, "edge", NOW, 1) == NULL);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 1);
    CHECK(speek(&t, "edge") == NULL);

    /* has_key (lru=0) removes an expired entry too */
    sset(&t, "h", "h", 0, NOW + 1);
    CHECK(sget(&t, "h", NOW + 2, 0) == NULL);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "h") == NULL);

    /* timeout 0 -> expires -1: expired at once */
    sset(&t, "zero", "z", 0, -1);
    CHECK(sget(&t, "zero", NOW, 1) == NULL);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "zero") == NULL);

    /* negative timeouts: already expired */
    sset(&t, "neg", "z", 0, NOW - 10);
    CHECK(sget(&t, "neg", NOW, 1) == NULL);
    CHECK_TABLE(&t);

    /* sub-second precision */
    sset(&t, "frac", "f", 0, NOW + 0.25);
    CHECK(sget(&t, "frac", NOW + 0.2499, 1) != NULL);
    CHECK(sget(&t, "frac", NOW + 0.25, 1) == NULL);
    CHECK_TABLE(&t);

    /* expired entries are only removed when looked up */
    for (int i = 0; i < 10; i++) {
        char k[32];
        snprintf(k, sizeof k, "x%d", i);
        sset(&t, k, "x", 0, NOW + i);
    }
    CHECK_EQ(t.h->count, 11);
    CHECK(sget(&t, "x3", NOW + 5, 1) == NULL);
    CHECK_EQ(t.h->count, 10);
    CHECK(sget(&t, "x7", NOW + 5, 1) != NULL);
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

/* count of keys "<prefix><i>" (i in [1, n]) present and live */
static int count_live(fc_table *t, const char *prefix, int n, double now)
{
    int c = 0;
    for (int i = 1; i <= n; i++) {
        char k[32];
        snprintf(k, sizeof k, "%s%d", prefix, i);
        if (sget(t, k, now, 0) != NULL)
            c++;
    }
    return c;
}

static void test_cull(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    /* below max_entries: nothing culled */
    CHECK_EQ(cset(&t, "a", 3, 3), FC_OK);
    CHECK_EQ(cset(&t, "b", 3, 3), FC_OK);
    CHECK_EQ(cset(&t, "c", 3, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "c b a");
    /* count (3) >= max (3): cull 3 // 3 = 1 from the LRU end first */
    CHECK_EQ(cset(&t, "d", 3, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "d c b");
    /* get changes what is culled */
    CHECK(sget(&t, "b", NOW, 1) != NULL);
    CHECK_ORDER(&t, "b d c");
    CHECK_EQ(cset(&t, "e", 3, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "e b d");
    /* cull even when overwriting an existing key */
    CHECK_EQ(cset(&t, "b", 3, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "b e");
    /* ... including when the key overwritten is the one culled */
    CHECK_EQ(cset(&t, "f", 3, 3), FC_OK);
    CHECK_ORDER(&t, "f b e");
    CHECK_EQ(cset(&t, "e", 3, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "e f b");
    CHECK_EQ(t.h->count, 3);

    /* cull_frequency 0: everything goes, then the new entry is stored */
    CHECK_EQ(cset(&t, "g", 3, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "g");
    CHECK_EQ(t.h->bytes, 2);
    /* cull_frequency 0 while overwriting: only the new value remains */
    cset(&t, "h", BIG, 0);
    cset(&t, "i", BIG, 0);
    CHECK_EQ(cset(&t, "h", 3, 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "h");

    /* cull_frequency 1: all count entries; 2: count // 2 */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    const char *five[] = {"1", "2", "3", "4", "5"};
    for (int i = 0; i < 5; i++)
        cset(&t, five[i], BIG, 3);
    CHECK_EQ(cset(&t, "6", 5, 1), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "6");
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    for (int i = 0; i < 5; i++)
        cset(&t, five[i], BIG, 3);
    CHECK_EQ(cset(&t, "6", 5, 2), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "6 5 4 3");
    /* max_entries well below count: still count // cull_frequency */
    CHECK_EQ(cset(&t, "7", 1, 2), FC_OK); /* 4 // 2 = 2 */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "7 6 5");
    /* huge cull_frequency: count // f == 0 */
    CHECK_EQ(cset(&t, "8", 1, INT64_MAX), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "8 7 6 5");
    /* count // f exactly: 4 // 4 = 1 */
    CHECK_EQ(cset(&t, "9", 4, 4), FC_OK);
    CHECK_ORDER(&t, "9 8 7 6");

    /* negative cull_frequency: Python's floor division gives a negative
     * count, range() of it is empty: nothing removed, the table grows */
    CHECK_EQ(cset(&t, "n1", 1, -3), FC_OK);
    CHECK_EQ(cset(&t, "n2", 1, -1), FC_OK);
    CHECK_EQ(cset(&t, "n3", 1, INT64_MIN), FC_OK);
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "n3 n2 n1 9 8 7 6");

    /* max_entries -1 (test_cull_delete_when_store_empty): with 0 entries
     * 0 // 3 = 0 are culled and the value is stored */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    CHECK_EQ(cset(&t, "force_cull_delete", -1, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK(sget(&t, "force_cull_delete", NOW, 0) != NULL);
    CHECK_EQ(cset(&t, "m2", -1, 3), FC_OK); /* 1 // 3 = 0 */
    CHECK_EQ(cset(&t, "m3", -1, 3), FC_OK); /* 2 // 3 = 0 */
    CHECK_ORDER(&t, "m3 m2 force_cull_delete");
    CHECK_EQ(cset(&t, "m4", -1, 3), FC_OK); /* 3 // 3 = 1 */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "m4 m3 m2");
    /* max_entries 0 with cull_frequency 0: clears each time */
    CHECK_EQ(cset(&t, "z1", 0, 0), FC_OK);
    CHECK_ORDER(&t, "z1");
    CHECK_EQ(cset(&t, "z2", 0, 0), FC_OK);
    CHECK_ORDER(&t, "z2");
    CHECK_EQ(cset(&t, "z3", INT64_MIN, 2), FC_OK); /* 1 // 2 = 0 */
    CHECK_ORDER(&t, "z3 z2");
    CHECK_TABLE(&t);

    /* culling removes from the LRU end whether or not entries expired:
     * an expired entry in the middle survives, live ones at the end go */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    cset(&t, "old1", BIG, 3);
    cset(&t, "old2", BIG, 3);
    sset(&t, "exp", "x", 0, NOW - 1);
    cset(&t, "new1", BIG, 3);
    cset(&t, "new2", BIG, 3);
    cset(&t, "new3", BIG, 3);
    CHECK_EQ(cset(&t, "new4", 6, 3), FC_OK); /* 6 // 3 = 2 */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "new4 new3 new2 new1 exp");

    /* the expired-but-present count matters for the threshold, like
     * len(self._cache) */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    sset(&t, "e1", "x", 0, NOW - 1);
    sset(&t, "e2", "x", 0, NOW - 1);
    CHECK_EQ(cset(&t, "l1", 2, 2), FC_OK); /* 2 // 2 = 1: e1 */
    CHECK_TABLE(&t);
    CHECK_ORDER(&t, "l1 e2");

    /* Django's CacheTests.test_cull: 49 sets at MAX_ENTRIES=30,
     * CULL_FREQUENCY=3 leave 29 (the 29 most recent). */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    for (int i = 1; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "cull%d", i);
        fc_key key = ks(&t, k);
        CHECK_EQ(fc_set_lock_held(&t, &key, FC_VT_STR, "value", 5, 0, NOW + 1000, 30, 3), FC_OK);
        CHECK_TABLE(&t);
    }
    CHECK_EQ(count_live(&t, "cull", 49, NOW), 29);
    CHECK_EQ(count_live(&t, "cull", 20, NOW), 0);
    CHECK_EQ(t.h->count, 29);

    /* test_zero_cull: CULL_FREQUENCY=0 leaves 19 */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    for (int i = 1; i < 50; i++) {
        char k[32];
        snprintf(k, sizeof k, "zero_cull%d", i);
        fc_key key = ks(&t, k);
        CHECK_EQ(fc_set_lock_held(&t, &key, FC_VT_STR, "value", 5, 0, NOW + 1000, 30, 0), FC_OK);
        CHECK_TABLE(&t);
    }
    CHECK_EQ(count_live(&t, "zero_cull", 49, NOW), 19);
    CHECK_EQ(count_live(&t, "zero_cull", 30, NOW), 0);

    /* non-culling operations never cull, however full the table: touch,
     * incr, replace, delete, get */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    cset(&t, "p", BIG, 3);
    cset(&t, "q", BIG, 3);
    iset(&t, "r", 1, 1, 0);
    fc_key kr = ks(&t, "r");
    int64_t res;
    fc_entry *found;
    CHECK_EQ(fc_incr_lock_held(&t, &kr, 1, NOW, &res, &found), FC_OK);
    uint64_t g = speek(&t, "r")->gen;
    int64_t v9 = 9;
    CHECK_EQ(fc_replace_lock_held(&t, &kr, g, FC_VT_INT64, &v9, 8), FC_OK);
    CHECK_EQ(fc_touch_lock_held(&t, &kr, 1, 0, NOW), 1);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 3);
    fc_table_destroy(&t);
}

static void test_incr(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    fc_key kn = ks(&t, "n");
    int64_t r = 12345;
    fc_entry *found = (fc_entry *)&r;

    /* missing */
    CHECK_EQ(fc_incr_lock_held(&t, &kn, 1, NOW, &r, &found), FC_MISS);
    CHECK(found == NULL);
    CHECK_TABLE(&t);

    /* in place: result, stored value, expiry kept, gen changes */
    iset(&t, "n", 5, 0, NOW + 60);
    sset(&t, "s", "x", 1, 0);
    uint64_t g0 = speek(&t, "n")->gen;
    CHECK_EQ(fc_incr_lock_held(&t, &kn, 3, NOW, &r, &found), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(r, 8);
    fc_entry *e = speek(&t, "n");
    CHECK(e != NULL && e->vtype == FC_VT_INT64 && e->vlen == 8 && ival(e) == 8);
    CHECK(e->never == 0 && e->expires == NOW + 60);
    CHECK(e->gen != g0);
    CHECK_ORDER(&t, "n s");
    CHECK_EQ(t.h->bytes, 1 + 8 + 1 + 1);

    CHECK_EQ(fc_incr_lock_held(&t, &kn, -10, NOW, &r, &found), FC_OK);
    CHECK_EQ(r, -2);
    CHECK_EQ(fc_incr_lock_held(&t, &kn, 0, NOW, &r, &found), FC_OK);
    CHECK_EQ(r, -2);
    CHECK_EQ(ival(speek(&t, "n")), -2);
    CHECK_TABLE(&t);

    /* overflow: FC_NOTINT, *found is the entry, unchanged */
    iset(&t, "max", INT64_MAX, 0, NOW + 5);
    fc_key kmax = ks(&t, "max");
    sset(&t, "s2", "y", 1, 0);
    uint64_t gmax = speek(&t, "max")->gen;
    found = NULL;
    CHECK_EQ(fc_incr_lock_held(&t, &kmax, 1, NOW, &r, &found), FC_NOTINT);
    CHECK_TABLE(&t);
    CHECK(found != NULL && found == speek(&t, "max"));
    CHECK(found != NULL && ival(found) == INT64_MAX && found->vtype == FC_VT_INT64);
    CHECK(found != NULL && found->gen == gmax && found->expires == NOW + 5);
    CHECK_EQ(fc_incr_lock_held(&t, &kmax, INT64_MAX, NOW, &r, &found), FC_NOTINT);
    CHECK_EQ(fc_incr_lock_held(&t, &kmax, -1, NOW, &r, &found), FC_OK);
    CHECK_EQ(r, INT64_MAX - 1);
    CHECK_EQ(fc_incr_lock_held(&t, &kmax, 1, NOW, &r, &found), FC_OK);
    CHECK_EQ(r, INT64_MAX);

    iset(&t, "min", INT64_MIN, 1, 0);
    fc_key kmin = ks(&t, "min");
    CHECK_EQ(fc_incr_lock_held(&t, &kmin, -1, NOW, &r, &found), FC_NOTINT);
    CHECK(found != NULL && ival(found) == INT64_MIN);
    CHECK_EQ(fc_incr_lock_held(&t, &kmin, INT64_MIN, NOW, &r, &found), FC_NOTINT);
    CHECK_EQ(fc_incr_lock_held(&t, &kmin, INT64_MAX, NOW, &r, &found), FC_OK);
    CHECK_EQ(r, -1);
    CHECK_TABLE(&t);

    /* not an in-place integer: FC_NOTINT with the entry */
    sset(&t, "str", "5", 1, 0);
    fc_key kstr = ks(&t, "str");
    found = NULL;
    CHECK_EQ(fc_incr_lock_held(&t, &kstr, 1, NOW, &r, &found), FC_NOTINT);
    CHECK(found != NULL && val_is(found, "5"));
    CHECK_TABLE(&t);
    double d = 1.5;
    fc_key kf = ks(&t, "float");
    fc_set_lock_held(&t, &kf, FC_VT_FLOAT, &d, 8, 1, 0, BIG, 3);
    CHECK_EQ(fc_incr_lock_held(&t, &kf, 1, NOW, &r, &found), FC_NOTINT);
    CHECK(found != NULL && found->vtype == FC_VT_FLOAT &&
          memcmp(fc_entry_value(found), &d, 8) == 0);
    /* a pickled int (8 bytes, other vtype) is not touched either */
    fc_key kp = ks(&t, "pickled");
    int64_t seven = 7;
    fc_set_lock_held(&t, &kp, FC_VT_PICKLE, &seven, 8, 1, 0, BIG, 3);
    CHECK_EQ(fc_incr_lock_held(&t, &kp, 1, NOW, &r, &found), FC_NOTINT);
    CHECK(found != NULL && ival(found) == 7);
    CHECK_TABLE(&t);

    /* expired: FC_MISS and removed */
    iset(&t, "old", 1, 0, NOW);
    fc_key kold = ks(&t, "old");
    uint64_t count = t.h->count;
    CHECK_EQ(fc_incr_lock_held(&t, &kold, 1, NOW, &r, &found), FC_MISS);
    CHECK(found == NULL);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "old") == NULL);
    CHECK_EQ(t.h->count, count - 1);
    fc_table_destroy(&t);
}

static void test_replace(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 3, 4), FC_OK);
    fc_key ka = ks(&t, "a"), kz = ks(&t, "zz");

    sset(&t, "a", "old", 0, NOW + 30);
    sset(&t, "b", "b", 1, 0);
    CHECK_ORDER(&t, "b a");
    uint64_t g = speek(&t, "a")->gen;

    /* matching gen: replaced, expiry kept, moved to the front */
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g, FC_VT_BYTES, "new", 3), FC_OK);
    CHECK_TABLE(&t);
    fc_entry *e = speek(&t, "a");
    CHECK(e != NULL && e->vtype == FC_VT_BYTES && e->vlen == 3 &&
          memcmp(fc_entry_value(e), "new", 3) == 0);
    CHECK(e != NULL && e->never == 0 && e->expires == NOW + 30);
    CHECK_ORDER(&t, "a b");
    uint64_t g2 = e->gen;
    CHECK(g2 != g);

    /* stale gen: FC_CHANGED, nothing changes */
    sset(&t, "b", "b", 1, 0);
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g, FC_VT_STR, "stale", 5), FC_CHANGED);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "a")->vtype == FC_VT_BYTES);
    CHECK_ORDER(&t, "b a");

    /* bigger value (a new block): expiry and never kept */
    char big[5000];
    memset(big, 'r', sizeof big);
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g2, FC_VT_STR, big, sizeof big), FC_OK);
    CHECK_TABLE(&t);
    e = speek(&t, "a");
    CHECK(e != NULL && e->vlen == sizeof big && memcmp(fc_entry_value(e), big, sizeof big) == 0);
    CHECK(e != NULL && e->never == 0 && e->expires == NOW + 30);
    CHECK_ORDER(&t, "a b");
    CHECK_EQ(t.h->bytes, 1 + sizeof big + 1 + 1);
    uint64_t g3 = e->gen;
    CHECK(g3 != g2 && g3 != g);

    /* smaller value, never-expiring entry */
    sset(&t, "b", "b", 1, 0);
    uint64_t gb = speek(&t, "b")->gen;
    fc_key kb = ks(&t, "b");
    CHECK_EQ(fc_replace_lock_held(&t, &kb, gb, FC_VT_STR, "", 0), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "b"), "") && speek(&t, "b")->never == 1);
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g3, FC_VT_STR, "s", 1), FC_OK);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "a"), "s") && speek(&t, "a")->expires == NOW + 30);
    CHECK_EQ(t.h->bytes, 1 + 1 + 1 + 0);

    /* missing key */
    CHECK_EQ(fc_replace_lock_held(&t, &kz, g3, FC_VT_STR, "x", 1), FC_CHANGED);
    CHECK(speek(&t, "zz") == NULL);
    CHECK_TABLE(&t);

    /* rewritten by set with the same value, by incr, or deleted and set
     * again: the old gen is stale */
    g = speek(&t, "a")->gen;
    sset(&t, "a", "s", 0, NOW + 30);
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g, FC_VT_STR, "x", 1), FC_CHANGED);
    g = speek(&t, "a")->gen;
    sdel(&t, "a");
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g, FC_VT_STR, "x", 1), FC_CHANGED);
    CHECK(speek(&t, "a") == NULL);
    sset(&t, "a", "s", 0, NOW + 30);
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g, FC_VT_STR, "x", 1), FC_CHANGED);
    CHECK(val_is(speek(&t, "a"), "s"));
    iset(&t, "i", 1, 1, 0);
    fc_key ki = ks(&t, "i");
    g = speek(&t, "i")->gen;
    int64_t r;
    fc_entry *found;
    fc_incr_lock_held(&t, &ki, 1, NOW, &r, &found);
    int64_t v = 100;
    CHECK_EQ(fc_replace_lock_held(&t, &ki, g, FC_VT_INT64, &v, 8), FC_CHANGED);
    CHECK_EQ(ival(speek(&t, "i")), 2);
    /* the gen of another key does not match */
    uint64_t ga = speek(&t, "a")->gen;
    CHECK_EQ(fc_replace_lock_held(&t, &ki, ga, FC_VT_INT64, &v, 8), FC_CHANGED);
    CHECK_TABLE(&t);

    /* touch changes the expiry, not the value: the read stays current
     * (incr by compare-and-swap then behaves as touch-then-incr) */
    g = speek(&t, "a")->gen;
    CHECK_EQ(fc_touch_lock_held(&t, &ka, 0, NOW + 99, NOW), 1);
    CHECK_EQ(fc_replace_lock_held(&t, &ka, g, FC_VT_STR, "t", 1), FC_OK);
    CHECK(val_is(speek(&t, "a"), "t") && speek(&t, "a")->expires == NOW + 99);
    CHECK_TABLE(&t);

    /* gens are distinct over many writes */
    uint64_t prev = speek(&t, "a")->gen;
    for (int i = 0; i < 100; i++) {
        sset(&t, (i & 1) ? "a" : "b", "v", 1, 0);
        uint64_t cur = speek(&t, (i & 1) ? "a" : "b")->gen;
        CHECK(cur != prev);
        prev = cur;
    }
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

static void test_clear(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 3, 4), FC_OK);
    char k[32];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "k%d", i);
        sset(&t, k, "value", i & 1, NOW + i);
    }
    CHECK_TABLE(&t);
    long blocks_full = c.live_blocks;
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 0);
    CHECK_EQ(t.h->bytes, 0);
    CHECK_ORDER(&t, "");
    CHECK(c.live_blocks < blocks_full - 400); /* entries were freed */
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "k%d", i);
        CHECK(speek(&t, k) == NULL);
    }
    fc_clear_lock_held(&t); /* clearing an empty table */
    CHECK_TABLE(&t);
    sset(&t, "after", "1", 1, 0);
    CHECK_TABLE(&t);
    CHECK(val_is(sget(&t, "after", NOW, 1), "1"));
    CHECK_ORDER(&t, "after");
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

static int count_cb(const fc_entry *e, void *arg)
{
    (void)e;
    return ++*(int *)arg == 3 ? 77 : 0;
}

static void test_foreach(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    int n = 0;
    CHECK_EQ(fc_foreach_lock_held(&t, count_cb, &n), 0);
    CHECK_EQ(n, 0);
    sset(&t, "1", "", 1, 0);
    sset(&t, "2", "", 1, 0);
    sset(&t, "3", "", 1, 0);
    sset(&t, "4", "", 0, NOW - 1); /* expired entries are visited too */
    CHECK_ORDER(&t, "4 3 2 1");
    sget(&t, "2", NOW, 1);
    CHECK_ORDER(&t, "2 4 3 1");
    /* stops at the first non-zero return and passes it back */
    n = 0;
    CHECK_EQ(fc_foreach_lock_held(&t, count_cb, &n), 77);
    CHECK_EQ(n, 3);
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

static void test_stats(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    fc_stats *s = &t.h->stats;

    sset(&t, "a", "1", 1, 0);
    CHECK_EQ(s->sets, 1);
    sset(&t, "a", "2", 1, 0);
    CHECK_EQ(s->sets, 2);
    sget(&t, "a", NOW, 1);
    sget(&t, "a", NOW, 0);
    CHECK_EQ(s->hits, 2);
    CHECK_EQ(s->misses, 0);
    sget(&t, "nope", NOW, 1);
    CHECK_EQ(s->misses, 1);
    CHECK_EQ(s->expirations, 0);

    sset(&t, "e", "1", 0, NOW);
    sget(&t, "e", NOW, 1); /* expired: a miss and an expiration */
    CHECK_EQ(s->misses, 2);
    CHECK_EQ(s->expirations, 1);
    CHECK_EQ(s->hits, 2);

    CHECK_EQ(sdel(&t, "a"), 1);
    CHECK_EQ(s->deletes, 1);
    CHECK_EQ(sdel(&t, "a"), 0);
    CHECK_EQ(s->deletes, 1);

    /* evictions: the number of entries culled */
    for (int i = 0; i < 9; i++) {
        char k[32];
        snprintf(k, sizeof k, "c%d", i);
        cset(&t, k, BIG, 3);
    }
    CHECK_EQ(s->evictions, 0);
    cset(&t, "c9", 9, 3); /* 9 // 3 = 3 */
    CHECK_EQ(s->evictions, 3);
    cset(&t, "c10", 7, 0); /* all 7 */
    CHECK_EQ(s->evictions, 10);
    CHECK_EQ(t.h->count, 1);
    CHECK_TABLE(&t);

    /* peek and foreach count nothing */
    fc_stats before = *s;
    speek(&t, "c10");
    speek(&t, "nope");
    order_str(&t, (char[64]){0}, 64);
    CHECK(memcmp(&before, s, sizeof before) == 0);
    fc_table_destroy(&t);
}

static void test_growth(void)
{
    enum { N = 100000 };
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 11, 12), FC_OK);
    uint64_t nb0 = t.h->nbuckets;
    char k[32];
    int ok = 1;
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key:%d", i);
        fc_key key = mk(&t, k, (size_t)n);
        ok &= fc_set_lock_held(&t, &key, FC_VT_INT64, &(int64_t){i}, 8, 1, 0, BIG, 3) == FC_OK;
        if (i % 10000 == 0 || i == 4095 || i == 4096)
            CHECK_TABLE(&t);
    }
    CHECK(ok);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, N);
    CHECK(t.h->nbuckets > nb0);
    CHECK((t.h->nbuckets & (t.h->nbuckets - 1)) == 0);
    CHECK(t.h->nbuckets >= N / 2); /* grown, load around 1 */
    ok = 1;
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key:%d", i);
        fc_key key = mk(&t, k, (size_t)n);
        fc_entry *e = fc_get_lock_held(&t, &key, NOW, 0);
        ok &= e != NULL && e->vtype == FC_VT_INT64 && ival(e) == i;
    }
    CHECK(ok);
    /* LRU order is insertion order, newest first */
    CHECK(memcmp(fc_entry_key(FC_PTR(t.mem, t.h->root.next)), "key:99999", 9) == 0);
    /* delete the even ones */
    ok = 1;
    for (int i = 0; i < N; i += 2) {
        int n = snprintf(k, sizeof k, "key:%d", i);
        fc_key key = mk(&t, k, (size_t)n);
        ok &= fc_delete_lock_held(&t, &key) == 1;
        if (i % 20000 == 0)
            CHECK_TABLE(&t);
    }
    CHECK(ok);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, N / 2);
    ok = 1;
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof k, "key:%d", i);
        fc_key key = mk(&t, k, (size_t)n);
        fc_entry *e = fc_peek_lock_held(&t, &key);
        ok &= (i & 1) ? (e != NULL && ival(e) == i) : e == NULL;
    }
    CHECK(ok);
    /* a big cull from a big table */
    fc_key key = ks(&t, "last");
    CHECK_EQ(fc_set_lock_held(&t, &key, FC_VT_STR, "", 0, 1, 0, 1000, 2), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, N / 4 + 1);
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

static void test_binary(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    /* keys with NUL bytes are distinct from their prefixes */
    const char k1[] = "a\0b", k2[] = "a\0c", k3[] = "a", k4[] = "a\0";
    fc_key K1 = mk(&t, k1, 3), K2 = mk(&t, k2, 3), K3 = mk(&t, k3, 1), K4 = mk(&t, k4, 2);
    CHECK_EQ(fc_set_lock_held(&t, &K1, FC_VT_BYTES, "1", 1, 1, 0, BIG, 3), FC_OK);
    CHECK_EQ(fc_set_lock_held(&t, &K2, FC_VT_BYTES, "2", 1, 1, 0, BIG, 3), FC_OK);
    CHECK_EQ(fc_set_lock_held(&t, &K3, FC_VT_BYTES, "3", 1, 1, 0, BIG, 3), FC_OK);
    CHECK_EQ(fc_set_lock_held(&t, &K4, FC_VT_BYTES, "4", 1, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 4);
    fc_entry *e = fc_get_lock_held(&t, &K1, NOW, 1);
    CHECK(e != NULL && e->klen == 3 && memcmp(fc_entry_key(e), k1, 3) == 0 &&
          *fc_entry_value(e) == '1');
    e = fc_get_lock_held(&t, &K2, NOW, 1);
    CHECK(e != NULL && *fc_entry_value(e) == '2');
    e = fc_get_lock_held(&t, &K3, NOW, 1);
    CHECK(e != NULL && e->klen == 1 && *fc_entry_value(e) == '3');
    e = fc_get_lock_held(&t, &K4, NOW, 1);
    CHECK(e != NULL && e->klen == 2 && *fc_entry_value(e) == '4');
    CHECK_EQ(fc_delete_lock_held(&t, &K4), 1);
    CHECK_TABLE(&t);
    CHECK(fc_peek_lock_held(&t, &K3) != NULL && fc_peek_lock_held(&t, &K4) == NULL);

    /* all 256 byte values in key and value */
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)(255 - i);
    fc_key KB = mk(&t, bin, sizeof bin);
    CHECK_EQ(fc_set_lock_held(&t, &KB, FC_VT_BYTES, bin, sizeof bin, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KB, NOW, 1);
    CHECK(e != NULL && e->klen == 256 && memcmp(fc_entry_key(e), bin, 256) == 0 && e->vlen == 256 &&
          memcmp(fc_entry_value(e), bin, 256) == 0);

    /* the empty key, and empty values */
    fc_key KE = mk(&t, "", 0);
    CHECK(fc_get_lock_held(&t, &KE, NOW, 1) == NULL);
    CHECK_EQ(fc_set_lock_held(&t, &KE, FC_VT_STR, "empty-key", 9, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KE, NOW, 1);
    CHECK(e != NULL && e->klen == 0 && e->vlen == 9 &&
          memcmp(fc_entry_value(e), "empty-key", 9) == 0);
    CHECK_EQ(fc_set_lock_held(&t, &KE, FC_VT_STR, "", 0, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KE, NOW, 1);
    CHECK(e != NULL && e->klen == 0 && e->vlen == 0);
    CHECK_EQ(fc_set_lock_held(&t, &KE, FC_VT_STR, NULL, 0, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK(fc_peek_lock_held(&t, &KE) != NULL);
    CHECK_EQ(fc_delete_lock_held(&t, &KE), 1);
    CHECK_TABLE(&t);
    CHECK(fc_peek_lock_held(&t, &KE) == NULL);
    fc_key KX = ks(&t, "x");
    CHECK_EQ(fc_set_lock_held(&t, &KX, FC_VT_NONE, NULL, 0, 1, 0, BIG, 3), FC_OK);
    e = fc_get_lock_held(&t, &KX, NOW, 1);
    CHECK(e != NULL && e->vtype == FC_VT_NONE && e->vlen == 0);
    CHECK_TABLE(&t);

    /* a 1 MiB value, then 1 MiB + 1, then small again */
    size_t mib = (size_t)1 << 20;
    unsigned char *v = malloc(mib + 1);
    for (size_t i = 0; i < mib + 1; i++)
        v[i] = (unsigned char)(i * 2654435761u >> 13);
    fc_key KM = ks(&t, "mib");
    CHECK_EQ(fc_set_lock_held(&t, &KM, FC_VT_BYTES, v, mib, 0, NOW + 5, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KM, NOW, 1);
    CHECK(e != NULL && e->vlen == mib && memcmp(fc_entry_value(e), v, mib) == 0);
    uint64_t bytes = t.h->bytes;
    CHECK_EQ(fc_set_lock_held(&t, &KM, FC_VT_BYTES, v, mib + 1, 0, NOW + 5, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KM, NOW, 1);
    CHECK(e != NULL && e->vlen == mib + 1 && memcmp(fc_entry_value(e), v, mib + 1) == 0);
    CHECK_EQ(t.h->bytes, bytes + 1);
    CHECK_EQ(fc_replace_lock_held(&t, &KM, e->gen, FC_VT_BYTES, v + 1, mib), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KM, NOW, 1);
    CHECK(e != NULL && e->vlen == mib && memcmp(fc_entry_value(e), v + 1, mib) == 0);
    CHECK_EQ(fc_set_lock_held(&t, &KM, FC_VT_BYTES, "tiny", 4, 0, NOW + 5, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    e = fc_get_lock_held(&t, &KM, NOW, 1);
    CHECK(e != NULL && e->vlen == 4 && memcmp(fc_entry_value(e), "tiny", 4) == 0);
    free(v);

    /* a key that does not fit the 32-bit length: FC_EKEY, nothing stored.
     * (The implementation must reject it before reading the key bytes.) */
    if (sizeof(size_t) > 4) {
        fc_key huge = {"h", (size_t)UINT32_MAX + 2, 99};
        uint64_t count = t.h->count;
        CHECK_EQ(fc_set_lock_held(&t, &huge, FC_VT_STR, "v", 1, 1, 0, BIG, 3), FC_EKEY);
        CHECK_EQ(fc_add_lock_held(&t, &huge, FC_VT_STR, "v", 1, 1, 0, BIG, 3, NOW), FC_EKEY);
        CHECK_EQ(fc_replace_lock_held(&t, &huge, 1, FC_VT_STR, "v", 1), FC_EKEY);
        CHECK(fc_get_lock_held(&t, &huge, NOW, 1) == NULL);
        CHECK_EQ(fc_delete_lock_held(&t, &huge), 0);
        CHECK_EQ(t.h->count, count);
        CHECK_TABLE(&t);
    }
    fc_table_destroy(&t);
}

static void test_hash(void)
{
    fc_mem mem1, mem2;
    fc_table t1, t2, t3;
    fc_mem_heap_init(&mem1);
    fc_mem_heap_init(&mem2);
    CHECK_EQ(fc_table_init(&t1, &mem1, 0, 1, 2), FC_OK);
    CHECK_EQ(fc_table_init(&t2, &mem2, 0, 1, 2), FC_OK);
    CHECK_EQ(fc_table_init(&t3, &mem2, 0, 2, 1), FC_OK);
    unsigned char buf[64];
    for (int i = 0; i < 64; i++)
        buf[i] = (unsigned char)i;
    int same_seed_eq = 1, other_seed_ne = 0, len_ne = 1;
    for (size_t n = 0; n <= 64; n++) {
        uint64_t h = fc_hash(&t1, buf, n);
        same_seed_eq &= h == fc_hash(&t2, buf, n) && h == fc_hash(&t1, buf, n);
        other_seed_ne += h != fc_hash(&t3, buf, n);
        if (n > 0)
            len_ne &= h != fc_hash(&t1, buf, n - 1);
    }
    CHECK(same_seed_eq);
    CHECK(other_seed_ne >= 60);
    CHECK(len_ne);
    CHECK(fc_hash(&t1, "a", 1) != fc_hash(&t1, "a\0", 2));
    /* each byte position matters (all tail lengths of SipHash) */
    int pos_ok = 1;
    for (size_t n = 1; n <= 24; n++)
        for (size_t i = 0; i < n; i++) {
            unsigned char b2[24];
            memcpy(b2, buf, n);
            b2[i] ^= 0x80;
            pos_ok &= fc_hash(&t1, buf, n) != fc_hash(&t1, b2, n);
        }
    CHECK(pos_ok);
    fc_table_destroy(&t1);
    fc_table_destroy(&t2);
    fc_table_destroy(&t3);
}

/* fc_table_check_keys finds an entry hashed with another table's seeds,
 * which fc_table_check cannot (the entry is where its own hash says), and
 * the same key added beside it under the right hash. */
static void test_check_keys(void)
{
    fc_mem mem1, mem2;
    fc_table t1, t2;
    fc_mem_heap_init(&mem1);
    fc_mem_heap_init(&mem2);
    CHECK_EQ(fc_table_init(&t1, &mem1, 0, 1, 2), FC_OK);
    CHECK_EQ(fc_table_init(&t2, &mem2, 0, 3, 4), FC_OK);
    CHECK_EQ(sset(&t1, "a", "1", 1, 0), FC_OK);
    CHECK_EQ(fc_table_check_keys(&t1), 0);
    fc_key foreign = ks(&t2, "k"); /* made for t2, stored in t1 */
    CHECK_EQ(fc_set_lock_held(&t1, &foreign, FC_VT_STR, "x", 1, 1, 0, BIG, 3), FC_OK);
    CHECK_EQ(fc_table_check(&t1), 0);
    CHECK_EQ(fc_table_check_keys(&t1), -23);
    fc_key own = ks(&t1, "k");
    CHECK(fc_peek_lock_held(&t1, &own) == NULL); /* lookups cannot see it */
    CHECK_EQ(fc_set_lock_held(&t1, &own, FC_VT_STR, "y", 1, 1, 0, BIG, 3), FC_OK);
    CHECK_EQ(fc_table_check_keys(&t1), -23); /* the duplicate */
    CHECK_EQ(fc_delete_lock_held(&t1, &foreign), 1);
    CHECK_EQ(fc_table_check_keys(&t1), 0);
    fc_table_destroy(&t1);
    fc_table_destroy(&t2);
}

/* Collisions: fc_key carries the caller's hash, so chains can be forced
 * regardless of the bucket count. */
static void test_collisions(void)
{
    enum { N = 600 };
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 5, 6), FC_OK);
    static char keys[N][16];
    fc_key K[N];
    for (int i = 0; i < N; i++) {
        int n = snprintf(keys[i], sizeof keys[i], "c%d", i);
        /* three hashes: one long chain, and two sharing a bucket at any
         * size (same low bits, different high bits) */
        uint64_t h = i % 3 == 0   ? 0x1234
                     : i % 3 == 1 ? 0xabc0000000000000ULL
                                  : 0x5550000000000000ULL;
        K[i].p = keys[i];
        K[i].n = (size_t)n;
        K[i].hash = h;
    }
    for (int i = 0; i < N; i++) {
        CHECK_EQ(fc_set_lock_held(&t, &K[i], FC_VT_INT64, &(int64_t){i}, 8, 1, 0, BIG, 3), FC_OK);
        if (i < 100 || i % 50 == 0)
            CHECK_TABLE(&t);
    }
    CHECK_TABLE(&t);
    int ok = 1;
    for (int i = 0; i < N; i++) {
        fc_entry *e = fc_get_lock_held(&t, &K[i], NOW, 1);
        ok &= e != NULL && ival(e) == i && e->klen == K[i].n;
    }
    CHECK(ok);
    /* overwrite inside a chain (in place and reallocated) */
    CHECK_EQ(fc_set_lock_held(&t, &K[300], FC_VT_INT64, &(int64_t){-1}, 8, 1, 0, BIG, 3), FC_OK);
    char big[100] = {0};
    CHECK_EQ(fc_set_lock_held(&t, &K[303], FC_VT_BYTES, big, sizeof big, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t);
    CHECK(ival(fc_peek_lock_held(&t, &K[300])) == -1);
    CHECK(fc_peek_lock_held(&t, &K[303])->vlen == 100);
    /* remove from chain heads (newest), middles and tails (oldest) */
    int order[] = {N - 1, N - 2, N - 3, 0, 1, 2, 300, 301, 302, 3, N - 4};
    for (size_t j = 0; j < sizeof order / sizeof order[0]; j++) {
        CHECK_EQ(fc_delete_lock_held(&t, &K[order[j]]), 1);
        CHECK_TABLE(&t);
        CHECK(fc_peek_lock_held(&t, &K[order[j]]) == NULL);
    }
    ok = 1;
    for (int i = 0; i < N; i++) {
        int gone = 0;
        for (size_t j = 0; j < sizeof order / sizeof order[0]; j++)
            gone |= order[j] == i;
        fc_entry *e = fc_peek_lock_held(&t, &K[i]);
        ok &= gone ? e == NULL : e != NULL;
    }
    CHECK(ok);
    /* expire inside a chain via get */
    CHECK_EQ(fc_touch_lock_held(&t, &K[400], 0, NOW - 1, NOW - 2), 1);
    CHECK(fc_get_lock_held(&t, &K[400], NOW, 1) == NULL);
    CHECK_TABLE(&t);
    CHECK(fc_peek_lock_held(&t, &K[401]) != NULL && fc_peek_lock_held(&t, &K[399]) != NULL);
    /* culling out of chains */
    fc_key kn = ks(&t, "new");
    CHECK_EQ(fc_set_lock_held(&t, &kn, FC_VT_STR, "", 0, 1, 0, 10, 2), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, (N - 12) - (N - 12) / 2 + 1);
    /* same key bytes, same hash, different lengths of shared prefixes */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    const char *pre = "prefixprefixprefix";
    for (size_t n = 0; n <= 18; n++) {
        fc_key k = {pre, n, 7};
        CHECK_EQ(fc_set_lock_held(&t, &k, FC_VT_INT64, &(int64_t){(int64_t)n}, 8, 1, 0, BIG, 3),
                 FC_OK);
    }
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 19);
    ok = 1;
    for (size_t n = 0; n <= 18; n++) {
        fc_key k = {pre, n, 7};
        fc_entry *e = fc_peek_lock_held(&t, &k);
        ok &= e != NULL && ival(e) == (int64_t)n;
    }
    CHECK(ok);
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

/* FC_ENOMEM leaves the table exactly as it was. */
static void snapshot(fc_table *t, char *out, size_t n)
{
    order_str(t, out, n);
    size_t u = strlen(out);
    snprintf(out + u, n - u, " |%llu/%llu", (unsigned long long)t->h->count,
             (unsigned long long)t->h->bytes);
}

static void test_enomem(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 9, 9), FC_OK);
    char before[512], after[512];
    sset(&t, "a", "1", 1, 0);
    sset(&t, "b", "22", 0, NOW + 5);
    sset(&t, "c", "333", 1, 0);
    snapshot(&t, before, sizeof before);

    /* new key */
    c.fail_after = 0;
    CHECK_EQ(sset(&t, "d", "4", 1, 0), FC_ENOMEM);
    CHECK_TABLE(&t);
    snapshot(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);
    CHECK(speek(&t, "d") == NULL);

    /* a pending cull is not done */
    CHECK_EQ(cset(&t, "d", 3, 3), FC_ENOMEM);
    CHECK_EQ(cset(&t, "d", 3, 0), FC_ENOMEM);
    CHECK_EQ(cset(&t, "a", 3, 0), FC_ENOMEM);
    CHECK_TABLE(&t);
    snapshot(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);
    CHECK_EQ(t.h->stats.evictions, 0);

    /* overwrite with a much bigger value keeps the old value */
    char big[4096];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    uint64_t ga = speek(&t, "a")->gen;
    CHECK_EQ(sset(&t, "a", big, 0, NOW), FC_ENOMEM);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "a"), "1") && speek(&t, "a")->never == 1 && speek(&t, "a")->gen == ga);
    snapshot(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);

    /* add */
    fc_key kd = ks(&t, "d");
    CHECK_EQ(fc_add_lock_held(&t, &kd, FC_VT_STR, "4", 1, 1, 0, BIG, 3, NOW), FC_ENOMEM);
    CHECK(speek(&t, "d") == NULL);
    /* add over an expired entry keeps it */
    fc_key kb = ks(&t, "b");
    CHECK_EQ(fc_add_lock_held(&t, &kb, FC_VT_STR, big, sizeof big, 1, 0, BIG, 3, NOW + 10),
             FC_ENOMEM);
    CHECK(val_is(speek(&t, "b"), "22"));
    CHECK_TABLE(&t);

    /* replace with a much bigger value */
    fc_key ka = ks(&t, "a");
    CHECK_EQ(fc_replace_lock_held(&t, &ka, ga, FC_VT_STR, big, sizeof big), FC_ENOMEM);
    CHECK_TABLE(&t);
    CHECK(val_is(speek(&t, "a"), "1") && speek(&t, "a")->gen == ga);
    snapshot(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);

    /* operations that need no memory still work */
    CHECK(val_is(sget(&t, "c", NOW, 1), "333"));
    CHECK_EQ(sdel(&t, "c"), 1);
    CHECK_TABLE(&t);
    c.fail_after = -1;

    /* failing to grow the index is harmless: fill to the growth point and
     * let only the entry allocation succeed */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    uint64_t nb = t.h->nbuckets;
    char k[32];
    for (uint64_t i = 0; i < nb; i++) {
        snprintf(k, sizeof k, "g%llu", (unsigned long long)i);
        sset(&t, k, "v", 1, 0);
    }
    CHECK_EQ(t.h->nbuckets, nb);
    c.fail_after = 1;
    CHECK_EQ(sset(&t, "grow", "v", 1, 0), FC_OK);
    CHECK_TABLE(&t);
    c.fail_after = -1;
    CHECK(val_is(speek(&t, "grow"), "v"));
    CHECK_EQ(t.h->count, nb + 1);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "h%d", i);
        CHECK_EQ(sset(&t, k, "v", 1, 0), FC_OK);
    }
    CHECK_TABLE(&t);
    CHECK(t.h->nbuckets > nb);
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
    CHECK_EQ(c.bad_frees, 0);
}

/* Entries are linked by offsets: a table in an arena works at a non-zero
 * base, and a byte copy of the arena mapped elsewhere is the same table. */
static void test_offsets(void)
{
    fc_mem mem;
    fc_table t;
    if (arena_mem_init(&mem, 1 << 22) != 0) {
        CHECK(!"mmap failed");
        return;
    }
    CHECK_EQ(fc_table_init(&t, &mem, 0, 21, 22), FC_OK);
    CHECK((uintptr_t)t.h != FC_OFF(&mem, t.h)); /* base really is non-zero */
    char k[32];
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "o%d", i);
        CHECK_EQ(sset(&t, k, k, i % 2, NOW + i), FC_OK);
    }
    CHECK_TABLE(&t);
    CHECK(sget(&t, "o11", NOW + 20, 1) != NULL); /* never expires */
    CHECK(sget(&t, "o10", NOW + 20, 1) == NULL); /* expired at NOW + 10 */
    CHECK_EQ(sdel(&t, "o12"), 1);
    CHECK_TABLE(&t);
    char before[8192], after[8192];
    order_str(&t, before, sizeof before);

    size_t size = ((arena *)mem.base)->size;
    void *copy = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(copy != MAP_FAILED);
    if (copy != MAP_FAILED) {
        memcpy(copy, (void *)mem.base, size);
        fc_mem mem2 = mem;
        mem2.base = (uintptr_t)copy;
        fc_table t2 = t; /* a private table: its layout is not cached */
        t2.mem = &mem2;
        t2.h = FC_PTR(&mem2, FC_OFF(&mem, t.h));
        CHECK_TABLE(&t2);
        order_str(&t2, after, sizeof after);
        CHECK(strcmp(before, after) == 0);
        CHECK(val_is(sget(&t2, "o11", NOW, 1), "o11"));
        CHECK_EQ(sset(&t2, "fresh", "1", 1, 0), FC_OK);
        CHECK_TABLE(&t2);
        CHECK(speek(&t, "fresh") == NULL); /* the original is untouched */
        CHECK_TABLE(&t);
        munmap(copy, size);
    }
    arena_mem_release(&mem);
}

/* ------------------------------------------------------------------------ */
/* Locks                                                                    */

struct locker {
    fc_table *t;
    int hold_ms;
    volatile int locked, release, result;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *hold_lock(void *arg)
{
    struct locker *l = arg;
    l->result = fc_table_lock(l->t);
    __atomic_store_n(&l->locked, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&l->release, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    fc_table_unlock(l->t);
    return NULL;
}

static void *try_lock(void *arg)
{
    struct locker *l = arg;
    l->result = fc_table_trylock(l->t);
    if (l->result == FC_OK)
        fc_table_unlock(l->t);
    return NULL;
}

/* Locks and exits without unlocking (the owner "dies"); corrupts the table
 * first when hold_ms is negative. */
static void *lock_and_die(void *arg)
{
    struct locker *l = arg;
    l->result = fc_table_lock(l->t);
    if (l->hold_ms < 0)
        l->t->h->bytes += 1; /* a write interrupted half-way */
    return NULL;
}

static void wait_locked(struct locker *l)
{
    while (!__atomic_load_n(&l->locked, __ATOMIC_SEQ_CST))
        sleep_ms(1);
}

static void test_lock_threads(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);

    CHECK_EQ(fc_table_lock(&t), FC_OK);
    fc_table_unlock(&t);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    fc_table_unlock(&t);

    /* held by another thread: trylock fails, lock waits for the release */
    struct locker l = {&t, 0, 0, 0, -99};
    pthread_t th;
    pthread_create(&th, NULL, hold_lock, &l);
    wait_locked(&l);
    CHECK_EQ(l.result, FC_OK);
    CHECK_EQ(fc_table_trylock(&t), FC_ELOCK);
    CHECK_EQ(fc_table_trylock(&t), FC_ELOCK);
    __atomic_store_n(&l.release, 1, __ATOMIC_SEQ_CST);
    CHECK_EQ(fc_table_lock(&t), FC_OK); /* blocks until released */
    pthread_join(th, NULL);
    fc_table_unlock(&t);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    /* held by this thread: another thread's trylock fails */
    struct locker l2 = {&t, 0, 0, 0, -99};
    pthread_create(&th, NULL, try_lock, &l2);
    pthread_join(th, NULL);
    CHECK_EQ(l2.result, FC_ELOCK);
    fc_table_unlock(&t);
    pthread_create(&th, NULL, try_lock, &l2);
    pthread_join(th, NULL);
    CHECK_EQ(l2.result, FC_OK);

    /* mutual exclusion: two threads incrementing under the lock */
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

struct incr_arg {
    fc_table *t;
    int n;
};

static void *incr_many(void *arg)
{
    struct incr_arg *a = arg;
    fc_key k = ks(a->t, "ctr");
    for (int i = 0; i < a->n; i++) {
        int64_t r;
        fc_entry *f;
        fc_table_lock(a->t);
        fc_incr_lock_held(a->t, &k, 1, NOW, &r, &f);
        fc_table_unlock(a->t);
    }
    return NULL;
}

static void test_lock_exclusion(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    iset(&t, "ctr", 0, 1, 0);
    struct incr_arg a = {&t, 20000};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, incr_many, &a);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(ival(speek(&t, "ctr")), 80000);
    CHECK_TABLE(&t);
    fc_table_destroy(&t);
}

/* fork while another thread holds the lock: the child's copy is held by a
 * thread that does not exist there until fc_table_reinit_lock. */
static void test_reinit_lock_after_fork(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    sset(&t, "k", "v", 1, 0);
    struct locker l = {&t, 0, 0, 0, -99};
    pthread_t th;
    pthread_create(&th, NULL, hold_lock, &l);
    wait_locked(&l);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int code = 0;
        if (fc_table_trylock(&t) != FC_ELOCK)
            code |= 1; /* the copy is still held */
        if (fc_table_reinit_lock(&t) != FC_OK)
            code |= 2;
        if (fc_table_trylock(&t) != FC_OK)
            code |= 4;
        else {
            if (fc_table_check(&t) != 0 || speek(&t, "k") == NULL)
                code |= 8;
            fc_table_unlock(&t);
        }
        if (fc_table_lock(&t) != FC_OK)
            code |= 16;
        else
            fc_table_unlock(&t);
        _exit(code);
    }
    CHECK(pid > 0);
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    /* the parent's lock is unaffected */
    CHECK_EQ(fc_table_trylock(&t), FC_ELOCK);
    __atomic_store_n(&l.release, 1, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    fc_table_unlock(&t);

    /* reinit of an unheld lock is harmless */
    CHECK_EQ(fc_table_reinit_lock(&t), FC_OK);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    fc_table_unlock(&t);
    fc_table_destroy(&t);
}

/* A shared table at fixed offsets of an arena (fc_table_init_at), the way
 * a segment is laid out, with TEST_RINGS rings when the arena is at least
 * 1 MiB; returns the header offset. */
#define TEST_RINGS 4
static fc_off shared_table_new(fc_table *t, fc_mem *mem, size_t size, uint64_t nbuckets)
{
    if (arena_mem_init(mem, size) != 0) {
        fprintf(stderr, "mmap failed\n");
        exit(2);
    }
    fc_off hdr = arena_alloc(mem, sizeof(fc_header));
    fc_off buckets = arena_alloc(mem, nbuckets * sizeof(fc_off));
    uint64_t nrings = size >= (1 << 20) ? TEST_RINGS : 0; /* small arenas: none */
    fc_off rings = nrings ? arena_alloc(mem, fc_rings_size(nrings)) : 0;
    arena_fix(mem);
    mem->lo = arena_of(mem)->used;
    int rc = fc_table_init_at(t, mem, hdr, buckets, nbuckets, rings, nrings, 31, 32);
    if (rc != FC_OK) {
        fprintf(stderr, "fc_table_init_at failed: %d\n", rc);
        exit(2);
    }
    return hdr;
}

static void test_init_at_attach(void)
{
    fc_mem mem;
    fc_table t, t2;
    fc_off hdr = shared_table_new(&t, &mem, 1 << 20, 1); /* a single bucket */
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->shared, 1);
    CHECK_EQ(t.h->nbuckets, 1);
    CHECK_EQ(t.h->count, 0);
    CHECK_EQ(FC_OFF(&mem, t.h), hdr);
    /* one chain holds everything; the bucket array is never grown */
    char k[32];
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "s%d", i);
        CHECK_EQ(sset(&t, k, k, 1, 0), FC_OK);
    }
    CHECK_EQ(t.h->nbuckets, 1);
    CHECK_EQ(t.h->count, 300);
    int ok = 1;
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "s%d", i);
        ok &= val_is(speek(&t, k), k);
    }
    CHECK(ok);
    CHECK_EQ(sdel(&t, "s0"), 1);   /* chain tail */
    CHECK_EQ(sdel(&t, "s299"), 1); /* chain head */
    CHECK_EQ(sdel(&t, "s150"), 1);
    CHECK_EQ(t.h->count, 297);

    /* attach sees the same table */
    CHECK_EQ(fc_table_attach(&t2, &mem, hdr), FC_OK);
    CHECK(t2.h == t.h);
    CHECK_TABLE(&t2);
    CHECK(val_is(speek(&t2, "s7"), "s7"));
    CHECK_EQ(fc_hash(&t2, "x", 1), fc_hash(&t, "x", 1));
    /* not a table: a zeroed block */
    fc_off junk = arena_alloc(&mem, sizeof(fc_header));
    memset(FC_PTR(&mem, junk), 0, sizeof(fc_header));
    CHECK_EQ(fc_table_attach(&t2, &mem, junk), FC_ELOCK);

    /* attach from another process that maps the segment: a forked child */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        fc_table tc;
        int code = 0;
        if (fc_table_attach(&tc, &mem, hdr) != FC_OK)
            _exit(1);
        if (fc_table_lock(&tc) != FC_OK)
            _exit(2);
        if (!val_is(speek(&tc, "s8"), "s8"))
            code |= 4;
        if (sset(&tc, "from-child", "c", 1, 0) != FC_OK)
            code |= 8;
        fc_table_unlock(&tc);
        _exit(code);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(val_is(speek(&t, "from-child"), "c"));
    CHECK_TABLE(&t);
    arena_mem_release(&mem);

    /* a private table's header is not attachable */
    fc_mem mem2;
    fc_table tp;
    CHECK_EQ(arena_mem_init(&mem2, 1 << 16), 0);
    CHECK_EQ(fc_table_init(&tp, &mem2, 0, 1, 2), FC_OK);
    CHECK_EQ(fc_table_attach(&t2, &mem2, FC_OFF(&mem2, tp.h)), FC_ELOCK);
    arena_mem_release(&mem2);
}

/* Gets without the lock on a shared table: results, the uses they log
 * reaching the LRU order, full rings, uses that must be dropped, ring
 * ownership, and a reader in another process. */
static uint64_t g_tick;
static uint64_t tick_clock(void) { return ++g_tick; }

static int oget(fc_table *t, int ring, const char *k, char *buf, size_t cap)
{
    fc_key key = ks(t, k);
    int vt;
    size_t n;
    uint64_t gen;
    int rc = fc_get_optimistic(t, ring, &key, NOW, buf, cap, &vt, &n, &gen);
    if (rc == FC_OK) {
        if (vt != FC_VT_STR || n >= cap)
            return -100;
        buf[n] = '\0';
    }
    return rc;
}

static int only_7_alive(uint64_t owner) { return owner == 7; }

static void test_optimistic_get(void)
{
    fc_mem mem;
    fc_table t;
    char buf[64];
    fc_off hdr = shared_table_new(&t, &mem, 1 << 20, 64);
    t.clock = tick_clock;
    CHECK_EQ(t.h->nrings, TEST_RINGS);
    CHECK_EQ(fc_ring_claim(&t, 7), 0);
    CHECK_EQ(fc_ring_claim(&t, 8), 1);

    sset(&t, "a", "1", 1, 0);
    sset(&t, "b", "2", 1, 0);
    sset(&t, "c", "3", 1, 0);
    sset(&t, "d", "4", 0, NOW + 10);
    fc_stats_reset_lock_held(&t);
    CHECK_EQ(oget(&t, 0, "b", buf, sizeof buf), FC_OK);
    CHECK(strcmp(buf, "2") == 0);
    CHECK_EQ(oget(&t, 1, "a", buf, sizeof buf), FC_OK);
    CHECK(strcmp(buf, "1") == 0);
    CHECK_EQ(oget(&t, 0, "zz", buf, sizeof buf), FC_MISS);
    CHECK_EQ(oget(&t, 0, "d", buf, sizeof buf), FC_OK);
    fc_stats st;
    fc_stats_sum(&t, &st);
    CHECK_EQ(st.hits, 3);
    CHECK_EQ(st.misses, 1);
    /* the uses are not in the list yet; anything reading the order drains
     * the rings first: b, a then d, used after the sets, in that order */
    CHECK_ORDER(&t, "d a b c");
    CHECK_TABLE(&t);
    /* interleaved with locked uses, by stamp */
    CHECK_EQ(oget(&t, 1, "c", buf, sizeof buf), FC_OK);
    CHECK(sget(&t, "b", NOW, 1) != NULL);
    CHECK_EQ(oget(&t, 0, "a", buf, sizeof buf), FC_OK);
    CHECK_ORDER(&t, "a b c d");
    /* culling sees them too: c and d are the least recently used */
    CHECK_EQ(oget(&t, 0, "c", buf, sizeof buf), FC_OK);
    CHECK_EQ(cset(&t, "e", 4, 2), FC_OK);
    CHECK_ORDER(&t, "e c a");
    fc_stats_reset_lock_held(&t);
    fc_stats_sum(&t, &st);
    CHECK_EQ(st.hits + st.misses + st.sets, 0);

    /* existence only (has_key): not a use */
    fc_key kc = ks(&t, "c");
    CHECK_EQ(fc_get_optimistic(&t, 0, &kc, NOW, NULL, 0, NULL, NULL, NULL), FC_OK);
    fc_key kz = ks(&t, "zz");
    CHECK_EQ(fc_get_optimistic(&t, 0, &kz, NOW, NULL, 0, NULL, NULL, NULL), FC_MISS);
    CHECK_ORDER(&t, "e c a");

    /* undecided without the lock: expired, too large, lock held */
    sset(&t, "x", "old", 0, NOW - 1);
    CHECK_EQ(oget(&t, 0, "x", buf, sizeof buf), FC_ELOCK);
    CHECK(speek(&t, "x") != NULL); /* removing it is for the locked get */
    CHECK(sget(&t, "x", NOW, 1) == NULL);
    sset(&t, "long", "0123456789", 1, 0);
    CHECK_EQ(oget(&t, 0, "long", buf, 8), FC_ELOCK);
    CHECK_EQ(oget(&t, 0, "long", buf, sizeof buf), FC_OK);
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    CHECK_EQ(oget(&t, 0, "a", buf, sizeof buf), FC_ELOCK);
    fc_table_unlock(&t);
    CHECK_EQ(oget(&t, 0, "no ring", buf, sizeof buf), FC_MISS);
    CHECK_EQ(oget(&t, -1, "a", buf, sizeof buf), FC_ELOCK);
    CHECK_EQ(oget(&t, TEST_RINGS, "a", buf, sizeof buf), FC_ELOCK);

    /* a full ring refuses more uses until it is drained */
    order_str(&t, buf, sizeof buf); /* drains */
    int ok = 1;
    for (int i = 0; i < FC_RING_LEN; i++)
        ok &= oget(&t, 1, "c", buf, sizeof buf) == FC_OK;
    CHECK(ok);
    CHECK_EQ(oget(&t, 1, "c", buf, sizeof buf), FC_EFULL);
    CHECK_EQ(oget(&t, 0, "c", buf, sizeof buf), FC_OK);    /* other rings go on */
    CHECK_EQ(oget(&t, 1, "zz", buf, sizeof buf), FC_MISS); /* misses log nothing */
    CHECK_TABLE(&t);
    fc_rings_drain_lock_held(&t);
    CHECK_EQ(oget(&t, 1, "a", buf, sizeof buf), FC_OK);
    CHECK_ORDER(&t, "a c long e");

    /* a use of an entry removed since is dropped; so is one stamped before
     * the last drain (a retried read's), and one naming a wrong hash */
    CHECK_EQ(oget(&t, 0, "long", buf, sizeof buf), FC_OK);
    CHECK_EQ(sdel(&t, "long"), 1);
    CHECK_ORDER(&t, "a c e");
    fc_ring *rg = FC_PTR(&mem, t.h->rings);
    fc_key ke = ks(&t, "e");
    fc_off eo = FC_OFF(&mem, speek(&t, "e"));
    fc_use stale = {eo, ke.hash, t.h->drained_at - 1};
    fc_use badhash = {eo, ke.hash ^ 1, t.h->clock + 100};
    rg[0].use[rg[0].head % FC_RING_LEN] = stale;
    rg[0].head++;
    rg[0].use[rg[0].head % FC_RING_LEN] = badhash;
    rg[0].head++;
    CHECK_ORDER(&t, "a c e");
    fc_use good = {eo, ke.hash, tick_clock()};
    rg[0].use[rg[0].head % FC_RING_LEN] = good;
    rg[0].head++;
    CHECK_ORDER(&t, "e a c");
    CHECK_TABLE(&t);
    /* clear forgets nothing it should not: later uses still apply */
    fc_clear_lock_held(&t);
    sset(&t, "p", "1", 1, 0);
    sset(&t, "q", "2", 1, 0);
    CHECK_EQ(oget(&t, 0, "p", buf, sizeof buf), FC_OK);
    CHECK_ORDER(&t, "p q");

    /* ownership: claim until none is left, release, reclaim the dead */
    CHECK_EQ(fc_ring_claim(&t, 9), 2);
    CHECK_EQ(fc_ring_claim(&t, 10), 3);
    CHECK_EQ(fc_ring_claim(&t, 11), -1);
    fc_ring_release(&t, 2);
    CHECK_EQ(fc_ring_claim(&t, 11), 2);
    CHECK_EQ(fc_rings_reclaim_lock_held(&t, only_7_alive), 3); /* all but owner 7 */
    CHECK_EQ(rg[0].owner, 7);
    CHECK_EQ(fc_ring_claim(&t, 12), 1);

    /* a reader in another process: its uses reach this one's order */
    sset(&t, "r", "3", 1, 0);
    CHECK_ORDER(&t, "r p q");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        fc_table tc;
        char cb[16];
        if (fc_table_attach(&tc, &mem, hdr) != FC_OK)
            _exit(1);
        int ring = fc_ring_claim(&tc, (uint64_t)getpid());
        if (ring < 0)
            _exit(2);
        if (oget(&tc, ring, "p", cb, sizeof cb) != FC_OK || strcmp(cb, "1") != 0)
            _exit(3);
        if (oget(&tc, ring, "nope", cb, sizeof cb) != FC_MISS)
            _exit(4);
        fc_ring_release(&tc, ring);
        _exit(0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_ORDER(&t, "p r q");
    CHECK_TABLE(&t);
    arena_mem_release(&mem);
}

/* Shared tables evict from the LRU end when their memory runs out. */
static void test_shared_eviction(void)
{
    fc_mem mem;
    fc_table t;
    shared_table_new(&t, &mem, 1 << 16, 4);
    char k[32], v[100];
    memset(v, 'v', sizeof v);
    int ok = 1, first_evicted = -1;
    for (int i = 0; i < 1200; i++) {
        snprintf(k, sizeof k, "e%d", i);
        fc_key key = ks(&t, k);
        ok &= fc_set_lock_held(&t, &key, FC_VT_BYTES, v, sizeof v, 1, 0, BIG, 3) == FC_OK;
        check_after(&t, "set in a full shared table");
        if (first_evicted < 0 && t.h->stats.evictions > 0)
            first_evicted = i;
        /* what remains is always the most recent keys, newest first */
        int c = (int)t.h->count, contiguous = c >= 1 && c <= i + 1;
        for (int j = i; contiguous && j > i - c; j--) {
            snprintf(k, sizeof k, "e%d", j);
            contiguous = speek(&t, k) != NULL;
        }
        ok &= contiguous;
    }
    CHECK(ok);
    CHECK(first_evicted > 10);
    CHECK(t.h->stats.evictions > 0);
    CHECK(arena_of(&mem)->resets > 0); /* emptied by eviction, then reset */
    CHECK_TABLE(&t);

    /* a value larger than the segment could ever hold: FC_ETOOBIG, and
     * nothing is evicted for it */
    char before[8192], after[8192];
    order_str(&t, before, sizeof before);
    uint64_t ev = t.h->stats.evictions;
    size_t huge = mem.max_block + 1;
    char *hv = calloc(1, huge);
    fc_key kh = ks(&t, "huge");
    CHECK_EQ(fc_set_lock_held(&t, &kh, FC_VT_BYTES, hv, huge, 1, 0, BIG, 3), FC_ETOOBIG);
    CHECK_EQ(fc_add_lock_held(&t, &kh, FC_VT_BYTES, hv, huge, 1, 0, BIG, 3, NOW), FC_ETOOBIG);
    CHECK_TABLE(&t);
    order_str(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);
    CHECK_EQ(t.h->stats.evictions, ev);
    fc_entry *last = FC_PTR(&mem, t.h->root.next);
    fc_key kl = mk(&t, fc_entry_key(last), last->klen);
    CHECK_EQ(fc_replace_lock_held(&t, &kl, last->gen, FC_VT_BYTES, hv, huge), FC_ETOOBIG);
    CHECK_TABLE(&t);
    order_str(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);
    free(hv);

    /* replace makes room by evicting others, never the entry replaced */
    fc_clear_lock_held(&t);
    CHECK_TABLE(&t);
    arena_reset(&mem);
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "r%d", i);
        sset(&t, k, "small", 0, NOW + 100);
    }
    size_t room = arena_of(&mem)->size - arena_of(&mem)->used;
    char *bv = malloc(room);
    memset(bv, 'b', room);
    fc_key k0 = ks(&t, "r0"); /* the least recently used */
    uint64_t g0 = speek(&t, "r0")->gen;
    CHECK_EQ(fc_replace_lock_held(&t, &k0, g0, FC_VT_BYTES, bv, room / 2), FC_OK);
    CHECK_TABLE(&t);
    fc_entry *e = speek(&t, "r0");
    CHECK(e != NULL && e->vlen == room / 2 && e->expires == NOW + 100);
    /* the next one cannot fit while r0's old value holds its block (the
     * arena never frees): after evicting everything else, the old value is
     * dropped too, the emptied arena starts afresh, and the new value goes
     * in with r0's expiry, as an incr that grows a value must (see
     * test_incr_that_grows_a_value_evicts_others_instead_of_failing) */
    g0 = e->gen;
    int rc = fc_replace_lock_held(&t, &k0, g0, FC_VT_BYTES, bv, room - 16);
    CHECK_EQ(rc, FC_OK);
    CHECK_TABLE(&t);
    e = speek(&t, "r0");
    CHECK(e != NULL && e->vlen == room - 16 && e->gen > g0 && e->expires == NOW + 100);
    CHECK_EQ(t.h->count, 1);
    free(bv);
    arena_mem_release(&mem);
}

/* A shared table whose memory is full evicts for a replace; the entry
 * evicted may be the one before the replaced entry in its hash chain.
 * (Found by this test: fc_replace_lock_held kept the chain slot it found
 * before allocating, and evicting that predecessor freed the slot.) */
static void shared_replace_evicts_chain_neighbour(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 1, 1, 2), FC_OK); /* shared: evicts when full */
    fc_key ke = {"e", 1, 5}, kp = {"p", 1, 5};         /* one bucket */
    CHECK_EQ(fc_set_lock_held(&t, &ke, FC_VT_STR, "0123456789", 10, 1, 0, BIG, 3), FC_OK);
    CHECK_EQ(fc_set_lock_held(&t, &kp, FC_VT_STR, "0123456789", 10, 1, 0, BIG, 3), FC_OK);
    CHECK_TABLE(&t); /* chain: p -> e */
    CHECK(fc_get_lock_held(&t, &ke, NOW, 1) != NULL);
    CHECK_ORDER(&t, "e p"); /* p is the least recently used */
    uint64_t g = fc_peek_lock_held(&t, &ke)->gen;
    char big[100];
    memset(big, 'x', sizeof big);
    /* room for the new block only once p's block is freed */
    c.budget = c.live_bytes + (long long)(sizeof(fc_entry) + 1 + sizeof big) - 1;
    CHECK_EQ(fc_replace_lock_held(&t, &ke, g, FC_VT_STR, big, sizeof big), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 1);
    CHECK_EQ(t.h->stats.evictions, 1);
    CHECK(fc_peek_lock_held(&t, &kp) == NULL);
    fc_entry *e = fc_peek_lock_held(&t, &ke);
    CHECK(e != NULL && e->vlen == sizeof big && memcmp(fc_entry_value(e), big, sizeof big) == 0);
    CHECK_ORDER(&t, "e");
    c.budget = 0;
    if (fc_table_check(&t) == 0)
        fc_table_destroy(&t); /* else the table's links can't be trusted */
    CHECK_EQ(c.bad_frees, 0);
}

/* Runs fn in a child process, so that a table that aborts in FC_DEBUG's
 * consistency assertion (or crashes) fails this test instead of ending the
 * whole run. */
static void run_isolated(void (*fn)(void), const char *name)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        g_fail = 0;
        fn();
        fflush(stderr);
        _exit(g_fail ? 1 : 0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        g_pass++;
    else {
        g_fail++;
        fprintf(stderr, "%s:%d: %s failed in its child process (%s %d)\n", __FILE__, __LINE__, name,
                WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
}

/* KNOWN BUG (reported): fails until fc_replace_lock_held re-finds the
 * chain slot after allocating. */
static void test_shared_replace_evicts_chain_neighbour(void)
{
    run_isolated(shared_replace_evicts_chain_neighbour, "shared_replace_evicts_chain_neighbour");
}

/* Shared (robust) tables: an owner that dies holding the lock. */
static void test_robust_threads(void)
{
    fc_mem mem;
    fc_table t;
    shared_table_new(&t, &mem, 1 << 20, 16);
    sset(&t, "a", "1", 1, 0);
    sset(&t, "b", "2", 1, 0);

    /* dirty while locked (shared tables only) */
    CHECK_EQ(t.h->dirty, 0);
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    CHECK_EQ(t.h->dirty, 1);
    fc_table_unlock(&t);
    CHECK_EQ(t.h->dirty, 0);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    CHECK_EQ(t.h->dirty, 1);
    fc_table_unlock(&t);
    CHECK_EQ(t.h->dirty, 0);

    /* a holder dies: the next lock succeeds, every entry is dropped (it may
     * have died half way through relinking), the memory is reset, and the
     * table is usable */
    size_t used = arena_of(&mem)->used;
    CHECK(used > arena_of(&mem)->watermark);
    struct locker l = {&t, 0, 0, 0, -99};
    pthread_t th;
    pthread_create(&th, NULL, lock_and_die, &l);
    pthread_join(th, NULL);
    CHECK_EQ(l.result, FC_OK);
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 0);
    CHECK_EQ(t.h->bytes, 0);
    CHECK(speek(&t, "a") == NULL);
    CHECK_EQ(arena_of(&mem)->used, arena_of(&mem)->watermark);
    CHECK_EQ(sset(&t, "c", "3", 1, 0), FC_OK);
    fc_table_unlock(&t);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    CHECK(val_is(speek(&t, "c"), "3"));
    fc_table_unlock(&t);

    /* the same through trylock, with the table really broken */
    l.hold_ms = -1;
    pthread_create(&th, NULL, lock_and_die, &l);
    pthread_join(th, NULL);
    CHECK(fc_table_check(&t) != 0);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 0);
    CHECK_EQ(sset(&t, "d", "4", 1, 0), FC_OK);
    fc_table_unlock(&t);
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    CHECK(val_is(speek(&t, "d"), "4"));
    fc_table_unlock(&t);

    /* reinit_lock is a no-op for shared tables: a lock held by another
     * thread stays held */
    struct locker h = {&t, 0, 0, 0, -99};
    pthread_create(&th, NULL, hold_lock, &h);
    wait_locked(&h);
    CHECK_EQ(fc_table_reinit_lock(&t), FC_OK);
    CHECK_EQ(fc_table_trylock(&t), FC_ELOCK);
    __atomic_store_n(&h.release, 1, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    fc_table_unlock(&t);

    /* private tables never get dirty */
    fc_mem hm;
    fc_table pt;
    table_new(&pt, &hm);
    CHECK_EQ(fc_table_lock(&pt), FC_OK);
    CHECK_EQ(pt.h->dirty, 0);
    fc_table_unlock(&pt);
    fc_table_destroy(&pt);
    arena_mem_release(&mem);
}

/* Shared tables across processes: one table in a MAP_SHARED arena. */
static void test_shared_processes(void)
{
    fc_mem mem;
    fc_table t;
    shared_table_new(&t, &mem, 1 << 20, 64);
    sset(&t, "parent", "p", 1, 0);
    fflush(stdout);
    fflush(stderr);

    /* a child writes; the parent sees it */
    pid_t pid = fork();
    if (pid == 0) {
        int code = 0;
        if (fc_table_lock(&t) != FC_OK)
            _exit(1);
        if (!val_is(speek(&t, "parent"), "p"))
            code |= 2;
        if (sset(&t, "child", "c", 1, 0) != FC_OK)
            code |= 4;
        fc_table_unlock(&t);
        _exit(code);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    CHECK(val_is(speek(&t, "child"), "c"));
    CHECK_EQ(t.h->count, 2);
    CHECK_TABLE(&t);
    fc_table_unlock(&t);

    /* the parent holds the lock: a child's trylock fails, its lock waits */
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    pid = fork();
    if (pid == 0) {
        if (fc_table_trylock(&t) != FC_ELOCK)
            _exit(1);
        if (fc_table_lock(&t) != FC_OK)
            _exit(2);
        int code = val_is(speek(&t, "late"), "l") ? 0 : 3;
        fc_table_unlock(&t);
        _exit(code);
    }
    sleep_ms(50);
    sset(&t, "late", "l", 1, 0);
    fc_table_unlock(&t);
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* a child dies holding the lock: the parent's lock recovers it, with
     * the table emptied */
    pid = fork();
    if (pid == 0) {
        fc_table_lock(&t);
        sset(&t, "dying", "d", 1, 0);
        _exit(0);
    }
    waitpid(pid, &status, 0);
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    CHECK_TABLE(&t);
    CHECK_EQ(t.h->count, 0);
    CHECK(speek(&t, "dying") == NULL && speek(&t, "parent") == NULL);
    CHECK_EQ(sset(&t, "again", "a", 1, 0), FC_OK);
    fc_table_unlock(&t);
    CHECK_EQ(fc_table_trylock(&t), FC_OK);
    CHECK(val_is(speek(&t, "again"), "a"));
    fc_table_unlock(&t);
    arena_mem_release(&mem);
}

/* max_block: a value that could never fit is refused before anything
 * changes, in a private table too */
static void test_too_big(void)
{
    fc_mem mem;
    chk_ctx c;
    fc_table t;
    chk_mem_init(&mem, &c);
    CHECK_EQ(fc_table_init(&t, &mem, 0, 1, 2), FC_OK);
    mem.max_block = sizeof(fc_entry) + 100;
    fc_key ka = ks(&t, "a");
    char v[200] = {0};
    CHECK_EQ(fc_set_lock_held(&t, &ka, FC_VT_BYTES, v, 99, 1, 0, BIG, 3), FC_OK); /* 1 + 99 */
    CHECK_TABLE(&t);
    CHECK_EQ(fc_set_lock_held(&t, &ka, FC_VT_BYTES, v, 100, 0, NOW, 0, 0), FC_ETOOBIG);
    CHECK_TABLE(&t);
    CHECK(speek(&t, "a") != NULL && speek(&t, "a")->vlen == 99 && speek(&t, "a")->never == 1);
    CHECK_EQ(t.h->count, 1); /* the pending cull was not done */
    fc_key kb = ks(&t, "b");
    CHECK_EQ(fc_add_lock_held(&t, &kb, FC_VT_BYTES, v, 150, 1, 0, BIG, 3, NOW), FC_ETOOBIG);
    CHECK(speek(&t, "b") == NULL);
    CHECK_EQ(t.h->count, 1);
    fc_table_destroy(&t);
    CHECK_EQ(c.live_blocks, 0);
}

static void *timed_try(void *arg)
{
    struct locker *l = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 30 * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    l->result = fc_table_timedlock(l->t, &until);
    if (l->result == FC_OK)
        fc_table_unlock(l->t);
    return NULL;
}

static void test_timedlock(void)
{
    fc_mem mem;
    fc_table t;
    table_new(&t, &mem);
    struct locker l = {&t, 0, 0, 0, -99};
    pthread_t th;
    /* free: taken at once */
    pthread_create(&th, NULL, timed_try, &l);
    pthread_join(th, NULL);
    CHECK_EQ(l.result, FC_OK);
    /* held: gives up at the deadline */
    CHECK_EQ(fc_table_lock(&t), FC_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_create(&th, NULL, timed_try, &l);
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_EQ(l.result, FC_ELOCK);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(waited >= 0.02);
    fc_table_unlock(&t);
    fc_table_destroy(&t);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"init_destroy", test_init_destroy},
        {"set_get_peek", test_set_get_peek},
        {"overwrite", test_overwrite},
        {"lru", test_lru},
        {"lazy_lru", test_lazy_lru},
        {"add", test_add},
        {"touch", test_touch},
        {"stale", test_stale},
        {"delete", test_delete},
        {"expiry", test_expiry},
        {"cull", test_cull},
        {"incr", test_incr},
        {"replace", test_replace},
        {"clear", test_clear},
        {"foreach", test_foreach},
        {"stats", test_stats},
        {"growth", test_growth},
        {"binary", test_binary},
        {"hash", test_hash},
        {"check_keys", test_check_keys},
        {"collisions", test_collisions},
        {"enomem", test_enomem},
        {"offsets", test_offsets},
        {"lock_threads", test_lock_threads},
        {"lock_exclusion", test_lock_exclusion},
        {"reinit_lock_after_fork", test_reinit_lock_after_fork},
        {"too_big", test_too_big},
        {"timedlock", test_timedlock},
        {"init_at_attach", test_init_at_attach},
        {"shared_eviction", test_shared_eviction},
        {"optimistic_get", test_optimistic_get},
        {"shared_replace_evicts_chain_neighbour", test_shared_replace_evicts_chain_neighbour},
        {"robust_threads", test_robust_threads},
        {"shared_processes", test_shared_processes},
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
    printf("%ld passed, %ld failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
