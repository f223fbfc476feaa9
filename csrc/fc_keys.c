/*
 * fc_keys.c - making keys: KEY_PREFIX:VERSION:key as Django's default key
 * function would, in C, with the memcached key warnings emitted through
 * Django's own BaseCache.validate_key; or, when a project customised any of
 * it, through the backend's own make_and_validate_key.  Hashes the made key
 * for the store the call uses.  It must not take a table lock.
 */
#include "fc_binding.h"

#include <stdlib.h>
#include <string.h>

/* Key bytes of a made key given as str (views and compatibility helpers). */
PyObject *encode_key_str(PyObject *key)
{
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "cache keys are str, not %.200s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    return PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass");
}

int has_ctl(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c == 0x7f)
            return 1;
    }
    return 0;
}

/* str(obj) as UTF-8 bytes (surrogates passed through) and its length. */
PyObject *str_bytes(PyObject *obj, Py_ssize_t *cp)
{
    PyObject *s = PyObject_Str(obj);
    if (s == NULL)
        return NULL;
    *cp = PyUnicode_GET_LENGTH(s);
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    Py_DECREF(s);
    return b;
}

void made_key_release(made_key *mk)
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

/* Builds, validates (warnings) and hashes the made key for store s.  On
 * error nothing is left to release.
 *
 * str(key) and str(version) may run code that reassigns cache.key_prefix
 * or cache.version (a key's __str__, another thread): LocMemCache reads both
 * before calling the key function, so the parts are taken first, each held
 * by a reference of this call's own, and never read from the handle after
 * Python code has run. */
int make_key(HandleObject *h, StoreObject *s, PyObject *key, PyObject *version, made_key *mk)
{
    mk->heap = NULL;
    mk->owned = NULL;
    if (!FC_LOAD(&h->fast_key)) {
        if (make_key_python(h, key, version, mk) < 0)
            return -1;
        goto hash;
    }
    /* KEY_PREFIX and VERSION as one consistent snapshot (another thread
     * may reassign them: see set_text_part in fc_handle.c). */
    PyObject *prefix, *hversion;
    Py_ssize_t prefix_cp, hversion_cp;
    int prefix_ctl, hversion_ctl;
    handle_lock(h);
    prefix = Py_NewRef(h->prefix_bytes);
    prefix_cp = h->prefix_cp;
    prefix_ctl = h->prefix_ctl;
    hversion = version == Py_None ? Py_NewRef(h->version_bytes) : NULL;
    hversion_cp = h->version_cp;
    hversion_ctl = h->version_ctl;
    handle_unlock(h);
    char kint[24], vint[24];
    const char *kp, *vp;
    Py_ssize_t kn, vn, kcp, vcp;
    PyObject *khold = NULL, *vhold = NULL;
    int vctl, rc = -1;
    if (version == Py_None) {
        vhold = hversion;
        vp = PyBytes_AS_STRING(vhold);
        vn = PyBytes_GET_SIZE(vhold);
        vcp = hversion_cp;
        vctl = hversion_ctl;
    }
    else {
        if (part_utf8(version, &vp, &vn, &vcp, &vhold, vint) < 0)
            goto done;
        vctl = has_ctl(vp, (size_t)vn);
    }
    if (part_utf8(key, &kp, &kn, &kcp, &khold, kint) < 0)
        goto done;
    const char *pp = PyBytes_AS_STRING(prefix);
    size_t pn = (size_t)PyBytes_GET_SIZE(prefix);
    size_t n = pn + 1 + (size_t)vn + 1 + (size_t)kn;
    char *out = mk->buf;
    if (n > sizeof mk->buf) {
        out = mk->heap = malloc(n);
        if (out == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    memcpy(out, pp, pn);
    out[pn] = ':';
    memcpy(out + pn + 1, vp, (size_t)vn);
    out[pn + 1 + vn] = ':';
    memcpy(out + pn + 2 + vn, kp, (size_t)kn);
    int warn = prefix_ctl || vctl || has_ctl(kp, (size_t)kn) ||
               prefix_cp + 2 + vcp + kcp > MEMCACHE_MAX_KEY_LENGTH;
    mk->p = out;
    mk->n = n;
    rc = 0;
    if (warn && emit_key_warnings(state_of_type(Py_TYPE(h)), out, n) < 0) {
        made_key_release(mk);
        rc = -1;
    }
done:
    Py_XDECREF(khold);
    Py_XDECREF(vhold);
    Py_DECREF(prefix);
    if (rc < 0)
        return -1;
hash:
    mk->hash = fc_hash(&s->table, mk->p, mk->n);
    return 0;
}
