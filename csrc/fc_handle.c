/*
 * fc_handle.c - the Handle type: one backend instance's settings (KEY_PREFIX,
 * VERSION, TIMEOUT, MAX_ENTRIES, CULL_FREQUENCY, the fast-path decision) and
 * the cache API, each method stringing together the three steps described
 * in fc_binding.h on the store the call started with.  get_many, set_many
 * and delete_many are BaseCache's per-key loops, run here.
 */
#include "fc_binding.h"

#include <string.h>

/* ---- argument checks ---- */

static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, want,
                 nargs);
    return -1;
}

/* The fast paths (keys and expiry computed in C) are decided by the
 * backend's _refresh_fast_paths() from its class and instance, and must
 * follow patches made at any time, as LocMemCache's plain method calls do.
 * A type's version tag is zeroed, and renewed at its next lookup, whenever
 * the type or any base class is modified (mock.patch.object(BaseCache,
 * "validate_key"), FastCache.make_key = ...), so one comparison per call
 * tells whether the decision still holds.  Instance attributes are watched
 * by FastCache.__setattr__ and __delattr__, which call recheck(). */
static int handle_recheck(HandleObject *h)
{
    fc_state *st = state_of_type(Py_TYPE(h));
    PyObject *owner = fc_weakref_get(h->owner);
    if (owner == NULL) /* no backend: keep the last decision */
        return PyErr_Occurred() ? -1 : 0;
    /* An owner that is not a backend (a bare Handle) keeps its flags. */
    PyObject *refresh = PyObject_GetAttr(owner, st->str_refresh_fast_paths);
    PyObject *r = refresh != NULL ? PyObject_CallNoArgs(refresh) : NULL;
    Py_XDECREF(refresh);
    if (r == NULL && (refresh != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))) {
        Py_DECREF(owner);
        return -1;
    }
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    PyTypeObject *tp = Py_TYPE(owner), *old;
#if PY_VERSION_HEX >= 0x030C0000
    (void)PyUnstable_Type_AssignVersionTag(tp);
#endif
    handle_lock(h);
    old = h->owner_type;
    h->owner_type = (PyTypeObject *)Py_NewRef(tp);
    FC_STORE(&h->seen_tag, FC_LOAD(&tp->tp_version_tag));
    handle_unlock(h);
    Py_XDECREF(old);
    Py_DECREF(owner);
    return 0;
}

/* The store an operation uses from start to end (handle_store; op_end
 * when done).  cache._cache may be reassigned meanwhile, by a value's
 * __reduce__ or by another thread, so the call must keep its store alive.
 * Where the GIL is on it takes a reference of its own.  Without it, every
 * thread's handle using one store would increment the store's reference
 * count (shared, atomic) twice a call, and the threads would contend on
 * that one cache line: so a free-threaded build takes none, and a handle
 * keeps every store it was ever given alive instead (set_store retires the
 * old one to h->retired, released with the handle).  Reassigning _cache is
 * rare (tests, LocMemCache compatibility), so the list stays short. */
static StoreObject *handle_store(HandleObject *h)
{
    StoreObject *s;
    handle_lock(h);
#ifdef Py_GIL_DISABLED
    s = h->store;
#else
    s = (StoreObject *)Py_NewRef(h->store);
#endif
    handle_unlock(h);
    return s;
}

static inline void op_end(StoreObject *s)
{
#ifdef Py_GIL_DISABLED
    (void)s;
#else
    Py_DECREF(s);
#endif
}

/* Starts an operation: checks the fast paths, then returns the handle's
 * store with a reference of the call's own.  The call uses that store from
 * start to end: reassigning cache._cache meanwhile (from a value's
 * __reduce__, or another thread while this one waits for the lock) can
 * neither free it nor make the call unlock a table it did not lock. */
static StoreObject *op_begin(HandleObject *h)
{
    int stale;
    StoreObject *s = NULL;
    handle_lock(h);
    unsigned int seen = FC_LOAD(&h->seen_tag);
    stale = seen == 0 || h->owner_type == NULL || FC_LOAD(&h->owner_type->tp_version_tag) != seen;
#ifdef Py_GIL_DISABLED
    if (!stale)
        s = h->store;
#else
    if (!stale)
        s = (StoreObject *)Py_NewRef(h->store);
#endif
    handle_unlock(h);
    if (!stale)
        return s;
    if (handle_recheck(h) < 0)
        return NULL;
    return handle_store(h);
}

