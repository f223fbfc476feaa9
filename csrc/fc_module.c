/*
 * fc_module.c - django_fastcache._fastcache: the Python binding of the table.
 *
 * The only file that includes Python.h.  It provides two heap types:
 *
 *   Store   one table (one LOCATION); the registry in backend.py maps
 *           LOCATION -> Store, like LocMemCache's module-level dicts.
 *   Handle  one backend instance's view of a store: its key prefix, version,
 *           default timeout, MAX_ENTRIES and CULL_FREQUENCY, and the API.
 *
 * Every API call follows the same three steps, so that no Python object is
 * touched while the table lock is held:
 *   1. build and validate the key, encode (or pickle) the value and compute
 *      the expiry, all with the GIL held and the table unlocked (user code
 *      such as __str__, __reduce__ or a warnings filter may run here);
 *   2. take the lock, run one table operation (or one per item for the
 *      *_many calls), copy any value out into C memory, release the lock;
 *   3. decode (or unpickle) the copy.
 * The lock is taken with trylock first; when another thread holds it, the
 * GIL is released while waiting, so a holder that needs the GIL back (or a
 * fork handler) can always make progress.
 *
 * Values of exact builtin immutable types (None, bool, int that fits 64
 * bits, float, str, bytes) are stored by a small codec instead of pickle:
 * a pickle round trip of those returns an equal object of the same type, so
 * results are the same and copy-on-read semantics are unaffected.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fc_shm.h"
#include "fc_table.h"

#define MEMCACHE_MAX_KEY_LENGTH 250
#define SMALL_BUF 256

/* ------------------------------------------------------------------------ */
/* Compatibility                                                            */

