/*
 * fc_table.c - the table behind django-fastcache (see fc_table.h for the
 * design, the invariants and each function's contract).
 *
 * Every function here that changes the table runs with the table lock held,
 * touches only table memory, and either completes or leaves the table as it
 * was: memory is reserved before anything is unlinked, so an allocation
 * failure never loses an entry that was stored before.  The exception is
 * damage (fc_table.h): a helper that meets it marks the memory damaged and
 * returns without following it, whatever it leaves half done, and the
 * public function that called it repairs the table before it returns.
 */
#include "fc_table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FC_MAGIC 0x4643544142303031ULL /* "FCTAB001" */
#define FC_MIN_BUCKETS 16u

/* Counters are plain increments under the lock; a process may switch them
 * off (the benchmark does, to show what they cost). */
#define STAT_ADD(t, field, n)           \
    do {                                \
        if (!(t)->stats_off)            \
            (t)->h->stats.field += (n); \
    } while (0)
#define STAT(t, field) STAT_ADD(t, field, 1)

#define ENT(t, off) ((fc_entry *)FC_PTR((t)->mem, (off)))
#define LNK(t, off) ((fc_link *)FC_PTR((t)->mem, (off)))

/* ------------------------------------------------------------------------ */
/* Damage checks (see fc_table.h).  Each is a compare or two, and a single  */
/* test of mem->hi for a private table, which checks nothing.               */

#define ENT_ALIGN 8 /* _Alignof(fc_entry) */
/* Every entry takes more than 64 bytes, so no list in [lo, hi) can hold
 * more than (hi - lo) / 64 of them: the bound of every walk. */
_Static_assert(sizeof(fc_entry) >= 64, "walk bound assumes entries of 64 bytes or more");

/* Whether an entry may start at offset eo (not 0). */
static inline int ent_ok(const fc_table *t, fc_off eo)
{
    const fc_mem *m = t->mem;
    return m->hi == 0 ||
           (eo - m->lo <= m->hi - m->lo - sizeof(fc_entry) && (eo & (ENT_ALIGN - 1)) == 0);
}

/* Whether e's key and value lie inside its block, and the block inside the
 * memory (e at an offset ent_ok accepts). */
static inline int ent_fits(const fc_table *t, const fc_entry *e)
{
    const fc_mem *m = t->mem;
    return m->hi == 0 || ((uint64_t)e->klen + e->vlen <= e->cap &&
                          e->cap <= m->hi - FC_OFF(m, e) - sizeof(fc_entry));
}

/* Whether a live entry reached through the index or the LRU list is whole:
 * it fits, has a value type the binding decodes (at its size), and is not a
 * removed one. */
static inline int ent_sane(const fc_table *t, const fc_entry *e)
{
    if (t->mem->hi == 0)
        return 1;
    return ent_fits(t, e) && e->vtype <= FC_VT_LAST &&
           (e->vlen == 8 || (e->vtype != FC_VT_INT64 && e->vtype != FC_VT_FLOAT)) && !e->zombie;
}

/* Most steps any walk may take. */
static inline uint64_t walk_max(const fc_table *t)
{
    const fc_mem *m = t->mem;
    return m->hi == 0 ? UINT64_MAX : (m->hi - m->lo) / 64 + 1;
}

/* Marks the memory damaged; returns 0 (or NULL, as damaged_null). */
static int damaged(const fc_table *t)
{
    t->mem->damaged = 1;
    return 0;
}

static void *damaged_null(const fc_table *t)
{
    damaged(t);
    return NULL;
}

static inline int is_damaged(const fc_table *t) { return t->mem->damaged != 0; }

/* A shared table: decided once, when it is set up or attached (the header's
 * `shared` is read from the segment, which may be damaged since). */
static inline int is_shared(const fc_table *t) { return t->ro_buckets != NULL; }

/* ------------------------------------------------------------------------ */
/* Private heap memory                                                      */

static fc_off heap_alloc(fc_mem *mem, size_t size)
{
    (void)mem;
    return (fc_off)(uintptr_t)malloc(size);
}

static void heap_free(fc_mem *mem, fc_off off, size_t size)
{
    (void)mem;
    (void)size;
    free((void *)(uintptr_t)off);
}

void fc_mem_heap_init(fc_mem *mem)
{
    mem->base = 0;
    mem->alloc = heap_alloc;
    mem->free = heap_free;
    mem->reset = NULL;
    mem->max_block = SIZE_MAX;
    mem->lo = mem->hi = 0;
    mem->damaged = 0;
    mem->ctx = NULL;
}

/* ------------------------------------------------------------------------ */
/* SipHash-1-3 (the keyed hash CPython uses for str), seeded per table so    */
/* that keys chosen by a client cannot be made to collide.                   */

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
/* clang-format off */
#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);         \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                               \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                               \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);         \
    } while (0)
/* clang-format on */

