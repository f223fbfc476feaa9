/*
 * fc_store.c - the Store type: one table, in private memory or in a shared
 * segment, with everything about its lock: taking it (spin, then wait with
 * the GIL released), cache._lock as Python code takes it, what a forked
 * child must settle, the per-process rings of gets without the lock, and
 * the read-only views LocMemCache's _cache/_expire_info are built on.  It
 * must not make keys, encode values or call back into a backend: those are
 * the caller's, done before the lock is taken.
 */
#include "fc_binding.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Store                                                                    */

/* Forks of this process and the thread that made the last one, recorded in
 * the child (pthread_atfork, so every fork counts, os.fork() or not): a
 * store compares fc_forks with its own count to notice it was forked
 * (store_mine) and never logs to a ring its parent owns.  fc_fork_run is
 * fc_forks before the first of the latest forks all made by that thread. */
static unsigned long fc_forks;
static unsigned long fc_fork_thread;
static unsigned long fc_fork_run;
pthread_once_t fc_setup_once = PTHREAD_ONCE_INIT;
/* Serialises settling a store after a fork (store_mine) between threads the
 * child starts; made anew in every child, where no thread holds it. */
static pthread_mutex_t fc_settle_lock = PTHREAD_MUTEX_INITIALIZER;
static void count_fork(void)
{
    unsigned long me = PyThread_get_thread_ident();
    if (me != fc_fork_thread)
        fc_fork_run = fc_forks;
    fc_forks++;
    fc_fork_thread = me;
    pthread_mutex_init(&fc_settle_lock, NULL);
}

/* Gets without the lock order their uses by CLOCK_MONOTONIC stamps, which
 * needs a clock finer than one operation: on a host whose clock is coarser
 * than a microsecond every get takes the lock instead. */
static int fc_fine_clock;
void process_setup(void)
{
    struct timespec res;
    fc_fine_clock =
        clock_getres(CLOCK_MONOTONIC, &res) == 0 && res.tv_sec == 0 && res.tv_nsec <= 1000;
    (void)pthread_atfork(NULL, NULL, count_fork);
}

/* Whether lane l holds a ring claimed in this process (not in a parent). */
static inline int lane_owns_ring(const struct fc_lane *l)
{
    return l->ring >= 0 && l->ring_forks == fc_forks;
}

