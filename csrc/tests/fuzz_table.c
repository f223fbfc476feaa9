/*
 * fuzz_table.c - operation-stream fuzzer for fc_table against a reference
 * model of LocMemCache's semantics.
 *
 * The input bytes are decoded into a stream of operations (set, add, get,
 * has_key, peek, touch, delete, incr, replace, clear, time steps, and
 * set/add/replace/incr with every allocation failing) on a small key space,
 * with random value sizes and types, random expiries around a clock that
 * only moves forward, and random max_entries / cull_frequency.  The model is
 * deliberately naive: an array in LRU order (index 0 most recent) searched
 * linearly.  A shared table also gets gets without the lock
 * (fc_get_optimistic, through one of two rings, draining a full one), whose
 * uses must reach the LRU order exactly like locked gets.  After every
 * operation the table must equal the model entry by
 * entry and in order, fc_table_check must pass, and every key the model does
 * not hold must be unreachable.
 *
 * Builds:
 *   clang -fsanitize=fuzzer ...            libFuzzer target
 *   gcc -DFC_STANDALONE_FUZZ ...           ./fuzz_table [seed] [ops]
 *                                          ./fuzz_table -r FILE   (replay)
 * A standalone failure writes the failing input to
 * fuzz_table_failure.bin; FUZZ_TRACE=1 prints every operation.
 */
#include "fc_table.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 32
#define KMAX 208
#define MAXV 1100
#define BIG INT64_MAX

/* ------------------------------------------------------------------------ */
/* Failure reporting                                                        */

static const uint8_t *g_input;
static size_t g_input_len;
static long g_opno;
static int g_trace;
static char g_opdesc[256];

#define TRACE(...)                                             \
    do {                                                       \
        snprintf(g_opdesc, sizeof g_opdesc, __VA_ARGS__);      \
        if (g_trace)                                           \
            fprintf(stderr, "op %ld: %s\n", g_opno, g_opdesc); \
    } while (0)

static void fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: fuzz_table: %s\n  at op %ld: %s\n", file, line, what, g_opno, g_opdesc);
#ifdef FC_STANDALONE_FUZZ
    FILE *f = fopen("fuzz_table_failure.bin", "wb");
    if (f) {
        fwrite(g_input, 1, g_input_len, f);
        fclose(f);
        fprintf(stderr,
                "  input (%zu bytes) written to fuzz_table_failure.bin; replay with "
                "FUZZ_TRACE=1 ./fuzz_table -r fuzz_table_failure.bin\n",
                g_input_len);
    }
#endif
    abort();
}