/* The locked part of a get: the value of k copied into c (1), missing or
 * expired (0), or -1 with an error.  With stale != NULL, a serve-stale get:
 * an expired value within its grace is copied too, and *stale says so. */
static int get_copy(StoreObject *s, const fc_key *k, double now, int drain, int *stale, copied *c)
{
    if (store_lock(s) < 0)
        return -1;
    if (drain)
        fc_rings_drain_lock_held(&s->table);
    fc_entry *e = stale != NULL ? fc_get_stale_lock_held(&s->table, k, now, stale)
                                : fc_get_lock_held(&s->table, k, now, 1);
    int oom = e != NULL && copy_out(c, e) < 0;
    store_unlock(s);
    if (oom) {
        PyErr_NoMemory();
        return -1;
    }
    return e != NULL;
}

/* get(key) on one store: 1 with *out (a new reference), 0 when the key is
 * missing or expired, -1 on error. */
static int get_one(HandleObject *self, fc_state *st, PyObject *key, PyObject *version,
                   PyObject **out)
{
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return -1;
    made_key mk;
    double now;
    int res = -1;
    if (make_key(self, s, key, version, &mk) < 0)
        goto done;
    if (get_now(st, &now) < 0)
        goto release;
    fc_key k = fkey(&mk);
    copied c;
    int drain = 0;
    if (s->shared) {
        int rc = store_get_optimistic(s, &k, now, &c);
        if (rc == FC_MISS) {
            res = 0;
            goto release;
        }
        if (rc == FC_OK)
            goto decode;
        drain = rc == FC_EFULL;
    }
    res = get_copy(s, &k, now, drain, NULL, &c);
    if (res <= 0)
        goto release;
decode:
    made_key_release(&mk);
    *out = decode_copied(st, &c);
    op_end(s);
    return *out == NULL ? -1 : 1;
release:
    made_key_release(&mk);
done:
    op_end(s);
    return res;
}

/* get(key, default, version) */
static PyObject *handle_get(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("get", nargs, 3) < 0)
        return NULL;
    PyObject *v;
    int rc = get_one(self, state_of_type(Py_TYPE(self)), args[0], args[2], &v);
    if (rc < 0)
        return NULL;
    return rc ? v : Py_NewRef(args[1]);
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

