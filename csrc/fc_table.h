/*
 * fc_table.h - the django-fastcache table: a hash index, an LRU list, expiry
 * and culling, with LocMemCache's exact semantics.  Plain C: no Python.h.
 *
 * Design
 * ------
 * Everything the table owns (its header, the bucket array, the entries) is
 * reached through offsets (fc_off) from fc_mem.base and allocated through
 * fc_mem's functions.  In a private heap base is 0 and an offset is simply
 * the address; in a shared segment base is where this process mapped it.  So
 * one implementation serves both, and entries never hold raw pointers.
 *
 * An entry is one block: fixed header, then the key bytes, then the value
 * bytes.  Entries sit on two structures:
 *   - a chained hash index: power-of-two bucket array, chains linked by
 *     `hnext`, grown (doubled) when the load passes 1;
 *   - a doubly linked LRU list through an embedded root sentinel in the
 *     table header (no NULL checks): root.next is the most recently used,
 *     root.prev the least, exactly the order of LocMemCache's OrderedDict
 *     (which keeps its most recent entry first).
 *
 * A shared table orders its LRU list lazily, so that processes reading at
 * once do not all write the same few list nodes (the root and the most
 * recent entries) on every hit, which convoys them on those cache lines.
 * A use of an entry only stamps it with the next value of an access clock
 * and, the first time since the list was last ordered, pushes it on a
 * singly linked access queue.  Before anything reads the LRU order
 * (culling, eviction, iteration) the queue is drained: its entries, sorted
 * by stamp, are moved to the most-recent end one by one, which is exactly
 * the list that moving each at its use would have built (entries not on the
 * queue were all used before any queued one).  An entry removed while
 * queued is unlinked from the index and the list at once but freed only at
 * the drain (a "zombie"), so the queue never points at freed memory.
 *
 * Time is never read here: every operation that checks expiry takes `now`
 * (seconds since the epoch, as time.time()), which keeps the table
 * deterministic under test.
 *
 * Locking: one mutex per table, in the header (process-shared and robust
 * when the table lives in a shared segment).  Functions named *_lock_held
 * must be called with it held; they never block, call back or allocate
 * anything but table memory.  Callers (the Python binding) encode values
 * before taking the lock and decode copies after releasing it.  A shared
 * table can also be read without the lock (fc_get_optimistic; the rings
 * below), which every lock holder allows for by keeping `seq` odd while it
 * holds the lock.
 *
 * Damage: a shared segment is a file that any process of its user can
 * write, so a stray write, a bit flip or a bug elsewhere may leave any word
 * of it wrong, and every process that maps it would follow that word again
 * after every restart.  So a table whose memory says where its entries lie
 * (fc_mem.hi != 0: shared segments) trusts nothing it reads there: every
 * offset it follows, under the lock as well as without it, is checked
 * against the arena (a range and an alignment test) before use; every walk
 * (a hash chain, the LRU list, the access queue) is bounded by the number
 * of entries the arena could hold; an entry's key and value must lie inside
 * its block and the arena, and its value type be one the binding decodes.
 * The layout (buckets, rings, arena) is taken from the segment only once,
 * when it is opened and checked, and never re-read from it.  Damage found
 * by an operation marks the memory damaged (fc_mem.damaged; the allocator
 * does the same for its free lists and block headers); the operation stops
 * following anything and, before it returns, the table is repaired as after
 * a lock holder that died mid-write: every entry dropped, the allocator
 * rebuilt from nothing, the repair counted (fc_header.repairs, and for the
 * binding to report, fc_table.unreported_repairs).  The operation then
 * answers as the emptied table would (a get misses, a set stores).  A cache
 * may lose data; damage never makes it crash, loop or return a value read
 * from outside an entry.  A private table (malloc'ed, in no file) checks
 * nothing, and costs nothing for it.
 *
 * Invariants (checked by fc_table_check, and after every mutation in
 * FC_DEBUG builds):
 *   - every entry is on the LRU list exactly once and in the bucket its hash
 *     selects exactly once; the list and the index hold `count` entries;
 *   - `bytes` is the sum of key and value lengths of all entries;
 *   - the access queue holds each queued entry once, live or zombie; every
 *     entry marked queued is on it, and zombies are on nothing else;
 *   - no two entries have the same key.
 */