static int pid_alive(uint64_t pid)
{
    return pid > (uint64_t)INT32_MAX || kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* The lock state of a store in a forked child, set right on the child's
 * first use of the store after the fork (or at once, by the at-fork hook in
 * backend.py).  Nothing is locked for a fork: a table is only read or
 * written with the GIL held, and the forking thread holds the GIL, so no
 * table is ever forked half-written (and a fork never waits, so it can
 * never deadlock with a lock holder, in this process or another).  What
 * the child must settle is who holds the lock:
 *   - a private table's mutex is the child's own copy, maybe held by a
 *     thread that does not exist in the child: it is made anew.  If the
 *     forking thread held it through cache._lock, that thread holds the new
 *     one, as it would a threading.Lock, so leaving its `with` block in the
 *     child releases it;
 *   - a shared table's mutex is the one every process uses, and a holder in
 *     the parent releases it there.  The child never treats it as its own:
 *     the forking thread's holds through cache._lock become inherited ones,
 *     which release() drops without unlocking (and locked() reports); the
 *     child's first use of the table waits for the parent to release it.
 *     The child claims a ring of its own (store_owns_ring).
 * A store left unused through several forks (a child that forks again
 * first) keeps the holds only if one thread made all those forks: a thread
 * made in between may have the ident of the parent's holder.
 * Returns 0, or -1 with an exception if a new mutex cannot be made. */
static int store_after_fork(StoreObject *s)
{
    if (FC_LOAD(&s->forks) == fc_forks) /* another thread settled it */
        return 0;
    long holds = 0;
    int one_thread = s->forks >= fc_fork_run;
    if (one_thread && s->py_locks > 0 && s->py_holder == fc_fork_thread)
        holds += s->py_locks;
    if (one_thread && s->py_inherited > 0 && s->py_heir == fc_fork_thread)
        holds += s->py_inherited;
    if (s->shared) {
        s->py_locks = 0;
        s->py_inherited = holds;
        s->py_heir = fc_fork_thread;
    }
    else {
        if (fc_table_reinit_lock(&s->table) != FC_OK ||
            (holds > 0 && fc_table_trylock(&s->table) != FC_OK)) {
            PyErr_SetString(PyExc_RuntimeError,
                            "fastcache: cannot make the table lock anew after fork");
            return -1;
        }
        s->py_locks = holds > 0;
        if (holds > 0)
            s->py_holder = fc_fork_thread;
    }
    FC_STORE(&s->forks, fc_forks);
    return 0;
}

/* Every use of a store's lock starts here. */
static inline int store_mine(StoreObject *s)
{
    if (FC_LOAD(&s->forks) == fc_forks)
        return 0;
    pthread_mutex_lock(&fc_settle_lock);
    int rc = store_after_fork(s);
    pthread_mutex_unlock(&fc_settle_lock);
    return rc;
}

/* cache._lock's bookkeeping (py_locks, py_holder) is written by the thread
 * holding the table lock, and read by threads that do not hold it, to learn
 * whether they do: the holder is published before the count (release), so
 * a reader that sees the count sees its holder. */
static inline int held_by_me(StoreObject *s)
{
    return __atomic_load_n(&s->py_locks, __ATOMIC_ACQUIRE) > 0 &&
           FC_LOAD(&s->py_holder) == PyThread_get_thread_ident();
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
int store_lock(StoreObject *s)
{
    if (s->table.unreported_repairs != 0 && report_repairs(s) < 0)
        return -1;
    if (store_mine(s) < 0)
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

/* For the views and counters: the lock, unless this thread already holds it
 * through cache._lock.acquire().  Returns 1 when it took it, 0 when it was
 * already held, -1 on error. */
static int view_lock(StoreObject *s)
{
    if (store_mine(s) < 0)
        return -1;
    if (held_by_me(s))
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
    self->forks = fc_forks;
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
    self->forks = fc_forks;
    self->path = path;
    self->shm.base = NULL;
    self->shm.fd = -1;
    for (int i = 0; i < FC_LANES; i++)
        self->lanes[i].ring = RING_NONE;
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
    for (int i = 0; i < FC_LANES; i++)
        if (self->shared && self->table.h != NULL && lane_owns_ring(&self->lanes[i]))
            fc_ring_release(&self->table, self->lanes[i].ring);
    if (self->shared)
        fc_shm_close(&self->shm);
    else if (self->table.h != NULL)
        fc_table_destroy(&self->table);
    Py_CLEAR(self->path);
    tp->tp_free(self);
    Py_DECREF(tp);
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
    if (store_mine(self) < 0)
        return NULL;
    if (FC_LOAD(&self->py_inherited) > 0 || fc_table_trylock(&self->table) != FC_OK)
        Py_RETURN_TRUE;
    fc_table_unlock(&self->table);
    Py_RETURN_FALSE;
}

/* acquire(blocking, timeout), with threading.Lock's rules; backend.py's
 * _LockView has threading.Lock check the arguments first, so that errors
 * are exactly its errors in every Python version. */
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
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
        return NULL;
    }
    if (!blocking && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1.0) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (timeout > (double)PY_TIMEOUT_MAX / 1e6) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return NULL;
    }
    if (store_mine(self) < 0)
        return NULL;
    int rc = fc_table_trylock(&self->table);
    if (rc != FC_OK && blocking && timeout == -1.0) {
        Py_BEGIN_ALLOW_THREADS
        rc = fc_table_lock(&self->table);
        Py_END_ALLOW_THREADS
    }
    else if (rc != FC_OK && blocking && timeout > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double secs = (double)until.tv_sec + until.tv_nsec / 1e9 + timeout;
        until.tv_sec = (time_t)secs;
        until.tv_nsec = (long)((secs - (double)until.tv_sec) * 1e9);
        if (until.tv_nsec < 0 || until.tv_nsec >= 1000000000)
            until.tv_nsec = 0;
        Py_BEGIN_ALLOW_THREADS
        rc = fc_table_timedlock(&self->table, &until);
        Py_END_ALLOW_THREADS
    }
    if (rc == FC_OK) {
        FC_STORE(&self->py_holder, PyThread_get_thread_ident());
        __atomic_store_n(&self->py_locks, FC_LOAD(&self->py_locks) + 1, __ATOMIC_RELEASE);
    }
    return PyBool_FromLong(rc == FC_OK);
}

/* release(): as threading.Lock's, except that a shared store's lock can
 * only be released by the thread that took it.  Its mutex is robust and
 * process-shared, so it belongs to that thread: unlocking it from another
 * would fail and leave it held for every process. */
static PyObject *store_release(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (store_mine(self) < 0)
        return NULL;
    unsigned long me = PyThread_get_thread_ident();
    /* Whoever holds the table lock owns the count; a release that would find
     * no holds left takes the lock's word for it, not a stale count. */
    long locks = __atomic_load_n(&self->py_locks, __ATOMIC_ACQUIRE);
    if (locks > 0 && (!self->shared || FC_LOAD(&self->py_holder) == me) &&
        __atomic_compare_exchange_n(&self->py_locks, &locks, locks - 1, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED)) {
        fc_table_unlock(&self->table);
        Py_RETURN_NONE;
    }
    long inherited = FC_LOAD(&self->py_inherited);
    if (inherited > 0 && self->py_heir == me &&
        __atomic_compare_exchange_n(&self->py_inherited, &inherited, inherited - 1, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        /* Held by the parent's forking thread, which releases it there. */
        Py_RETURN_NONE;
    }
    if (FC_LOAD(&self->py_locks) == 0 && FC_LOAD(&self->py_inherited) == 0)
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
    else
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot release a SharedMemoryCache lock acquired by another thread "
                        "(its process-shared mutex can only be released by the thread holding "
                        "it)");
    return NULL;
}

