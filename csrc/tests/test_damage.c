/*
 * test_damage.c - a shared segment damaged at random never makes the table
 * crash, hang or read outside its memory; the damage is found and repaired.
 *
 * Each trial runs in a child process of its own, so that a crash is counted
 * as a signal instead of ending the run (and a watchdog alarm turns a hang
 * into one).  A trial:
 *   1. creates a segment (fc_shm_open, a file in a private temporary
 *      directory) and fills it: sets of mixed sizes and value types, some
 *      already expired, deletes that leave free blocks behind, gets with
 *      the lock (entries on the access queue) and without it (uses in a
 *      ring);
 *   2. damages one to four 8-byte words: a bit flipped, or the word
 *      overwritten with random bits, with a plausible arena offset, or with
 *      the offset of a live entry (cycles, shared nodes).  Where: the bucket
 *      array, the arena (entries, block headers, free-list links), the
 *      rings, the table header or the segment header (layout and free-list
 *      heads), or anywhere at all, the lock included;
 *   3. runs every operation, on the mapping it has and on a second one
 *      opened afterwards (which must succeed, or fail with a message when
 *      the header is damaged), in either order: get with and without the
 *      lock, has_key, peek, set, add, delete, incr, replace, touch, the
 *      iteration, sets that cull (every cull frequency), a ring drain,
 *      stats, the table and heap checkers;
 *   4. checks what came back: every entry returned lies inside the arena
 *      with its key and value, every result is one the operation's contract
 *      allows (a set on a damaged table still stores), and after a clear the
 *      table and the heap pass their checkers again.
 * The lock is taken with trylock: damage to the lock word itself may leave
 * it looking held for ever, which such a trial reports and counts.
 *
 * It needs nothing from this version but the public API, so it also builds
 * against a version without damage checks, where it counts the crashes:
 *   gcc ... -DFC_OLD_TABLE -I OLD/csrc test_damage.c OLD/csrc/fc_shm.c OLD/csrc/fc_table.c
 *
 *   ./test_damage [trials] [seed] [first]      (first: the index of the first trial)
 * Output: one line per failed trial, then the totals; the exit status is
 * non-zero when any trial crashed, hung or failed a check.
 */
#include "fc_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WATCHDOG_S 30
#define SEG_BYTES (1u << 20)
#define NKEYS 600
#define KEYBUF 64
#define NOW 1.7e9
#define BIG INT64_MAX

/* ------------------------------------------------------------------------ */
/* Randomness and totals                                                    */

static uint64_t g_rng;
static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

/* Counted by the children, in memory they share with the parent. */
typedef struct totals {
    long ops, repairs, reopen_refused, lock_unusable, checks_bad, hits;
} totals;
static totals *g_tot;

/* ------------------------------------------------------------------------ */
/* A trial                                                                  */

static char g_dir[64];
static const char *g_why; /* what failed, for the child's last words */
static int g_failed;

#define EXPECT(cond)                                                                          \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "  %s:%d: expected %s (%s)\n", __FILE__, __LINE__, #cond, g_why); \
            g_failed = 1;                                                                     \
        }                                                                                     \
    } while (0)

typedef struct seg {
    fc_shm shm;
    fc_mem mem;
    fc_table t;
    int open;
} seg;

static void key_of(int i, char *buf, fc_key *k, const fc_table *t)
{
    int n = snprintf(buf, KEYBUF, "key:%d:%s", i, i % 7 ? "x" : "a-longer-key-for-other-sizes");
    k->p = buf;
    k->n = (size_t)n;
    k->hash = fc_hash(t, buf, (size_t)n);
}

/* An entry handed out by the table lies in the arena, key and value. */
static int entry_inside(const seg *s, const fc_entry *e)
{
    uintptr_t lo = s->mem.base + s->mem.lo, hi = s->mem.base + s->mem.hi;
    uintptr_t p = (uintptr_t)e;
    return p >= lo && p + sizeof(fc_entry) <= hi &&
           p + sizeof(fc_entry) + (uint64_t)e->klen + e->vlen <= hi;
}

static int visit(const fc_entry *e, void *arg)
{
    const seg *s = arg;
    EXPECT(entry_inside(s, e));
    return 0;
}

/* A value of some type and size; expiry in the past for some. */
static size_t pick_value(char *v, int *vtype)
{
    static const int types[] = {FC_VT_BYTES, FC_VT_STR,  FC_VT_PICKLE,
                                FC_VT_INT64, FC_VT_NONE, FC_VT_CODEC};
    *vtype = types[below(6)];
    if (*vtype == FC_VT_INT64) {
        int64_t x = (int64_t)below(1000);
        memcpy(v, &x, 8);
        return 8;
    }
    if (*vtype == FC_VT_NONE)
        return 0;
    uint64_t r = below(100);
    size_t n = r < 70 ? below(64) : r < 97 ? 64 + below(2000) : 20000 + below(20000);
    memset(v, 'a' + (int)below(26), n);
    return n;
}