#ifndef FC_TABLE_H
#define FC_TABLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t fc_off; /* 0 is the null offset */

/* Memory interface.  alloc returns 0 on failure and never moves the base. */
typedef struct fc_mem {
    uintptr_t base;
    fc_off (*alloc)(struct fc_mem *mem, size_t size);
    void (*free)(struct fc_mem *mem, fc_off off, size_t size);
    /* Optional (shared segments): forget every allocation but the table's
     * fixed parts; called only when the table holds no entry.  Only for
     * tables placed with fc_table_init_at, whose header and buckets are not
     * allocations. */
    void (*reset)(struct fc_mem *mem);
    /* Optional: the largest block alloc could ever return, for refusing a
     * value that can never fit before evicting anything for it. */
    size_t max_block;
    /* Shared segments: every entry lies within [lo, hi), and every offset
     * followed (by a reader without the lock and by a lock holder) is
     * checked against these (see Damage above).  hi == 0: memory no other
     * process writes (a private heap), where nothing is checked. */
    fc_off lo, hi;
    /* Set when damage is found in this memory (by the table, or by the
     * allocator in its own structures); the table repairs and clears it
     * before the operation returns. */
    int damaged;
    void *ctx;
} fc_mem;

/* The malloc-backed memory of a private (per-process) table.  A memory set
 * up by hand must zero the fields it does not use. */
void fc_mem_heap_init(fc_mem *mem);

#define FC_PTR(mem, off) ((void *)((mem)->base + (uintptr_t)(off)))
#define FC_OFF(mem, ptr) ((fc_off)((uintptr_t)(ptr) - (mem)->base))

typedef struct fc_link {
    fc_off prev; /* towards more recently used */
    fc_off next; /* towards less recently used */
} fc_link;

/* Value types the binding stores.  The table itself only interprets
 * FC_VT_INT64 (for in-place incr); the rest are opaque bytes. */
enum {
    FC_VT_PICKLE = 0,
    FC_VT_NONE = 1,
    FC_VT_TRUE = 2,
    FC_VT_FALSE = 3,
    FC_VT_INT64 = 4, /* 8 bytes, native endian */
    FC_VT_FLOAT = 5, /* 8 bytes, native double */
    FC_VT_STR = 6,   /* UTF-8 */
    FC_VT_BYTES = 7,
    FC_VT_CODEC = 8,         /* fc_codec.c's format: a version byte, then the value */
    FC_VT_LAST = FC_VT_CODEC /* a damaged segment's entry of another type is refused */
};

typedef struct fc_entry {
    fc_link lru; /* first member: an entry's offset is its link's offset */
    fc_off hnext;
    uint64_t hash;
    uint64_t gen;   /* table generation when the value was last written */
    double expires; /* meaningful only when !never */
    /* Serve-stale grace: seconds past `expires` during which the expired
     * entry is kept (a get answers a miss but leaves it) for
     * fc_get_stale_lock_held.  0: none; every write but touch and incr
     * resets it (fc_mark_stale_lock_held sets it). */
    double stale;
    uint32_t klen;
    uint32_t vlen;
    uint32_t cap; /* bytes available after the header */
    uint8_t vtype;
    uint8_t never;  /* 1: no expiry (timeout None) */
    uint8_t queued; /* on the table's access queue (shared tables) */
    uint8_t zombie; /* removed, freed when the queue is next drained */
    uint64_t stamp; /* access clock value of the last use (shared tables) */
    fc_off qnext;   /* next on the access queue */
    char data[];    /* key bytes, then value bytes */
} fc_entry;

typedef struct fc_stats {
    uint64_t hits, misses, sets, deletes, evictions, expirations;
} fc_stats;