#if PY_VERSION_HEX < 0x030C0000
static PyObject *fc_get_raised(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
static void fc_set_raised(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#else
#define fc_get_raised PyErr_GetRaisedException
#define fc_set_raised PyErr_SetRaisedException
#endif

/* New reference to the referent of a weakref, or NULL (no error) if dead. */
static PyObject *fc_weakref_get(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0)
        return NULL;
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(ref);
    return obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

/* ------------------------------------------------------------------------ */
/* Module state                                                             */

typedef struct {
    PyTypeObject *StoreType;
    PyTypeObject *HandleType;
    PyObject *default_timeout; /* django's DEFAULT_TIMEOUT sentinel */
    PyObject *validate_key;    /* BaseCache.validate_key */
    PyObject *key_warning;     /* CacheKeyWarning */
    PyObject *pickle_dumps;
    PyObject *pickle_loads;
    PyObject *time_dict; /* the time module's __dict__ */
    PyObject *time_time; /* the original time.time */
    PyObject *str_time;
    PyObject *str_make_and_validate_key;
    PyObject *str_get_backend_timeout;
    PyObject *str_version;
    PyObject *empty_tuple;
} fc_state;

static struct PyModuleDef fc_module_def;

static inline fc_state *state_of_type(PyTypeObject *tp)
{
    return (fc_state *)PyType_GetModuleState(tp);
}

static int require_configured(fc_state *st)
{
    if (st->default_timeout == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "django_fastcache._fastcache is not configured; import django_fastcache");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Clock: time.time(), unless a test or freezegun replaced it               */

static double c_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    /* Same rounding as CPython's time.time() */
    if (ns % 1000000000 == 0)
        return (double)(ns / 1000000000);
    return (double)ns / 1e9;
}

static int get_now(fc_state *st, double *now)
{
    PyObject *f = PyDict_GetItemWithError(st->time_dict, st->str_time); /* borrowed */
    if (f == st->time_time || (f == NULL && !PyErr_Occurred())) {
        *now = c_time();
        return 0;
    }
    if (f == NULL)
        return -1;
    Py_INCREF(f);
    PyObject *r = PyObject_CallNoArgs(f);
    Py_DECREF(f);
    if (r == NULL)
        return -1;
    *now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Store                                                                    */

typedef struct {
    PyObject_HEAD
    fc_mem mem;
    fc_table table;
    fc_shm shm; /* mapped segment, for a shared store */
    int shared;
    PyObject *path;
    /* The lock as taken by Python code (cache._lock.acquire()): how many
     * times, and by which thread last.  release() requires one, so nobody
     * can release a lock an operation (or another process) holds, and the
     * holding thread may still read the views. */
    long py_locks;
    unsigned long py_holder;
    /* A shared store's ring for gets without the lock (fc_table.h): its
     * index, RING_NONE before it is claimed, RING_BUSY while every ring is
     * taken (retried every RING_RETRY gets).  Claimed in this process:
     * ring_forks is the fork count then, so a forked child claims its own. */
    int ring;
    unsigned ring_retry;
    unsigned long ring_forks;
} StoreObject;

#define RING_NONE (-1)
#define RING_BUSY (-2)
#define RING_RETRY 4096

/* Forks of this process, counted in the child (pthread_atfork), so that a
 * store never logs to a ring its parent owns. */
static unsigned long fc_forks;
static pthread_once_t fc_setup_once = PTHREAD_ONCE_INIT;
static void count_fork(void) { fc_forks++; }

/* Gets without the lock order their uses by CLOCK_MONOTONIC stamps, which
 * needs a clock finer than one operation: on a host whose clock is coarser
 * than a microsecond every get takes the lock instead. */
static int fc_fine_clock;
static void process_setup(void)
{
    struct timespec res;
    fc_fine_clock =
        clock_getres(CLOCK_MONOTONIC, &res) == 0 && res.tv_sec == 0 && res.tv_nsec <= 1000;
    (void)pthread_atfork(NULL, NULL, count_fork);
}

/* Whether s holds a ring claimed in this process (not in a parent). */
static inline int store_owns_ring(const StoreObject *s)
{
    return s->ring >= 0 && s->ring_forks == fc_forks;
}

static int pid_alive(uint64_t pid)
{
    return pid > (uint64_t)INT32_MAX || kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* Damage a shared table found in its segment and repaired (fc_table.h:
 * every entry dropped) is reported by the process that repaired it, as a
 * RuntimeWarning from opening the segment or from its next call (a get
 * that would read without the lock takes it instead, to say so): never
 * under the lock, since a warning runs Python code.  -1 when the warning
 * was turned into an exception. */
static int report_repairs(StoreObject *s)
{
    unsigned long long n = (unsigned long long)fc_table_take_repairs(&s->table);
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "django-fastcache: the shared cache segment %s was found damaged "
                            "and has been reset (every entry dropped; %llu repair%s, counted in "
                            "stats()['repairs']); if this recurs, find what writes into it, or "
                            "delete it: django_fastcache.remove_segment(LOCATION)",
                            s->path != NULL ? PyBytes_AS_STRING(s->path) : "?", n,
                            n == 1 ? "" : "s");
}

/* Takes the table lock.  Holders keep it for a few hundred nanoseconds, so
 * a waiter first spins briefly (another process, or a thread of this one
 * running without the GIL, is about to release it); only then does it
 * sleep in the kernel, with the GIL released so that the holder (which may
 * need the GIL back) and every other thread can go on. */
#define LOCK_SPINS 2000
static int store_lock(StoreObject *s)
{
    if (s->table.unreported_repairs != 0 && report_repairs(s) < 0)
        return -1;
    if (fc_table_trylock(&s->table) == FC_OK)
        return 0;
    for (int i = 0; i < LOCK_SPINS; i++) {
        fc_cpu_relax();
        if (!fc_table_lock_busy(&s->table) && fc_table_trylock(&s->table) == FC_OK)
            return 0;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fc_table_lock(&s->table);
    Py_END_ALLOW_THREADS
    if (rc != FC_OK) {
        PyErr_SetString(PyExc_RuntimeError, "fastcache: cannot take the table lock");
        return -1;
    }
    return 0;
}

static inline void store_unlock(StoreObject *s) { fc_table_unlock(&s->table); }

/* For the views and counters: the lock, unless this thread already holds it
 * through cache._lock.acquire().  Returns 1 when it took it, 0 when it was
 * already held, -1 on error. */
static int view_lock(StoreObject *s)
{
    if (s->py_locks > 0 && s->py_holder == PyThread_get_thread_ident())
        return 0;
    return store_lock(s) < 0 ? -1 : 1;
}

static inline void view_unlock(StoreObject *s, int took)
{
    if (took == 1)
        store_unlock(s);
}

static PyObject *store_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Store() takes no arguments");
        return NULL;
    }
    uint64_t seed[2];
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed[0] = (uint64_t)c_time() ^ ((uint64_t)getpid() << 32);
        seed[1] = (uint64_t)(uintptr_t)type ^ 0x9e3779b97f4a7c15ULL;
    }
    StoreObject *self = (StoreObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    fc_mem_heap_init(&self->mem);
    int rc = fc_table_init(&self->table, &self->mem, 0, seed[0], seed[1]);
    if (rc != FC_OK) {
        self->table.h = NULL;
        Py_DECREF(self);
        return rc == FC_ENOMEM
                   ? PyErr_NoMemory()
                   : PyErr_Format(PyExc_RuntimeError, "fastcache: cannot create a table");
    }
    return (PyObject *)self;
}

/* Store.shared(path, max_bytes): the table in the segment at path, created
 * (mode 0600) with max_bytes if it does not exist. */
static PyObject *store_shared(PyTypeObject *type, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "shared() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *path;
    if (!PyUnicode_FSConverter(args[0], &path))
        return NULL;
    unsigned long long max_bytes = PyLong_AsUnsignedLongLong(args[1]);
    if (max_bytes == (unsigned long long)-1 && PyErr_Occurred()) {
        Py_DECREF(path);
        return NULL;
    }
    StoreObject *self = (StoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    self->shared = 1;
    self->path = path;
    self->shm.base = NULL;
    self->shm.fd = -1;
    self->ring = RING_NONE;
    char err[512];
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fc_shm_open(&self->shm, &self->mem, &self->table, PyBytes_AS_STRING(path), max_bytes, err,
                     sizeof err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        self->table.h = NULL;
        PyErr_SetString(PyExc_OSError, err);
        Py_DECREF(self);
        return NULL;
    }
    if (self->table.unreported_repairs != 0 && report_repairs(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void store_dealloc(StoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->shared && self->table.h != NULL && store_owns_ring(self))
        fc_ring_release(&self->table, self->ring);
    if (self->shared)
        fc_shm_close(&self->shm);
    else if (self->table.h != NULL)
        fc_table_destroy(&self->table);
    Py_CLEAR(self->path);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* Key bytes of a made key given as str (views and compatibility helpers). */
static PyObject *encode_key_str(PyObject *key)
{
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "cache keys are str, not %.200s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    return PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass");
}

/* A copy of a value, made under the lock and decoded after it. */
typedef struct {
    int vtype;
    size_t n;
    char *p;
    uint64_t gen;
    char small[SMALL_BUF];
} copied;

static int copy_out(copied *c, const fc_entry *e)
{
    c->vtype = e->vtype;
    c->n = e->vlen;
    c->gen = e->gen;
    c->p = c->n <= sizeof c->small ? c->small : malloc(c->n);
    if (c->p == NULL)
        return -1;
    if (c->n)
        memcpy(c->p, fc_entry_value(e), c->n);
    return 0;
}

static void copied_release(copied *c)
{
    if (c->p != NULL && c->p != c->small)
        free(c->p);
    c->p = NULL;
}

static PyObject *decode_value(fc_state *st, int vtype, const char *p, size_t n)
{
    switch (vtype) {
    case FC_VT_NONE: Py_RETURN_NONE;
    case FC_VT_TRUE: Py_RETURN_TRUE;
    case FC_VT_FALSE: Py_RETURN_FALSE;
    case FC_VT_INT64: {
        int64_t v;
        memcpy(&v, p, sizeof v);
        return PyLong_FromLongLong(v);
    }
    case FC_VT_FLOAT: {
        double v;
        memcpy(&v, p, sizeof v);
        return PyFloat_FromDouble(v);
    }
    case FC_VT_STR: return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, NULL);
    case FC_VT_BYTES: return PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    case FC_VT_PICKLE: {
        PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
        if (b == NULL)
            return NULL;
        PyObject *r = PyObject_CallOneArg(st->pickle_loads, b);
        Py_DECREF(b);
        return r;
    }
    default:
        PyErr_Format(PyExc_SystemError, "fastcache: unknown value type %d", vtype);
        return NULL;
    }
}

static PyObject *decode_copied(fc_state *st, copied *c)
{
    PyObject *r = decode_value(st, c->vtype, c->p, c->n);
    copied_release(c);
    return r;
}

/* Looks a made key (str) up without side effects; copies value and expiry. */
static int store_peek(StoreObject *self, PyObject *key, copied *c, int *never, double *expires)
{
    PyObject *kb = encode_key_str(key);
    if (kb == NULL)
        return -1;
    fc_key k = {PyBytes_AS_STRING(kb), (size_t)PyBytes_GET_SIZE(kb), 0};
    k.hash = fc_hash(&self->table, k.p, k.n);
    int took = view_lock(self);
    if (took < 0) {
        Py_DECREF(kb);
        return -1;
    }
    fc_entry *e = fc_peek_lock_held(&self->table, &k);
    int rc = 0;
    if (e == NULL)
        rc = 1;
    else {
        *never = e->never;
        *expires = e->expires;
        if (c != NULL && copy_out(c, e) < 0)
            rc = -2;
    }
    view_unlock(self, took);
    Py_DECREF(kb);
    if (rc == 1)
        PyErr_SetObject(PyExc_KeyError, key);
    else if (rc == -2)
        PyErr_NoMemory();
    return rc == 0 ? 0 : -1;
}

static PyObject *store_raw(StoreObject *self, PyObject *key)
{
    fc_state *st = state_of_type(Py_TYPE(self));
    copied c;
    int never;
    double expires;
    if (store_peek(self, key, &c, &never, &expires) < 0)
        return NULL;
    if (c.vtype == FC_VT_PICKLE) {
        PyObject *b = PyBytes_FromStringAndSize(c.p, (Py_ssize_t)c.n);
        copied_release(&c);
        return b;
    }
    /* Natively encoded: show what LocMemCache would hold, the pickle. */
    PyObject *v = decode_copied(st, &c);
    if (v == NULL)
        return NULL;
    PyObject *r = PyObject_CallFunction(st->pickle_dumps, "Oi", v, 5);
    Py_DECREF(v);
    return r;
}

static PyObject *store_expiry(StoreObject *self, PyObject *key)
{
    int never;
    double expires;
    if (store_peek(self, key, NULL, &never, &expires) < 0)
        return NULL;
    if (never)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(expires);
}

static PyObject *store_contains(StoreObject *self, PyObject *key)
{
    int never;
    double expires;
    if (store_peek(self, key, NULL, &never, &expires) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

typedef struct {
    char *buf;
    size_t len, cap;
    size_t count;
    int failed;
} key_dump;

static int dump_key(const fc_entry *e, void *arg)
{
    key_dump *d = arg;
    size_t need = d->len + sizeof(uint32_t) + e->klen;
    if (need > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        while (cap < need)
            cap *= 2;
        char *nb = realloc(d->buf, cap);
        if (nb == NULL) {
            d->failed = 1;
            return 1;
        }
        d->buf = nb;
        d->cap = cap;
    }
    uint32_t kl = e->klen;
    memcpy(d->buf + d->len, &kl, sizeof kl);
    memcpy(d->buf + d->len + sizeof kl, fc_entry_key(e), kl);
    d->len = need;
    d->count++;
    return 0;
}

/* All made keys, most recently used first (LocMemCache's OrderedDict order). */
static PyObject *store_keys(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    key_dump d = {0};
    int took = view_lock(self);
    if (took < 0)
        return NULL;
    fc_foreach_lock_held(&self->table, dump_key, &d);
    view_unlock(self, took);
    if (d.failed) {
        free(d.buf);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)d.count);
    size_t pos = 0;
    for (size_t i = 0; list != NULL && i < d.count; i++) {
        uint32_t kl;
        memcpy(&kl, d.buf + pos, sizeof kl);
        PyObject *s = PyUnicode_DecodeUTF8(d.buf + pos + sizeof kl, kl, "surrogatepass");
        if (s == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)i, s);
        pos += sizeof kl + kl;
    }
    free(d.buf);
    return list;
}

static Py_ssize_t store_len(StoreObject *self)
{
    int took = view_lock(self);
    if (took < 0)
        return -1;
    Py_ssize_t n = (Py_ssize_t)self->table.h->count;
    view_unlock(self, took);
    return n;
}

static PyObject *store_locked(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fc_table_trylock(&self->table) != FC_OK)
        Py_RETURN_TRUE;
    fc_table_unlock(&self->table);
    Py_RETURN_FALSE;
}

static PyObject *store_acquire(StoreObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "acquire() takes exactly 2 arguments (%zd given)", nargs);
        return NULL;
    }
    int blocking = PyObject_IsTrue(args[0]);
    if (blocking < 0)
        return NULL;
    double timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (!blocking && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    int rc = fc_table_trylock(&self->table);
    if (rc != FC_OK && blocking && timeout == -1.0) {
        Py_BEGIN_ALLOW_THREADS
        rc = fc_table_lock(&self->table);
        Py_END_ALLOW_THREADS
    }
    if (rc == FC_OK || !blocking || timeout == -1.0) {
        if (rc == FC_OK) {
            self->py_locks++;
            self->py_holder = PyThread_get_thread_ident();
        }
        return PyBool_FromLong(rc == FC_OK);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    double secs = (double)until.tv_sec + until.tv_nsec / 1e9 + timeout;
    until.tv_sec = (time_t)secs;
    until.tv_nsec = (long)((secs - (double)until.tv_sec) * 1e9);
    Py_BEGIN_ALLOW_THREADS
    rc = fc_table_timedlock(&self->table, &until);
    Py_END_ALLOW_THREADS
    if (rc == FC_OK) {
        self->py_locks++;
        self->py_holder = PyThread_get_thread_ident();
    }
    return PyBool_FromLong(rc == FC_OK);
}

static PyObject *store_release(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->py_locks == 0) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    self->py_locks--;
    fc_table_unlock(&self->table);
    Py_RETURN_NONE;
}

static PyObject *store_fork_acquire(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (store_lock(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *store_fork_release(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    store_unlock(self);
    Py_RETURN_NONE;
}

static PyObject *store_fork_reinit(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    /* Whatever Python code held the lock, it was in the parent. */
    self->py_locks = 0;
    if (fc_table_reinit_lock(&self->table) != FC_OK) {
        PyErr_SetString(PyExc_RuntimeError, "fastcache: cannot reinitialise the table lock");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *store_stats(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    int took = view_lock(self);
    if (took < 0)
        return NULL;
    fc_stats s;
    fc_stats_sum(&self->table, &s);
    uint64_t count = self->table.h->count, bytes = self->table.h->bytes;
    uint64_t repairs = self->table.h->repairs;
    view_unlock(self, took);
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsnsK}", "hits", (unsigned long long)s.hits, "misses",
        (unsigned long long)s.misses, "sets", (unsigned long long)s.sets, "deletes",
        (unsigned long long)s.deletes, "evictions", (unsigned long long)s.evictions, "expirations",
        (unsigned long long)s.expirations, "entries", (unsigned long long)count, "bytes",
        (unsigned long long)bytes, "segment_bytes", (Py_ssize_t)(self->shared ? self->shm.size : 0),
        "repairs", (unsigned long long)repairs);
}

static PyObject *store_reset_stats(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    int took = view_lock(self);
    if (took < 0)
        return NULL;
    fc_stats_reset_lock_held(&self->table);
    view_unlock(self, took);
    Py_RETURN_NONE;
}

/* _count(flag): whether this process counts hits, misses... in this table
 * (on by default; the benchmark switches it off to measure the counters). */
static PyObject *store_count(StoreObject *self, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0)
        return NULL;
    self->table.stats_off = !on;
    Py_RETURN_NONE;
}

/* _ring(): the ring this process logs its gets without the lock to, or -1
 * (a private store, none claimed yet, or all taken); for tests. */
static PyObject *store_ring_index(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->shared && store_owns_ring(self) ? self->ring : -1);
}

static PyObject *store_check(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    int took = view_lock(self);
    if (took < 0)
        return NULL;
    int rc = fc_table_check(&self->table);
    view_unlock(self, took);
    return PyLong_FromLong(rc);
}

static PyMethodDef store_methods[] = {
    {"keys", (PyCFunction)store_keys, METH_NOARGS, "Made keys, most recently used first."},
    {"raw", (PyCFunction)store_raw, METH_O, "Pickled value of a made key (no side effects)."},
    {"expiry", (PyCFunction)store_expiry, METH_O, "Expiry timestamp of a made key, or None."},
    {"contains", (PyCFunction)store_contains, METH_O, "Whether a made key is stored."},
    {"locked", (PyCFunction)store_locked, METH_NOARGS, "Whether the table lock is held."},
    {"acquire", (PyCFunction)(void (*)(void))store_acquire, METH_FASTCALL,
     "acquire(blocking, timeout): take the table lock."},
    {"release", (PyCFunction)store_release, METH_NOARGS, "Release the table lock."},
    {"stats", (PyCFunction)store_stats, METH_NOARGS, "Counters and sizes of the table."},
    {"reset_stats", (PyCFunction)store_reset_stats, METH_NOARGS, "Zero the counters."},
    {"_ring", (PyCFunction)store_ring_index, METH_NOARGS,
     "This process's ring for gets without the lock, or -1."},
    {"check", (PyCFunction)store_check, METH_NOARGS,
     "Run the table invariant checker; 0 when consistent."},
    {"shared", (PyCFunction)(void (*)(void))store_shared, METH_FASTCALL | METH_CLASS,
     "shared(path, max_bytes): the table in a shared memory segment."},
    {"_count", (PyCFunction)store_count, METH_O, "Switch this process's counters on or off."},
    {"_fork_acquire", (PyCFunction)store_fork_acquire, METH_NOARGS, NULL},
    {"_fork_release", (PyCFunction)store_fork_release, METH_NOARGS, NULL},
    {"_fork_reinit", (PyCFunction)store_fork_reinit, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot store_slots[] = {
    {Py_tp_new, store_new},
    {Py_tp_dealloc, store_dealloc},
    {Py_tp_methods, store_methods},
    {Py_mp_length, store_len},
    {Py_tp_doc, "A fastcache table in this process's heap."},
    {0, NULL},
};

static PyType_Spec store_spec = {
    .name = "django_fastcache._fastcache.Store",
    .basicsize = sizeof(StoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = store_slots,
};

/* ------------------------------------------------------------------------ */
/* Handle                                                                   */

typedef struct {
    PyObject_HEAD
    StoreObject *store;
    PyObject *owner;                  /* weakref to the backend */
    PyObject *key_prefix;             /* as assigned */
    PyObject *version;                /* as assigned */
    PyObject *default_timeout;        /* as assigned */
    PyObject *prefix_bytes;           /* str(key_prefix) in UTF-8 */
    PyObject *version_bytes;          /* str(version) in UTF-8 */
    Py_ssize_t prefix_cp, version_cp; /* lengths in code points */
    int prefix_ctl, version_ctl;      /* contain memcached-unsafe chars */
    int64_t max_entries;
    int64_t cull_frequency;
    int fast_key;
    int fast_timeout;
    int pickle_protocol;
} HandleObject;

static int has_ctl(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

/* str(obj) as UTF-8 bytes (surrogates passed through) and its length. */
static PyObject *str_bytes(PyObject *obj, Py_ssize_t *cp)
{
    PyObject *s = PyObject_Str(obj);
    if (s == NULL)
        return NULL;
    *cp = PyUnicode_GET_LENGTH(s);
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    Py_DECREF(s);
    return b;
}

/* A made key: prefix:version:key in UTF-8, built in a stack buffer when it
 * fits, with its length in code points for the memcached length check. */
typedef struct {
    const char *p;
    size_t n;
    uint64_t hash;
    char *heap;
    PyObject *owned;
    char buf[SMALL_BUF];
} made_key;

static void made_key_release(made_key *mk)
{
    free(mk->heap);
    mk->heap = NULL;
    Py_CLEAR(mk->owned);
}

/* UTF-8 of one "%s" part: key or version.  Sets *p and *n (valid while *hold
 * or the object lives), *cp; *hold gets any new reference to release. */
static int part_utf8(PyObject *obj, const char **p, Py_ssize_t *n, Py_ssize_t *cp, PyObject **hold,
                     char *intbuf)
{
    *hold = NULL;
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (!overflow && !(v == -1 && PyErr_Occurred())) {
            char tmp[24];
            int len = 0;
            unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
            do {
                tmp[len++] = (char)('0' + u % 10);
                u /= 10;
            } while (u);
            if (v < 0)
                tmp[len++] = '-';
            for (int i = 0; i < len; i++)
                intbuf[i] = tmp[len - 1 - i];
            *p = intbuf;
            *n = *cp = len;
            return 0;
        }
        PyErr_Clear();
    }
    if (PyUnicode_CheckExact(obj)) {
        *p = PyUnicode_AsUTF8AndSize(obj, n);
        if (*p != NULL) {
            *cp = PyUnicode_GET_LENGTH(obj);
            return 0;
        }
        PyErr_Clear(); /* lone surrogates: fall through to surrogatepass */
    }
    PyObject *b = str_bytes(obj, cp);
    if (b == NULL)
        return -1;
    *hold = b;
    *p = PyBytes_AS_STRING(b);
    *n = PyBytes_GET_SIZE(b);
    return 0;
}

static int emit_key_warnings(fc_state *st, const char *p, size_t n)
{
    PyObject *key = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogatepass");
    if (key == NULL)
        return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(st->validate_key, Py_None, key, NULL);
    Py_DECREF(key);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The slow path: the backend's own make_and_validate_key(). */
static int make_key_python(HandleObject *h, PyObject *key, PyObject *version, made_key *mk)
{
    fc_state *st = state_of_type(Py_TYPE(h));
    PyObject *owner = fc_weakref_get(h->owner);
    if (owner == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ReferenceError, "the cache backend no longer exists");
        return -1;
    }
    PyObject *args[3] = {owner, key, version};
    PyObject *kwnames = PyTuple_Pack(1, st->str_version);
    PyObject *made = NULL;
    if (kwnames != NULL)
        made = PyObject_VectorcallMethod(st->str_make_and_validate_key, args,
                                         2 | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
    Py_XDECREF(kwnames);
    Py_DECREF(owner);
    if (made == NULL)
        return -1;
    mk->owned = encode_key_str(made);
    Py_DECREF(made);
    if (mk->owned == NULL)
        return -1;
    mk->p = PyBytes_AS_STRING(mk->owned);
    mk->n = (size_t)PyBytes_GET_SIZE(mk->owned);
    return 0;
}

/* Builds, validates (warnings) and hashes the made key.  On error nothing
 * is left to release. */
static int make_key(HandleObject *h, PyObject *key, PyObject *version, made_key *mk)
{
    mk->heap = NULL;
    mk->owned = NULL;
    if (!h->fast_key) {
        if (make_key_python(h, key, version, mk) < 0)
            return -1;
        goto hash;
    }
    char kint[24], vint[24];
    const char *kp, *vp;
    Py_ssize_t kn, vn, kcp, vcp;
    PyObject *khold = NULL, *vhold = NULL;
    int vctl;
    if (version == Py_None) {
        vp = PyBytes_AS_STRING(h->version_bytes);
        vn = PyBytes_GET_SIZE(h->version_bytes);
        vcp = h->version_cp;
        vctl = h->version_ctl;
    }
    else {
        if (part_utf8(version, &vp, &vn, &vcp, &vhold, vint) < 0)
            return -1;
        vctl = has_ctl(vp, (size_t)vn);
    }
    if (part_utf8(key, &kp, &kn, &kcp, &khold, kint) < 0) {
        Py_XDECREF(vhold);
        return -1;
    }
    const char *pp = PyBytes_AS_STRING(h->prefix_bytes);
    size_t pn = (size_t)PyBytes_GET_SIZE(h->prefix_bytes);
    size_t n = pn + 1 + (size_t)vn + 1 + (size_t)kn;
    char *out = mk->buf;
    if (n > sizeof mk->buf) {
        out = mk->heap = malloc(n);
        if (out == NULL) {
            Py_XDECREF(khold);
            Py_XDECREF(vhold);
            PyErr_NoMemory();
            return -1;
        }
    }
    memcpy(out, pp, pn);
    out[pn] = ':';
    memcpy(out + pn + 1, vp, (size_t)vn);
    out[pn + 1 + vn] = ':';
    memcpy(out + pn + 2 + vn, kp, (size_t)kn);
    int warn = h->prefix_ctl || vctl || has_ctl(kp, (size_t)kn) ||
               h->prefix_cp + 2 + vcp + kcp > MEMCACHE_MAX_KEY_LENGTH;
    Py_XDECREF(khold);
    Py_XDECREF(vhold);
    mk->p = out;
    mk->n = n;
    if (warn && emit_key_warnings(state_of_type(Py_TYPE(h)), out, n) < 0) {
        made_key_release(mk);
        return -1;
    }
hash:
    mk->hash = fc_hash(&h->store->table, mk->p, mk->n);
    return 0;
}

static inline fc_key fkey(const made_key *mk)
{
    fc_key k = {mk->p, mk->n, mk->hash};
    return k;
}

/* An encoded value: a native encoding or a pickle. */
typedef struct {
    int vtype;
    const char *p;
    size_t n;
    PyObject *owned;
    char small[8];
} enc_value;

static int encode_value(fc_state *st, HandleObject *h, PyObject *v, enc_value *ev)
{
    ev->owned = NULL;
    ev->p = ev->small;
    ev->n = 0;
    if (v == Py_None) {
        ev->vtype = FC_VT_NONE;
        return 0;
    }
    if (v == Py_True || v == Py_False) {
        ev->vtype = v == Py_True ? FC_VT_TRUE : FC_VT_FALSE;
        return 0;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow && !(x == -1 && PyErr_Occurred())) {
            int64_t i = x;
            memcpy(ev->small, &i, sizeof i);
            ev->vtype = FC_VT_INT64;
            ev->n = sizeof i;
            return 0;
        }
        PyErr_Clear();
    }
    else if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        memcpy(ev->small, &d, sizeof d);
        ev->vtype = FC_VT_FLOAT;
        ev->n = sizeof d;
        return 0;
    }
    else if (PyUnicode_CheckExact(v)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(v, &n);
        if (p != NULL) {
            ev->owned = Py_NewRef(v);
            ev->p = p;
            ev->n = (size_t)n;
            ev->vtype = FC_VT_STR;
            return 0;
        }
        PyErr_Clear(); /* lone surrogates: pickle handles them */
    }
    else if (PyBytes_CheckExact(v)) {
        ev->owned = Py_NewRef(v);
        ev->p = PyBytes_AS_STRING(v);
        ev->n = (size_t)PyBytes_GET_SIZE(v);
        ev->vtype = FC_VT_BYTES;
        return 0;
    }
    PyObject *protocol = PyLong_FromLong(h->pickle_protocol);
    if (protocol == NULL)
        return -1;
    PyObject *args[2] = {v, protocol};
    PyObject *b = PyObject_Vectorcall(st->pickle_dumps, args, 2, NULL);
    Py_DECREF(protocol);
    if (b == NULL)
        return -1;
    if (!PyBytes_Check(b)) {
        Py_DECREF(b);
        PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
        return -1;
    }
    ev->owned = b;
    ev->p = PyBytes_AS_STRING(b);
    ev->n = (size_t)PyBytes_GET_SIZE(b);
    ev->vtype = FC_VT_PICKLE;
    return 0;
}

static inline void enc_release(enc_value *ev) { Py_CLEAR(ev->owned); }

/* BaseCache.get_backend_timeout(timeout), given the current time. */
typedef struct {
    int never;
    double expires;
} expiry;

static int number_expiry(PyObject *timeout, double now, expiry *out)
{
    if (timeout == Py_None) {
        out->never = 1;
        out->expires = 0;
        return 0;
    }
    out->never = 0;
    if (PyFloat_CheckExact(timeout)) {
        out->expires = now + PyFloat_AS_DOUBLE(timeout);
        return 0;
    }
    if (PyLong_Check(timeout)) {
        double d = PyLong_AsDouble(timeout);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        out->expires = now + d;
        return 0;
    }
    PyObject *t = PyFloat_FromDouble(now);
    if (t == NULL)
        return -1;
    PyObject *r = PyNumber_Add(t, timeout);
    Py_DECREF(t);
    if (r == NULL)
        return -1;
    out->expires = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (out->expires == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int compute_expiry(fc_state *st, HandleObject *h, PyObject *timeout, double now, expiry *out)
{
    if (!h->fast_timeout) {
        PyObject *owner = fc_weakref_get(h->owner);
        if (owner == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ReferenceError, "the cache backend no longer exists");
            return -1;
        }
        PyObject *args[2] = {owner, timeout};
        PyObject *r = PyObject_VectorcallMethod(st->str_get_backend_timeout, args,
                                                2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(owner);
        if (r == NULL)
            return -1;
        int rc = 0;
        out->never = r == Py_None;
        out->expires = 0;
        if (!out->never) {
            out->expires = PyFloat_AsDouble(r);
            rc = (out->expires == -1.0 && PyErr_Occurred()) ? -1 : 0;
        }
        Py_DECREF(r);
        return rc;
    }
    if (timeout == st->default_timeout)
        return number_expiry(h->default_timeout, now, out);
    if (timeout == Py_None)
        return number_expiry(timeout, now, out);
    int zero;
    if (PyLong_CheckExact(timeout) || PyFloat_CheckExact(timeout))
        zero = PyObject_Not(timeout);
    else {
        PyObject *z = PyLong_FromLong(0);
        if (z == NULL)
            return -1;
        zero = PyObject_RichCompareBool(timeout, z, Py_EQ);
        Py_DECREF(z);
        if (zero < 0)
            return -1;
    }
    if (zero) {
        /* ticket 21147: a timeout of 0 expires at once */
        out->never = 0;
        out->expires = now + -1.0;
        return 0;
    }
    return number_expiry(timeout, now, out);
}

/* ---- argument checks ---- */

static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, want,
                 nargs);
    return -1;
}

static inline int handle_lock(HandleObject *h) { return store_lock(h->store); }
static inline void handle_unlock(HandleObject *h) { store_unlock(h->store); }
static inline fc_table *TBL(HandleObject *h) { return &h->store->table; }

static PyObject *table_error(int rc)
{
    if (rc == FC_ENOMEM)
        return PyErr_NoMemory();
    if (rc == FC_EKEY)
        return PyErr_Format(PyExc_ValueError, "cache key or value too large (4 GiB at most)");
    if (rc == FC_ETOOBIG)
        return PyErr_Format(PyExc_ValueError,
                            "cache value too large for this shared cache's MAX_BYTES");
    if (rc == FC_ECORRUPT)
        return PyErr_Format(PyExc_RuntimeError,
                            "fastcache: the shared cache segment is damaged beyond repair; "
                            "delete it (django_fastcache.remove_segment(LOCATION)) and restart");
    return PyErr_Format(PyExc_RuntimeError, "fastcache: table error %d", rc);
}

/* This process's ring in a shared store, claimed on first use; -1 when it
 * has none.  When every ring is taken, the rings of processes that are
 * gone are reclaimed under the lock. */
static int store_ring(StoreObject *s)
{
    if (store_owns_ring(s))
        return s->ring;
    if (s->ring == RING_BUSY && s->ring_forks == fc_forks && ++s->ring_retry % RING_RETRY)
        return -1;
    pthread_once(&fc_setup_once, process_setup);
    uint64_t pid = (uint64_t)getpid();
    s->ring_forks = fc_forks;
    s->ring = fc_fine_clock ? fc_ring_claim(&s->table, pid) : -1;
    if (s->ring < 0 && fc_fine_clock && fc_table_trylock(&s->table) == FC_OK) {
        int freed = fc_rings_reclaim_lock_held(&s->table, pid_alive);
        fc_table_unlock(&s->table);
        if (freed)
            s->ring = fc_ring_claim(&s->table, pid);
    }
    if (s->ring < 0) {
        s->ring = RING_BUSY;
        s->ring_retry = 0;
        return -1;
    }
    return s->ring;
}

/* A shared store's get without the lock (fc_get_optimistic) into c; with c
 * NULL, only whether a live entry exists (has_key). */
static int store_get_optimistic(StoreObject *s, const fc_key *k, double now, copied *c)
{
    if (s->table.unreported_repairs != 0)
        return FC_ELOCK; /* the locked path reports them (store_lock) */
    int ring = store_ring(s);
    if (ring < 0)
        return FC_ELOCK;
    if (c == NULL)
        return fc_get_optimistic(&s->table, ring, k, now, NULL, 0, NULL, NULL, NULL);
    int vtype;
    size_t n;
    int rc =
        fc_get_optimistic(&s->table, ring, k, now, c->small, sizeof c->small, &vtype, &n, &c->gen);
    if (rc == FC_OK) {
        c->p = c->small;
        c->vtype = vtype;
        c->n = n;
    }
    return rc;
}

/* get(key, default, version) */
static PyObject *handle_get(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("get", nargs, 3) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    made_key mk;
    double now;
    if (make_key(self, args[0], args[2], &mk) < 0)
        return NULL;
    if (get_now(st, &now) < 0) {
        made_key_release(&mk);
        return NULL;
    }
    fc_key k = fkey(&mk);
    copied c;
    int drain = 0;
    if (self->store->shared) {
        int rc = store_get_optimistic(self->store, &k, now, &c);
        if (rc == FC_OK || rc == FC_MISS) {
            made_key_release(&mk);
            return rc == FC_MISS ? Py_NewRef(args[1]) : decode_copied(st, &c);
        }
        drain = rc == FC_EFULL;
    }
    if (handle_lock(self) < 0) {
        made_key_release(&mk);
        return NULL;
    }
    if (drain)
        fc_rings_drain_lock_held(TBL(self));
    fc_entry *e = fc_get_lock_held(TBL(self), &k, now, 1);
    int oom = e != NULL && copy_out(&c, e) < 0;
    handle_unlock(self);
    made_key_release(&mk);
    if (e == NULL)
        return Py_NewRef(args[1]);
    if (oom)
        return PyErr_NoMemory();
    return decode_copied(st, &c);
}

/* Shared by set and add: key, encoded value and expiry, all outside the
 * lock.  An error computing the expiry is returned in *deferred rather than
 * raised: add() and touch() on a live key never look at the timeout in
 * LocMemCache, so they must not fail on it either. */
typedef struct {
    made_key mk;
    enc_value ev;
    expiry ex;
    PyObject *deferred;
    double now;
} prepared;

static int prepare_store(HandleObject *self, PyObject *key, PyObject *value, PyObject *timeout,
                         PyObject *version, prepared *pr)
{
    fc_state *st = state_of_type(Py_TYPE(self));
    pr->deferred = NULL;
    if (make_key(self, key, version, &pr->mk) < 0)
        return -1;
    if (value != NULL) {
        if (encode_value(st, self, value, &pr->ev) < 0) {
            made_key_release(&pr->mk);
            return -1;
        }
    }
    else
        pr->ev.owned = NULL;
    if (get_now(st, &pr->now) < 0) {
        enc_release(&pr->ev);
        made_key_release(&pr->mk);
        return -1;
    }
    if (compute_expiry(st, self, timeout, pr->now, &pr->ex) < 0)
        pr->deferred = fc_get_raised();
    return 0;
}

static void prepared_release(prepared *pr)
{
    enc_release(&pr->ev);
    made_key_release(&pr->mk);
    Py_CLEAR(pr->deferred);
}

/* Raises the deferred expiry error, if any; returns -1 then. */
static int raise_deferred(prepared *pr)
{
    if (pr->deferred == NULL)
        return 0;
    fc_set_raised(pr->deferred);
    pr->deferred = NULL;
    return -1;
}

/* set(key, value, timeout, version) */
static PyObject *handle_set(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("set", nargs, 4) < 0)
        return NULL;
    prepared pr;
    if (prepare_store(self, args[0], args[1], args[2], args[3], &pr) < 0)
        return NULL;
    if (raise_deferred(&pr) < 0 || handle_lock(self) < 0) {
        prepared_release(&pr);
        return NULL;
    }
    fc_key k = fkey(&pr.mk);
    int rc = fc_set_lock_held(TBL(self), &k, pr.ev.vtype, pr.ev.p, pr.ev.n, pr.ex.never,
                              pr.ex.expires, self->max_entries, self->cull_frequency);
    handle_unlock(self);
    prepared_release(&pr);
    if (rc != FC_OK)
        return table_error(rc);
    Py_RETURN_NONE;
}

/* add(key, value, timeout, version) */
static PyObject *handle_add(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("add", nargs, 4) < 0)
        return NULL;
    prepared pr;
    if (prepare_store(self, args[0], args[1], args[2], args[3], &pr) < 0)
        return NULL;
    if (handle_lock(self) < 0) {
        prepared_release(&pr);
        return NULL;
    }
    fc_key k = fkey(&pr.mk);
    int rc;
    if (pr.deferred != NULL) {
        fc_entry *e = fc_peek_lock_held(TBL(self), &k);
        rc = (e != NULL && (e->never || e->expires > pr.now)) ? 0 : 2;
    }
    else
        rc = fc_add_lock_held(TBL(self), &k, pr.ev.vtype, pr.ev.p, pr.ev.n, pr.ex.never,
                              pr.ex.expires, self->max_entries, self->cull_frequency, pr.now);
    handle_unlock(self);
    if (rc == 2) {
        raise_deferred(&pr);
        prepared_release(&pr);
        return NULL;
    }
    prepared_release(&pr);
    if (rc < 0)
        return table_error(rc);
    return PyBool_FromLong(rc);
}

/* touch(key, timeout, version) */
static PyObject *handle_touch(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("touch", nargs, 3) < 0)
        return NULL;
    prepared pr;
    if (prepare_store(self, args[0], NULL, args[1], args[2], &pr) < 0)
        return NULL;
    if (handle_lock(self) < 0) {
        prepared_release(&pr);
        return NULL;
    }
    fc_key k = fkey(&pr.mk);
    int rc;
    if (pr.deferred != NULL) {
        fc_entry *e = fc_peek_lock_held(TBL(self), &k);
        rc = (e != NULL && (e->never || e->expires > pr.now)) ? 2 : 0;
    }
    else
        rc = fc_touch_lock_held(TBL(self), &k, pr.ex.never, pr.ex.expires, pr.now);
    handle_unlock(self);
    if (rc == 2) {
        raise_deferred(&pr);
        prepared_release(&pr);
        return NULL;
    }
    prepared_release(&pr);
    return PyBool_FromLong(rc);
}

/* has_key(key, version) */
static PyObject *handle_has_key(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("has_key", nargs, 2) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    made_key mk;
    double now;
    if (make_key(self, args[0], args[1], &mk) < 0)
        return NULL;
    if (get_now(st, &now) < 0) {
        made_key_release(&mk);
        return NULL;
    }
    fc_key k = fkey(&mk);
    if (self->store->shared) {
        int rc = store_get_optimistic(self->store, &k, now, NULL);
        if (rc == FC_OK || rc == FC_MISS) {
            made_key_release(&mk);
            return PyBool_FromLong(rc == FC_OK);
        }
    }
    if (handle_lock(self) < 0) {
        made_key_release(&mk);
        return NULL;
    }
    fc_entry *e = fc_get_lock_held(TBL(self), &k, now, 0);
    handle_unlock(self);
    made_key_release(&mk);
    return PyBool_FromLong(e != NULL);
}

/* delete(key, version) */
static PyObject *handle_delete(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("delete", nargs, 2) < 0)
        return NULL;
    made_key mk;
    if (make_key(self, args[0], args[1], &mk) < 0)
        return NULL;
    if (handle_lock(self) < 0) {
        made_key_release(&mk);
        return NULL;
    }
    fc_key k = fkey(&mk);
    int rc = fc_delete_lock_held(TBL(self), &k);
    handle_unlock(self);
    made_key_release(&mk);
    return PyBool_FromLong(rc);
}

static PyObject *not_found(const made_key *mk)
{
    PyObject *key = PyUnicode_DecodeUTF8(mk->p, (Py_ssize_t)mk->n, "surrogatepass");
    if (key != NULL) {
        PyErr_Format(PyExc_ValueError, "Key '%U' not found", key);
        Py_DECREF(key);
    }
    return NULL;
}

/* incr(key, delta, version).  An int value with an int delta is added in
 * place under the lock.  Any other value is read, added with Python's `+`
 * outside the lock, and written back only if nobody wrote it in between
 * (else read again), so concurrent increments are never lost. */
static PyObject *handle_incr(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("incr", nargs, 3) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    PyObject *delta = args[1];
    made_key mk;
    double now;
    if (make_key(self, args[0], args[2], &mk) < 0)
        return NULL;
    if (get_now(st, &now) < 0) {
        made_key_release(&mk);
        return NULL;
    }
    int64_t idelta = 0;
    int fast = 0;
    if (PyLong_CheckExact(delta)) {
        int overflow;
        long long d = PyLong_AsLongLongAndOverflow(delta, &overflow);
        if (d == -1 && PyErr_Occurred())
            PyErr_Clear();
        else if (!overflow) {
            idelta = d;
            fast = 1;
        }
    }
    fc_key k = fkey(&mk);
    PyObject *result = NULL;
    for (;;) {
        if (handle_lock(self) < 0)
            break;
        int64_t sum = 0;
        fc_entry *e;
        int rc;
        copied c;
        if (fast)
            rc = fc_incr_lock_held(TBL(self), &k, idelta, now, &sum, &e);
        else {
            e = fc_get_lock_held(TBL(self), &k, now, 0);
            rc = e ? FC_NOTINT : FC_MISS;
        }
        int oom = rc == FC_NOTINT && copy_out(&c, e) < 0;
        handle_unlock(self);
        if (rc == FC_MISS) {
            not_found(&mk);
            break;
        }
        if (rc == FC_OK) {
            result = PyLong_FromLongLong(sum);
            break;
        }
        if (oom) {
            PyErr_NoMemory();
            break;
        }
        uint64_t gen = c.gen;
        PyObject *value = decode_copied(st, &c);
        if (value == NULL)
            break;
        PyObject *nv = PyNumber_Add(value, delta);
        Py_DECREF(value);
        if (nv == NULL)
            break;
        enc_value ev;
        if (encode_value(st, self, nv, &ev) < 0) {
            Py_DECREF(nv);
            break;
        }
        if (handle_lock(self) < 0) {
            enc_release(&ev);
            Py_DECREF(nv);
            break;
        }
        rc = fc_replace_lock_held(TBL(self), &k, gen, ev.vtype, ev.p, ev.n);
        handle_unlock(self);
        enc_release(&ev);
        if (rc == FC_OK) {
            result = nv;
            break;
        }
        Py_DECREF(nv);
        if (rc != FC_CHANGED) {
            table_error(rc);
            break;
        }
    }
    made_key_release(&mk);
    return result;
}

/* ---- batches ---- */

typedef struct {
    made_key *keys;
    PyObject **objs; /* the caller's keys (get_many's result keys) */
    enc_value *vals; /* set_many only */
    Py_ssize_t n, cap;
} batch;

static void batch_release(batch *b)
{
    for (Py_ssize_t i = 0; i < b->n; i++) {
        made_key_release(&b->keys[i]);
        Py_XDECREF(b->objs[i]);
        if (b->vals)
            enc_release(&b->vals[i]);
    }
    PyMem_Free(b->keys);
    PyMem_Free(b->objs);
    PyMem_Free(b->vals);
}

/* Makes room for one more item.  made_key structures are large (they embed
 * a small buffer) and are pointed into, so they are never moved once
 * built: the arrays grow before an item is added. */
static int batch_grow(batch *b, int with_values)
{
    if (b->n < b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap * 2 : 16;
    made_key *nk = PyMem_Realloc(b->keys, (size_t)cap * sizeof(made_key));
    if (nk == NULL)
        goto nomem;
    b->keys = nk;
    /* made_key.p may point into its own buf: fix those after moving */
    for (Py_ssize_t i = 0; i < b->n; i++)
        if (b->keys[i].heap == NULL && b->keys[i].owned == NULL)
            b->keys[i].p = b->keys[i].buf;
    PyObject **no = PyMem_Realloc(b->objs, (size_t)cap * sizeof(PyObject *));
    if (no == NULL)
        goto nomem;
    b->objs = no;
    if (with_values) {
        enc_value *nv = PyMem_Realloc(b->vals, (size_t)cap * sizeof(enc_value));
        if (nv == NULL)
            goto nomem;
        b->vals = nv;
        for (Py_ssize_t i = 0; i < b->n; i++)
            if (b->vals[i].owned == NULL)
                b->vals[i].p = b->vals[i].small;
    }
    b->cap = cap;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

/* Collects made keys from an iterable (and values, for a mapping's items).
 * On an error at item i, items [0, i) stay in the batch: the caller applies
 * them before raising, as LocMemCache's per-key loop would have. */
static int batch_collect_keys(HandleObject *self, PyObject *keys, PyObject *version, batch *b)
{
    PyObject *it = PyObject_GetIter(keys);
    if (it == NULL)
        return -1;
    PyObject *item;
    int rc = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        if (batch_grow(b, 0) < 0 || make_key(self, item, version, &b->keys[b->n]) < 0) {
            Py_DECREF(item);
            rc = -1;
            break;
        }
        b->objs[b->n++] = item;
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred())
        rc = -1;
    return rc;
}

static int batch_collect_items(HandleObject *self, PyObject *data, PyObject *version, batch *b)
{
    fc_state *st = state_of_type(Py_TYPE(self));
    PyObject *items = PyObject_CallMethod(data, "items", NULL);
    if (items == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(items);
    Py_DECREF(items);
    if (it == NULL)
        return -1;
    PyObject *item;
    int rc = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *key, *value;
        if (batch_grow(b, 1) < 0 || !PyArg_UnpackTuple(item, "item", 2, 2, &key, &value) ||
            make_key(self, key, version, &b->keys[b->n]) < 0) {
            Py_DECREF(item);
            rc = -1;
            break;
        }
        if (encode_value(st, self, value, &b->vals[b->n]) < 0) {
            made_key_release(&b->keys[b->n]);
            Py_DECREF(item);
            rc = -1;
            break;
        }
        b->objs[b->n++] = Py_NewRef(key);
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred())
        rc = -1;
    return rc;
}

/* get_many(keys, version) -> dict */
static PyObject *handle_get_many(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("get_many", nargs, 2) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    batch b = {0};
    PyObject *result = NULL;
    copied *cs = NULL;
    char *found = NULL;
    double now;
    int failed = batch_collect_keys(self, args[0], args[1], &b) < 0;
    PyObject *exc = failed ? fc_get_raised() : NULL;
    if (get_now(st, &now) < 0)
        goto done;
    cs = PyMem_Malloc(sizeof(copied) * (size_t)(b.n ? b.n : 1));
    found = PyMem_Calloc((size_t)(b.n ? b.n : 1), 1);
    if (cs == NULL || found == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* A shared store answers keys without the lock, in order, up to the
     * first it cannot (then that one and the rest under the lock, so the
     * uses stay in the order of the keys, as LocMemCache's get() loop). */
    Py_ssize_t start = 0;
    int drain = 0;
    if (self->store->shared) {
        for (; start < b.n; start++) {
            fc_key k = fkey(&b.keys[start]);
            int rc = store_get_optimistic(self->store, &k, now, &cs[start]);
            if (rc == FC_OK)
                found[start] = 1;
            else if (rc != FC_MISS) {
                drain = rc == FC_EFULL;
                break;
            }
        }
        if (failed) /* the uses are made, the values are not wanted */
            for (Py_ssize_t i = 0; i < start; i++)
                if (found[i]) {
                    found[i] = 0;
                    copied_release(&cs[i]);
                }
    }
    int oom = 0;
    if (start < b.n && handle_lock(self) < 0)
        goto done;
    if (drain)
        fc_rings_drain_lock_held(TBL(self));
    for (Py_ssize_t i = start; i < b.n; i++) {
        fc_key k = fkey(&b.keys[i]);
        fc_entry *e = fc_get_lock_held(TBL(self), &k, now, 1);
        if (e != NULL && !failed) {
            if (copy_out(&cs[i], e) < 0)
                oom = 1;
            else
                found[i] = 1;
        }
    }
    if (start < b.n)
        handle_unlock(self);
    if (failed)
        goto done;
    if (oom) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyDict_New();
    for (Py_ssize_t i = 0; i < b.n; i++) {
        if (!found[i])
            continue;
        found[i] = 0;
        PyObject *v = result ? decode_copied(st, &cs[i]) : NULL;
        if (v == NULL || PyDict_SetItem(result, b.objs[i], v) < 0)
            Py_CLEAR(result);
        Py_XDECREF(v);
        copied_release(&cs[i]);
    }
done:
    if (found != NULL)
        for (Py_ssize_t i = 0; i < b.n; i++)
            if (found[i])
                copied_release(&cs[i]);
    PyMem_Free(cs);
    PyMem_Free(found);
    batch_release(&b);
    if (exc != NULL) {
        Py_XDECREF(result);
        fc_set_raised(exc);
        return NULL;
    }
    return result;
}

/* set_many(data, timeout, version) -> None */
static PyObject *handle_set_many(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("set_many", nargs, 3) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    batch b = {0};
    double now;
    expiry ex;
    if (get_now(st, &now) < 0)
        return NULL;
    /* A bad timeout fails the call before anything is stored, but only when
     * there is something to store (BaseCache's loop never looks at it for
     * an empty mapping). */
    PyObject *bad_timeout = NULL;
    if (compute_expiry(st, self, args[1], now, &ex) < 0)
        bad_timeout = fc_get_raised();
    int failed = batch_collect_items(self, args[0], args[2], &b) < 0;
    PyObject *exc = failed ? fc_get_raised() : NULL;
    if (bad_timeout != NULL) {
        int nothing = exc == NULL && b.n == 0;
        batch_release(&b);
        if (nothing) {
            Py_DECREF(bad_timeout);
            Py_RETURN_NONE;
        }
        Py_XDECREF(exc);
        fc_set_raised(bad_timeout);
        return NULL;
    }
    int rc = FC_OK;
    if (handle_lock(self) == 0) {
        for (Py_ssize_t i = 0; i < b.n && rc == FC_OK; i++) {
            fc_key k = fkey(&b.keys[i]);
            rc = fc_set_lock_held(TBL(self), &k, b.vals[i].vtype, b.vals[i].p, b.vals[i].n,
                                  ex.never, ex.expires, self->max_entries, self->cull_frequency);
        }
        handle_unlock(self);
    }
    else
        rc = FC_ELOCK;
    batch_release(&b);
    if (exc != NULL) {
        fc_set_raised(exc);
        return NULL;
    }
    if (rc == FC_ELOCK)
        return NULL;
    if (rc != FC_OK)
        return table_error(rc);
    Py_RETURN_NONE;
}

/* delete_many(keys, version) -> None */
static PyObject *handle_delete_many(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("delete_many", nargs, 2) < 0)
        return NULL;
    batch b = {0};
    int failed = batch_collect_keys(self, args[0], args[1], &b) < 0;
    PyObject *exc = failed ? fc_get_raised() : NULL;
    int locked = handle_lock(self) == 0;
    if (locked) {
        for (Py_ssize_t i = 0; i < b.n; i++) {
            fc_key k = fkey(&b.keys[i]);
            fc_delete_lock_held(TBL(self), &k);
        }
        handle_unlock(self);
    }
    batch_release(&b);
    if (exc != NULL) {
        fc_set_raised(exc);
        return NULL;
    }
    if (!locked)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *handle_clear(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    if (handle_lock(self) < 0)
        return NULL;
    fc_clear_lock_held(TBL(self));
    handle_unlock(self);
    Py_RETURN_NONE;
}

/* make_key(key, version) -> str: the made key, validated (warnings). */
static PyObject *handle_make_key(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("make_key", nargs, 2) < 0)
        return NULL;
    made_key mk;
    if (make_key(self, args[0], args[1], &mk) < 0)
        return NULL;
    PyObject *r = PyUnicode_DecodeUTF8(mk.p, (Py_ssize_t)mk.n, "surrogatepass");
    made_key_release(&mk);
    return r;
}

/* ---- attributes ---- */

/* A "%s" part fixed at assignment (KEY_PREFIX, VERSION): keeps the object,
 * str(object) in UTF-8, its length in code points, and whether it holds a
 * character memcached rejects. */
static int set_text_part(PyObject *value, const char *name, PyObject **obj, PyObject **bytes,
                         Py_ssize_t *cp, int *ctl)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", name);
        return -1;
    }
    Py_ssize_t n;
    PyObject *b = str_bytes(value, &n);
    if (b == NULL)
        return -1;
    Py_XSETREF(*bytes, b);
    *cp = n;
    *ctl = has_ctl(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_XSETREF(*obj, Py_NewRef(value));
    return 0;
}

static int set_prefix(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return set_text_part(value, "key_prefix", &self->key_prefix, &self->prefix_bytes,
                         &self->prefix_cp, &self->prefix_ctl);
}

static int set_version(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return set_text_part(value, "version", &self->version, &self->version_bytes, &self->version_cp,
                         &self->version_ctl);
}

static int set_default_timeout(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete default_timeout");
        return -1;
    }
    Py_XSETREF(self->default_timeout, Py_NewRef(value));
    return 0;
}

static PyObject *get_obj(HandleObject *self, void *closure)
{
    PyObject *v = *(PyObject **)((char *)self + (size_t)closure);
    return Py_NewRef(v ? v : Py_None);
}

/* An int attribute (MAX_ENTRIES, CULL_FREQUENCY): Python ints beyond 64
 * bits are clamped, which gives the same comparisons and divisions. */
static int set_int64(HandleObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        v = overflow > 0 ? INT64_MAX : INT64_MIN;
    *(int64_t *)((char *)self + (size_t)closure) = v;
    return 0;
}

static PyObject *get_int64(HandleObject *self, void *closure)
{
    return PyLong_FromLongLong(*(int64_t *)((char *)self + (size_t)closure));
}

static int set_flag(HandleObject *self, PyObject *value, void *closure)
{
    int v = value ? PyObject_IsTrue(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    *(int *)((char *)self + (size_t)closure) = v;
    return 0;
}

static PyObject *get_flag(HandleObject *self, void *closure)
{
    return PyBool_FromLong(*(int *)((char *)self + (size_t)closure));
}

static int set_protocol(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    long v = value ? PyLong_AsLong(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "cannot delete pickle_protocol");
        return -1;
    }
    self->pickle_protocol = (int)v;
    return 0;
}

static PyObject *get_protocol(HandleObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->pickle_protocol);
}

