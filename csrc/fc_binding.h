/*
 * fc_binding.h - what the files of the Python binding share.  Internal: only
 * the binding's own .c files include it (fc_module.c, fc_store.c,
 * fc_keys.c, fc_values.c, fc_expiry.c, fc_handle.c; fc_codec.c has its own
 * header).  It holds the module state, the two object layouts (Store,
 * Handle), the small structures a call passes between steps (made key,
 * encoded value, copy, expiry), and the functions one file offers another.
 * The table itself (fc_table.h, fc_shm.h) never sees any of it.
 *
 * Every API call follows the same three steps, so that no Python object is
 * touched while the table lock is held:
 *   1. build and validate the key (fc_keys.c), encode or pickle the value
 *      (fc_values.c) and compute the expiry (fc_expiry.c), all with the GIL
 *      held and the table unlocked (user code such as __str__, __reduce__
 *      or a warnings filter may run here);
 *   2. take the lock (fc_store.c), run one table operation, copy any value
 *      out into C memory, release the lock;
 *   3. decode or unpickle the copy (fc_values.c).
 * fc_handle.c strings the steps together for each method of the API.
 * Step 2 always runs with the GIL held (the GIL is released only to wait
 * for the lock), which is what lets fork work without taking any lock
 * (store_after_fork in fc_store.c).
 *
 * Free-threaded CPython (Py_GIL_DISABLED; the module declares
 * Py_MOD_GIL_NOT_USED there): what the GIL used to serialise is guarded
 * explicitly.  A handle's settings, which Python code may reassign at any
 * time (KEY_PREFIX, VERSION, TIMEOUT, the options, the fast-path decision,
 * cache._cache), are read and written under the handle's spinlock
 * (handle_lock), or as single atomic words; a store's cache._lock bookkeeping is atomic;
 * a shared store's lock-free gets log their uses through one lane per
 * thread (fc_store.c); the codec walks snapshots of lists and dicts that
 * another thread may change (fc_codec.c).  "With the GIL held" above reads
 * "attached to the interpreter" there: os.fork() stops every attached
 * thread first (PyOS_BeforeFork), so fork still needs no lock.
 */
#ifndef FC_BINDING_H
#define FC_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>

#include "fc_codec.h"
#include "fc_shm.h"
#include "fc_table.h"

#define MEMCACHE_MAX_KEY_LENGTH 250
#define SMALL_BUF 256

/* ------------------------------------------------------------------------ */
/* Compatibility                                                            */

#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *fc_get_raised(void)
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
static inline void fc_set_raised(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#else
#define fc_get_raised PyErr_GetRaisedException
#define fc_set_raised PyErr_SetRaisedException
#endif

/* PyDict_GetItemRef (3.13+). */
#if PY_VERSION_HEX < 0x030D0000
static inline int PyDict_GetItemRef(PyObject *p, PyObject *key, PyObject **result)
{
    PyObject *v = PyDict_GetItemWithError(p, key);
    *result = v == NULL ? NULL : Py_NewRef(v);
    return v != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}
#endif

/* Words another thread may write meanwhile (free-threaded builds): loads
 * and stores that cannot tear and that ThreadSanitizer understands. */
#define FC_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define FC_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

/* New reference to the referent of a weakref, or NULL (no error) if dead. */
static inline PyObject *fc_weakref_get(PyObject *ref)
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
    PyObject *time_module;
    PyObject *time_dict;        /* the time module's __dict__ */
    const PyMethodDef *time_ml; /* time.time's method table entry, once seen */
    PyObject *str_time;
    PyObject *str_make_and_validate_key;
    PyObject *str_get_backend_timeout;
    PyObject *str_version;
    PyObject *str_refresh_fast_paths;
    PyObject *empty_tuple;
    fc_codec_state codec;
} fc_state;

static inline fc_state *state_of_type(PyTypeObject *tp)
{
    return (fc_state *)PyType_GetModuleState(tp);
}

static inline int require_configured(fc_state *st)
{
    if (st->default_timeout == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "django_fastcache._fastcache is not configured; import django_fastcache");
        return -1;
    }
    return 0;
}