static int lock(seg *s)
{
    int rc = fc_table_trylock(&s->t);
    if (rc != FC_OK) {
        __atomic_fetch_add(&g_tot->lock_unusable, 1, __ATOMIC_RELAXED);
        return -1;
    }
    return 0;
}

static void populate(seg *s)
{
    static char v[40000];
    char kb[KEYBUF];
    fc_key k;
    int nkeys = 50 + (int)below(NKEYS - 50);
    g_why = "populate";
    if (lock(s) != 0)
        return;
    for (int i = 0; i < nkeys; i++) {
        int vt;
        size_t n = pick_value(v, &vt);
        key_of(i, kb, &k, &s->t);
        double exp = below(8) == 0 ? NOW - 1 : NOW + 1000;
        EXPECT(fc_set_lock_held(&s->t, &k, vt, v, n, below(3) == 0, exp, BIG, 3) == FC_OK);
    }
    for (int i = 0; i < nkeys; i += 1 + (int)below(6)) { /* free blocks between entries */
        key_of(i, kb, &k, &s->t);
        fc_delete_lock_held(&s->t, &k);
    }
    for (int i = 0; i < nkeys / 3; i++) { /* entries on the access queue */
        key_of((int)below((uint64_t)nkeys), kb, &k, &s->t);
        fc_get_lock_held(&s->t, &k, NOW, 1);
    }
    fc_table_unlock(&s->t);
    int ring = fc_ring_claim(&s->t, (uint64_t)getpid());
    char buf[256];
    int vt;
    size_t vlen;
    uint64_t gen;
    for (int i = 0; ring >= 0 && i < nkeys / 3; i++) { /* uses in a ring */
        key_of((int)below((uint64_t)nkeys), kb, &k, &s->t);
        fc_get_optimistic(&s->t, ring, &k, NOW, buf, sizeof buf, &vt, &vlen, &gen);
    }
}

/* Offsets of live entries, for damage that points at them. */
typedef struct live {
    fc_off off[NKEYS];
    int n;
    const seg *s;
} live;

static int collect(const fc_entry *e, void *arg)
{
    live *l = arg;
    if (l->n < NKEYS)
        l->off[l->n++] = FC_OFF(&l->s->mem, e);
    return 0;
}

static void damage(seg *s)
{
    /* the layout, read before any of it is damaged */
    const fc_shm_header h = *(const fc_shm_header *)s->shm.base;
    const fc_header th = *s->t.h;
    live l = {.n = 0, .s = s};
    if (lock(s) == 0) {
        fc_foreach_lock_held(&s->t, collect, &l);
        fc_table_unlock(&s->t);
    }
    int times = 1 + (int)below(4);
    for (int i = 0; i < times; i++) {
        /* where */
        uint64_t lo, hi, r = below(100);
        if (r < 25) { /* the bucket array */
            lo = h.buckets;
            hi = h.buckets + h.nbuckets * sizeof(fc_off);
        }
        else if (r < 70) { /* the arena */
            lo = h.arena_start;
            hi = h.arena_end;
        }
        else if (r < 75) { /* the rings */
            lo = th.rings;
            hi = th.rings + fc_rings_size(th.nrings);
        }
        else if (r < 85) { /* the table header, but its lock */
            lo = h.table + offsetof(fc_header, lock) + sizeof(pthread_mutex_t);
            hi = h.table + sizeof(fc_header);
        }
        else if (r < 95) { /* the segment header: layout and free lists */
            lo = 0;
            hi = sizeof(fc_shm_header);
        }
        else { /* anywhere, the lock included */
            lo = 0;
            hi = s->shm.size;
        }
        uint64_t at = (lo + below(hi - lo)) & ~(uint64_t)7;
        uint64_t *w = (uint64_t *)((char *)s->shm.base + at);
        /* what */
        r = below(100);
        if (r < 45)
            *w ^= (uint64_t)1 << below(64);
        else if (r < 65)
            *w = rnd();
        else if (r < 85)
            *w = (h.arena_start + below(h.arena_end - h.arena_start)) &
                 ~(uint64_t)(below(2) ? 15 : 7);
        else if (l.n)
            *w = l.off[below((uint64_t)l.n)];
        else
            *w = 0;
    }
}

/* Every operation, with its results checked against what its contract
 * allows. */