static int prepare_store(HandleObject *self, StoreObject *s, PyObject *key, PyObject *value,
                         PyObject *timeout, PyObject *version, prepared *pr)
{
    fc_state *st = state_of_type(Py_TYPE(self));
    pr->deferred = NULL;
    if (make_key(self, s, key, version, &pr->mk) < 0)
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

/* set(key, value, timeout) on one store: 0, or -1 with an exception. */
static int set_one(HandleObject *self, PyObject *key, PyObject *value, PyObject *timeout,
                   PyObject *version)
{
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return -1;
    prepared pr;
    int rc = FC_ELOCK;
    if (prepare_store(self, s, key, value, timeout, version, &pr) < 0) {
        op_end(s);
        return -1;
    }
    if (raise_deferred(&pr) == 0 && store_lock(s) == 0) {
        fc_key k = fkey(&pr.mk);
        rc = fc_set_lock_held(&s->table, &k, pr.ev.vtype, pr.ev.p, pr.ev.n, pr.ex.never,
                              pr.ex.expires, FC_LOAD(&self->max_entries),
                              FC_LOAD(&self->cull_frequency));
        store_unlock(s);
    }
    prepared_release(&pr);
    op_end(s);
    if (rc == FC_OK)
        return 0;
    if (rc != FC_ELOCK)
        table_error(rc);
    return -1;
}

/* set(key, value, timeout, version) */
static PyObject *handle_set(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("set", nargs, 4) < 0)
        return NULL;
    if (set_one(self, args[0], args[1], args[2], args[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* add(key, value, timeout, version) */
static PyObject *handle_add(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("add", nargs, 4) < 0)
        return NULL;
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    prepared pr;
    PyObject *result = NULL;
    if (prepare_store(self, s, args[0], args[1], args[2], args[3], &pr) < 0)
        goto done;
    if (store_lock(s) < 0) {
        prepared_release(&pr);
        goto done;
    }
    fc_key k = fkey(&pr.mk);
    int rc;
    if (pr.deferred != NULL) {
        fc_entry *e = fc_peek_lock_held(&s->table, &k);
        rc = (e != NULL && (e->never || e->expires > pr.now)) ? 0 : 2;
    }
    else
        rc = fc_add_lock_held(&s->table, &k, pr.ev.vtype, pr.ev.p, pr.ev.n, pr.ex.never,
                              pr.ex.expires, FC_LOAD(&self->max_entries),
                              FC_LOAD(&self->cull_frequency), pr.now);
    store_unlock(s);
    if (rc == 2)
        raise_deferred(&pr);
    else if (rc < 0)
        table_error(rc);
    else
        result = PyBool_FromLong(rc);
    prepared_release(&pr);
done:
    op_end(s);
    return result;
}

/* Serve-stale (get_or_set's grace period; see fc_table.h). */

/* get_stale(key, default, version) -> (value, stale) or default: the value
 * whether live or expired within its grace, and which. */
static PyObject *handle_get_stale(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("get_stale", nargs, 3) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    PyObject *result = NULL;
    made_key mk;
    double now;
    if (make_key(self, s, args[0], args[2], &mk) < 0)
        goto done;
    if (get_now(st, &now) < 0)
        goto release;
    fc_key k = fkey(&mk);
    copied c;
    int stale, rc = get_copy(s, &k, now, 0, &stale, &c);
    if (rc == 0)
        result = Py_NewRef(args[1]);
    else if (rc > 0) {
        PyObject *v = decode_copied(st, &c);
        if (v != NULL)
            result = Py_BuildValue("(NO)", v, stale ? Py_True : Py_False);
    }
release:
    made_key_release(&mk);
done:
    op_end(s);
    return result;
}

/* add_stale(key, value, timeout, version, stale) -> bool: add, then the
 * stored entry gets a grace of `stale` seconds (a float >= 0, checked by
 * the caller) past its expiry, under the same lock. */
static PyObject *handle_add_stale(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("add_stale", nargs, 5) < 0)
        return NULL;
    double grace = PyFloat_AsDouble(args[4]);
    if (grace == -1.0 && PyErr_Occurred())
        return NULL;
    if (!(grace >= 0 && grace <= 1e12)) {
        PyErr_Format(PyExc_ValueError, "stale must be between 0 and 1e12 seconds, got %R", args[4]);
        return NULL;
    }
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    prepared pr;
    PyObject *result = NULL;
    if (prepare_store(self, s, args[0], args[1], args[2], args[3], &pr) < 0)
        goto done;
    if (raise_deferred(&pr) < 0 || store_lock(s) < 0) {
        prepared_release(&pr);
        goto done;
    }
    fc_key k = fkey(&pr.mk);
    int rc =
        fc_add_lock_held(&s->table, &k, pr.ev.vtype, pr.ev.p, pr.ev.n, pr.ex.never, pr.ex.expires,
                         FC_LOAD(&self->max_entries), FC_LOAD(&self->cull_frequency), pr.now);
    if (rc == 1)
        fc_mark_stale_lock_held(&s->table, &k, grace);
    store_unlock(s);
    if (rc < 0)
        table_error(rc);
    else
        result = PyBool_FromLong(rc);
    prepared_release(&pr);
done:
    op_end(s);
    return result;
}

/* touch(key, timeout, version) */
static PyObject *handle_touch(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("touch", nargs, 3) < 0)
        return NULL;
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    prepared pr;
    PyObject *result = NULL;
    if (prepare_store(self, s, args[0], NULL, args[1], args[2], &pr) < 0)
        goto done;
    if (store_lock(s) < 0) {
        prepared_release(&pr);
        goto done;
    }
    fc_key k = fkey(&pr.mk);
    int rc;
    if (pr.deferred != NULL) {
        fc_entry *e = fc_peek_lock_held(&s->table, &k);
        rc = (e != NULL && (e->never || e->expires > pr.now)) ? 2 : 0;
    }
    else
        rc = fc_touch_lock_held(&s->table, &k, pr.ex.never, pr.ex.expires, pr.now);
    store_unlock(s);
    if (rc == 2)
        raise_deferred(&pr);
    else
        result = PyBool_FromLong(rc);
    prepared_release(&pr);
done:
    op_end(s);
    return result;
}

/* has_key(key, version) */
static PyObject *handle_has_key(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("has_key", nargs, 2) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    made_key mk;
    double now;
    PyObject *result = NULL;
    if (make_key(self, s, args[0], args[1], &mk) < 0)
        goto done;
    if (get_now(st, &now) < 0)
        goto release;
    fc_key k = fkey(&mk);
    if (s->shared) {
        int rc = store_get_optimistic(s, &k, now, NULL);
        if (rc == FC_OK || rc == FC_MISS) {
            result = PyBool_FromLong(rc == FC_OK);
            goto release;
        }
    }
    if (store_lock(s) < 0)
        goto release;
    fc_entry *e = fc_get_lock_held(&s->table, &k, now, 0);
    store_unlock(s);
    result = PyBool_FromLong(e != NULL);
release:
    made_key_release(&mk);
done:
    op_end(s);
    return result;
}

/* delete(key) on one store: 1 if it was there, 0 if not, -1 on error. */
static int delete_one(HandleObject *self, PyObject *key, PyObject *version)
{
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return -1;
    made_key mk;
    int rc = -1;
    if (make_key(self, s, key, version, &mk) == 0) {
        if (store_lock(s) == 0) {
            fc_key k = fkey(&mk);
            rc = fc_delete_lock_held(&s->table, &k);
            store_unlock(s);
        }
        made_key_release(&mk);
    }
    op_end(s);
    return rc;
}

/* delete(key, version) */
static PyObject *handle_delete(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("delete", nargs, 2) < 0)
        return NULL;
    int rc = delete_one(self, args[0], args[1]);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
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
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    made_key mk;
    double now;
    if (make_key(self, s, args[0], args[2], &mk) < 0) {
        op_end(s);
        return NULL;
    }
    PyObject *result = NULL;
    if (get_now(st, &now) < 0)
        goto done;
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
    for (;;) {
        if (store_lock(s) < 0)
            break;
        int64_t sum = 0;
        fc_entry *e;
        int rc;
        copied c;
        if (fast)
            rc = fc_incr_lock_held(&s->table, &k, idelta, now, &sum, &e);
        else {
            e = fc_get_lock_held(&s->table, &k, now, 0);
            rc = e ? FC_NOTINT : FC_MISS;
        }
        int oom = rc == FC_NOTINT && copy_out(&c, e) < 0;
        store_unlock(s);
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
        if (store_lock(s) < 0) {
            enc_release(&ev);
            Py_DECREF(nv);
            break;
        }
        rc = fc_replace_lock_held(&s->table, &k, gen, ev.vtype, ev.p, ev.n);
        store_unlock(s);
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
done:
    made_key_release(&mk);
    op_end(s);
    return result;
}

/* ---- batches ----
 *
 * BaseCache defines get_many, set_many and delete_many as loops over get,
 * set and delete, and LocMemCache keeps them.  So are these: one key at a
 * time, each made, looked up and decoded before the next is taken from the
 * iterable, so that a key's __str__ or __hash__, a value's unpickling or
 * pickling, or a patched clock sees exactly what it sees in LocMemCache's
 * loop.  The loop runs in C; each key costs one uncontended lock. */

/* The two items of a set_many pair, as `for key, value in data.items()`
 * unpacks them (new references). */
static int unpack_pair(PyObject *item, PyObject **a, PyObject **b)
{
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
        *a = Py_NewRef(PyTuple_GET_ITEM(item, 0));
        *b = Py_NewRef(PyTuple_GET_ITEM(item, 1));
        return 0;
    }
    PyObject *it = PyObject_GetIter(item);
    if (it == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) && Py_TYPE(item)->tp_iter == NULL &&
            !PySequence_Check(item)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object",
                         Py_TYPE(item)->tp_name);
        }
        return -1;
    }
    PyObject *got[3] = {NULL, NULL, NULL};
    int n = 0;
    while (n < 3 && (got[n] = PyIter_Next(it)) != NULL)
        n++;
    Py_DECREF(it);
    if (n == 2 && !PyErr_Occurred()) {
        *a = got[0];
        *b = got[1];
        return 0;
    }
    for (int i = 0; i < n; i++)
        Py_DECREF(got[i]);
    if (PyErr_Occurred())
        return -1;
    if (n < 2)
        PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 2, got %d)", n);
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14 tells the size of the builtin containers whose size it knows. */
    else if (PyList_CheckExact(item) || PyTuple_CheckExact(item) || PyDict_CheckExact(item))
        PyErr_Format(PyExc_ValueError, "too many values to unpack (expected 2, got %zd)",
                     PyObject_Length(item));