/* Lanes of lock-free gets per store: one where the GIL serialises them. */
#ifdef Py_GIL_DISABLED
#define FC_LANES 8
#else
#define FC_LANES 1
#endif

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
     * holding thread may still read the views.  py_inherited: a shared
     * store's holds that py_heir, the thread that forked this process, had
     * in the parent (store_after_fork); release() drops them without
     * unlocking.  forks: fc_forks when this lock state was last made this
     * process's. */
    long py_locks;
    unsigned long py_holder;
    long py_inherited;
    unsigned long py_heir;
    unsigned long forks;
    /* A shared store's rings for gets without the lock (fc_table.h), one
     * per lane: a ring has one writer, so threads that read at once each
     * use a lane of their own (busy while in use; fc_store.c).  ring is its
     * index, RING_NONE before it is claimed, RING_BUSY while every ring is
     * taken (retried every RING_RETRY gets).  Claimed in this process:
     * ring_forks is the fork count then, so a forked child claims its own. */
    struct fc_lane {
        int busy;
        int ring;
        unsigned ring_retry;
        unsigned long ring_forks;
        char pad_[48]; /* one cache line each */
    } lanes[FC_LANES];
} StoreObject;

typedef struct {
    char *buf;
    size_t len, cap;
    size_t count;
    int failed;
} key_dump;

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

/* A copy of a value, made under the lock and decoded after it. */
typedef struct {
    int vtype;
    size_t n;
    char *p;
    uint64_t gen;
    char small[SMALL_BUF];
} copied;

/* An encoded value: a native encoding or a pickle. */
typedef struct {
    int vtype;
    const char *p;
    size_t n;
    PyObject *owned;
    char small[8];
} enc_value;

/* BaseCache.get_backend_timeout(timeout), given the current time. */
typedef struct {
    int never;
    double expires;
} expiry;

typedef struct {
    PyObject_HEAD
    StoreObject *store;
    PyObject *retired;                /* free-threaded builds: stores replaced (handle_store) */
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
    /* The owner's class when the fast paths were last decided, and its
     * version tag then (0: decide again at the next call). */
    PyTypeObject *owner_type;
    unsigned int seen_tag;
    /* Guards the fields Python code may reassign while another thread reads
     * them (free-threaded builds; handle_lock). */
    int spin;
} HandleObject;

/* handle_lock/handle_unlock: the handle's fields that Python code may
 * reassign at any time (the objects, and the parts read together such as a
 * prefix and its length) are read and swapped under a spinlock of the
 * handle's own where no GIL serialises them.  Not a critical section
 * (Py_BEGIN_CRITICAL_SECTION): a PyMutex can be handed to a waiter that is
 * parked, detached, when os.fork() stops the world, and would then be
 * copied held into the child, whose first call would wait forever.  The
 * spinlock is held only across a few loads, stores and increfs, which
 * never detach the thread nor reach a point where fork can stop it, so it
 * is never held at a fork; a waiter spins attached for those few
 * nanoseconds.  ThreadSanitizer sees its atomics. */
static inline void handle_lock(HandleObject *h)
{
#ifdef Py_GIL_DISABLED
    while (__atomic_exchange_n(&h->spin, 1, __ATOMIC_ACQUIRE) != 0)
        while (__atomic_load_n(&h->spin, __ATOMIC_RELAXED) != 0)
            fc_cpu_relax();
#else
    (void)h;
#endif
}

static inline void handle_unlock(HandleObject *h)
{
#ifdef Py_GIL_DISABLED
    __atomic_store_n(&h->spin, 0, __ATOMIC_RELEASE);
#else
    (void)h;
#endif
}

#define RING_NONE (-1)
#define RING_BUSY (-2)
#define RING_RETRY 4096

static inline fc_key fkey(const made_key *mk)
{
    fc_key k = {mk->p, mk->n, mk->hash};
    return k;
}

static inline void enc_release(enc_value *ev) { Py_CLEAR(ev->owned); }

static inline void store_unlock(StoreObject *s) { fc_table_unlock(&s->table); }

/* ------------------------------------------------------------------------ */
/* What one file offers the others                                          */

extern PyType_Spec store_spec, handle_spec;
extern pthread_once_t fc_setup_once;

/* fc_store.c */
void process_setup(void);
int store_lock(StoreObject *s);
PyObject *table_error(int rc);
int store_get_optimistic(StoreObject *s, const fc_key *k, double now, copied *c);

/* fc_keys.c */
PyObject *encode_key_str(PyObject *key);
int has_ctl(const char *p, size_t n);
PyObject *str_bytes(PyObject *obj, Py_ssize_t *cp);
void made_key_release(made_key *mk);
int make_key(HandleObject *h, StoreObject *s, PyObject *key, PyObject *version, made_key *mk);

/* fc_values.c */
int copy_out(copied *c, const fc_entry *e);
void copied_release(copied *c);
PyObject *decode_copied(fc_state *st, copied *c);
int encode_value(fc_state *st, HandleObject *h, PyObject *v, enc_value *ev);

/* fc_expiry.c */
double c_time(void);
int get_now(fc_state *st, double *now);
int compute_expiry(fc_state *st, HandleObject *h, PyObject *timeout, double now, expiry *out);

#endif /* FC_BINDING_H */