static void run_ops(seg *s)
{
    static char v[40000];
    char kb[KEYBUF], buf[256];
    fc_key k;
    int ring = fc_ring_claim(&s->t, (uint64_t)getpid() + 1);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < NKEYS; i += 1 + (int)below(4)) {
            key_of(i, kb, &k, &s->t);
            if (ring >= 0) {
                g_why = "get without the lock";
                int vt;
                size_t vlen;
                uint64_t gen;
                int rc = fc_get_optimistic(&s->t, ring, &k, NOW, buf, sizeof buf, &vt, &vlen, &gen);
                EXPECT(rc == FC_OK || rc == FC_MISS || rc == FC_ELOCK || rc == FC_EFULL);
                EXPECT(rc != FC_OK || vlen <= sizeof buf);
                rc = fc_get_optimistic(&s->t, ring, &k, NOW, NULL, 0, NULL, NULL, NULL);
                EXPECT(rc == FC_OK || rc == FC_MISS || rc == FC_ELOCK || rc == FC_EFULL);
            }
            if (lock(s) != 0)
                return;
            __atomic_fetch_add(&g_tot->ops, 1, __ATOMIC_RELAXED);
            int vt;
            size_t n;
            switch (below(13)) {
            case 0:
            case 1:
            case 12: {
                g_why = "get";
                const fc_entry *e = fc_get_lock_held(&s->t, &k, NOW, (int)below(2));
                EXPECT(e == NULL || entry_inside(s, e));
                if (e != NULL)
                    __atomic_fetch_add(&g_tot->hits, 1, __ATOMIC_RELAXED);
                break;
            }
            case 2: {
                g_why = "peek";
                const fc_entry *e = fc_peek_lock_held(&s->t, &k);
                EXPECT(e == NULL || entry_inside(s, e));
                break;
            }
            case 3:
                g_why = "set";
                n = pick_value(v, &vt);
                EXPECT(fc_set_lock_held(&s->t, &k, vt, v, n, 1, 0, BIG, 3) == FC_OK);
                break;
            case 4: {
                /* now and then: culling empties the table */
                g_why = "set that culls";
                static const int64_t freq[] = {0, 1, 2, 3, 7};
                int64_t max = below(20) ? BIG : (int64_t)below(400);
                n = pick_value(v, &vt);
                EXPECT(fc_set_lock_held(&s->t, &k, vt, v, n, 1, 0, max, freq[below(5)]) == FC_OK);
                break;
            }
            case 5: {
                g_why = "add";
                n = pick_value(v, &vt);
                int rc = fc_add_lock_held(&s->t, &k, vt, v, n, 0, NOW + 5, BIG, 3, NOW);
                EXPECT(rc == 0 || rc == 1);
                break;
            }
            case 6:
                g_why = "delete";
                EXPECT(fc_delete_lock_held(&s->t, &k) <= 1);
                break;
            case 7: {
                g_why = "incr";
                int64_t sum;
                fc_entry *found;
                int rc = fc_incr_lock_held(&s->t, &k, 3, NOW, &sum, &found);
                EXPECT(rc == FC_OK || rc == FC_MISS || rc == FC_NOTINT);
                EXPECT(rc != FC_NOTINT || entry_inside(s, found));
                break;
            }
            case 8: {
                g_why = "replace";
                const fc_entry *e = fc_peek_lock_held(&s->t, &k);
                uint64_t gen = e != NULL ? e->gen : below(100);
                n = pick_value(v, &vt);
                int rc = fc_replace_lock_held(&s->t, &k, gen, vt, v, n);
                EXPECT(rc == FC_OK || rc == FC_CHANGED);
                break;
            }
            case 9: {
                g_why = "touch";
                int rc = fc_touch_lock_held(&s->t, &k, 0, NOW + 10, NOW);
                EXPECT(rc == 0 || rc == 1);
                break;
            }
            case 10: {
                g_why = "iteration";
                EXPECT(fc_foreach_lock_held(&s->t, visit, s) == 0);
                break;
            }
            default: {
                g_why = "drain, stats, checkers";
                fc_rings_drain_lock_held(&s->t);
                fc_stats st;
                fc_stats_sum(&s->t, &st);
                if (fc_table_check(&s->t) != 0 || fc_shm_heap_check(&s->mem, NULL) != 0)
                    __atomic_fetch_add(&g_tot->checks_bad, 1, __ATOMIC_RELAXED);
                break;
            }
            }
            fc_table_unlock(&s->t);
        }
    }
    if (ring >= 0)
        fc_ring_release(&s->t, ring);
}