#endif
    else
        PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
    return -1;
}

/* get_many(keys, version) -> dict */
static PyObject *handle_get_many(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("get_many", nargs, 2) < 0)
        return NULL;
    fc_state *st = state_of_type(Py_TYPE(self));
    PyObject *result = PyDict_New();
    if (result == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL)
        goto error;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *v;
        int rc = get_one(self, st, item, args[1], &v);
        if (rc > 0) {
            rc = PyDict_SetItem(result, item, v);
            Py_DECREF(v);
        }
        Py_DECREF(item);
        if (rc < 0)
            break;
    }
    Py_DECREF(it);
    if (!PyErr_Occurred())
        return result;
error:
    Py_DECREF(result);
    return NULL;
}

/* set_many(data, timeout, version) -> None */
static PyObject *handle_set_many(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("set_many", nargs, 3) < 0)
        return NULL;
    PyObject *items = PyObject_CallMethod(args[0], "items", NULL);
    if (items == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(items);
    Py_DECREF(items);
    if (it == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *key, *value;
        int rc = unpack_pair(item, &key, &value);
        Py_DECREF(item);
        if (rc == 0) {
            rc = set_one(self, key, value, args[1], args[2]);
            Py_DECREF(key);
            Py_DECREF(value);
        }
        if (rc < 0)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* delete_many(keys, version) -> None */
static PyObject *handle_delete_many(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("delete_many", nargs, 2) < 0)
        return NULL;
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = delete_one(self, item, args[1]);
        Py_DECREF(item);
        if (rc < 0)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *handle_clear(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    StoreObject *s = handle_store(self);
    int rc = store_lock(s);
    if (rc == 0) {
        fc_clear_lock_held(&s->table);
        store_unlock(s);
    }
    op_end(s);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* make_key(key, version) -> str: the made key, validated (warnings). */
static PyObject *handle_make_key(HandleObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("make_key", nargs, 2) < 0)
        return NULL;
    StoreObject *s = op_begin(self);
    if (s == NULL)
        return NULL;
    made_key mk;
    PyObject *r = NULL;
    if (make_key(self, s, args[0], args[1], &mk) == 0) {
        r = PyUnicode_DecodeUTF8(mk.p, (Py_ssize_t)mk.n, "surrogatepass");
        made_key_release(&mk);
    }
    op_end(s);
    return r;
}

/* recheck(): decide the fast paths again at the next call (the backend
 * calls it when an instance attribute they depend on is assigned). */
static PyObject *handle_recheck_later(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    FC_STORE(&self->seen_tag, 0);
    Py_RETURN_NONE;
}

/* ---- attributes ---- */

/* A "%s" part fixed at assignment (KEY_PREFIX, VERSION): keeps the object,
 * str(object) in UTF-8, its length in code points, and whether it holds a
 * character memcached rejects.  str() runs first, outside the handle's
 * lock; the four fields change together under it (make_key reads them
 * together), and what they held is released after it. */
static int set_text_part(HandleObject *self, PyObject *value, const char *name, PyObject **obj,
                         PyObject **bytes, Py_ssize_t *cp, int *ctl)
{
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "cannot delete %s", name);
        return -1;
    }
    Py_ssize_t n;
    PyObject *b = str_bytes(value, &n), *old_b, *old_obj;
    if (b == NULL)
        return -1;
    int c = has_ctl(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    handle_lock(self);
    old_b = *bytes;
    old_obj = *obj;
    *bytes = b;
    *cp = n;
    *ctl = c;
    *obj = Py_NewRef(value);
    handle_unlock(self);
    Py_XDECREF(old_b);
    Py_XDECREF(old_obj);
    return 0;
}

static int set_prefix(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return set_text_part(self, value, "key_prefix", &self->key_prefix, &self->prefix_bytes,
                         &self->prefix_cp, &self->prefix_ctl);
}

static int set_version(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    return set_text_part(self, value, "version", &self->version, &self->version_bytes,
                         &self->version_cp, &self->version_ctl);
}

/* Replaces an object field under the handle's lock, releasing the old
 * object after it. */
static void swap_field(HandleObject *self, PyObject **field, PyObject *value)
{
    PyObject *old;
    handle_lock(self);
    old = *field;
    *field = Py_NewRef(value);
    handle_unlock(self);
    Py_XDECREF(old);
}

static int set_default_timeout(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete default_timeout");
        return -1;
    }
    swap_field(self, &self->default_timeout, value);
    return 0;
}