/* Gets without the lock (shared tables).  A reader looks its key up with
 * no lock at all, validating what it read against the header's `seq`
 * (odd while a lock holder may be writing; see fc_get_optimistic).  It
 * cannot move the entry in the LRU list or count the hit in the header, so
 * it appends the use to a ring of its own in the segment, and counts hits
 * and misses there; a lock holder drains every ring into the access queue
 * before anything reads the LRU order.  A use names its entry by offset and
 * hash and is applied only when an entry with both is still indexed, so a
 * use of an entry removed meanwhile is dropped, never written anywhere.
 *
 * Uses carry stamps from CLOCK_MONOTONIC, which is one clock for every
 * process of the host, so uses and locked operations of different
 * processes are ordered as they happened.  A reader publishes its use and
 * only then re-reads seq; a drain makes seq odd and only then reads the
 * rings (both with full fences), so a use the drain missed always belongs
 * to a read that fails validation and is retried.  That is why a use whose
 * stamp is older than the last drain is dropped (`drained_at`): it is such
 * a retried read's, and applying it would break the rule that entries on
 * the queue were used after every entry already ordered. */
#define FC_RING_LEN 1024

typedef struct fc_use {
    fc_off off;
    uint64_t hash;
    uint64_t stamp;
} fc_use;

typedef struct fc_ring {
    uint64_t owner;        /* process id of the claimer; 0: free (CAS) */
    uint64_t hits, misses; /* answered without the lock (owner only) */
    uint64_t head;         /* uses written (owner; release) */
    char pad0_[32];
    uint64_t tail; /* uses drained (lock holder; release) */
    char pad1_[56];
    fc_use use[FC_RING_LEN];
} fc_ring;

typedef struct fc_header {
    uint64_t magic;
    /* 1: a process-shared robust lock, fixed buckets, entries evicted (LRU)
     * when memory runs out. */
    uint32_t shared;
    uint32_t dirty; /* 1 while a lock holder may be mid-write */
    pthread_mutex_t lock;
    uint64_t clock; /* access clock (shared tables) */
    fc_off queue;   /* entries used since the LRU list was last ordered */
    /* Shared tables: odd while a lock holder may be changing anything
     * (bumped on taking and on releasing the lock), for readers without the
     * lock.  Alone on its cache line: writers' lock traffic stays off it. */
    char pad0_[64];
    uint64_t seq;
    /* Repairs of damage (see Damage above), written only by a repair.  It
     * was padding before: a segment from an earlier build reads 0. */
    uint64_t repairs;
    char pad1_[48];
    fc_link root;      /* LRU sentinel */
    fc_off buckets;    /* fc_off[nbuckets] */
    uint64_t nbuckets; /* power of two */
    uint64_t count;
    uint64_t bytes; /* sum of klen + vlen */
    uint64_t gen;
    uint64_t seed[2];
    fc_stats stats;
    fc_off rings; /* fc_ring[nrings] (shared tables; may be 0) */
    uint64_t nrings;
    uint64_t drained_at; /* clock when the rings were last drained */
} fc_header;

typedef struct fc_table {
    fc_mem *mem;
    fc_header *h;
    int stats_off; /* this process does not count (for measuring their cost) */
    /* Stamps for the LRU order of shared tables: CLOCK_MONOTONIC in
     * nanoseconds (tests may substitute their own). */
    uint64_t (*clock)(void);
    /* A shared table's fixed layout (it never grows its buckets), copied
     * when the table is set up or attached, so that a reader without the
     * lock touches no header cache line a lock holder writes.  ro_buckets
     * is NULL for a private table.  A lock holder uses them too: the
     * layout is read from a segment once, when it is checked (Damage). */
    fc_off *ro_buckets;
    uint64_t ro_mask;
    fc_ring *ro_rings;
    uint64_t ro_nrings;
    /* Repairs this process made that the binding has not reported yet
     * (fc_table_take_repairs). */
    uint64_t unreported_repairs;
} fc_table;