/* After a clear, the table and the heap are whole again. */
static void clear_and_check(seg *s)
{
    g_why = "clear";
    if (lock(s) != 0)
        return;
    fc_clear_lock_held(&s->t);
    int rc = fc_table_check(&s->t), hrc = fc_shm_heap_check(&s->mem, NULL);
    if (rc != 0 || hrc != 0)
        fprintf(stderr, "  after a clear: table check %d, heap check %d\n", rc, hrc);
    EXPECT(rc == 0 && hrc == 0);
    char kb[KEYBUF];
    fc_key k;
    key_of(1, kb, &k, &s->t);
    EXPECT(fc_set_lock_held(&s->t, &k, FC_VT_BYTES, "v", 1, 1, 0, BIG, 3) == FC_OK);
    EXPECT(fc_get_lock_held(&s->t, &k, NOW, 1) != NULL);
    fc_table_unlock(&s->t);
}

static int seg_open(seg *s, const char *path)
{
    char err[512] = "";
    memset(s, 0, sizeof *s);
    if (fc_shm_open(&s->shm, &s->mem, &s->t, path, SEG_BYTES, err, sizeof err) != 0) {
        /* refused: only with a message, and only a damaged header's */
        g_why = "reopen";
        EXPECT(err[0] != '\0');
        __atomic_fetch_add(&g_tot->reopen_refused, 1, __ATOMIC_RELAXED);
        return -1;
    }
    s->open = 1;
    return 0;
}

static void seg_done(seg *s)
{
#ifndef FC_OLD_TABLE
    if (s->open)
        __atomic_fetch_add(&g_tot->repairs, (long)fc_table_take_repairs(&s->t), __ATOMIC_RELAXED);
#endif
    if (s->open)
        fc_shm_close(&s->shm);
    s->open = 0;
}

static void trial(int n, uint64_t seed)
{
    char path[96];
    snprintf(path, sizeof path, "%s/seg%d", g_dir, n);
    g_rng = seed;
    seg a, b;
    if (seg_open(&a, path) != 0) {
        fprintf(stderr, "trial %d: cannot create %s\n", n, path);
        exit(2);
    }
    populate(&a);
    damage(&a);
    if (below(2)) { /* a process that maps it after the damage, first */
        if (seg_open(&b, path) == 0) {
            run_ops(&b);
            clear_and_check(&b);
        }
        run_ops(&a);
    }
    else {
        run_ops(&a);
        if (seg_open(&b, path) == 0) {
            run_ops(&b);
            clear_and_check(&b);
        }
    }
    clear_and_check(&a);
    seg_done(&b);
    seg_done(&a);
    unlink(path);
}

static void show(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

int main(int argc, char **argv)
{
    int trials = argc > 1 ? atoi(argv[1]) : 1000;
    uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
    int first = argc > 3 ? atoi(argv[3]) : 0; /* to replay one: TRIALS 1 SEED FIRST */
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/fc-damage-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    g_tot = mmap(NULL, sizeof *g_tot, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_tot == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    memset(g_tot, 0, sizeof *g_tot);
    int signals = 0, failures = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = first; i < first + trials; i++) {
        uint64_t tseed = seed * 0x100000001b3ULL + (uint64_t)i;
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        /* A trial's output (the table's FC_DEBUG reports of the damage it
         * repairs, and any failure) is shown only when it fails. */
        char log[96];
        snprintf(log, sizeof log, "%s/log%d", g_dir, i);
        if (pid == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 2);
                close(fd);
            }
            alarm(WATCHDOG_S);
            trial(i, tseed);
            exit(g_failed ? 1 : 0);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            show(log);
        unlink(log);
        if (WIFSIGNALED(status)) {
            signals++;
            fprintf(stderr, "trial %d (seed %#llx): killed by signal %d%s\n", i,
                    (unsigned long long)tseed, WTERMSIG(status),
                    WTERMSIG(status) == SIGALRM ? " (hung)" : "");
        }
        else if (WEXITSTATUS(status) != 0) {
            failures++;
            fprintf(stderr, "trial %d (seed %#llx): failed (exit %d)\n", i,
                    (unsigned long long)tseed, WEXITSTATUS(status));
        }
        char path[96];
        snprintf(path, sizeof path, "%s/seg%d", g_dir, i);
        unlink(path); /* a crashed trial's */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rmdir(g_dir);
    printf("test_damage: %d trials (seed %llu) in %.1f s: %d killed by a signal, %d failed; "
           "%ld locked operations (%ld hits), %ld repairs, %ld reopens refused, "
           "%ld with the lock unusable, %ld checker runs found damage\n",
           trials, (unsigned long long)seed,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, signals,
           failures, g_tot->ops, g_tot->hits, g_tot->repairs, g_tot->reopen_refused,
           g_tot->lock_unusable, g_tot->checks_bad);
    return signals || failures ? 1 : 0;
}