static PyObject *get_obj(HandleObject *self, void *closure)
{
    PyObject *v;
    handle_lock(self);
    v = *(PyObject **)((char *)self + (size_t)closure);
    v = Py_NewRef(v ? v : Py_None);
    handle_unlock(self);
    return v;
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
    FC_STORE((int64_t *)((char *)self + (size_t)closure), (int64_t)v);
    return 0;
}

static PyObject *get_int64(HandleObject *self, void *closure)
{
    return PyLong_FromLongLong(FC_LOAD((int64_t *)((char *)self + (size_t)closure)));
}

static int set_flag(HandleObject *self, PyObject *value, void *closure)
{
    int v = value ? PyObject_IsTrue(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
        return -1;
    }
    FC_STORE((int *)((char *)self + (size_t)closure), v);
    return 0;
}

static PyObject *get_flag(HandleObject *self, void *closure)
{
    return PyBool_FromLong(FC_LOAD((int *)((char *)self + (size_t)closure)));
}

static int set_protocol(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    long v = value ? PyLong_AsLong(value) : -1;
    if (v == -1 && (value == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "cannot delete pickle_protocol");
        return -1;
    }
    FC_STORE(&self->pickle_protocol, (int)v);
    return 0;
}

static PyObject *get_protocol(HandleObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(FC_LOAD(&self->pickle_protocol));
}