/* Results of table operations. */
enum {
    FC_OK = 0,
    FC_MISS = 1,      /* absent, or expired (and then removed) */
    FC_NOTINT = 2,    /* incr: the value is not an in-place integer */
    FC_CHANGED = 3,   /* replace: the entry was rewritten since it was read */
    FC_ENOMEM = -1,   /* table memory exhausted; nothing was changed */
    FC_ELOCK = -2,    /* the lock could not be taken */
    FC_EKEY = -3,     /* a key longer than 4 GiB */
    FC_ETOOBIG = -4,  /* larger than the table's memory could ever hold */
    FC_EFULL = -5,    /* fc_get_optimistic: this process's ring is full */
    FC_ECORRUPT = -6, /* damage that a repair could not clear (see Damage) */
};

typedef struct fc_key {
    const char *p;
    size_t n;
    uint64_t hash;
} fc_key;

/* Life cycle.  init allocates the header and buckets from mem; shared=1
 * makes the mutex process-shared and robust.  destroy frees everything. */
int fc_table_init(fc_table *t, fc_mem *mem, int shared, uint64_t seed0, uint64_t seed1);
void fc_table_destroy(fc_table *t);

/* A shared table placed at fixed offsets of a segment: the header at hdr,
 * a bucket array of nbuckets (a power of two, never grown) at buckets.
 * attach opens one that another process initialised (FC_ELOCK if the
 * header is not a table's). */
int fc_table_init_at(fc_table *t, fc_mem *mem, fc_off hdr, fc_off buckets, uint64_t nbuckets,
                     fc_off rings, uint64_t nrings, uint64_t seed0, uint64_t seed1);

/* Bytes for nrings rings (placed 64-byte aligned by the caller). */
static inline size_t fc_rings_size(uint64_t nrings) { return (size_t)nrings * sizeof(fc_ring); }
int fc_table_attach(fc_table *t, fc_mem *mem, fc_off hdr);

/* attach for a segment whose layout the caller knows (fc_shm derives it
 * from the segment's size): the table uses that layout, and only compares
 * the header's copy of it (and its magic and shared flag) with it; when
 * any differs, the table is marked damaged, and the next lock holder
 * repairs it, rewriting them (see Damage). */
int fc_table_attach_at(fc_table *t, fc_mem *mem, fc_off hdr, fc_off buckets, uint64_t nbuckets,
                       fc_off rings, uint64_t nrings);

/* For a shared table just attached: when its lock is free, takes it (never
 * waiting) and checks what every operation starts from (the bucket array,
 * the LRU root, the access queue, the counts), and repairs the table when
 * any of it is damaged.  A bounded, cheap pass: no entry is read.  FC_OK
 * also when the lock is busy (then the operations check as they go);
 * FC_ELOCK when the lock itself is unusable (damaged). */
int fc_table_validate(fc_table *t);

/* How many repairs this process made since the last call (for the binding
 * to report; see Damage). */
uint64_t fc_table_take_repairs(fc_table *t);

/* Hash of key bytes with the table's seed (SipHash-1-3). */
uint64_t fc_hash(const fc_table *t, const void *p, size_t n);

/* The lock.  fc_table_lock blocks; fc_table_trylock returns FC_OK or
 * FC_ELOCK when it is held.  Either repairs the table when the previous
 * owner died holding it (shared tables).  fc_table_reinit_lock is for a
 * fork child, whose copy of the lock may be held by a thread that does not
 * exist there (a no-op for shared tables: their lock belongs to every
 * process and is released by its holder in the parent).
 *
 * Shared tables mark themselves dirty while locked; when the lock comes
 * back with EOWNERDEAD from a holder that died dirty, every entry is
 * dropped and the memory reset, since that holder may have been half way
 * through relinking.  A cache may lose data; it never returns garbage. */