uint64_t fc_hash(const fc_table *t, const void *p, size_t n)
{
    const uint8_t *in = p;
    uint64_t k0 = t->h->seed[0], k1 = t->h->seed[1];
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
    uint64_t v3 = k1 ^ 0x7465646279746573ULL;
    uint64_t b = (uint64_t)n << 56;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t m;
        memcpy(&m, in + i, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    switch (n - i) {
    case 7: b |= (uint64_t)in[i + 6] << 48; /* fall through */
    case 6: b |= (uint64_t)in[i + 5] << 40; /* fall through */
    case 5: b |= (uint64_t)in[i + 4] << 32; /* fall through */
    case 4: b |= (uint64_t)in[i + 3] << 24; /* fall through */
    case 3: b |= (uint64_t)in[i + 2] << 16; /* fall through */
    case 2: b |= (uint64_t)in[i + 1] << 8;  /* fall through */
    case 1: b |= (uint64_t)in[i]; break;
    default: break;
    }
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------------------------------------ */
/* LRU list and index primitives (lock held)                                */

static inline fc_off root_off(const fc_table *t) { return FC_OFF(t->mem, &t->h->root); }
static inline fc_off ent_off(const fc_table *t, const fc_entry *e) { return FC_OFF(t->mem, e); }

static inline fc_off *bucket_slot(const fc_table *t, uint64_t hash)
{
    if (t->ro_buckets != NULL)
        return &t->ro_buckets[hash & t->ro_mask];
    fc_off *b = FC_PTR(t->mem, t->h->buckets);
    return &b[hash & (t->h->nbuckets - 1)];
}

/* The bucket array and its length. */
static fc_off *bucket_array(const fc_table *t, uint64_t *n)
{
    if (t->ro_buckets != NULL) {
        *n = t->ro_mask + 1;
        return t->ro_buckets;
    }
    *n = t->h->nbuckets;
    return FC_PTR(t->mem, t->h->buckets);
}

/* Whether an LRU link may point at off: the root, or an entry. */
static inline int link_ok(const fc_table *t, fc_off off)
{
    return off == root_off(t) || (off != 0 && ent_ok(t, off));
}

static inline int expired(const fc_entry *e, double now) { return !e->never && e->expires <= now; }

/* An expired entry still within its serve-stale grace: kept by gets. */
static inline int kept_stale(const fc_entry *e, double now)
{
    return e->stale > 0 && e->expires + e->stale > now;
}

/* 1 when e was unlinked; 0 (damage) when its neighbours are not where
 * they must be, and then nothing was written. */
static int lru_unlink(fc_table *t, fc_entry *e)
{
    fc_off p = e->lru.prev, n = e->lru.next;
    if (t->mem->hi != 0) {
        fc_off eo = ent_off(t, e);
        if (!link_ok(t, p) || !link_ok(t, n) || LNK(t, p)->next != eo || LNK(t, n)->prev != eo)
            return damaged(t);
    }
    LNK(t, p)->next = n;
    LNK(t, n)->prev = p;
    return 1;
}

static void lru_push_front(fc_table *t, fc_entry *e)
{
    fc_off eo = ent_off(t, e), first = t->h->root.next;
    if (!link_ok(t, first)) {
        damaged(t);
        return;
    }
    e->lru.prev = root_off(t);
    e->lru.next = first;
    LNK(t, first)->prev = eo;
    t->h->root.next = eo;
}

static void lru_move_front(fc_table *t, fc_entry *e)
{
    if (t->h->root.next == ent_off(t, e))
        return;
    if (lru_unlink(t, e))
        lru_push_front(t, e);
}

static size_t entry_size(uint32_t cap) { return sizeof(fc_entry) + cap; }

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The stamp of a use made with the lock held: the clock, or just past the
 * last stamp given (uses are ordered as the lock orders them even when the
 * clock has not moved on). */
static uint64_t next_stamp(fc_table *t)
{
    uint64_t now = t->clock();
    t->h->clock = now > t->h->clock ? now : t->h->clock + 1;
    return t->h->clock;
}

static void enqueue(fc_table *t, fc_entry *e)
{
    if (!e->queued) {
        e->queued = 1;
        e->qnext = t->h->queue;
        t->h->queue = ent_off(t, e);
    }
}

/* A use of e (get, set, incr): it becomes the most recently used.  A
 * private table moves it now; a shared one stamps it and queues it for the
 * next drain (see fc_table.h), writing only e and the header. */
static void lru_use(fc_table *t, fc_entry *e)
{
    if (!is_shared(t)) {
        lru_move_front(t, e);
        return;
    }
    e->stamp = next_stamp(t);
    enqueue(t, e);
}

/* Merges two qnext-linked lists ascending by stamp. */
static fc_off merge_by_stamp(fc_table *t, fc_off a, fc_off b)
{
    fc_off head = 0, *tail = &head;
    while (a && b) {
        fc_entry *ea = ENT(t, a), *eb = ENT(t, b);
        if (ea->stamp < eb->stamp) {
            *tail = a;
            tail = &ea->qnext;
            a = ea->qnext;
        }
        else {
            *tail = b;
            tail = &eb->qnext;
            b = eb->qnext;
        }
    }
    *tail = a ? a : b;
    return head;
}

/* Sorts a qnext-linked list ascending by stamp: a bottom-up merge sort of
 * its ascending runs (so a list already in order costs one pass), with no
 * memory but a fixed array of partial results. */
static fc_off sort_by_stamp(fc_table *t, fc_off list)
{
    fc_off bins[64] = {0};
    while (list) {
        fc_off run = list;
        fc_entry *e = ENT(t, list);
        while (e->qnext && ENT(t, e->qnext)->stamp > e->stamp)
            e = ENT(t, e->qnext);
        list = e->qnext;
        e->qnext = 0;
        int i = 0;
        for (; i < 63 && bins[i]; i++) {
            run = merge_by_stamp(t, bins[i], run);
            bins[i] = 0;
        }
        bins[i] = merge_by_stamp(t, bins[i], run);
    }
    fc_off out = 0;
    for (int i = 0; i < 64; i++)
        out = merge_by_stamp(t, bins[i], out);
    return out;
}

/* Empties the access queue: frees its zombies and returns its live entries
 * (no longer marked queued) linked through qnext, the first queued first.
 * On damage (a bad link, a node not marked queued: met twice, so a cycle)
 * it stops there, with what it has. */
static fc_off unqueue(fc_table *t)
{
    fc_off live = 0;
    uint64_t left = walk_max(t);
    for (fc_off eo = t->h->queue; eo;) {
        if (!ent_ok(t, eo) || left-- == 0 || is_damaged(t)) {
            damaged(t);
            break;
        }
        fc_entry *e = ENT(t, eo);
        if (!e->queued) {
            damaged(t);
            break;
        }
        fc_off next = e->qnext;
        if (e->zombie) {
            t->mem->free(t->mem, eo, entry_size(e->cap));
        }
        else {
            e->queued = 0;
            e->qnext = live;
            live = eo;
        }
        eo = next;
    }
    t->h->queue = 0;
    return live;
}

/* Brings the LRU list up to date: the queued entries, in the order of their
 * last use, each moved to the most-recent end. */
static void rings_drain(fc_table *t);

static void drain_queue(fc_table *t)
{
    rings_drain(t);
    if (!t->h->queue)
        return;
    for (fc_off eo = sort_by_stamp(t, unqueue(t)); eo;) {
        fc_entry *e = ENT(t, eo);
        eo = e->qnext;
        e->qnext = 0;
        lru_move_front(t, e);
    }
}

/* A use logged by a reader without the lock: applied when its entry is
 * still indexed (found by offset in its hash's chain, never dereferenced
 * before) and the use is newer than what the entry has. */
static void apply_use(fc_table *t, const fc_use *u)
{
    fc_header *h = t->h;
    if (u->stamp < h->drained_at)
        return; /* a retried read's: see fc_table.h */
    uint64_t left = walk_max(t);
    for (fc_off eo = *bucket_slot(t, u->hash); eo; eo = ENT(t, eo)->hnext) {
        if (!ent_ok(t, eo) || left-- == 0) {
            damaged(t);
            return;
        }
        if (eo != u->off)
            continue;
        fc_entry *e = ENT(t, eo);
        if (e->hash != u->hash || u->stamp <= e->stamp)
            return;
        e->stamp = u->stamp;
        if (u->stamp > h->clock)
            h->clock = u->stamp;
        enqueue(t, e);
        return;
    }
}

static void rings_drain(fc_table *t)
{
    fc_header *h = t->h;
    if (!t->ro_nrings)
        return;
    uint64_t now = t->clock(); /* seq is odd already: see fc_table.h */
    fc_ring *r = t->ro_rings;
    for (uint64_t i = 0; i < t->ro_nrings; i++) {
        uint64_t head = __atomic_load_n(&r[i].head, __ATOMIC_ACQUIRE);
        uint64_t tail = r[i].tail;
        if (head - tail > FC_RING_LEN) /* only if a process wrote garbage */
            tail = head - FC_RING_LEN;
        for (; tail != head; tail++) {
            fc_use u = r[i].use[tail % FC_RING_LEN];
            apply_use(t, &u);
        }
        __atomic_store_n(&r[i].tail, head, __ATOMIC_RELEASE);
    }
    h->drained_at = now;
}

static inline int repaired(fc_table *t);

void fc_rings_drain_lock_held(fc_table *t)
{
    rings_drain(t);
    repaired(t);
}

/* Forgets every logged use (the entries are all gone). */
static void discard_uses(fc_table *t)
{
    fc_ring *r = t->ro_rings;
    for (uint64_t i = 0; i < t->ro_nrings; i++)
        __atomic_store_n(&r[i].tail, __atomic_load_n(&r[i].head, __ATOMIC_ACQUIRE),
                         __ATOMIC_RELEASE);
    t->h->drained_at = t->clock();
}

int fc_ring_claim(fc_table *t, uint64_t owner)
{
    fc_ring *r = t->ro_rings;
    for (uint64_t i = 0; i < t->ro_nrings; i++) {
        uint64_t free_ = 0;
        if (__atomic_load_n(&r[i].owner, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&r[i].owner, &free_, owner, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return (int)i;
    }
    return -1;
}

void fc_ring_release(fc_table *t, int ring)
{
    if (ring >= 0 && (uint64_t)ring < t->ro_nrings)
        __atomic_store_n(&t->ro_rings[ring].owner, 0, __ATOMIC_RELEASE);
}

int fc_rings_reclaim_lock_held(fc_table *t, int (*alive)(uint64_t owner))
{
    fc_ring *r = t->ro_rings;
    int n = 0;
    for (uint64_t i = 0; i < t->ro_nrings; i++) {
        uint64_t owner = __atomic_load_n(&r[i].owner, __ATOMIC_ACQUIRE);
        if (owner != 0 && !alive(owner) &&
            __atomic_compare_exchange_n(&r[i].owner, &owner, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            n++;
    }
    return n;
}

void fc_stats_sum(const fc_table *t, fc_stats *out)
{
    *out = t->h->stats;
    const fc_ring *r = t->ro_rings;
    for (uint64_t i = 0; i < t->ro_nrings; i++) {
        out->hits += __atomic_load_n(&r[i].hits, __ATOMIC_RELAXED);
        out->misses += __atomic_load_n(&r[i].misses, __ATOMIC_RELAXED);
    }
}

void fc_stats_reset_lock_held(fc_table *t)
{
    memset(&t->h->stats, 0, sizeof t->h->stats);
    t->h->repairs = 0;
    fc_ring *r = t->ro_rings;
    for (uint64_t i = 0; i < t->ro_nrings; i++) {
        __atomic_store_n(&r[i].hits, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r[i].misses, 0, __ATOMIC_RELAXED);
    }
}

/* Returns the entry for k, and in *slot_out the index slot pointing at it.
 * NULL when there is none, or on damage (marked). */
static fc_entry *find(const fc_table *t, const fc_key *k, fc_off **slot_out)
{
    fc_off *slot = bucket_slot(t, k->hash);
    uint64_t left = walk_max(t);
    for (fc_off eo; (eo = *slot) != 0;) {
        if (!ent_ok(t, eo) || left-- == 0)
            return damaged_null(t);
        fc_entry *e = ENT(t, eo);
        if (e->hash == k->hash && e->klen == k->n) {
            if (!ent_sane(t, e))
                return damaged_null(t);
            if (k->n == 0 || memcmp(e->data, k->p, k->n) == 0) {
                if (slot_out)
                    *slot_out = slot;
                return e;
            }
        }
        slot = &e->hnext;
    }
    return NULL;
}

/* The index slot pointing at e; NULL (damage, marked) when e is not in the
 * chain of its hash. */
static fc_off *slot_of(const fc_table *t, const fc_entry *e)
{
    fc_off eo = ent_off(t, e);
    fc_off *slot = bucket_slot(t, e->hash);
    uint64_t left = walk_max(t);
    while (*slot != eo) {
        if (*slot == 0 || !ent_ok(t, *slot) || left-- == 0)
            return damaged_null(t);
        slot = &ENT(t, *slot)->hnext;
    }
    return slot;
}

/* Unlinks e from both structures and frees it (at the next drain when it
 * is on the access queue).  With slot NULL (slot_of found damage) or links
 * that are damaged, it leaves e where it is. */
static void entry_remove(fc_table *t, fc_off *slot, fc_entry *e)
{
    if (slot == NULL || !lru_unlink(t, e))
        return;
    *slot = e->hnext;
    uint64_t size = (uint64_t)e->klen + e->vlen;
    if (t->h->count == 0 || t->h->bytes < size)
        damaged(t); /* the counts were wrong: the repair resets them */
    t->h->count--;
    t->h->bytes -= size;
    if (e->queued)
        e->zombie = 1;
    else
        t->mem->free(t->mem, ent_off(t, e), entry_size(e->cap));
}

/* The least recently used entry to evict, other than keep; 0 when there is
 * none, or on damage (marked). */
static fc_off lru_victim(fc_table *t, const fc_entry *keep)
{
    fc_off ro = root_off(t), v = t->h->root.prev;
    if (v != ro && !ent_ok(t, v))
        return damaged(t);
    if (v != ro && ENT(t, v) == keep) {
        v = ENT(t, v)->lru.prev;
        if (v != ro && !ent_ok(t, v))
            return damaged(t);
    }
    if (v != ro && !ent_sane(t, ENT(t, v)))
        return damaged(t);
    return v == ro ? 0 : v;
}

/* Doubles the bucket array when the load passes 1.  Failing to allocate is
 * harmless: chains just get longer. */
static void maybe_grow(fc_table *t)
{
    fc_header *h = t->h;
    if (is_shared(t) || h->count < h->nbuckets || h->nbuckets >= ((uint64_t)1 << 40))
        return;
    uint64_t n = h->nbuckets * 2;
    fc_off no = t->mem->alloc(t->mem, n * sizeof(fc_off));
    if (!no)
        return;
    fc_off *nb = FC_PTR(t->mem, no);
    memset(nb, 0, n * sizeof(fc_off));
    fc_off *ob = FC_PTR(t->mem, h->buckets);
    for (uint64_t i = 0; i < h->nbuckets; i++) {
        fc_off eo = ob[i];
        while (eo) {
            fc_entry *e = ENT(t, eo);
            fc_off next = e->hnext;
            fc_off *dst = &nb[e->hash & (n - 1)];
            e->hnext = *dst;
            *dst = eo;
            eo = next;
        }
    }
    t->mem->free(t->mem, h->buckets, h->nbuckets * sizeof(fc_off));
    h->buckets = no;
    h->nbuckets = n;
}

static void link_new(fc_table *t, fc_entry *e)
{
    fc_off *slot = bucket_slot(t, e->hash);
    e->hnext = *slot;
    *slot = ent_off(t, e);
    lru_push_front(t, e);
    if (is_shared(t))
        lru_use(t, e); /* queued entries were used before it */
    t->h->count++;
    t->h->bytes += (uint64_t)e->klen + e->vlen;
}

/* Frees every entry (one by one: the caller may hold an allocation that is
 * not linked in yet, which a reset of the memory would forget). */
static void free_all_entries(fc_table *t)
{
    unqueue(t);
    fc_off ro = root_off(t);
    fc_off eo = t->h->root.next;
    uint64_t left = walk_max(t);
    while (eo != ro) {
        if (!ent_ok(t, eo) || left-- == 0) {
            damaged(t);
            break;
        }
        fc_entry *e = ENT(t, eo);
        eo = e->lru.next;
        t->mem->free(t->mem, ent_off(t, e), entry_size(e->cap));
    }
    t->h->root.next = t->h->root.prev = ro;
    uint64_t nb;
    fc_off *b = bucket_array(t, &nb);
    memset(b, 0, nb * sizeof(fc_off));
    t->h->count = 0;
    t->h->bytes = 0;
}

/* LocMemCache._cull: everything when cull_frequency is 0, else
 * count // cull_frequency entries from the least recently used end (Python
 * floor division: a negative frequency removes nothing). */
static void cull(fc_table *t, int64_t cull_frequency)
{
    if (cull_frequency == 0) {
        STAT_ADD(t, evictions, t->h->count);
        free_all_entries(t);
        return;
    }
    if (cull_frequency < 0)
        return;
    uint64_t n = t->h->count / (uint64_t)cull_frequency;
    if (n)
        drain_queue(t);
    while (n-- && !is_damaged(t)) {
        fc_off v = lru_victim(t, NULL);
        if (v == 0)
            break;
        fc_entry *e = ENT(t, v);
        entry_remove(t, slot_of(t, e), e);
        STAT(t, evictions);
    }
    if (t->h->root.prev == root_off(t) && t->h->count != 0)
        damaged(t); /* an empty list, but a count: the count was wrong */
}

/* Drops every entry and, for a segment, its allocations.  It follows
 * nothing in the table's memory (its layout is this process's copy), so it
 * also serves to repair damage. */
static void reset_all(fc_table *t)
{
    fc_header *h = t->h;
    if (is_shared(t)) {
        /* and the header's copy of the layout, from this process's */
        h->magic = FC_MAGIC;
        h->shared = 1;
        h->buckets = FC_OFF(t->mem, t->ro_buckets);
        h->nbuckets = t->ro_mask + 1;
        h->rings = t->ro_nrings ? FC_OFF(t->mem, t->ro_rings) : 0;
        h->nrings = t->ro_nrings;
    }
    h->root.next = h->root.prev = root_off(t);
    h->queue = 0; /* zombies go with the memory */
    discard_uses(t);
    uint64_t nb;
    fc_off *b = bucket_array(t, &nb);
    memset(b, 0, nb * sizeof(fc_off));
    h->count = 0;
    h->bytes = 0;
    if (t->mem->reset)
        t->mem->reset(t->mem);
}

/* The repair of damage found by an operation (see fc_table.h): drop
 * everything, as after a holder that died mid-write, and count it. */
static void repair(fc_table *t)
{
    reset_all(t);
    t->mem->damaged = 0;
    t->h->repairs++;
    t->unreported_repairs++;
}

/* Called by every public operation before it returns: 1 when it met damage
 * (now repaired), 0 (nearly always) when not. */
static inline int repaired(fc_table *t)
{
    if (__builtin_expect(!is_damaged(t), 1))
        return 0;
    repair(t);
    return 1;
}

/* Memory for an entry.  A shared table evicts from the LRU end (never
 * `keep`) until the block fits; *rc says why it returns NULL (FC_ECORRUPT:
 * damage met, which the public function repairs). */
static fc_off entry_alloc(fc_table *t, size_t size, const fc_entry *keep, int *rc)
{
    *rc = FC_ENOMEM;
    if (size > t->mem->max_block) {
        *rc = FC_ETOOBIG;
        return 0;
    }
    int ordered = 0;
    fc_off eo = 0;
    while (!is_damaged(t)) {
        eo = t->mem->alloc(t->mem, size);
        if (eo || !is_shared(t))
            return eo;
        if (!ordered) {
            /* Free the zombies, and put the victims in order. */
            ordered = 1;
            drain_queue(t);
            continue;
        }
        fc_off victim = lru_victim(t, keep);
        if (victim != 0) {
            fc_entry *e = ENT(t, victim);
            entry_remove(t, slot_of(t, e), e);
            STAT(t, evictions);
            continue;
        }
        if (is_damaged(t))
            break;
        /* Nothing but keep is on the list: any other count is wrong. */
        if (t->h->count != (keep != NULL)) {
            damaged(t);
            break;
        }
        if (keep != NULL)
            return 0;
        /* Empty but fragmented: start the segment's memory afresh. */
        reset_all(t);
        return t->mem->alloc(t->mem, size);
    }
    *rc = FC_ECORRUPT;
    return 0;
}

/* A new, unlinked entry holding k and v; NULL (with *rc) when there is no
 * memory for it. */
static fc_entry *entry_new(fc_table *t, const fc_key *k, int vtype, const void *v, size_t vlen,
                           const fc_entry *keep, int *rc)
{
    uint32_t cap = (uint32_t)(k->n + vlen);
    fc_off eo = entry_alloc(t, entry_size(cap), keep, rc);
    if (!eo)
        return NULL;
    fc_entry *e = ENT(t, eo);
    memset(e, 0, sizeof(*e));
    e->hash = k->hash;
    e->klen = (uint32_t)k->n;
    e->vlen = (uint32_t)vlen;
    e->cap = cap;
    e->vtype = (uint8_t)vtype;
    if (k->n)
        memcpy(e->data, k->p, k->n);
    if (vlen)
        memcpy(e->data + k->n, v, vlen);
    return e;
}

/* Whether e's block can take a value of vlen without wasting much. */
static int fits(const fc_entry *e, size_t vlen)
{
    size_t need = (size_t)e->klen + vlen;
    return need <= e->cap && e->cap <= 2 * need + 64;
}

static void write_value(fc_table *t, fc_entry *e, int vtype, const void *v, size_t vlen)
{
    t->h->bytes -= e->vlen;
    if (vlen)
        memcpy(e->data + e->klen, v, vlen);
    e->vlen = (uint32_t)vlen;
    e->vtype = (uint8_t)vtype;
    t->h->bytes += vlen;
    e->gen = ++t->h->gen;
}

static int sizes_ok(const fc_key *k, size_t vlen)
{
    return k->n <= UINT32_MAX && vlen <= UINT32_MAX && k->n + vlen <= UINT32_MAX;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */

/* Each public function below ends with repaired(t) on every path that may
 * have met damage, and then answers as the emptied table would. */

fc_entry *fc_peek_lock_held(fc_table *t, const fc_key *k)
{
    fc_entry *e = find(t, k, NULL);
    return repaired(t) ? NULL : e;
}

fc_entry *fc_get_lock_held(fc_table *t, const fc_key *k, double now, int lru)
{
    fc_off *slot;
    fc_entry *e = find(t, k, &slot);
    if (e != NULL && expired(e, now)) {
        if (!kept_stale(e, now)) {
            entry_remove(t, slot, e);
            STAT(t, expirations);
            FC_ASSERT_CONSISTENT(t);
        }
        e = NULL;
    }
    else if (e != NULL && lru)
        lru_use(t, e);
    if (repaired(t))
        e = NULL;
    if (e == NULL)
        STAT(t, misses);
    else
        STAT(t, hits);
    return e;
}

/* fc_set_lock_held's work; FC_ECORRUPT (or anything) when it met damage. */
static int set_entry(fc_table *t, const fc_key *k, int vtype, const void *v, size_t vlen, int never,
                     double expires, int64_t max_entries, int64_t cull_frequency)
{
    if (!sizes_ok(k, vlen))
        return FC_EKEY;
    int will_cull = (int64_t)t->h->count >= max_entries;
    fc_entry *e = find(t, k, NULL);
    if (is_damaged(t))
        return FC_ECORRUPT;

    if (e != NULL && !will_cull && fits(e, vlen)) {
        /* Overwrite in place: LocMemCache's dict assignment + move_to_end. */
        write_value(t, e, vtype, v, vlen);
        lru_use(t, e);
    }
    else {
        int rc;
        fc_entry *ne = entry_new(t, k, vtype, v, vlen, NULL, &rc);
        if (ne == NULL)
            return rc;
        if (will_cull)
            cull(t, cull_frequency);
        if (is_damaged(t))
            return FC_ECORRUPT;
        fc_off *slot;
        e = find(t, k, &slot); /* culling may have removed it */
        if (e != NULL)
            entry_remove(t, slot, e);
        else
            maybe_grow(t);
        e = ne;
        e->gen = ++t->h->gen;
        link_new(t, e);
    }
    e->never = (uint8_t)(never != 0);
    e->expires = never ? 0.0 : expires;
    e->stale = 0.0;
    STAT(t, sets);
    FC_ASSERT_CONSISTENT(t);
    return FC_OK;
}

int fc_set_lock_held(fc_table *t, const fc_key *k, int vtype, const void *v, size_t vlen, int never,
                     double expires, int64_t max_entries, int64_t cull_frequency)
{
    int rc = set_entry(t, k, vtype, v, vlen, never, expires, max_entries, cull_frequency);
    if (repaired(t)) {
        /* Store it in the table as repaired (empty), as a set on an empty
         * table would. */
        rc = set_entry(t, k, vtype, v, vlen, never, expires, max_entries, cull_frequency);
        if (repaired(t))
            rc = FC_ECORRUPT;
    }
    return rc;
}

int fc_add_lock_held(fc_table *t, const fc_key *k, int vtype, const void *v, size_t vlen, int never,
                     double expires, int64_t max_entries, int64_t cull_frequency, double now)
{
    fc_entry *e = find(t, k, NULL);
    if (e != NULL && !expired(e, now))
        return 0;
    repaired(t); /* damage met looking: the key is absent now */
    int rc = fc_set_lock_held(t, k, vtype, v, vlen, never, expires, max_entries, cull_frequency);
    return rc == FC_OK ? 1 : rc;
}

int fc_mark_stale_lock_held(fc_table *t, const fc_key *k, double stale)
{
    fc_entry *e = find(t, k, NULL);
    if (repaired(t) || e == NULL)
        return 0;
    e->stale = e->never || !(stale > 0) ? 0.0 : stale;
    return 1;
}

fc_entry *fc_get_stale_lock_held(fc_table *t, const fc_key *k, double now, int *stale)
{
    fc_off *slot;
    fc_entry *e = find(t, k, &slot);
    *stale = 0;
    if (e != NULL && expired(e, now)) {
        if (kept_stale(e, now))
            *stale = 1;
        else {
            entry_remove(t, slot, e);
            STAT(t, expirations);
            FC_ASSERT_CONSISTENT(t);
            e = NULL;
        }
    }
    if (e != NULL)
        lru_use(t, e);
    if (repaired(t))
        e = NULL;
    if (e == NULL || *stale)
        STAT(t, misses);
    else
        STAT(t, hits);
    return e;
}

int fc_touch_lock_held(fc_table *t, const fc_key *k, int never, double expires, double now)
{
    fc_entry *e = find(t, k, NULL);
    if (repaired(t) || e == NULL || expired(e, now))
        return 0;
    e->never = (uint8_t)(never != 0);
    e->expires = never ? 0.0 : expires;
    return 1;
}

int fc_delete_lock_held(fc_table *t, const fc_key *k)
{
    fc_off *slot;
    fc_entry *e = find(t, k, &slot);
    if (e == NULL) {
        repaired(t);
        return 0;
    }
    entry_remove(t, slot, e);
    STAT(t, deletes);
    FC_ASSERT_CONSISTENT(t);
    repaired(t); /* it was found: gone either way */
    return 1;
}

int fc_incr_lock_held(fc_table *t, const fc_key *k, int64_t delta, double now, int64_t *result,
                      fc_entry **found)
{
    fc_entry *e = fc_get_lock_held(t, k, now, 0);
    *found = e;
    if (e == NULL)
        return FC_MISS;
    if (e->vtype != FC_VT_INT64 || e->vlen != sizeof(int64_t))
        return FC_NOTINT;
    int64_t cur, sum;
    memcpy(&cur, fc_entry_value(e), sizeof cur);
    if (__builtin_add_overflow(cur, delta, &sum))
        return FC_NOTINT;
    memcpy(e->data + e->klen, &sum, sizeof sum);
    e->gen = ++t->h->gen;
    lru_use(t, e);
    *result = sum;
    FC_ASSERT_CONSISTENT(t);
    if (repaired(t)) {
        *found = NULL;
        return FC_MISS;
    }
    return FC_OK;
}

/* fc_replace_lock_held's work. */
static int replace_entry(fc_table *t, const fc_key *k, uint64_t gen, int vtype, const void *v,
                         size_t vlen)
{
    if (!sizes_ok(k, vlen))
        return FC_EKEY;
    fc_off *slot;
    fc_entry *e = find(t, k, &slot);
    if (e == NULL || e->gen != gen)
        return FC_CHANGED;
    if (fits(e, vlen)) {
        write_value(t, e, vtype, v, vlen);
        lru_use(t, e);
    }
    else {
        int rc;
        fc_entry *ne = entry_new(t, k, vtype, v, vlen, e, &rc);
        if (ne == NULL && rc == FC_ENOMEM && is_shared(t)) {
            /* Everything else is evicted and the old value alone still
             * blocks the new one: drop it first, as an eviction would. */
            uint8_t never = e->never;
            double expires = e->expires, stale = e->stale;
            entry_remove(t, slot_of(t, e), e);
            STAT(t, evictions);
            ne = entry_new(t, k, vtype, v, vlen, NULL, &rc);
            if (ne == NULL)
                return rc;
            ne->never = never;
            ne->expires = expires;
            ne->stale = stale;
            ne->gen = ++t->h->gen;
            link_new(t, ne);
            FC_ASSERT_CONSISTENT(t);
            return FC_OK;
        }
        if (ne == NULL)
            return rc;
        ne->never = e->never;
        ne->expires = e->expires;
        ne->stale = e->stale;
        /* Making room may have evicted e's chain predecessor, which held
         * `slot`: find it again. */
        entry_remove(t, slot_of(t, e), e);
        ne->gen = ++t->h->gen;
        link_new(t, ne);
    }
    FC_ASSERT_CONSISTENT(t);
    return FC_OK;
}

int fc_replace_lock_held(fc_table *t, const fc_key *k, uint64_t gen, int vtype, const void *v,
                         size_t vlen)
{
    int rc = replace_entry(t, k, gen, vtype, v, vlen);
    return repaired(t) ? FC_CHANGED : rc; /* the entry is gone */
}

void fc_clear_lock_held(fc_table *t)
{
    /* A segment's memory is simply reset: nothing is followed that damage
     * could lead astray, and nothing is walked. */
    if (t->mem->reset)
        reset_all(t);
    else
        free_all_entries(t);
    FC_ASSERT_CONSISTENT(t);
    repaired(t);
}

int fc_foreach_lock_held(fc_table *t, int (*fn)(const fc_entry *e, void *arg), void *arg)
{
    drain_queue(t);
    fc_off ro = root_off(t);
    uint64_t left = walk_max(t);
    int rc = 0;
    for (fc_off eo = t->h->root.next; eo != ro && !is_damaged(t);) {
        if (!ent_ok(t, eo) || left-- == 0 || !ent_sane(t, ENT(t, eo))) {
            damaged(t);
            break;
        }
        const fc_entry *e = ENT(t, eo);
        eo = e->lru.next;
        rc = fn(e, arg);
        if (rc)
            break;
    }
    repaired(t);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reads without the lock (shared tables)                                   */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define OPT_TRIES 64

/* A reader without the lock reads what a lock holder may be writing, and
 * keeps it only if seq says nobody wrote meanwhile (a seqlock): its reads of
 * the entry are races by design, which a ThreadSanitizer build of the
 * binding (FC_TSAN) is told to ignore.  Its writes (the ring) and the seq
 * validation stay checked. */
#ifdef FC_TSAN
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define OPT_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define OPT_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define OPT_READS_BEGIN() ((void)0)
#define OPT_READS_END() ((void)0)
#endif
#define OPT_CHAIN 64

/* One attempt: 1 hit (*eo_out is the entry), 0 miss, -1 undecided.
 * Everything read may be torn by a concurrent writer: every offset is
 * bounds-checked before it is followed and every length before it is used,
 * chains are walked a bounded number of steps, and the caller validates the
 * outcome with seq. */
static int opt_lookup(const fc_table *t, const fc_key *k, double now, char *buf, size_t bufcap,
                      int *vtype, size_t *vlen, uint64_t *gen, fc_off *eo_out)
{
    const fc_mem *m = t->mem;
    fc_off eo = LOAD(&t->ro_buckets[k->hash & t->ro_mask]);
    for (int steps = 0; eo; steps++) {
        if (steps == OPT_CHAIN || eo < m->lo || eo > m->hi - sizeof(fc_entry) ||
            (eo & (ENT_ALIGN - 1)))
            return -1;
        const fc_entry *e = ENT(t, eo);
        uint32_t klen = LOAD(&e->klen);
        if (LOAD(&e->hash) == k->hash && klen == k->n) {
            uint32_t n = LOAD(&e->vlen);
            uint8_t vt = LOAD(&e->vtype);
            /* out of range, or of a type not decoded: the lock holder's
             * checks decide (see Damage) */
            if ((uint64_t)klen + n > m->hi - eo - sizeof(fc_entry) || vt > FC_VT_LAST ||
                (n != 8 && (vt == FC_VT_INT64 || vt == FC_VT_FLOAT)))
                return -1;
            if (k->n && memcmp(e->data, k->p, k->n) != 0)
                goto next;
            if (buf != NULL && n > bufcap)
                return -1;
            double expires;
            __atomic_load(&e->expires, &expires, __ATOMIC_RELAXED);
            if (!LOAD(&e->never) && expires <= now)
                return -1; /* expired: removing it needs the lock */
            if (buf != NULL) {
                if (n)
                    memcpy(buf, e->data + klen, n);
                *vtype = vt;
                *vlen = n;
                *gen = LOAD(&e->gen);
            }
            *eo_out = eo;
            return 1;
        }
    next:
        eo = LOAD(&e->hnext);
    }
    return 0;
}

int fc_get_optimistic(fc_table *t, int ring, const fc_key *k, double now, char *buf, size_t bufcap,
                      int *vtype, size_t *vlen, uint64_t *gen)
{
    fc_header *h = t->h;
    if (t->ro_buckets == NULL || ring < 0 || (uint64_t)ring >= t->ro_nrings)
        return FC_ELOCK;
    fc_ring *r = &t->ro_rings[ring];
    for (int i = 0; i < OPT_TRIES; i++) {
        uint64_t s1 = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1) {
            fc_cpu_relax();
            continue;
        }
        fc_off eo = 0;
        OPT_READS_BEGIN();
        int found = opt_lookup(t, k, now, buf, bufcap, vtype, vlen, gen, &eo);
        OPT_READS_END();
        if (found == 1 && buf != NULL) {
            uint64_t head = r->head;
            if (head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) >= FC_RING_LEN)
                return FC_EFULL;
            fc_use *u = &r->use[head % FC_RING_LEN];
            u->off = eo;
            u->hash = k->hash;
            u->stamp = t->clock();
            __atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
        }
        /* The use is published before seq is read again (fc_table.h). */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&h->seq, __ATOMIC_RELAXED) != s1)
            continue;
        if (found < 0)
            return FC_ELOCK;
        if (!t->stats_off) {
            uint64_t *c = found ? &r->hits : &r->misses;
            __atomic_store_n(c, *c + 1, __ATOMIC_RELAXED);
        }
        return found ? FC_OK : FC_MISS;
    }
    return FC_ELOCK;
}

/* ------------------------------------------------------------------------ */
/* Invariant checker                                                        */

/* find for the checker: marks nothing; *bad set when the chain leads
 * outside the memory or runs on without end. */
static const fc_entry *check_find(const fc_table *t, const fc_key *k, int *bad)
{
    uint64_t left = walk_max(t);
    for (fc_off eo = *bucket_slot(t, k->hash); eo;) {
        if (!ent_ok(t, eo) || left-- == 0) {
            *bad = 1;
            return NULL;
        }
        const fc_entry *e = ENT(t, eo);
        if (e->hash == k->hash && e->klen == k->n && ent_fits(t, e) &&
            (k->n == 0 || memcmp(e->data, k->p, k->n) == 0))
            return e;
        eo = e->hnext;
    }
    return NULL;
}

int fc_table_check(const fc_table *t)
{
    const fc_header *h = t->h;
    fc_off ro = root_off(t);
    uint64_t n = 0, bytes = 0, queued = 0, most = walk_max(t);
    int bad = 0;

    if (h->magic != FC_MAGIC)
        return -1; /* not a table */
    uint64_t nb;
    const fc_off *b = bucket_array(t, &nb);
    if (nb == 0 || (nb & (nb - 1)) || (!is_shared(t) && nb < FC_MIN_BUCKETS))
        return -2; /* bucket count not a power of two */
    if (is_shared(t) &&
        (!h->shared || h->nbuckets != nb || FC_PTR(t->mem, h->buckets) != (const void *)b ||
         h->nrings != t->ro_nrings ||
         (t->ro_nrings && FC_PTR(t->mem, h->rings) != (const void *)t->ro_rings)))
        return -25; /* the header's layout is not the one the table was attached with */
    fc_off prev = ro;
    for (fc_off eo = h->root.next; eo != ro;) {
        if (!ent_ok(t, eo))
            return -23; /* a link or an index slot points outside the memory */
        const fc_entry *e = ENT(t, eo);
        if (e->lru.prev != prev)
            return -3; /* LRU back link broken */
        if (++n > h->count || n > most)
            return -4; /* LRU list longer than count (or cyclic) */
        if ((uint64_t)e->klen + e->vlen > e->cap)
            return -5; /* entry overflows its block */
        if (e->zombie)
            return -13; /* a removed entry still listed */
        if (!ent_sane(t, e))
            return -24; /* its block leaves the memory, or its value type is not decoded */
        bytes += (uint64_t)e->klen + e->vlen;
        fc_key k = {e->data, e->klen, e->hash};
        if (check_find(t, &k, &bad) != e)
            return bad ? -23 : -6; /* not indexed, or a duplicate key */
        queued += e->queued;
        prev = eo;
        eo = e->lru.next;
    }
    if (h->root.prev != prev)
        return -7; /* root back link broken */
    if (n != h->count)
        return -8; /* LRU list shorter than count */
    if (bytes != h->bytes)
        return -9; /* byte total wrong */
    uint64_t indexed = 0;
    for (uint64_t i = 0; i < nb; i++) {
        for (fc_off eo = b[i]; eo; eo = ENT(t, eo)->hnext) {
            if (!ent_ok(t, eo))
                return -23;
            if ((ENT(t, eo)->hash & (nb - 1)) != i)
                return -10; /* entry in the wrong bucket */
            if (++indexed > h->count || indexed > most)
                return -11; /* index holds more than count (or cyclic) */
        }
    }
    if (indexed != h->count)
        return -12; /* index holds fewer than count */
    if (!is_shared(t) && (h->queue || queued))
        return -14; /* a private table queues nothing */
    /* The access queue: no cycle (the hare moves two steps to the
     * tortoise's one), every node marked queued, live ones indexed and with
     * a stamp the clock has given, removed ones indexed no more. */
    uint64_t live = 0;
    fc_off slow = h->queue;
    for (fc_off eo = h->queue, step = 0; eo; step++) {
        if (!ent_ok(t, eo))
            return -23;
        const fc_entry *e = ENT(t, eo);
        if (!e->queued)
            return -15; /* on the queue but not marked queued */
        if (!ent_fits(t, e))
            return -24;
        fc_key k = {e->data, e->klen, e->hash};
        if (e->zombie) {
            if (check_find(t, &k, &bad) == e)
                return -16; /* a removed entry still indexed */
        }
        else {
            if (check_find(t, &k, &bad) != e)
                return bad ? -23 : -17; /* a queued entry that is not in the table */
            if (e->stamp == 0 || e->stamp > h->clock)
                return -18; /* stamp not from the clock */
            live++;
        }
        if (bad)
            return -23;
        eo = e->qnext;
        if (step & 1) {
            slow = ENT(t, slow)->qnext; /* a node the hare has checked */
            if (slow == eo && eo)
                return -19; /* the queue is cyclic */
        }
    }
    if (live != queued)
        return -20; /* entries marked queued that are not on the queue */
    const fc_ring *r = t->ro_rings;
    for (uint64_t i = 0; i < t->ro_nrings; i++) {
        uint64_t head = __atomic_load_n(&r[i].head, __ATOMIC_ACQUIRE);
        if (head - r[i].tail > FC_RING_LEN)
            return -21; /* a ring holds more uses than it has room for */
    }
    if (!is_shared(t) && h->nrings)
        return -22; /* a private table has no rings */
    return 0;
}

int fc_table_check_keys(const fc_table *t)
{
    int rc = fc_table_check(t);
    if (rc != 0)
        return rc;
    fc_off ro = root_off(t);
    for (fc_off eo = t->h->root.next; eo != ro; eo = ENT(t, eo)->lru.next) {
        const fc_entry *e = ENT(t, eo);
        if (e->hash != fc_hash(t, e->data, e->klen))
            return -23; /* an entry hashed for another table */
    }
    return 0;
}

#ifdef FC_DEBUG
int fc_table_check_due(const fc_table *t)
{
    static uint64_t mutations;
    if (t->h->count >= 4096)
        return 0;
    uint64_t every = t->h->nbuckets / 4096;
    if (every <= 1)
        return 1;
    return __atomic_fetch_add(&mutations, 1, __ATOMIC_RELAXED) % every == 0;
}

void fc_table_check_failed(const fc_table *t, int rc, const char *file, int line)
{
    if (t->mem->hi != 0) {
        /* a segment any process may have damaged: repaired, not fatal */
        fprintf(stderr, "%s:%d: fastcache table %p inconsistent (check %d): repaired as damage\n",
                file, line, (const void *)t->h, rc);
        damaged(t);
        return;
    }
    fprintf(stderr, "%s:%d: fastcache table %p inconsistent (check %d)\n", file, line,
            (const void *)t->h, rc);
    abort();
}
#endif

/* ------------------------------------------------------------------------ */
/* Life cycle and lock                                                      */

static int mutex_init(fc_header *h)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc)
        return rc;
    if (h->shared) {
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        if (!rc)
            rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    }
    if (!rc)
        rc = pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

static void cache_layout(fc_table *t)
{
    const fc_header *h = t->h;
    t->ro_buckets = h->shared ? FC_PTR(t->mem, h->buckets) : NULL;
    t->ro_mask = h->nbuckets - 1;
    t->ro_rings = h->nrings ? FC_PTR(t->mem, h->rings) : NULL;
    t->ro_nrings = h->nrings;
    t->unreported_repairs = 0;
}

/* The rest of a new table's header (its lock is set up already); the magic
 * goes in last, so a half-made shared table never looks like one. */
static void attach_new(fc_table *t, fc_mem *mem, fc_header *h, fc_off buckets, uint64_t nbuckets,
                       uint64_t seed0, uint64_t seed1)
{
    h->buckets = buckets;
    h->nbuckets = nbuckets;
    h->seed[0] = seed0;
    h->seed[1] = seed1;
    t->mem = mem;
    t->h = h;
    t->stats_off = 0;
    t->clock = mono_ns;
    h->root.prev = h->root.next = root_off(t);
    cache_layout(t);
    h->magic = FC_MAGIC;
}

int fc_table_init(fc_table *t, fc_mem *mem, int shared, uint64_t seed0, uint64_t seed1)
{
    fc_off ho = mem->alloc(mem, sizeof(fc_header));
    if (!ho)
        return FC_ENOMEM;
    fc_header *h = FC_PTR(mem, ho);
    memset(h, 0, sizeof(*h));
    fc_off bo = mem->alloc(mem, FC_MIN_BUCKETS * sizeof(fc_off));
    if (!bo) {
        mem->free(mem, ho, sizeof(fc_header));
        return FC_ENOMEM;
    }
    memset(FC_PTR(mem, bo), 0, FC_MIN_BUCKETS * sizeof(fc_off));
    h->shared = (uint32_t)(shared != 0);
    if (mutex_init(h) != 0) {
        mem->free(mem, bo, FC_MIN_BUCKETS * sizeof(fc_off));
        mem->free(mem, ho, sizeof(fc_header));
        return FC_ELOCK;
    }
    attach_new(t, mem, h, bo, FC_MIN_BUCKETS, seed0, seed1);
    return FC_OK;
}

void fc_table_destroy(fc_table *t)
{
    if (t->h == NULL)
        return;
    free_all_entries(t);
    pthread_mutex_destroy(&t->h->lock);
    t->mem->free(t->mem, t->h->buckets, t->h->nbuckets * sizeof(fc_off));
    t->mem->free(t->mem, FC_OFF(t->mem, t->h), sizeof(fc_header));
    t->h = NULL;
}

/* The previous owner died holding the lock.  If it died between taking
 * and releasing it (dirty), it may have been relinking: drop everything. */
static void recover(fc_table *t)
{
    if (t->h->dirty)
        reset_all(t);
    pthread_mutex_consistent(&t->h->lock);
}

static int locked(fc_table *t, int rc)
{
    if (rc == EOWNERDEAD) {
        recover(t);
        rc = 0;
    }
    if (rc != 0)
        return FC_ELOCK;
    if (is_shared(t)) {
        __atomic_store_n(&t->h->dirty, 1, __ATOMIC_RELAXED);
        /* Odd (also after a holder that died with it odd), and ordered
         * before anything this holder writes. */
        __atomic_store_n(&t->h->seq, (t->h->seq + 1) | 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        /* The counts are read by lock holders without any operation (a
         * view's len()): counts no arena could hold are damage. */
        if (t->mem->hi != 0 &&
            (t->h->count >= walk_max(t) || t->h->bytes > t->mem->hi - t->mem->lo)) {
            damaged(t);
            repair(t);
        }
    }
    return FC_OK;
}

int fc_table_lock(fc_table *t) { return locked(t, pthread_mutex_lock(&t->h->lock)); }

int fc_table_trylock(fc_table *t) { return locked(t, pthread_mutex_trylock(&t->h->lock)); }

int fc_table_timedlock(fc_table *t, const struct timespec *until)
{
    return locked(t, pthread_mutex_timedlock(&t->h->lock, until));
}

void fc_table_unlock(fc_table *t)
{
    if (is_shared(t))
        __atomic_store_n(&t->h->seq, t->h->seq + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&t->h->dirty, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&t->h->lock);
}

int fc_table_reinit_lock(fc_table *t)
{
    if (is_shared(t))
        return FC_OK;
    return mutex_init(t->h) == 0 ? FC_OK : FC_ELOCK;
}

int fc_table_init_at(fc_table *t, fc_mem *mem, fc_off hdr, fc_off buckets, uint64_t nbuckets,
                     fc_off rings, uint64_t nrings, uint64_t seed0, uint64_t seed1)
{
    fc_header *h = FC_PTR(mem, hdr);
    memset(h, 0, sizeof(*h));
    memset(FC_PTR(mem, buckets), 0, nbuckets * sizeof(fc_off));
    if (nrings)
        memset(FC_PTR(mem, rings), 0, fc_rings_size(nrings));
    h->rings = nrings ? rings : 0;
    h->nrings = nrings;
    h->shared = 1;
    if (mutex_init(h) != 0)
        return FC_ELOCK;
    attach_new(t, mem, h, buckets, nbuckets, seed0, seed1);
    return FC_OK;
}

int fc_table_attach_at(fc_table *t, fc_mem *mem, fc_off hdr, fc_off buckets, uint64_t nbuckets,
                       fc_off rings, uint64_t nrings)
{
    fc_header *h = FC_PTR(mem, hdr);
    t->mem = mem;
    t->h = h;
    t->stats_off = 0;
    t->clock = mono_ns;
    t->ro_buckets = FC_PTR(mem, buckets);
    t->ro_mask = nbuckets - 1;
    t->ro_rings = nrings ? FC_PTR(mem, rings) : NULL;
    t->ro_nrings = nrings;
    t->unreported_repairs = 0;
    if (h->magic != FC_MAGIC || !h->shared || h->buckets != buckets || h->nbuckets != nbuckets ||
        h->rings != (nrings ? rings : 0) || h->nrings != nrings)
        damaged(t); /* repaired (these rewritten) by the next lock holder */
    return FC_OK;
}

int fc_table_attach(fc_table *t, fc_mem *mem, fc_off hdr)
{
    fc_header *h = FC_PTR(mem, hdr);
    if (h->magic != FC_MAGIC || !h->shared)
        return FC_ELOCK;
    t->mem = mem;
    t->h = h;
    t->stats_off = 0;
    t->clock = mono_ns;
    cache_layout(t);
    return FC_OK;
}

int fc_table_validate(fc_table *t)
{
    if (!is_shared(t))
        return FC_OK;
    int rc = pthread_mutex_trylock(&t->h->lock);
    if (rc == EBUSY || rc == EDEADLK)
        return FC_OK; /* in use (maybe by this thread): the operations check as they go */
    if (locked(t, rc) != FC_OK)
        return FC_ELOCK;
    fc_header *h = t->h;
    uint64_t nb;
    const fc_off *b = bucket_array(t, &nb);
    for (uint64_t i = 0; i < nb && !is_damaged(t); i++)
        if (b[i] && !ent_ok(t, b[i]))
            damaged(t);
    if (!link_ok(t, h->root.next) || !link_ok(t, h->root.prev) ||
        (h->queue && !ent_ok(t, h->queue)))
        damaged(t);
    /* a count that disagrees with the list (locked() checked its range) */
    if ((h->count == 0) != (h->root.next == root_off(t)))
        damaged(t);
    for (uint64_t i = 0; i < t->ro_nrings; i++)
        if (__atomic_load_n(&t->ro_rings[i].head, __ATOMIC_ACQUIRE) - t->ro_rings[i].tail >
            FC_RING_LEN)
            damaged(t); /* (a reader never writes more than FC_RING_LEN ahead) */
    repaired(t);
    fc_table_unlock(t);
    return FC_OK;
}

uint64_t fc_table_take_repairs(fc_table *t)
{
    uint64_t n = t->unreported_repairs;
    t->unreported_repairs = 0;
    return n;
}