#define REQUIRE(expr)                        \
    do {                                     \
        if (!(expr))                         \
            fail(__FILE__, __LINE__, #expr); \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */

static char g_keys[NKEYS][KMAX];
static size_t g_klen[NKEYS];

static void keys_init(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    for (int i = 0; i < NKEYS; i++) {
        char *k = g_keys[i];
        size_t n;
        /* clang-format off */
        switch (i) {
        case 0: n = 0; break;                               /* empty key */
        case 1: k[0] = '\0'; n = 1; break;                  /* "\0" */
        case 2: k[0] = k[1] = '\0'; n = 2; break;           /* "\0\0" */
        case 3: k[0] = 'a'; n = 1; break;                   /* "a" */
        case 4: k[0] = 'a'; k[1] = '\0'; n = 2; break;      /* "a\0" */
        case 5:
        case 6: /* long keys differing in the last byte */
            memset(k, 'L', 199);
            k[199] = (char)('x' + i - 5);
            n = 200;
            break;
        case 7: memcpy(k, "\xff\x00\x80:1:bin", 9); n = 9; break;
        default: n = (size_t)snprintf(k, KMAX, ":1:key%d", i); break;
        }
        /* clang-format on */
        g_klen[i] = n;
    }
}

/* The hash of key i: the real one, or forced collisions. */
static uint64_t key_hash(const fc_table *t, int mode, int i)
{
    switch (mode) {
    case 1: return 0;                          /* one chain */
    case 2: return (uint64_t)(i & 3) << 62;    /* same bucket, different hashes */
    case 3: return (uint64_t)(i & 1) * 0x1001; /* two chains */
    default: return fc_hash(t, g_keys[i], g_klen[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* The model                                                                */

typedef struct ment {
    int key;
    uint8_t vtype, never;
    uint32_t vlen;
    double expires;
    double stale; /* serve-stale grace past expires (0: none) */
    uint64_t ver; /* model write version: new on every value write */
    uint8_t val[MAXV];
} ment;

typedef struct model {
    int n;
    ment e[NKEYS]; /* e[0] is the most recently used */
    uint64_t sets, deletes, evictions;
} model;

static uint64_t g_ver;

static int m_find(const model *m, int key)
{
    for (int i = 0; i < m->n; i++)
        if (m->e[i].key == key)
            return i;
    return -1;
}

static int m_expired(const ment *e, double now) { return !e->never && e->expires <= now; }

/* Expired but within its serve-stale grace: gets miss and leave it. */
static int m_kept(const ment *e, double now) { return e->stale > 0 && e->expires + e->stale > now; }

static void m_remove(model *m, int i)
{
    memmove(&m->e[i], &m->e[i + 1], (size_t)(m->n - i - 1) * sizeof(ment));
    m->n--;
}

static void m_to_front(model *m, int i)
{
    if (i == 0)
        return;
    ment tmp = m->e[i];
    memmove(&m->e[1], &m->e[0], (size_t)i * sizeof(ment));
    m->e[0] = tmp;
}

/* LocMemCache._cull */
static void m_cull(model *m, int64_t cf)
{
    if (cf == 0) {
        m->evictions += (uint64_t)m->n;
        m->n = 0;
    }
    else if (cf > 0) {
        int64_t c = m->n / cf;
        m->n -= (int)c;
        m->evictions += (uint64_t)c;
    }
}

/* LocMemCache._set */
static void m_set(model *m, int key, int vtype, const uint8_t *v, uint32_t vlen, int never,
                  double expires, int64_t me, int64_t cf)
{
    if ((int64_t)m->n >= me)
        m_cull(m, cf);
    int i = m_find(m, key);
    if (i >= 0)
        m_remove(m, i);
    memmove(&m->e[1], &m->e[0], (size_t)m->n * sizeof(ment));
    m->n++;
    ment *e = &m->e[0];
    e->key = key;
    e->vtype = (uint8_t)vtype;
    e->vlen = vlen;
    memcpy(e->val, v, vlen);
    e->never = (uint8_t)(never != 0);
    e->expires = never ? 0 : expires;
    e->stale = 0;
    e->ver = ++g_ver;
    m->sets++;
}

/* ------------------------------------------------------------------------ */
/* Checking memory (heap, size-checked, can fail on demand)                 */

typedef struct chk_ctx {
    long live;
    int fail;
} chk_ctx;

static fc_off chk_alloc(fc_mem *mem, size_t size)
{
    chk_ctx *c = mem->ctx;
    if (c->fail)
        return 0;
    unsigned char *p = malloc(size + 16);
    if (!p)
        return 0;
    memcpy(p, &size, sizeof size);
    c->live++;
    return (fc_off)(uintptr_t)(p + 16);
}

static void chk_free(fc_mem *mem, fc_off off, size_t size)
{
    chk_ctx *c = mem->ctx;
    unsigned char *p = (unsigned char *)(uintptr_t)off - 16;
    size_t stored;
    memcpy(&stored, p, sizeof stored);
    REQUIRE(stored == size); /* freed with the size it was allocated with */
    c->live--;
    free(p);
}

/* ------------------------------------------------------------------------ */
/* Comparing table and model                                                */

struct cmp {
    const model *m;
    int i;
};

static int cmp_cb(const fc_entry *e, void *arg)
{
    struct cmp *c = arg;
    REQUIRE(c->i < c->m->n); /* the table holds more entries than the model */
    const ment *me = &c->m->e[c->i++];
    REQUIRE(e->klen == g_klen[me->key]);
    REQUIRE(memcmp(fc_entry_key(e), g_keys[me->key], e->klen) == 0); /* LRU order */
    REQUIRE(e->vtype == me->vtype);
    REQUIRE(e->vlen == me->vlen);
    REQUIRE(memcmp(fc_entry_value(e), me->val, e->vlen) == 0);
    REQUIRE(e->never == me->never);
    REQUIRE(e->never || e->expires == me->expires);
    REQUIRE(e->stale == me->stale);
    return 0;
}

/* full=0 skips the in-order comparison: walking the LRU list drains a
 * shared table's access queue, which must also be exercised long. */
static void verify(fc_table *t, const model *m, int hmode, int full)
{
    int rc = fc_table_check(t);
    if (rc != 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "fc_table_check returned %d", rc);
        fail(__FILE__, __LINE__, msg);
    }
    REQUIRE(t->h->count == (uint64_t)m->n);
    uint64_t bytes = 0;
    for (int i = 0; i < m->n; i++)
        bytes += g_klen[m->e[i].key] + m->e[i].vlen;
    REQUIRE(t->h->bytes == bytes);
    if (full) {
        struct cmp c = {m, 0};
        fc_foreach_lock_held(t, cmp_cb, &c);
        REQUIRE(c.i == m->n);
    }
    /* no key the model lacks (deleted, culled, expired and removed) is
     * reachable */
    for (int k = 0; k < NKEYS; k++) {
        fc_key key = {g_keys[k], g_klen[k], key_hash(t, hmode, k)};
        fc_entry *e = fc_peek_lock_held(t, &key);
        REQUIRE((e != NULL) == (m_find(m, k) >= 0));
    }
    REQUIRE(t->h->stats.sets == m->sets);
    REQUIRE(t->h->stats.deletes == m->deletes);
    REQUIRE(t->h->stats.evictions == m->evictions);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */

typedef struct rd {
    const uint8_t *p;
    size_t n, i;
} rd;

static uint8_t u8(rd *r) { return r->i < r->n ? r->p[r->i++] : 0; }

static uint64_t u64(rd *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | u8(r);
    return v;
}

static int64_t pick_int(rd *r)
{
    switch (u8(r) % 10) {
    case 0: return 0;
    case 1: return 1;
    case 2: return -1;
    case 3: return INT64_MAX;
    case 4: return INT64_MIN;
    case 5: return INT64_MAX - 1;
    case 6: return INT64_MIN + 1;
    case 7: return (int64_t)u8(r) - 128;
    default: return (int64_t)u64(r);
    }
}

static const int64_t k_max_entries[] = {BIG, -1, 0, 1, 2, 3, 5, 8, 16, 30, INT64_MIN, 1000};
static const int64_t k_cull[] = {3, 0, 1, 2, -1, -3, 4, 7, BIG, INT64_MIN};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct val {
    int vtype;
    uint32_t vlen;
    uint8_t b[MAXV];
} val;

static void pick_value(rd *r, val *v, int force_int)
{
    v->vtype = force_int ? FC_VT_INT64 : u8(r) % 8;
    if (v->vtype == FC_VT_INT64) {
        int64_t x = pick_int(r);
        v->vlen = 8;
        memcpy(v->b, &x, 8);
        return;
    }
    if (v->vtype == FC_VT_FLOAT) { /* 8 bytes, as the binding stores it (the table checks) */
        double d = (double)pick_int(r);
        v->vlen = 8;
        memcpy(v->b, &d, 8);
        return;
    }
    uint8_t sz = u8(r);
    v->vlen = (sz & 7) == 7 ? (uint32_t)u8(r) * 4 + 3 : (sz & 7) == 6 ? 0 : (uint32_t)(sz >> 3);
    uint8_t seed = u8(r);
    for (uint32_t i = 0; i < v->vlen; i++)
        v->b[i] = (uint8_t)(seed + i * 7);
}

static void pick_expiry(rd *r, double now, int *never, double *expires)
{
    uint8_t b = u8(r) % 8;
    *never = b < 2;
    *expires = b == 2 ? -1.0 : now + ((double)u8(r) - 64.0) / 16.0;
    if (*never)
        *expires = 0;
}

struct seen {
    int valid;
    uint64_t gen, ver;
};

/* ------------------------------------------------------------------------ */
/* One stream                                                               */

static long g_total_ops;

/* Stamps: a clock that ticks on every read, so the order is reproducible. */
static uint64_t g_tick;
static uint64_t tick_clock(void) { return ++g_tick; }

#define FUZZ_RINGS 2

static void run_stream(const uint8_t *data, size_t size)
{
    static model m, saved; /* big: not on the stack */
    static val v;
    struct seen seen[NKEYS];
    rd r = {data, size, 0};
    fc_mem mem;
    chk_ctx cc = {0, 0};
    fc_table t;

    keys_init();
    g_input = data;
    g_input_len = size;
    g_opno = 0;
    g_opdesc[0] = '\0';
    memset(&m, 0, sizeof m);
    memset(seen, 0, sizeof seen);

    uint8_t cfg = u8(&r);
    int shared = cfg & 1;
    int hmode = (cfg >> 1) & 3;
    int keyspace = 1 + u8(&r) % NKEYS;
    int64_t def_me = k_max_entries[u8(&r) % NELEM(k_max_entries)];
    int64_t def_cf = k_cull[u8(&r) % NELEM(k_cull)];
    double now = 1e9;

    memset(&mem, 0, sizeof mem);
    mem.base = 0;
    mem.alloc = chk_alloc;
    mem.free = chk_free;
    mem.reset = NULL;
    mem.max_block = SIZE_MAX;
    mem.ctx = &cc;
    REQUIRE(fc_table_init(&t, &mem, shared, u64(&r), u64(&r)) == FC_OK);
    fc_off rings = 0;
    if (shared) {
        /* Rings, placed the way fc_table_init_at places them in a segment;
         * heap entries may lie anywhere a user address can. */
        rings = mem.alloc(&mem, fc_rings_size(FUZZ_RINGS));
        REQUIRE(rings != 0);
        memset(FC_PTR(&mem, rings), 0, fc_rings_size(FUZZ_RINGS));
        t.h->rings = rings;
        t.h->nrings = FUZZ_RINGS;
        REQUIRE(fc_table_attach(&t, &mem, FC_OFF(&mem, t.h)) == FC_OK); /* sees them */
        REQUIRE(fc_ring_claim(&t, 100) == 0);
        REQUIRE(fc_ring_claim(&t, 200) == 1);
    }
    mem.lo = 4096;
    mem.hi = (fc_off)1 << 56;
    t.clock = tick_clock;
    TRACE("init shared=%d hmode=%d keyspace=%d max_entries=%lld cull=%lld", shared, hmode, keyspace,
          (long long)def_me, (long long)def_cf);
    verify(&t, &m, hmode, 1);

    while (r.i < r.n) {
        g_opno++;
        g_total_ops++;
        int op = u8(&r) % 16;
        int key = u8(&r) % keyspace;
        fc_key k = {g_keys[key], g_klen[key], key_hash(&t, hmode, key)};
        int64_t me = def_me, cf = def_cf;
        if (u8(&r) % 4 == 0) {
            me = k_max_entries[u8(&r) % NELEM(k_max_entries)];
            cf = k_cull[u8(&r) % NELEM(k_cull)];
        }
        int inject = 0;
        if (op == 14) {       /* an allocating operation with all allocations failing */
            inject = !shared; /* shared tables evict instead: not modelled */
            static const int sub[] = {0, 3, 11, 10};
            op = sub[u8(&r) % 4];
        }
        if (inject) {
            memcpy(&saved, &m, sizeof m);
            cc.fail = 1;
        }
        int i = m_find(&m, key);
        int rc = 0;
        if (shared && op == 6 && (u8(&r) & 1)) {
            /* has_key without the lock: no use, nothing copied */
            TRACE("optimistic has_key key=%d", key);
            rc = fc_get_optimistic(&t, 0, &k, now, NULL, 0, NULL, NULL, NULL);
            if (rc == FC_ELOCK) {
                REQUIRE(i >= 0 && m_expired(&m.e[i], now)); /* then the locked one */
            }
            else {
                REQUIRE(rc == (i >= 0 ? FC_OK : FC_MISS));
                op = -1;
            }
        }
        if (shared && op == 5) {
            /* a get without the lock, through one of the rings */
            int ring = u8(&r) & 1;
            char buf[512];
            int vt;
            size_t vl;
            uint64_t gen;
            TRACE("optimistic get key=%d ring=%d", key, ring);
            rc = fc_get_optimistic(&t, ring, &k, now, buf, sizeof buf, &vt, &vl, &gen);
            if (rc == FC_MISS) {
                REQUIRE(i < 0);
                op = -1;
            }
            else if (rc == FC_OK) {
                REQUIRE(i >= 0 && !m_expired(&m.e[i], now));
                REQUIRE(vl == m.e[i].vlen && memcmp(buf, m.e[i].val, vl) == 0);
                REQUIRE(vt == m.e[i].vtype);
                m_to_front(&m, i);
                op = -1;
            }
            else {
                /* expired, larger than buf, or a full ring: the locked get
                 * below, after draining the rings */
                REQUIRE(rc == FC_EFULL ||
                        (i >= 0 && (m_expired(&m.e[i], now) || m.e[i].vlen > sizeof buf)));
                op = rc == FC_EFULL ? 16 : 4;
            }
        }

        REQUIRE(fc_table_lock(&t) == FC_OK);
        if (op == 16) {
            fc_rings_drain_lock_held(&t);
            op = 4;
        }
        REQUIRE(t.h->dirty == (uint32_t)shared);
        int expect;
        int never;
        double expires;
        switch (op) {
        case 0:
        case 1:
        case 2: { /* set (2: an integer) */
            pick_value(&r, &v, op == 2);
            pick_expiry(&r, now, &never, &expires);
            TRACE("set key=%d vtype=%d vlen=%u never=%d exp=%+.4f me=%lld cf=%lld%s", key, v.vtype,
                  v.vlen, never, expires - now, (long long)me, (long long)cf,
                  inject ? " [alloc fails]" : "");
            rc = fc_set_lock_held(&t, &k, v.vtype, v.b, v.vlen, never, expires, me, cf);
            if (inject && rc == FC_ENOMEM)
                break;
            REQUIRE(rc == FC_OK);
            m_set(&m, key, v.vtype, v.b, v.vlen, never, expires, me, cf);
            break;
        }
        case 3: { /* add */
            pick_value(&r, &v, 0);
            pick_expiry(&r, now, &never, &expires);
            TRACE("add key=%d vtype=%d vlen=%u never=%d exp=%+.4f me=%lld cf=%lld%s", key, v.vtype,
                  v.vlen, never, expires - now, (long long)me, (long long)cf,
                  inject ? " [alloc fails]" : "");
            rc = fc_add_lock_held(&t, &k, v.vtype, v.b, v.vlen, never, expires, me, cf, now);
            expect = !(i >= 0 && !m_expired(&m.e[i], now));
            if (inject && expect && rc == FC_ENOMEM)
                break;
            REQUIRE(rc == expect);
            if (expect)
                m_set(&m, key, v.vtype, v.b, v.vlen, never, expires, me, cf);
            if (u8(&r) & 1) { /* get_or_set's add_stale: a grace for what is there */
                static const double graces[] = {0, 0.25, 1, 4, -1, 1e9};
                double grace = graces[u8(&r) % NELEM(graces)];
                int j = m_find(&m, key);
                TRACE("mark_stale key=%d grace=%g", key, grace);
                REQUIRE(fc_mark_stale_lock_held(&t, &k, grace) == (j >= 0));
                if (j >= 0)
                    m.e[j].stale = m.e[j].never || !(grace > 0) ? 0 : grace;
            }
            break;
        }
        case 4:
        case 5:
        case 6: { /* get (6: has_key, no LRU move) */
            int lru = op != 6;
            TRACE("get key=%d lru=%d", key, lru);
            fc_entry *e = fc_get_lock_held(&t, &k, now, lru);
            if (i < 0) {
                REQUIRE(e == NULL);
            }
            else if (m_expired(&m.e[i], now)) {
                REQUIRE(e == NULL);
                if (!m_kept(&m.e[i], now))
                    m_remove(&m, i);
            }
            else {
                REQUIRE(e != NULL);
                REQUIRE(e->vlen == m.e[i].vlen &&
                        memcmp(fc_entry_value(e), m.e[i].val, e->vlen) == 0);
                if (lru)
                    m_to_front(&m, i);
            }
            break;
        }
        case 7: {                  /* peek: no side effects; checks generations */
            if (u8(&r) % 3 == 0) { /* or get_stale (serve-stale) */
                int stale = -1;
                TRACE("get_stale key=%d", key);
                fc_entry *e = fc_get_stale_lock_held(&t, &k, now, &stale);
                if (i < 0 || (m_expired(&m.e[i], now) && !m_kept(&m.e[i], now))) {
                    REQUIRE(e == NULL);
                    if (i >= 0)
                        m_remove(&m, i);
                }
                else {
                    REQUIRE(e != NULL && stale == m_expired(&m.e[i], now));
                    REQUIRE(e->vlen == m.e[i].vlen &&
                            memcmp(fc_entry_value(e), m.e[i].val, e->vlen) == 0);
                    m_to_front(&m, i);
                }
                break;
            }
            TRACE("peek key=%d", key);
            fc_entry *e = fc_peek_lock_held(&t, &k);
            REQUIRE((e != NULL) == (i >= 0));
            if (e) {
                REQUIRE(e->vlen == m.e[i].vlen);
                struct seen *s = &seen[key];
                if (s->valid && s->ver == m.e[i].ver)
                    REQUIRE(e->gen == s->gen); /* not written since: same gen */
                if (s->valid && s->ver != m.e[i].ver)
                    REQUIRE(e->gen != s->gen); /* written since: new gen */
                s->valid = 1;
                s->gen = e->gen;
                s->ver = m.e[i].ver;
            }
            break;
        }
        case 8: { /* touch */
            pick_expiry(&r, now, &never, &expires);
            TRACE("touch key=%d never=%d exp=%+.4f", key, never, expires - now);
            rc = fc_touch_lock_held(&t, &k, never, expires, now);
            expect = i >= 0 && !m_expired(&m.e[i], now);
            REQUIRE(rc == expect);
            if (expect) {
                m.e[i].never = (uint8_t)never;
                m.e[i].expires = never ? 0 : expires;
            }
            break;
        }
        case 9: { /* delete */
            TRACE("delete key=%d", key);
            rc = fc_delete_lock_held(&t, &k);
            REQUIRE(rc == (i >= 0));
            if (i >= 0) {
                m_remove(&m, i);
                m.deletes++;
            }
            break;
        }
        case 10: { /* incr */
            int64_t delta = pick_int(&r), res = 0x5a5a;
            fc_entry *found = (fc_entry *)&res;
            TRACE("incr key=%d delta=%lld%s", key, (long long)delta,
                  inject ? " [alloc fails]" : "");
            rc = fc_incr_lock_held(&t, &k, delta, now, &res, &found);
            if (i < 0 || m_expired(&m.e[i], now)) {
                REQUIRE(rc == FC_MISS);
                REQUIRE(found == NULL);
                if (i >= 0 && !m_kept(&m.e[i], now))
                    m_remove(&m, i);
                break;
            }
            ment *e = &m.e[i];
            int64_t cur, sum;
            memcpy(&cur, e->val, 8);
            if (e->vtype != FC_VT_INT64 || e->vlen != 8 ||
                __builtin_add_overflow(cur, delta, &sum)) {
                REQUIRE(rc == FC_NOTINT);
                REQUIRE(found != NULL && found->vlen == e->vlen &&
                        memcmp(fc_entry_value(found), e->val, e->vlen) == 0);
                break;
            }
            REQUIRE(rc == FC_OK);
            REQUIRE(res == sum);
            memcpy(e->val, &sum, 8);
            e->ver = ++g_ver;
            m_to_front(&m, i);
            break;
        }
        case 11:
        case 15: { /* replace with a remembered gen (11) or a fresh one (15) */
            uint64_t gen;
            int ok_expected;
            if (op == 15) {
                fc_entry *e = fc_peek_lock_held(&t, &k);
                gen = e ? e->gen : 0;
                ok_expected = e != NULL;
                if (!e)
                    gen = u64(&r); /* any gen for a missing key */
            }
            else {
                int src = u8(&r) % 4 == 0 ? u8(&r) % keyspace : key;
                if (!seen[src].valid) {
                    TRACE("replace key=%d: nothing seen", key);
                    break;
                }
                gen = seen[src].gen;
                /* gens are table-wide write numbers, so another key's gen
                 * (from another write) never matches */
                ok_expected = i >= 0 && src == key && seen[src].ver == m.e[i].ver;
            }
            pick_value(&r, &v, 0);
            TRACE("replace key=%d gen=%llu vtype=%d vlen=%u expect=%s%s", key,
                  (unsigned long long)gen, v.vtype, v.vlen, ok_expected ? "OK" : "CHANGED",
                  inject ? " [alloc fails]" : "");
            rc = fc_replace_lock_held(&t, &k, gen, v.vtype, v.b, v.vlen);
            if (inject && ok_expected && rc == FC_ENOMEM)
                break;
            REQUIRE(rc == (ok_expected ? FC_OK : FC_CHANGED));
            if (ok_expected) {
                ment *e = &m.e[i];
                e->vtype = (uint8_t)v.vtype;
                e->vlen = v.vlen;
                memcpy(e->val, v.b, v.vlen);
                e->ver = ++g_ver;
                m_to_front(&m, i);
            }
            break;
        }
        case 13:
            if (u8(&r) < 24) {
                TRACE("clear");
                fc_clear_lock_held(&t);
                m.n = 0;
                break;
            }
            /* fall through */
        case 12: { /* time passes */
            double dt = (double)u8(&r) / 16.0;
            TRACE("advance %.4f", dt);
            now += dt;
            break;
        }
        }
        if (inject) {
            cc.fail = 0;
            if (rc == FC_ENOMEM)
                memcpy(&m, &saved, sizeof m); /* nothing may have changed */
        }
        verify(&t, &m, hmode, !shared || g_opno % 7 == 0);
        fc_table_unlock(&t);
        REQUIRE(t.h->dirty == 0);
    }
    if (rings) {
        fc_ring_release(&t, 0);
        fc_ring_release(&t, 1);
        t.h->nrings = 0;
        t.h->rings = 0;
        mem.free(&mem, rings, fc_rings_size(FUZZ_RINGS));
    }
    fc_table_destroy(&t);
    REQUIRE(cc.live == 0); /* destroy freed everything */
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                             */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_trace = getenv("FUZZ_TRACE") != NULL;
    run_stream(data, size);
    return 0;
}

#ifdef FC_STANDALONE_FUZZ
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    g_trace = getenv("FUZZ_TRACE") != NULL;
    if (argc == 3 && strcmp(argv[1], "-r") == 0) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) {
            perror(argv[2]);
            return 2;
        }
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        run_stream(buf, n);
        printf("fuzz_table: replayed %zu bytes, %ld ops: ok\n", n, g_total_ops);
        return 0;
    }
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 1;
    long ops = argc > 2 ? strtol(argv[2], NULL, 0) : 100000;
    uint64_t s = seed;
    static uint8_t buf[8192];
    long streams = 0;
    while (g_total_ops < ops) {
        size_t n = 8 + splitmix(&s) % (sizeof buf - 8);
        for (size_t i = 0; i < n; i += 8) {
            uint64_t x = splitmix(&s);
            memcpy(buf + i, &x, n - i < 8 ? n - i : 8);
        }
        run_stream(buf, n);
        streams++;
    }
    printf("fuzz_table: seed %llu: %ld ops in %ld streams: ok\n", (unsigned long long)seed,
           g_total_ops, streams);
    return 0;
}
#endif