int fc_table_lock(fc_table *t);
int fc_table_trylock(fc_table *t);
struct timespec;
int fc_table_timedlock(fc_table *t, const struct timespec *until); /* CLOCK_REALTIME */
void fc_table_unlock(fc_table *t);
int fc_table_reinit_lock(fc_table *t);

/* A spin-wait hint to the CPU, for waiters on the lock and readers waiting
 * for seq to turn even. */
static inline void fc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A hint for waiters: 1 when a shared table's lock looks held (its dirty
 * mark is set).  Reading it shares the lock's cache line instead of taking
 * it from the holder, as a failed trylock would; a waiter spins on this and
 * tries the lock only when it looks free.  Always 0 for private tables. */
static inline int fc_table_lock_busy(const fc_table *t)
{
    return t->ro_buckets != NULL && __atomic_load_n(&t->h->dirty, __ATOMIC_RELAXED) != 0;
}

static inline const char *fc_entry_key(const fc_entry *e) { return e->data; }
static inline const char *fc_entry_value(const fc_entry *e) { return e->data + e->klen; }

/* Find a live entry; when it has expired, remove it and report a miss.
 * lru=1 moves a hit to the most-recent end (get, incr), lru=0 does not
 * (has_key).  The returned entry stays valid until the lock is released or
 * the table is next modified. */
fc_entry *fc_get_lock_held(fc_table *t, const fc_key *k, double now, int lru);

/* Rings (see above).  claim takes a free ring for `owner` (a process id)
 * and returns its index, or -1 when every ring is taken; release gives it
 * back (its undrained uses stay valid).  reclaim (lock held) frees the
 * rings whose owner `alive` says is gone and returns how many. */
int fc_ring_claim(fc_table *t, uint64_t owner);
void fc_ring_release(fc_table *t, int ring);
int fc_rings_reclaim_lock_held(fc_table *t, int (*alive)(uint64_t owner));

/* Applies every ring's uses to the access queue (lock held). */
void fc_rings_drain_lock_held(fc_table *t);

/* A get without the lock, through ring `ring` of this process: looks k up
 * and copies its value into buf, validated against seq.  FC_OK: a live
 * hit, its use logged, with vtype, vlen and gen filled (the value in buf).
 * FC_MISS: no such key.  FC_EFULL: the ring is full (drain it under the
 * lock).  FC_ELOCK: not decided without the lock (writers kept the table
 * busy, the entry has expired, or its value is larger than bufcap): take
 * the lock and do it the usual way.  With buf NULL it only tells whether a
 * live entry exists (has_key: not a use, nothing logged or copied). */
int fc_get_optimistic(fc_table *t, int ring, const fc_key *k, double now, char *buf, size_t bufcap,
                      int *vtype, size_t *vlen, uint64_t *gen);

/* The counters: the header's plus every ring's; reset zeroes them all
 * (lock held). */
void fc_stats_sum(const fc_table *t, fc_stats *out);
void fc_stats_reset_lock_held(fc_table *t);

/* Find an entry whether or not it has expired; no side effects (but the
 * repair of damage it finds). */
fc_entry *fc_peek_lock_held(fc_table *t, const fc_key *k);

/* set: when count >= max_entries, cull first (all entries when
 * cull_frequency == 0, else count // cull_frequency from the LRU end); then
 * store the value as the most recent entry.  On a private table FC_ENOMEM
 * leaves the table as it was (memory is reserved before anything is culled
 * or replaced).  A shared table instead evicts from the LRU end until the
 * entry fits, so it only fails with FC_ETOOBIG (checked before evicting) or,
 * when even an emptied, reset segment cannot hold it, FC_ENOMEM. */
int fc_set_lock_held(fc_table *t, const fc_key *k, int vtype, const void *v, size_t vlen, int never,
                     double expires, int64_t max_entries, int64_t cull_frequency);