static PyObject *get_store(HandleObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef((PyObject *)self->store);
}

static int set_store(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    fc_state *st = state_of_type(Py_TYPE(self));
    if (value == NULL || !PyObject_TypeCheck(value, st->StoreType)) {
        PyErr_SetString(PyExc_TypeError, "store must be a fastcache Store");
        return -1;
    }
    Py_SETREF(self->store, (StoreObject *)Py_NewRef(value));
    return 0;
}

#define OFF(field) ((void *)offsetof(HandleObject, field))
static PyGetSetDef handle_getset[] = {
    {"store", (getter)get_store, (setter)set_store, "The table this handle uses.", NULL},
    {"key_prefix", (getter)get_obj, (setter)set_prefix, "KEY_PREFIX.", OFF(key_prefix)},
    {"version", (getter)get_obj, (setter)set_version, "Default VERSION.", OFF(version)},
    {"default_timeout", (getter)get_obj, (setter)set_default_timeout, "TIMEOUT.",
     OFF(default_timeout)},
    {"max_entries", (getter)get_int64, (setter)set_int64, "MAX_ENTRIES.", OFF(max_entries)},
    {"cull_frequency", (getter)get_int64, (setter)set_int64, "CULL_FREQUENCY.",
     OFF(cull_frequency)},
    {"fast_key", (getter)get_flag, (setter)set_flag,
     "Build keys in C (default key function, stock validation).", OFF(fast_key)},
    {"fast_timeout", (getter)get_flag, (setter)set_flag,
     "Compute expiry in C (stock get_backend_timeout).", OFF(fast_timeout)},
    {"pickle_protocol", (getter)get_protocol, (setter)set_protocol, "Pickle protocol.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
#undef OFF

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL
static PyMethodDef handle_methods[] = {
    {"get", FASTCALL(handle_get), "get(key, default, version)"},
    {"set", FASTCALL(handle_set), "set(key, value, timeout, version)"},
    {"add", FASTCALL(handle_add), "add(key, value, timeout, version) -> bool"},
    {"touch", FASTCALL(handle_touch), "touch(key, timeout, version) -> bool"},
    {"has_key", FASTCALL(handle_has_key), "has_key(key, version) -> bool"},
    {"delete", FASTCALL(handle_delete), "delete(key, version) -> bool"},
    {"incr", FASTCALL(handle_incr), "incr(key, delta, version) -> new value"},
    {"get_many", FASTCALL(handle_get_many), "get_many(keys, version) -> dict"},
    {"set_many", FASTCALL(handle_set_many), "set_many(data, timeout, version)"},
    {"delete_many", FASTCALL(handle_delete_many), "delete_many(keys, version)"},
    {"make_key", FASTCALL(handle_make_key), "make_key(key, version) -> str"},
    {"clear", (PyCFunction)handle_clear, METH_NOARGS, "Remove every entry."},
    {NULL, NULL, 0, NULL},
};
#undef FASTCALL

static PyObject *handle_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    fc_state *st = state_of_type(type);
    PyObject *store, *owner;
    if (require_configured(st) < 0)
        return NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Handle() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Handle", 2, 2, &store, &owner))
        return NULL;
    if (!PyObject_TypeCheck(store, st->StoreType)) {
        PyErr_SetString(PyExc_TypeError, "Handle() argument 1 must be a Store");
        return NULL;
    }
    HandleObject *self = (HandleObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->store = (StoreObject *)Py_NewRef(store);
    self->owner = PyWeakref_NewRef(owner, NULL);
    self->max_entries = 300;
    self->cull_frequency = 3;
    self->fast_key = 1;
    self->fast_timeout = 1;
    self->pickle_protocol = 5;
    self->default_timeout = PyLong_FromLong(300);
    PyObject *empty = PyUnicode_FromStringAndSize("", 0), *one = PyLong_FromLong(1);
    int bad = self->owner == NULL || self->default_timeout == NULL || empty == NULL ||
              one == NULL || set_prefix(self, empty, NULL) < 0 || set_version(self, one, NULL) < 0;
    Py_XDECREF(empty);
    Py_XDECREF(one);
    if (bad) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int handle_traverse(HandleObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    Py_VISIT(self->key_prefix);
    Py_VISIT(self->version);
    Py_VISIT(self->default_timeout);
    return 0;
}

static int handle_clear_refs(HandleObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->key_prefix);
    Py_CLEAR(self->version);
    Py_CLEAR(self->default_timeout);
    return 0;
}

static void handle_dealloc(HandleObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    handle_clear_refs(self);
    Py_CLEAR(self->prefix_bytes);
    Py_CLEAR(self->version_bytes);
    Py_CLEAR(self->store);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot handle_slots[] = {
    {Py_tp_new, handle_new},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear_refs},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_tp_doc, "Handle(store, owner): one cache backend's access to a store."},
    {0, NULL},
};

static PyType_Spec handle_spec = {
    .name = "django_fastcache._fastcache.Handle",
    .basicsize = sizeof(HandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = handle_slots,
};

/* ------------------------------------------------------------------------ */
/* Module                                                                   */

static PyObject *fc_configure(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"default_timeout", "validate_key", "key_warning",
                             "pickle_dumps",    "pickle_loads", NULL};
    PyObject *dt, *vk, *kw, *pd, *pl;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$OOOOO:configure", kwlist, &dt, &vk, &kw, &pd,
                                     &pl))
        return NULL;
    fc_state *st = PyModule_GetState(module);
    Py_XSETREF(st->default_timeout, Py_NewRef(dt));
    Py_XSETREF(st->validate_key, Py_NewRef(vk));
    Py_XSETREF(st->key_warning, Py_NewRef(kw));
    Py_XSETREF(st->pickle_dumps, Py_NewRef(pd));
    Py_XSETREF(st->pickle_loads, Py_NewRef(pl));
    Py_RETURN_NONE;
}