static PyObject *get_store(HandleObject *self, void *Py_UNUSED(closure))
{
    PyObject *s;
    handle_lock(self);
    s = Py_NewRef((PyObject *)self->store);
    handle_unlock(self);
    return s;
}

static int set_store(HandleObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    fc_state *st = state_of_type(Py_TYPE(self));
    if (value == NULL || !PyObject_TypeCheck(value, st->StoreType)) {
        PyErr_SetString(PyExc_TypeError, "store must be a fastcache Store");
        return -1;
    }
#ifdef Py_GIL_DISABLED
    /* The old store stays alive with the handle: calls in flight use it
     * without a reference of their own (handle_store). */
    PyObject *old;
    handle_lock(self);
    old = (PyObject *)self->store;
    self->store = (StoreObject *)Py_NewRef(value);
    handle_unlock(self);
    /* The handle's reference to the old store moves to the list; out of
     * memory, it is kept (leaked) rather than dropped under a call that may
     * still be using the store. */
    if (PyList_Append(self->retired, old) < 0)
        PyErr_Clear();
    else
        Py_DECREF(old);
    return 0;
#else
    swap_field(self, (PyObject **)&self->store, value);
    return 0;
#endif
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
    {"get_stale", FASTCALL(handle_get_stale),
     "get_stale(key, default, version) -> (value, stale) or default"},
    {"add_stale", FASTCALL(handle_add_stale),
     "add_stale(key, value, timeout, version, stale) -> bool"},
    {"make_key", FASTCALL(handle_make_key), "make_key(key, version) -> str"},
    {"clear", (PyCFunction)handle_clear, METH_NOARGS, "Remove every entry."},
    {"recheck", (PyCFunction)handle_recheck_later, METH_NOARGS,
     "Decide the fast paths again at the next call."},
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
#ifdef Py_GIL_DISABLED
    self->retired = PyList_New(0);
    if (self->retired == NULL) {
        Py_DECREF(self);
        return NULL;
    }
#endif
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
    Py_VISIT(self->owner_type);
    return 0;
}

static int handle_clear_refs(HandleObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->key_prefix);
    Py_CLEAR(self->version);
    Py_CLEAR(self->default_timeout);
    Py_CLEAR(self->owner_type);
    self->seen_tag = 0;
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
    Py_CLEAR(self->retired);
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

PyType_Spec handle_spec = {
    .name = "django_fastcache._fastcache.Handle",
    .basicsize = sizeof(HandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = handle_slots,
};