/* _fork_reinit(): store_after_fork at once (the at-fork hook in backend.py
 * calls it for every registered store in a child). */
static PyObject *store_fork_reinit(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (store_mine(self) < 0)
        return NULL;
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
    FC_STORE(&self->table.stats_off, !on);
    Py_RETURN_NONE;
}

static inline struct fc_lane *my_lane(StoreObject *s, unsigned step);

/* _ring(): the ring this thread logs its gets without the lock to, or -1
 * (a private store, none claimed yet, or all taken); for tests. */
static PyObject *store_ring_index(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    struct fc_lane *l = my_lane(self, 0);
    return PyLong_FromLong(self->shared && lane_owns_ring(l) ? l->ring : -1);
}

static PyObject *store_check(StoreObject *self, PyObject *Py_UNUSED(ignored))
{
    int took = view_lock(self);
    if (took < 0)
        return NULL;
    int rc = fc_table_check_keys(&self->table);
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
     "Run the table invariant checker (and every key's hash); 0 when consistent."},
    {"shared", (PyCFunction)(void (*)(void))store_shared, METH_FASTCALL | METH_CLASS,
     "shared(path, max_bytes): the table in a shared memory segment."},
    {"_count", (PyCFunction)store_count, METH_O, "Switch this process's counters on or off."},
    {"_fork_reinit", (PyCFunction)store_fork_reinit, METH_NOARGS,
     "In a forked child: make the lock state this process's."},
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

PyType_Spec store_spec = {
    .name = "django_fastcache._fastcache.Store",
    .basicsize = sizeof(StoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = store_slots,
};

PyObject *table_error(int rc)
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

/* The lane a thread starts from: threads spread over the lanes by their
 * ident (one lane, always, where the GIL is on). */
static inline struct fc_lane *my_lane(StoreObject *s, unsigned step)
{
#if FC_LANES > 1
    uint64_t id = (uint64_t)PyThread_get_thread_ident() * 0x9e3779b97f4a7c15ULL;
    return &s->lanes[((unsigned)(id >> 32) + step) % FC_LANES];
#else
    (void)step;
    return &s->lanes[0];
#endif
}

/* Takes a lane for this thread's get without the lock (its own, else the
 * next free one), or NULL when every lane is in use: the get takes the lock
 * then.  Where the GIL serialises gets, the lane is never contended. */
static struct fc_lane *lane_take(StoreObject *s)
{
    for (unsigned i = 0; i < FC_LANES; i++) {
        struct fc_lane *l = my_lane(s, i);
        if (__atomic_load_n(&l->busy, __ATOMIC_RELAXED) == 0 &&
            __atomic_exchange_n(&l->busy, 1, __ATOMIC_ACQUIRE) == 0)
            return l;
    }
    return NULL;
}

static inline void lane_give(struct fc_lane *l) { __atomic_store_n(&l->busy, 0, __ATOMIC_RELEASE); }

/* The ring of lane l (taken) in a shared store, claimed on first use; -1
 * when it has none.  When every ring is taken, the rings of processes that
 * are gone are reclaimed under the lock. */
static int lane_ring(StoreObject *s, struct fc_lane *l)
{
    if (lane_owns_ring(l))
        return l->ring;
    if (l->ring == RING_BUSY && l->ring_forks == fc_forks && ++l->ring_retry % RING_RETRY)
        return -1;
    uint64_t pid = (uint64_t)getpid();
    l->ring_forks = fc_forks;
    l->ring = fc_fine_clock ? fc_ring_claim(&s->table, pid) : -1;
    if (l->ring < 0 && fc_fine_clock && fc_table_trylock(&s->table) == FC_OK) {
        int freed = fc_rings_reclaim_lock_held(&s->table, pid_alive);
        fc_table_unlock(&s->table);
        if (freed)
            l->ring = fc_ring_claim(&s->table, pid);
    }
    if (l->ring < 0) {
        l->ring = RING_BUSY;
        l->ring_retry = 0;
        return -1;
    }
    return l->ring;
}

/* A shared store's get without the lock (fc_get_optimistic) into c; with c
 * NULL, only whether a live entry exists (has_key). */
int store_get_optimistic(StoreObject *s, const fc_key *k, double now, copied *c)
{
    if (FC_LOAD(&s->table.unreported_repairs) != 0)
        return FC_ELOCK; /* the locked path reports them (store_lock) */
    struct fc_lane *l = lane_take(s);
    if (l == NULL)
        return FC_ELOCK;
    int rc, ring = lane_ring(s, l);
    if (ring < 0)
        rc = FC_ELOCK;
    else if (c == NULL)
        rc = fc_get_optimistic(&s->table, ring, k, now, NULL, 0, NULL, NULL, NULL);
    else {
        int vtype;
        size_t n;
        rc = fc_get_optimistic(&s->table, ring, k, now, c->small, sizeof c->small, &vtype, &n,
                               &c->gen);
        if (rc == FC_OK) {
            c->p = c->small;
            c->vtype = vtype;
            c->n = n;
        }
    }
    lane_give(l);
    return rc;
}