static PyObject *fc_configured(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fc_state *st = PyModule_GetState(module);
    return PyBool_FromLong(st->default_timeout != NULL);
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))fc_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(*, default_timeout, validate_key, key_warning, pickle_dumps, pickle_loads)"},
    {"configured", fc_configured, METH_NOARGS, "Whether configure() was called."},
    {NULL, NULL, 0, NULL},
};

static int fc_exec(PyObject *module)
{
    fc_state *st = PyModule_GetState(module);
    st->StoreType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &store_spec, NULL);
    if (st->StoreType == NULL || PyModule_AddType(module, st->StoreType) < 0)
        return -1;
    st->HandleType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &handle_spec, NULL);
    if (st->HandleType == NULL || PyModule_AddType(module, st->HandleType) < 0)
        return -1;
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL)
        return -1;
    st->time_dict = Py_NewRef(PyModule_GetDict(time_mod));
    st->time_time = PyObject_GetAttrString(time_mod, "time");
    Py_DECREF(time_mod);
    if (st->time_time == NULL)
        return -1;
    st->str_time = PyUnicode_InternFromString("time");
    st->str_make_and_validate_key = PyUnicode_InternFromString("make_and_validate_key");
    st->str_get_backend_timeout = PyUnicode_InternFromString("get_backend_timeout");
    st->str_version = PyUnicode_InternFromString("version");
    if (!st->str_time || !st->str_make_and_validate_key || !st->str_get_backend_timeout ||
        !st->str_version)
        return -1;
    if (PyModule_AddIntConstant(module, "MEMCACHE_MAX_KEY_LENGTH", MEMCACHE_MAX_KEY_LENGTH) < 0)
        return -1;
    return 0;
}