/* Serve-stale (get_or_set's grace period).  mark: gives the entry of k a
 * grace of `stale` seconds past its expiry (after the set or add that just
 * stored it, under the same lock); 1 when found.  get_stale: the entry
 * whether live (*stale = 0) or expired but within its grace (*stale = 1),
 * moved to the most-recent end either way; NULL when absent or expired
 * past its grace (then removed, as a get removes it). */
int fc_mark_stale_lock_held(fc_table *t, const fc_key *k, double stale);
fc_entry *fc_get_stale_lock_held(fc_table *t, const fc_key *k, double now, int *stale);

/* add: store only when the key is absent or expired.  Returns 1 when
 * stored, 0 when a live entry exists, FC_ENOMEM. */
int fc_add_lock_held(fc_table *t, const fc_key *k, int vtype, const void *v, size_t vlen, int never,
                     double expires, int64_t max_entries, int64_t cull_frequency, double now);

/* touch: new expiry for a live entry (1); 0 when absent or expired, which
 * leaves an expired entry in place. */
int fc_touch_lock_held(fc_table *t, const fc_key *k, int never, double expires, double now);

/* delete: 1 when an entry (even an expired one) was removed, else 0. */
int fc_delete_lock_held(fc_table *t, const fc_key *k);

/* incr on an FC_VT_INT64 value: adds delta in place, keeps the expiry,
 * moves it to the most-recent end.  FC_MISS when absent/expired (removed),
 * FC_NOTINT when the value is of another type or the sum would overflow
 * (then *found is the entry, unchanged, for the caller to copy out). */
int fc_incr_lock_held(fc_table *t, const fc_key *k, int64_t delta, double now, int64_t *result,
                      fc_entry **found);

/* Replace the value of the entry last written at generation `gen`, keeping
 * its expiry and moving it to the most-recent end; no culling (incr on any
 * other value type, done as read / compute / compare-and-swap).  FC_CHANGED
 * when it is gone or was rewritten since. */
int fc_replace_lock_held(fc_table *t, const fc_key *k, uint64_t gen, int vtype, const void *v,
                         size_t vlen);

void fc_clear_lock_held(fc_table *t);

/* Entries from the most recent: calls fn for each until it returns non-zero
 * (orders the LRU list first, hence not const). */
int fc_foreach_lock_held(fc_table *t, int (*fn)(const fc_entry *e, void *arg), void *arg);

/* Walks the whole table and checks the invariants above.  0 when they hold,
 * else a negative number naming the first broken one (see fc_table.c).
 * Safe on a damaged table (bounded, every offset checked); repairs nothing. */
int fc_table_check(const fc_table *t);

/* fc_table_check, then that every entry's hash is this table's hash of its
 * key: an entry hashed for another table (other seeds) sits in a chain where
 * lookups never find it, and a second entry with the same key can then be
 * added beside it.  -23 when one is found.  Not part of fc_table_check
 * because tests force hashes to build collision chains. */
int fc_table_check_keys(const fc_table *t);

#ifdef FC_DEBUG
/* A failed check aborts, but for a table in a shared segment, whose memory
 * any process may have damaged: that is marked damaged (and reported on
 * stderr), and the operation repairs it.
 *
 * A full check walks the entries and every bucket.  It runs after every
 * mutation while that is cheap (under 4096 entries and buckets); a table
 * with more buckets (a shared one: 64 per 64 KiB of segment) is checked
 * after one mutation in every nbuckets / 4096, so a debug build stays within
 * a constant factor of a release build; beyond 4096 entries, never. */
int fc_table_check_due(const fc_table *t);
#define FC_ASSERT_CONSISTENT(t)                                      \
    do {                                                             \
        if (fc_table_check_due(t)) {                                 \
            int rc_ = fc_table_check(t);                             \
            if (rc_ != 0)                                            \
                fc_table_check_failed((t), rc_, __FILE__, __LINE__); \
        }                                                            \
    } while (0)
void fc_table_check_failed(const fc_table *t, int rc, const char *file, int line);
#else
#define FC_ASSERT_CONSISTENT(t) ((void)0)
#endif

#endif /* FC_TABLE_H */