static int fc_traverse(PyObject *module, visitproc visit, void *arg)
{
    fc_state *st = PyModule_GetState(module);
    Py_VISIT(st->StoreType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->default_timeout);
    Py_VISIT(st->validate_key);
    Py_VISIT(st->key_warning);
    Py_VISIT(st->pickle_dumps);
    Py_VISIT(st->pickle_loads);
    Py_VISIT(st->time_dict);
    Py_VISIT(st->time_time);
    return 0;
}

static int fc_clear(PyObject *module)
{
    fc_state *st = PyModule_GetState(module);
    Py_CLEAR(st->StoreType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->default_timeout);
    Py_CLEAR(st->validate_key);
    Py_CLEAR(st->key_warning);
    Py_CLEAR(st->pickle_dumps);
    Py_CLEAR(st->pickle_loads);
    Py_CLEAR(st->time_dict);
    Py_CLEAR(st->time_time);
    Py_CLEAR(st->str_time);
    Py_CLEAR(st->str_make_and_validate_key);
    Py_CLEAR(st->str_get_backend_timeout);
    Py_CLEAR(st->str_version);
    Py_CLEAR(st->empty_tuple);
    return 0;
}

static void fc_free(void *module) { fc_clear((PyObject *)module); }

static PyModuleDef_Slot fc_slots[] = {
    {Py_mod_exec, fc_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fc_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "django_fastcache._fastcache",
    .m_doc = "The C core of django-fastcache: tables with LocMemCache's semantics.",
    .m_size = sizeof(fc_state),
    .m_methods = module_methods,
    .m_slots = fc_slots,
    .m_traverse = fc_traverse,
    .m_clear = fc_clear,
    .m_free = fc_free,
};

PyMODINIT_FUNC PyInit__fastcache(void) { return PyModuleDef_Init(&fc_module_def); }
