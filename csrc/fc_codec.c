/*
 * fc_codec.c - the value codec (see fc_codec.h for what it owns, what it
 * must not do, and the format).
 *
 * Encoding walks the value once, writing into one buffer that starts on the
 * C stack and grows geometrically on the heap; the result is copied into
 * one bytes object.  Every mutable container met is recorded (a short array,
 * then an open-addressing pointer set), so a second meeting, a shared list
 * or a cycle, answers "not mine".  No Python code can run during the walk
 * (its GC-tracked allocations, a set iterator and the tuples of a C tzinfo's
 * __getinitargs__/__reduce__, are made with the collector off), so nothing
 * can change the value under it.  A type the walk cannot judge without
 * Python code (zoneinfo.ZoneInfo, before it is looked up) stops the walk;
 * the lookup runs between walks and the value is walked again.
 *
 * Decoding reads a private copy (never the shared segment itself) through a
 * cursor checked against the end before every read.  Counts are checked
 * against the bytes left (every item takes at least one), so a damaged
 * count can never presize a huge container.
 */
#include "fc_codec.h"

#include <datetime.h>
/* PyMemberDef before 3.12; its T_ names that clash with the tags below go. */
#include <structmember.h>
#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#undef T_NONE
#undef T_INT
#undef T_FLOAT
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    T_NONE = 1,
    T_TRUE,
    T_FALSE,
    T_INT,
    T_FLOAT,
    T_ASCII,
    T_UTF8,
    T_BYTES,
    T_LIST,
    T_TUPLE,
    T_SET,
    T_FROZENSET,
    T_DICT,
    T_DATETIME,
    T_DATE,
    T_TIME,
    T_TIMEDELTA,
    T_TZINFO,
    T_DECIMAL,
    T_UUID,
    T_SUBCLASS,
    /* Tags from T_SMALL_INT up are the ints SMALL_INT_MIN .. SMALL_INT_MIN + 127
     * themselves: list(range(100)) is a byte an item. */
    T_SMALL_INT = 0x80,
};
#define SMALL_INT_MIN (-32)

/* A tzinfo (after a datetime's or a time's fields, or after T_TZINFO). */
enum { TZ_NONE, TZ_UTC, TZ_FIXED, TZ_ZONEINFO };

/* What an encoding walk met and could not judge without Python code (a type
 * not looked up yet): fc_codec_encode looks it up and walks again. */
enum { NEED_ZONEINFO = 1, NEED_DECIMAL = 2, NEED_UUID = 4, NEED_SUBTYPE = 8 };

#define CAPI(st) ((const PyDateTime_CAPI *)(st)->datetime_capi)

#define STACK_BUF 512
#define SEEN_SMALL 16

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */

typedef struct {
    fc_codec_state *st;
    int protocol;
    int need;                /* NEED_* flags */
    PyTypeObject *need_type; /* NEED_SUBTYPE: the class to judge (borrowed from the value) */
    char *p;                 /* stack, or malloc'ed once grown */
    size_t len, cap;
    PyObject *small[SEEN_SMALL]; /* mutable containers met, while few */
    size_t nsmall;
    PyObject **tab; /* then: open addressing, NULL = empty */
    size_t mask, ntab;
    char stack[STACK_BUF];
} enc;

static int enc_grow(enc *e, size_t need)
{
    if (need > (size_t)PY_SSIZE_T_MAX - e->len) {
        PyErr_NoMemory();
        return -1;
    }
    size_t cap = e->cap * 2;
    while (cap < e->len + need)
        cap *= 2;
    char *np;
    if (e->p == e->stack) {
        np = malloc(cap);
        if (np != NULL)
            memcpy(np, e->p, e->len);
    }
    else
        np = realloc(e->p, cap);
    if (np == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    e->p = np;
    e->cap = cap;
    return 0;
}

static inline int reserve(enc *e, size_t need)
{
    return e->cap - e->len >= need ? 0 : enc_grow(e, need);
}

/* Callers reserve first. */
static inline void put_u8(enc *e, unsigned v) { e->p[e->len++] = (char)v; }

static inline void put_varint(enc *e, uint64_t x)
{
    unsigned char *q = (unsigned char *)e->p + e->len;
    while (x >= 0x80) {
        *q++ = (unsigned char)(x | 0x80);
        x >>= 7;
    }
    *q++ = (unsigned char)x;
    e->len = (size_t)((char *)q - e->p);
}

static int put_blob(enc *e, int tag, const char *p, size_t n)
{
    if (reserve(e, 11 + n) < 0)
        return -1;
    put_u8(e, (unsigned)tag);
    put_varint(e, n);
    memcpy(e->p + e->len, p, n);
    e->len += n;
    return 1;
}

static inline size_t ptr_slot(const PyObject *o, size_t mask)
{
    uint64_t h = (uint64_t)(uintptr_t)o * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & mask;
}

static void seen_insert(PyObject **tab, size_t mask, PyObject *o)
{
    size_t i = ptr_slot(o, mask);
    while (tab[i] != NULL)
        i = (i + 1) & mask;
    tab[i] = o;
}

static int seen_resize(enc *e, size_t size)
{
    PyObject **tab = calloc(size, sizeof *tab);
    if (tab == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (e->tab == NULL) {
        for (size_t i = 0; i < e->nsmall; i++)
            seen_insert(tab, size - 1, e->small[i]);
    }
    else {
        for (size_t i = 0; i <= e->mask; i++)
            if (e->tab[i] != NULL)
                seen_insert(tab, size - 1, e->tab[i]);
        free(e->tab);
    }
    e->tab = tab;
    e->mask = size - 1;
    return 0;
}

/* Records a mutable container: 0 first meeting, 1 met before, -1 error. */
static int seen_add(enc *e, PyObject *o)
{
    if (e->tab == NULL) {
        for (size_t i = 0; i < e->nsmall; i++)
            if (e->small[i] == o)
                return 1;
        if (e->nsmall < SEEN_SMALL) {
            e->small[e->nsmall++] = o;
            return 0;
        }
        if (seen_resize(e, 4 * SEEN_SMALL) < 0)
            return -1;
        e->ntab = e->nsmall;
    }
    size_t i = ptr_slot(o, e->mask);
    while (e->tab[i] != NULL) {
        if (e->tab[i] == o)
            return 1;
        i = (i + 1) & e->mask;
    }
    e->tab[i] = o;
    if (++e->ntab * 2 > e->mask && seen_resize(e, 2 * (e->mask + 1)) < 0)
        return -1;
    return 0;
}

static int enc_value(enc *e, PyObject *v, int depth);

static int enc_str(enc *e, PyObject *v)
{
    if (PyUnicode_IS_ASCII(v))
        return put_blob(e, T_ASCII, (const char *)PyUnicode_DATA(v),
                        (size_t)PyUnicode_GET_LENGTH(v));
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(v, &n);
    if (p == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear(); /* lone surrogates: pickle keeps them */
        return 0;
    }
    return put_blob(e, T_UTF8, p, (size_t)n);
}

static int enc_int(enc *e, PyObject *v)
{
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow)
        return 0;
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (reserve(e, 11) < 0)
        return -1;
    if (x >= SMALL_INT_MIN && x < SMALL_INT_MIN + 128) {
        put_u8(e, (unsigned)(T_SMALL_INT + (x - SMALL_INT_MIN)));
        return 1;
    }
    put_u8(e, T_INT);
    put_varint(e, ((uint64_t)x << 1) ^ (x < 0 ? UINT64_MAX : 0));
    return 1;
}

static int enc_count(enc *e, int tag, Py_ssize_t n)
{
    if (reserve(e, 11) < 0)
        return -1;
    put_u8(e, (unsigned)tag);
    put_varint(e, (uint64_t)n);
    return 1;
}

/* items may be NULL when n is 0 (an empty list's ob_item). */
static int enc_items(enc *e, PyObject *const *items, Py_ssize_t n, int depth)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        int rc = enc_value(e, items[i], depth);
        if (rc <= 0)
            return rc;
    }
    return 1;
}

static int enc_dict(enc *e, PyObject *v, int depth)
{
#ifdef Py_GIL_DISABLED
    /* Another thread may change the dict under the walk (nothing stops it
     * without the GIL): walk a copy, made atomically, that holds its items. */
    PyObject *copy = PyDict_Copy(v);
    if (copy == NULL)
        return -1;
    v = copy;
#endif
    int rc = enc_count(e, T_DICT, PyDict_GET_SIZE(v));
    Py_ssize_t pos = 0;
    PyObject *k, *val;
    while (rc > 0 && PyDict_Next(v, &pos, &k, &val)) {
        rc = enc_value(e, k, depth);
        if (rc > 0)
            rc = enc_value(e, val, depth);
    }
#ifdef Py_GIL_DISABLED
    Py_DECREF(copy);
#endif
    return rc;
}

static int enc_set(enc *e, PyObject *v, int tag, int depth)
{
    int rc = enc_count(e, tag, PySet_GET_SIZE(v));
    if (rc <= 0)
        return rc;
    /* The iterator is the walk's only allocation of a GC-tracked object:
     * with the collector on, it could run a finalizer that changes the value
     * (a list whose item array enc_items holds) under the walk. */
    int gc_was_on = PyGC_Disable();
    PyObject *it = PyObject_GetIter(v);
    if (gc_was_on)
        PyGC_Enable();
    if (it == NULL)
        return -1;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        rc = enc_value(e, item, depth);
        Py_DECREF(item);
        if (rc <= 0)
            break;
    }
    Py_DECREF(it);
    if (rc > 0 && PyErr_Occurred())
        return -1;
    return rc;
}

/* Calls a method of a C type (timezone.__getinitargs__, ZoneInfo.__reduce__)
 * with the collector off: the result is a new tuple, and a collection could
 * run a finalizer that changes the value under the walk. */
static PyObject *call_method_nogc(PyObject *v, const char *name)
{
    int gc_was_on = PyGC_Disable();
    PyObject *r = PyObject_CallMethod(v, name, NULL);
    if (gc_was_on)
        PyGC_Enable();
    return r;
}

/* A str for a tz name or key: exact, valid UTF-8.  1, 0 not mine, -1. */
static int put_tz_text(enc *e, PyObject *s)
{
    if (!PyUnicode_CheckExact(s))
        return 0;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    if (reserve(e, 10 + (size_t)n) < 0)
        return -1;
    put_varint(e, (uint64_t)n);
    memcpy(e->p + e->len, p, (size_t)n);
    e->len += (size_t)n;
    return 1;
}

static int put_delta(enc *e, PyObject *d)
{
    if (reserve(e, 30) < 0)
        return -1;
    int64_t days = PyDateTime_DELTA_GET_DAYS(d);
    put_varint(e, ((uint64_t)days << 1) ^ (days < 0 ? UINT64_MAX : 0));
    put_varint(e, (uint64_t)PyDateTime_DELTA_GET_SECONDS(d));
    put_varint(e, (uint64_t)PyDateTime_DELTA_GET_MICROSECONDS(d));
    return 1;
}

/* A tzinfo: None, the UTC singleton, another exact datetime.timezone (its
 * offset and name, as it pickles), or an exact C zoneinfo.ZoneInfo (its key
 * and whether it came from the cache, as it pickles). */
static int enc_tz(enc *e, PyObject *tz)
{
    const PyDateTime_CAPI *capi = CAPI(e->st);
    if (reserve(e, 2) < 0)
        return -1;
    if (tz == Py_None || tz == capi->TimeZone_UTC) {
        put_u8(e, tz == Py_None ? TZ_NONE : TZ_UTC);
        return 1;
    }
    PyTypeObject *tp = Py_TYPE(tz);
    PyObject *zi = e->st->zoneinfo_type;
    if (zi == NULL && strcmp(tp->tp_name, "zoneinfo.ZoneInfo") == 0) {
        e->need |= NEED_ZONEINFO;
        return 0;
    }
    int is_zi = tp == (PyTypeObject *)zi;
    if (!is_zi && tp != Py_TYPE(capi->TimeZone_UTC))
        return 0;
    PyObject *r = call_method_nogc(tz, is_zi ? "__reduce__" : "__getinitargs__");
    if (r == NULL) {
        /* A ZoneInfo from a file does not pickle: neither do we. */
        if (!is_zi || PyErr_ExceptionMatches(PyExc_MemoryError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int rc = 0;
    if (is_zi) {
        /* (ZoneInfo._unpickle, (key, from_cache)) */
        PyObject *args =
            PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? PyTuple_GET_ITEM(r, 1) : NULL;
        if (args != NULL && PyTuple_Check(args) && PyTuple_GET_SIZE(args) == 2 &&
            PyLong_CheckExact(PyTuple_GET_ITEM(args, 1))) {
            long from_cache = PyLong_AsLong(PyTuple_GET_ITEM(args, 1));
            if (from_cache == 0 || from_cache == 1) {
                put_u8(e, TZ_ZONEINFO);
                put_u8(e, (unsigned)from_cache);
                rc = put_tz_text(e, PyTuple_GET_ITEM(args, 0));
            }
            else if (from_cache == -1 && PyErr_Occurred())
                PyErr_Clear();
        }
    }
    else if (PyTuple_Check(r) && (PyTuple_GET_SIZE(r) == 1 || PyTuple_GET_SIZE(r) == 2) &&
             Py_IS_TYPE(PyTuple_GET_ITEM(r, 0), capi->DeltaType)) {
        /* (offset,) or (offset, name) */
        int named = PyTuple_GET_SIZE(r) == 2;
        put_u8(e, TZ_FIXED);
        rc = put_delta(e, PyTuple_GET_ITEM(r, 0));
        if (rc > 0 && (rc = reserve(e, 1)) == 0) {
            put_u8(e, (unsigned)named);
            rc = named ? put_tz_text(e, PyTuple_GET_ITEM(r, 1)) : 1;
        }
    }
    Py_DECREF(r);
    return rc;
}

/* Exact datetime types: the fields, as their pickles hold them.  A fold of
 * 1 is kept only by protocols 4 and up: below, such a value is pickled. */
static int enc_datetime(enc *e, PyObject *v, PyTypeObject *tp)
{
    const PyDateTime_CAPI *capi = CAPI(e->st);
    if (reserve(e, 12) < 0)
        return -1;
    if (tp == capi->DeltaType) {
        put_u8(e, T_TIMEDELTA);
        return put_delta(e, v);
    }
    if (tp == capi->DateType || tp == capi->DateTimeType) {
        if (tp == capi->DateTimeType && PyDateTime_DATE_GET_FOLD(v) && e->protocol < 4)
            return 0;
        int year = PyDateTime_GET_YEAR(v);
        put_u8(e, tp == capi->DateType ? T_DATE : T_DATETIME);
        put_u8(e, (unsigned)year & 0xff);
        put_u8(e, (unsigned)year >> 8);
        put_u8(e, (unsigned)PyDateTime_GET_MONTH(v));
        put_u8(e, (unsigned)PyDateTime_GET_DAY(v));
        if (tp == capi->DateType)
            return 1;
        int us = PyDateTime_DATE_GET_MICROSECOND(v);
        put_u8(e, (unsigned)PyDateTime_DATE_GET_HOUR(v));
        put_u8(e, (unsigned)PyDateTime_DATE_GET_MINUTE(v));
        put_u8(e, (unsigned)PyDateTime_DATE_GET_SECOND(v));
        put_u8(e, (unsigned)us & 0xff);
        put_u8(e, ((unsigned)us >> 8) & 0xff);
        put_u8(e, (unsigned)us >> 16);
        put_u8(e, (unsigned)PyDateTime_DATE_GET_FOLD(v));
        return enc_tz(e, PyDateTime_DATE_GET_TZINFO(v));
    }
    /* capi->TimeType */
    if (PyDateTime_TIME_GET_FOLD(v) && e->protocol < 4)
        return 0;
    int us = PyDateTime_TIME_GET_MICROSECOND(v);
    put_u8(e, T_TIME);
    put_u8(e, (unsigned)PyDateTime_TIME_GET_HOUR(v));
    put_u8(e, (unsigned)PyDateTime_TIME_GET_MINUTE(v));
    put_u8(e, (unsigned)PyDateTime_TIME_GET_SECOND(v));
    put_u8(e, (unsigned)us & 0xff);
    put_u8(e, ((unsigned)us >> 8) & 0xff);
    put_u8(e, (unsigned)us >> 16);
    put_u8(e, (unsigned)PyDateTime_TIME_GET_FOLD(v));
    return enc_tz(e, PyDateTime_TIME_GET_TZINFO(v));
}

/* An exact C decimal.Decimal: str(d), the text its pickle holds.  Its str
 * runs no Python code; it may make the thread's decimal context (GC-tracked
 * objects), so the collector is off. */
static int enc_decimal(enc *e, PyObject *v)
{
    int gc_was_on = PyGC_Disable();
    PyObject *s = PyObject_Str(v);
    if (gc_was_on)
        PyGC_Enable();
    if (s == NULL)
        return -1;
    int rc = 0;
    if (PyUnicode_IS_COMPACT_ASCII(s)) /* always */
        rc = put_blob(e, T_DECIMAL, (const char *)PyUnicode_DATA(s),
                      (size_t)PyUnicode_GET_LENGTH(s));
    Py_DECREF(s);
    return rc;
}

/* An exact uuid.UUID whose class is as the codec last checked it (its
 * version tag unchanged): the int and is_safe slots, read directly (no
 * Python code), as its __getstate__ gives them.  Anything pickle would not
 * give back as such (an int not in 0 .. 2**128 - 1, an is_safe that is not
 * a SafeUUID, an unset slot) is declined. */
static int enc_uuid(enc *e, PyObject *v, PyTypeObject *tp)
{
    fc_codec_state *st = e->st;
    if (tp->tp_version_tag != st->uuid_tag) {
        e->need |= NEED_UUID; /* modified since: check it again */
        return 0;
    }
    if (!st->uuid_fast)
        return 0;
    PyObject *i = *(PyObject **)((char *)v + st->uuid_int_off);
    PyObject *safe = *(PyObject **)((char *)v + st->uuid_safe_off);
    if (i == NULL || safe == NULL || !PyLong_CheckExact(i))
        return 0;
    unsigned k = 0;
    while (k < 3 && st->uuid_safe[k] != safe)
        k++;
    if (k == 3)
        return 0;
    unsigned char b[16];
#if PY_VERSION_HEX >= 0x030D0000
    int r = _PyLong_AsByteArray((PyLongObject *)i, b, 16, 1, 0, 1);
#else
    int r = _PyLong_AsByteArray((PyLongObject *)i, b, 16, 1, 0);
#endif
    if (r < 0) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear(); /* negative, or 2**128 and up */
        return 0;
    }
    if (reserve(e, 18) < 0)
        return -1;
    put_u8(e, T_UUID);
    memcpy(e->p + e->len, b, 16);
    e->len += 16;
    put_u8(e, k);
    return 1;
}

/* ---- Subclasses of str and bytes ----------------------------------------
 * An instance of a subclass of str or bytes pickles (protocol 2 and up) as
 * NEWOBJ(cls, (str(value),)) and no state when the class keeps object's and
 * its base's pickling: no __reduce__/__reduce_ex__/__getnewargs__/
 * __getstate__ of its own anywhere in the MRO, no instance __dict__ and no
 * slots (so no state), generic attribute access (pickle's getattr reaches
 * the same methods), no entry in copyreg.dispatch_table, and its module and
 * qualname find it again (or pickle refuses it).  SafeString is such a
 * class.  The codec writes those as SUBCLASS: the class's name and the
 * value, and decodes them as unpickling does, cls->tp_new(cls, (value,)).
 * A class is judged outside any walk (its version tag records the state it
 * was judged in; a change re-judges it) and remembered in the state. */

static PyObject *mro_lookup(PyTypeObject *tp, PyObject *name)
{
    PyObject *mro = tp->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *dict = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_dict;
        PyObject *r = dict != NULL ? PyDict_GetItemWithError(dict, name) : NULL;
        if (r != NULL || PyErr_Occurred())
            return r;
    }
    return NULL;
}

/* 1 when tp and its base resolve name to the same object (both borrowed),
 * 0 when not, -1 with an error set. */
static int same_lookup(PyTypeObject *tp, PyTypeObject *base, const char *name)
{
    PyObject *n = PyUnicode_InternFromString(name);
    if (n == NULL)
        return -1;
    PyObject *a = mro_lookup(tp, n);
    PyObject *b = a != NULL || !PyErr_Occurred() ? mro_lookup(base, n) : NULL;
    Py_DECREF(n);
    if (PyErr_Occurred())
        return -1;
    return a == b;
}

static PyTypeObject *sub_base(PyTypeObject *tp)
{
    return PyType_IsSubtype(tp, &PyUnicode_Type) ? &PyUnicode_Type : &PyBytes_Type;
}

/* Finds module:qualname the way pickle's find_class does, but without
 * importing: sys.modules, then a dict lookup per dotted part.  New
 * reference, or NULL (an error set only for a real failure such as
 * MemoryError; a missing name is NULL without error). */
static PyObject *find_by_name(PyObject *module, PyObject *qualname)
{
    PyObject *obj = PyImport_GetModule(module);
    if (obj == NULL)
        return NULL;
    PyObject *dot = PyUnicode_FromString(".");
    PyObject *parts = dot != NULL ? PyUnicode_Split(qualname, dot, -1) : NULL;
    Py_XDECREF(dot);
    if (parts == NULL) {
        Py_DECREF(obj);
        return NULL;
    }
    for (Py_ssize_t i = 0; obj != NULL && i < PyList_GET_SIZE(parts); i++) {
        PyObject *dict = PyModule_Check(obj) ? PyModule_GetDict(obj)
                         : PyType_Check(obj) ? ((PyTypeObject *)obj)->tp_dict
                                             : NULL;
        PyObject *next =
            dict != NULL ? PyDict_GetItemWithError(dict, PyList_GET_ITEM(parts, i)) : NULL;
        Py_SETREF(obj, Py_XNewRef(next));
    }
    Py_DECREF(parts);
    return obj;
}

/* Judges s->type (see above) and fills s->name, s->tag, s->plain.  Python
 * code may run (the module and qualname attributes are read as pickle reads
 * them): never during a walk.  0, or -1 with an error set. */
static int judge_subtype(fc_codec_state *st, struct fc_codec_subtype *s)
{
    PyTypeObject *tp = (PyTypeObject *)s->type, *base = sub_base(tp);
    s->plain = 0;
#if PY_VERSION_HEX >= 0x030C0000
    (void)PyUnstable_Type_AssignVersionTag(tp);
#else
    PyObject *probe = PyUnicode_InternFromString("__reduce_ex__");
    if (probe == NULL)
        return -1;
    (void)_PyType_Lookup(tp, probe); /* assigns a version tag */
    Py_DECREF(probe);
#endif
    s->tag = tp->tp_version_tag;
    if (st->dispatch_table == NULL) {
        PyObject *copyreg = PyImport_ImportModule("copyreg");
        PyObject *table =
            copyreg != NULL ? PyObject_GetAttrString(copyreg, "dispatch_table") : NULL;
        Py_XDECREF(copyreg);
        if (table == NULL)
            return -1;
        if (!PyDict_Check(table)) {
            Py_DECREF(table);
            return 0; /* replaced by something else: pickle decides */
        }
        st->dispatch_table = table;
    }
    if (s->tag == 0 || Py_TYPE(tp) != &PyType_Type || !(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
        tp->tp_new != base->tp_new || tp->tp_getattro != PyObject_GenericGetAttr ||
        tp->tp_dictoffset != 0 || tp->tp_basicsize != base->tp_basicsize ||
        tp->tp_itemsize != base->tp_itemsize)
        return 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)
        return 0;
#endif
    static const char *const same[] = {"__reduce_ex__",     "__reduce__",   "__getnewargs__",
                                       "__getnewargs_ex__", "__getstate__", "__class__"};
    for (size_t j = 0; j < sizeof same / sizeof *same; j++) {
        int r = same_lookup(tp, base, same[j]);
        if (r <= 0)
            return r;
    }
    int in_table = PyDict_Contains(st->dispatch_table, (PyObject *)tp);
    if (in_table != 0)
        return in_table < 0 ? -1 : 0;
    /* The name pickle would write, and a check that it finds the class. */
    PyObject *module = PyDict_GetItemString(tp->tp_dict, "__module__");
    PyObject *qualname = ((PyHeapTypeObject *)tp)->ht_qualname;
    if (module == NULL || !PyUnicode_CheckExact(module) || qualname == NULL ||
        !PyUnicode_CheckExact(qualname))
        return 0;
    Py_ssize_t nm, nq;
    const char *m = PyUnicode_AsUTF8AndSize(module, &nm);
    const char *q = m != NULL ? PyUnicode_AsUTF8AndSize(qualname, &nq) : NULL;
    if (q == NULL || memchr(m, 0, (size_t)nm) != NULL || memchr(q, 0, (size_t)nq) != NULL ||
        nm + nq + 1 > FC_CODEC_NAME_MAX) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    Py_INCREF(module); /* the lookups below may drop the dict's reference */
    Py_INCREF(qualname);
    PyObject *found = find_by_name(module, qualname);
    Py_DECREF(module);
    Py_DECREF(qualname);
    if (found == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_DECREF(found);
    if (found != (PyObject *)tp || tp->tp_version_tag != s->tag)
        return 0;
    PyObject *name = PyBytes_FromStringAndSize(NULL, nm + 1 + nq);
    if (name == NULL)
        return -1;
    char *w = PyBytes_AS_STRING(name);
    memcpy(w, m, (size_t)nm);
    w[nm] = 0;
    memcpy(w + nm + 1, q, (size_t)nq);
    /* A class redefined under the same name (a reloaded module): the name
     * now finds this one, so an older entry no longer decodes it and its
     * instances go to pickle (which refuses them, as it would). */
    for (int i = 0; i < st->nsub; i++) {
        struct fc_codec_subtype *o = &st->sub[i];
        if (o != s && o->name != NULL && PyBytes_GET_SIZE(o->name) == PyBytes_GET_SIZE(name) &&
            memcmp(PyBytes_AS_STRING(o->name), w, (size_t)PyBytes_GET_SIZE(name)) == 0) {
            Py_CLEAR(o->name);
            o->plain = 0;
        }
    }
    Py_XSETREF(s->name, name);
    s->plain = 1;
    return 0;
}

/* The remembered entry of tp, or NULL. */
static struct fc_codec_subtype *find_subtype(fc_codec_state *st, PyTypeObject *tp)
{
    for (int i = 0; i < st->nsub; i++)
        if (st->sub[i].type == (PyObject *)tp)
            return &st->sub[i];
    return NULL;
}

/* Remembers tp (a new entry) or judges it again (its version tag moved).
 * Outside any walk.  0 (also when the state is full: its instances are then
 * pickled), or -1 with an error set. */
static int resolve_subtype(fc_codec_state *st, PyTypeObject *tp)
{
    struct fc_codec_subtype *s = find_subtype(st, tp);
    if (s == NULL) {
        if (st->nsub == FC_CODEC_SUBTYPES)
            return 0;
        s = &st->sub[st->nsub++];
        s->type = Py_NewRef((PyObject *)tp);
        s->name = NULL;
    }
    return judge_subtype(st, s);
}

static int enc_subclass(enc *e, PyObject *v, PyTypeObject *tp)
{
    fc_codec_state *st = e->st;
    struct fc_codec_subtype *s = find_subtype(st, tp);
    if (s == NULL || s->tag != tp->tp_version_tag) {
        if (s != NULL || st->nsub < FC_CODEC_SUBTYPES) {
            e->need |= NEED_SUBTYPE; /* judged outside the walk, then walked again */
            e->need_type = tp;
        }
        return 0;
    }
    if (!s->plain)
        return 0;
    int in_table = PyDict_Contains(st->dispatch_table, (PyObject *)tp);
    if (in_table != 0)
        return in_table < 0 ? -1 : 0;
    int rc = put_blob(e, T_SUBCLASS, PyBytes_AS_STRING(s->name), (size_t)PyBytes_GET_SIZE(s->name));
    if (rc <= 0)
        return rc;
    if (PyUnicode_Check(v))
        return enc_str(e, v);
    return put_blob(e, T_BYTES, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
}

/* Types not among the builtins: decimal's, uuid's, datetime's, and tzinfos
 * on their own. */
static int enc_other(enc *e, PyObject *v, PyTypeObject *tp)
{
    if ((PyObject *)tp == e->st->uuid_type)
        return enc_uuid(e, v, tp);
    if (e->st->uuid_type == NULL && (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) &&
        strcmp(tp->tp_name, "UUID") == 0) {
        e->need |= NEED_UUID;
        return 0;
    }
    if ((PyObject *)tp == e->st->decimal_type)
        return enc_decimal(e, v);
    if (e->st->decimal_type == NULL && strcmp(tp->tp_name, "decimal.Decimal") == 0) {
        e->need |= NEED_DECIMAL;
        return 0;
    }
    const PyDateTime_CAPI *capi = CAPI(e->st);
    if (capi != NULL) {
        if (tp == capi->DateTimeType || tp == capi->DateType || tp == capi->TimeType ||
            tp == capi->DeltaType)
            return enc_datetime(e, v, tp);
        if (tp == Py_TYPE(capi->TimeZone_UTC) || (PyObject *)tp == e->st->zoneinfo_type ||
            (e->st->zoneinfo_type == NULL && strcmp(tp->tp_name, "zoneinfo.ZoneInfo") == 0)) {
            if (reserve(e, 1) < 0)
                return -1;
            put_u8(e, T_TZINFO);
            return enc_tz(e, v);
        }
    }
    return 0;
}

/* 1 written, 0 not mine, -1 error.  Scalars first: they are most items. */
static int enc_value(enc *e, PyObject *v, int depth)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyUnicode_Type)
        return enc_str(e, v);
    if (tp == &PyLong_Type)
        return enc_int(e, v);
    if (tp == &PyFloat_Type) {
        if (reserve(e, 9) < 0)
            return -1;
        double d = PyFloat_AS_DOUBLE(v);
        put_u8(e, T_FLOAT);
        memcpy(e->p + e->len, &d, sizeof d);
        e->len += sizeof d;
        return 1;
    }
    if (v == Py_None || tp == &PyBool_Type) {
        if (reserve(e, 1) < 0)
            return -1;
        put_u8(e, v == Py_None ? T_NONE : v == Py_True ? T_TRUE : T_FALSE);
        return 1;
    }
    if (tp == &PyBytes_Type)
        return put_blob(e, T_BYTES, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
    if (tp != &PyTuple_Type && tp != &PyList_Type && tp != &PyDict_Type && tp != &PySet_Type &&
        tp != &PyFrozenSet_Type) {
        if (PyUnicode_Check(v) || PyBytes_Check(v))
            return enc_subclass(e, v, tp);
        return enc_other(e, v, tp);
    }
    if (depth >= FC_CODEC_MAX_DEPTH)
        return 0;
    depth++;
    if (tp == &PyTuple_Type) {
        int rc = enc_count(e, T_TUPLE, PyTuple_GET_SIZE(v));
        if (rc <= 0)
            return rc;
        return enc_items(e, ((PyTupleObject *)v)->ob_item, PyTuple_GET_SIZE(v), depth);
    }
    if (tp == &PyFrozenSet_Type)
        return enc_set(e, v, T_FROZENSET, depth);
    int seen = seen_add(e, v);
    if (seen != 0)
        return seen > 0 ? 0 : -1; /* met before: not mine */
    if (tp == &PyList_Type) {
#ifdef Py_GIL_DISABLED
        /* As enc_dict: a tuple of the items, taken atomically. */
        PyObject *items = PyList_AsTuple(v);
        if (items == NULL)
            return -1;
        int rc = enc_count(e, T_LIST, PyTuple_GET_SIZE(items));
        if (rc > 0)
            rc = enc_items(e, ((PyTupleObject *)items)->ob_item, PyTuple_GET_SIZE(items), depth);
        Py_DECREF(items);
        return rc;
#else
        int rc = enc_count(e, T_LIST, PyList_GET_SIZE(v));
        if (rc <= 0)
            return rc;
        return enc_items(e, ((PyListObject *)v)->ob_item, PyList_GET_SIZE(v), depth);
#endif
    }
    if (tp == &PyDict_Type)
        return enc_dict(e, v, depth);
    return enc_set(e, v, T_SET, depth);
}

/* Looks up zoneinfo.ZoneInfo (importing zoneinfo: Python code may run, so
 * never during a walk).  Only the C implementation is taken: the pure
 * Python one's methods would run Python code under the walk.  0, or -1 with
 * an error set (not for a missing zoneinfo: that leaves Py_None). */
static int resolve_zoneinfo(fc_codec_state *st)
{
    if (st->zoneinfo_type != NULL)
        return 0;
    PyObject *type = NULL, *no_cache = NULL;
    PyObject *mod = PyImport_ImportModule("zoneinfo");
    if (mod != NULL) {
        type = PyObject_GetAttrString(mod, "ZoneInfo");
        Py_DECREF(mod);
    }
    if (type != NULL && PyType_Check(type) &&
        strcmp(((PyTypeObject *)type)->tp_name, "zoneinfo.ZoneInfo") == 0)
        no_cache = PyObject_GetAttrString(type, "no_cache");
    if (no_cache == NULL) {
        if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_MemoryError)) {
            Py_XDECREF(type);
            return -1;
        }
        PyErr_Clear();
        Py_XSETREF(type, Py_NewRef(Py_None));
        no_cache = Py_NewRef(Py_None);
    }
    if (st->zoneinfo_type == NULL) { /* the import may have re-entered */
        st->zoneinfo_type = type;
        st->zoneinfo_no_cache = no_cache;
    }
    else {
        Py_DECREF(type);
        Py_DECREF(no_cache);
    }
    return 0;
}

/* Looks up decimal.Decimal (importing decimal, so never during a walk; its
 * import is not cheap, and Django has not made it when this module loads).
 * Only the C type is taken: its str and constructor run no Python code.
 * Decoding constructs with a private context trapping every error, so a
 * damaged text raises whatever the thread's context traps, and leaves that
 * context's flags alone.  0, or -1 with an error set (not for a missing
 * C decimal: that leaves Py_None). */
static int resolve_decimal(fc_codec_state *st)
{
    if (st->decimal_type != NULL)
        return 0;
    PyObject *type = NULL, *ctx = NULL;
    PyObject *mod = PyImport_ImportModule("decimal");
    if (mod != NULL) {
        type = PyObject_GetAttrString(mod, "Decimal");
        if (type != NULL && PyType_Check(type) &&
            strcmp(((PyTypeObject *)type)->tp_name, "decimal.Decimal") == 0) {
            PyObject *invalid = PyObject_GetAttrString(mod, "InvalidOperation");
            PyObject *by_zero = PyObject_GetAttrString(mod, "DivisionByZero");
            PyObject *overflow = PyObject_GetAttrString(mod, "Overflow");
            PyObject *kw = invalid && by_zero && overflow
                               ? Py_BuildValue("{s[OOO]}", "traps", invalid, by_zero, overflow)
                               : NULL;
            Py_XDECREF(invalid);
            Py_XDECREF(by_zero);
            Py_XDECREF(overflow);
            PyObject *ctx_type = kw != NULL ? PyObject_GetAttrString(mod, "Context") : NULL;
            PyObject *noargs = ctx_type != NULL ? PyTuple_New(0) : NULL;
            if (noargs != NULL)
                ctx = PyObject_Call(ctx_type, noargs, kw);
            Py_XDECREF(noargs);
            Py_XDECREF(ctx_type);
            Py_XDECREF(kw);
        }
        Py_DECREF(mod);
    }
    if (ctx == NULL) {
        if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_MemoryError)) {
            Py_XDECREF(type);
            return -1;
        }
        PyErr_Clear();
        Py_XSETREF(type, Py_NewRef(Py_None));
        ctx = Py_NewRef(Py_None);
    }
    if (st->decimal_type == NULL) { /* the import may have re-entered */
        st->decimal_type = type;
        st->decimal_context = ctx;
    }
    else {
        Py_DECREF(type);
        Py_DECREF(ctx);
    }
    return 0;
}

/* Whether uuid.UUID still pickles as the codec writes and reads it: object
 * its only base and its __new__, __reduce__ and __reduce_ex__, its own
 * __getstate__ and __setstate__ the ones first seen, int and is_safe slot
 * members.  Records the slots' offsets and the version tag this holds for
 * (0: it cannot be watched, so never fast).  0, or -1 with an error set. */
static int check_uuid(fc_codec_state *st)
{
    PyTypeObject *tp = (PyTypeObject *)st->uuid_type;
    PyObject *dict = tp->tp_dict;
    st->uuid_fast = 0;
#if PY_VERSION_HEX >= 0x030C0000
    (void)PyUnstable_Type_AssignVersionTag(tp);
#else
    PyObject *name = PyUnicode_InternFromString("__setstate__");
    if (name == NULL)
        return -1;
    (void)_PyType_Lookup(tp, name); /* assigns a version tag */
    Py_DECREF(name);
#endif
    st->uuid_tag = tp->tp_version_tag;
    if (st->uuid_tag == 0 || tp->tp_base != &PyBaseObject_Type ||
        tp->tp_new != PyBaseObject_Type.tp_new || dict == NULL)
        return 0;
    static const char *const not_own[] = {"__new__", "__reduce__", "__reduce_ex__",
                                          "__getnewargs__", "__getnewargs_ex__"};
    for (size_t j = 0; j < sizeof not_own / sizeof *not_own; j++)
        if (PyDict_GetItemString(dict, not_own[j]) != NULL)
            return 0;
    PyObject *get = PyDict_GetItemString(dict, "__getstate__");
    PyObject *set = PyDict_GetItemString(dict, "__setstate__");
    if (get == NULL || set == NULL || get != st->uuid_getstate || set != st->uuid_setstate)
        return 0;
    Py_ssize_t off[2];
    static const char *const slots[] = {"int", "is_safe"};
    for (size_t j = 0; j < 2; j++) {
        PyObject *m = PyDict_GetItemString(dict, slots[j]);
        if (m == NULL || !Py_IS_TYPE(m, &PyMemberDescr_Type) || PyDescr_TYPE(m) != tp)
            return 0;
        PyMemberDef *def = ((PyMemberDescrObject *)m)->d_member;
        if (def->type != Py_T_OBJECT_EX || def->offset < (Py_ssize_t)sizeof(PyObject) ||
            def->offset > tp->tp_basicsize - (Py_ssize_t)sizeof(PyObject *))
            return 0;
        off[j] = def->offset;
    }
    st->uuid_int_off = off[0];
    st->uuid_safe_off = off[1];
    st->uuid_fast = 1;
    return 0;
}

/* Looks up uuid.UUID and SafeUUID's members (importing uuid: never during a
 * walk), then checks the class.  Called again when the class's version tag
 * changed (it was modified): checks it again.  0, or -1 with an error set
 * (not for a missing uuid: that leaves Py_None). */
static int resolve_uuid(fc_codec_state *st)
{
    if (st->uuid_type == Py_None)
        return 0;
    if (st->uuid_type == NULL) {
        PyObject *type = NULL, *safe[3] = {NULL, NULL, NULL};
        PyObject *mod = PyImport_ImportModule("uuid");
        PyObject *su = NULL;
        if (mod != NULL) {
            type = PyObject_GetAttrString(mod, "UUID");
            su = PyObject_GetAttrString(mod, "SafeUUID");
            Py_DECREF(mod);
        }
        static const char *const names[3] = {"unknown", "safe", "unsafe"};
        for (int j = 0; su != NULL && j < 3; j++)
            if ((safe[j] = PyObject_GetAttrString(su, names[j])) == NULL)
                break;
        Py_XDECREF(su);
        int ok = type != NULL && PyType_Check(type) && safe[2] != NULL &&
                 (((PyTypeObject *)type)->tp_flags & Py_TPFLAGS_HEAPTYPE);
        PyObject *get = NULL, *set = NULL;
        if (ok) {
            PyObject *dict = ((PyTypeObject *)type)->tp_dict;
            get = PyDict_GetItemString(dict, "__getstate__");
            set = PyDict_GetItemString(dict, "__setstate__");
        }
        if (!ok || get == NULL || set == NULL) {
            for (int j = 0; j < 3; j++)
                Py_XDECREF(safe[j]);
            if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_MemoryError)) {
                Py_XDECREF(type);
                return -1;
            }
            PyErr_Clear();
            Py_XSETREF(type, Py_NewRef(Py_None));
            if (st->uuid_type == NULL)
                st->uuid_type = type;
            else
                Py_DECREF(type);
            return 0;
        }
        if (st->uuid_type != NULL) { /* the import re-entered */
            Py_DECREF(type);
            for (int j = 0; j < 3; j++)
                Py_DECREF(safe[j]);
            return 0;
        }
        st->uuid_type = type;
        st->uuid_getstate = Py_NewRef(get);
        st->uuid_setstate = Py_NewRef(set);
        for (int j = 0; j < 3; j++)
            st->uuid_safe[j] = safe[j];
    }
    return check_uuid(st);
}

/* Free-threaded builds: every lookup done and every lazily filled slot
 * filled at once, before any thread can encode or decode, so that the state
 * is only read afterwards (filling it during a call would write it while
 * other threads read it).  0, or -1 with an error set. */
int fc_codec_prepare(fc_codec_state *st)
{
#ifdef Py_GIL_DISABLED
    if (resolve_zoneinfo(st) < 0 || resolve_decimal(st) < 0 || resolve_uuid(st) < 0)
        return -1;
    /* small_int's table too, which it otherwise fills on first use. */
    for (size_t i = 0; i < sizeof st->small_int / sizeof *st->small_int; i++)
        if (st->small_int[i] == NULL &&
            (st->small_int[i] = PyLong_FromLong((long)i + SMALL_INT_MIN)) == NULL)
            return -1;
#else
    (void)st;
#endif
    return 0;
}

int fc_codec_encode(fc_codec_state *st, PyObject *v, int protocol, PyObject **out)
{
    enc e;
    int rc;
    e.st = st;
    e.protocol = protocol;
    for (;;) {
        e.need = 0;
        e.p = e.stack;
        e.len = 0;
        e.cap = sizeof e.stack;
        e.nsmall = 0;
        e.tab = NULL;
        e.mask = e.ntab = 0;
        put_u8(&e, FC_CODEC_VERSION);
        rc = enc_value(&e, v, 0);
        if (rc > 0) {
            *out = PyBytes_FromStringAndSize(e.p, (Py_ssize_t)e.len);
            if (*out == NULL)
                rc = -1;
        }
        if (e.p != e.stack)
            free(e.p);
        free(e.tab);
        if (rc != 0 || e.need == 0)
            return rc;
        /* Each lookup fills its slot (or Py_None), so this walks at most
         * once more per kind of need. */
        /* First: the class is borrowed from the value, which the lookups
         * below (imports: Python code) could change. */
        if ((e.need & NEED_SUBTYPE) && resolve_subtype(st, e.need_type) < 0)
            return -1;
        if ((e.need & NEED_ZONEINFO) && resolve_zoneinfo(st) < 0)
            return -1;
        if ((e.need & NEED_DECIMAL) && resolve_decimal(st) < 0)
            return -1;
        if ((e.need & NEED_UUID) && resolve_uuid(st) < 0)
            return -1;
    }
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */

typedef struct {
    const unsigned char *p, *end, *start;
    fc_codec_state *st;
    PyObject *need_module; /* a module to import outside the walk, then walk again */
} dec;

static PyObject *damaged(const dec *d, const char *what)
{
    PyErr_Format(PyExc_ValueError, "fastcache: damaged cached value (%s at byte %zd)", what,
                 (Py_ssize_t)(d->p - d->start));
    return NULL;
}

static int get_varint_slow(dec *d, uint64_t *out)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (d->p >= d->end) {
            damaged(d, "truncated number");
            return -1;
        }
        unsigned b = *d->p++;
        if (shift == 63 && b > 1)
            break;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = x;
            return 0;
        }
    }
    damaged(d, "number too long");
    return -1;
}

static inline int get_varint(dec *d, uint64_t *out)
{
    if (d->p < d->end && *d->p < 0x80) {
        *out = *d->p++;
        return 0;
    }
    return get_varint_slow(d, out);
}

/* A length or count, at most the bytes left divided by per_item. */
static inline int get_count(dec *d, size_t per_item, Py_ssize_t *out)
{
    uint64_t n;
    if (get_varint(d, &n) < 0)
        return -1;
    if (n > (uint64_t)(d->end - d->p) / per_item) {
        damaged(d, "length beyond the end");
        return -1;
    }
    *out = (Py_ssize_t)n;
    return 0;
}

/* Copies n bytes a word at a time (the last word overlapping the one
 * before) and says whether all were ASCII. */
static inline int copy_ascii(unsigned char *dst, const unsigned char *src, size_t n)
{
    uint64_t acc = 0, w;
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            acc |= dst[i] = src[i];
        return acc < 0x80;
    }
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&w, src + i, 8);
        memcpy(dst + i, &w, 8);
        acc |= w;
    }
    memcpy(&w, src + n - 8, 8);
    memcpy(dst + n - 8, &w, 8);
    return ((acc | w) & 0x8080808080808080ULL) == 0;
}

/* Whether the n bytes at a and b are equal, for short n (dict keys). */
static inline int same_bytes(const unsigned char *a, const unsigned char *b, size_t n)
{
    uint64_t x, y, diff = 0;
    if (n < 8) {
        uint32_t u, v, d2 = 0;
        if (n < 4) {
            for (size_t i = 0; i < n; i++)
                d2 |= (uint32_t)(a[i] ^ b[i]);
            return d2 == 0;
        }
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        d2 = u ^ v;
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return (d2 | (u ^ v)) == 0;
    }
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        diff |= x ^ y;
    }
    memcpy(&x, a + n - 8, 8);
    memcpy(&y, b + n - 8, 8);
    return (diff | (x ^ y)) == 0;
}

static PyObject *new_ascii(dec *d, size_t n)
{
    PyObject *s = PyUnicode_New((Py_ssize_t)n, 127);
    if (s == NULL)
        return NULL;
    if (n && !copy_ascii(PyUnicode_1BYTE_DATA(s), d->p, n)) {
        Py_DECREF(s);
        return damaged(d, "non-ASCII byte in an ASCII str");
    }
    d->p += n;
    return s;
}

static PyObject *dec_value(dec *d, int depth);

/* The int of a T_SMALL_INT tag, from the module's table when there is one
 * (one load instead of a call; CPython shares these objects anyway). */
static inline PyObject *small_int(dec *d, int tag)
{
    long x = (long)(tag - T_SMALL_INT) + SMALL_INT_MIN;
    if (d->st == NULL)
        return PyLong_FromLong(x);
    PyObject **slot = &d->st->small_int[tag - T_SMALL_INT];
    if (*slot == NULL && (*slot = PyLong_FromLong(x)) == NULL)
        return NULL;
    return Py_NewRef(*slot);
}

/* A dict key: short ASCII strs come from (and go to) the cache. */
static PyObject *dec_key(dec *d, int depth)
{
    if (d->st == NULL || d->p >= d->end || *d->p != T_ASCII)
        return dec_value(d, depth);
    d->p++;
    Py_ssize_t n;
    if (get_count(d, 1, &n) < 0)
        return NULL;
    if (n > FC_CODEC_KEY_MAX)
        return new_ascii(d, (size_t)n);
    /* A word at a time: the head, the tail (overlapping), the length. */
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL, w = 0;
    if (n >= 8) {
        memcpy(&w, d->p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        memcpy(&w, d->p + n - 8, 8);
    }
    else
        memcpy(&w, d->p, (size_t)n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    if (n > 16) {
        memcpy(&w, d->p + 8, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    }
    /* The top bits: every input bit reaches them through the multiplies. */
    PyObject **slot = &d->st->slot[h >> (64 - FC_CODEC_KEY_BITS)];
#ifdef Py_GIL_DISABLED
    /* Other threads use the same slots at once: a thread takes the slot's
     * reference while it compares (another finding the slot empty builds
     * the string anew), and puts one back after, unless another thread
     * filled the slot meanwhile.  Never a borrowed reference that another
     * thread's replacement could free. */
    PyObject *s = __atomic_exchange_n(slot, NULL, __ATOMIC_ACQUIRE), *r;
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n &&
        same_bytes(PyUnicode_1BYTE_DATA(s), d->p, (size_t)n)) {
        d->p += n;
        r = Py_NewRef(s);
    }
    else {
        Py_XDECREF(s);
        s = r = new_ascii(d, (size_t)n);
        if (r == NULL)
            return NULL;
        Py_INCREF(s);
    }
    PyObject *empty = NULL;
    if (!__atomic_compare_exchange_n(slot, &empty, s, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        Py_DECREF(s);
    return r;
#else
    PyObject *s = *slot;
    if (s != NULL && PyUnicode_GET_LENGTH(s) == n &&
        same_bytes(PyUnicode_1BYTE_DATA(s), d->p, (size_t)n)) {
        d->p += n;
        return Py_NewRef(s);
    }
    s = new_ascii(d, (size_t)n);
    if (s != NULL)
        Py_XSETREF(*slot, Py_NewRef(s));
    return s;
#endif
}

static PyObject *dec_seq(dec *d, int tag, int depth)
{
    Py_ssize_t n;
    if (get_count(d, 1, &n) < 0)
        return NULL;
    PyObject *seq = tag == T_LIST ? PyList_New(n) : PyTuple_New(n);
    if (seq == NULL)
        return NULL;
    PyObject **items =
        tag == T_LIST ? ((PyListObject *)seq)->ob_item : ((PyTupleObject *)seq)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Unfilled items are NULL, which both deallocators skip. */
        if (d->p < d->end && *d->p >= T_SMALL_INT) /* inline: lists of ints */
            items[i] = small_int(d, *d->p++);
        else
            items[i] = dec_value(d, depth);
        if (items[i] == NULL) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    return seq;
}

static PyObject *dec_set(dec *d, int tag, int depth)
{
    Py_ssize_t n;
    if (get_count(d, 1, &n) < 0)
        return NULL;
    /* Items added one by one in the writer's order, as pickle's ADDITEMS
     * and FROZENSET do.  A new frozenset may be filled with PySet_Add. */
    PyObject *set = tag == T_SET ? PySet_New(NULL) : PyFrozenSet_New(NULL);
    if (set == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = dec_value(d, depth);
        if (item == NULL)
            goto error;
        int rc = PySet_Add(set, item);
        Py_DECREF(item);
        if (rc < 0)
            goto error;
    }
    return set;
error:
    Py_DECREF(set);
    return NULL;
}

static PyObject *dec_dict(dec *d, int depth)
{
    Py_ssize_t n;
    if (get_count(d, 2, &n) < 0)
        return NULL;
#if PY_VERSION_HEX < 0x030D0000
    PyObject *dict = n > 5 ? _PyDict_NewPresized(n) : PyDict_New();
#else
    PyObject *dict = PyDict_New();
#endif
    if (dict == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = dec_key(d, depth);
        if (k == NULL)
            goto error;
        PyObject *v = dec_value(d, depth);
        if (v == NULL) {
            Py_DECREF(k);
            goto error;
        }
        int rc = PyDict_SetItem(dict, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0)
            goto error;
    }
    return dict;
error:
    Py_DECREF(dict);
    return NULL;
}

/* Decimals and UUIDs need the state (their types are looked up into it):
 * decoding without one (st NULL) raises for them, as for datetimes. */
static int dec_need_state(const dec *d, const char *what)
{
    if (d->st != NULL)
        return 0;
    PyErr_Format(PyExc_ValueError,
                 "fastcache: cached value holds a %s, and it is decoded without codec state", what);
    return -1;
}

static const PyDateTime_CAPI *dec_capi(dec *d)
{
    if (d->st == NULL || d->st->datetime_capi == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "fastcache: cached value holds a datetime, and this interpreter has "
                        "no datetime C API");
        return NULL;
    }
    return CAPI(d->st);
}

/* A varint that must be below limit (a field of a known range). */
static int get_bounded(dec *d, uint64_t limit, uint64_t *out)
{
    if (get_varint(d, out) < 0)
        return -1;
    if (*out >= limit) {
        damaged(d, "field out of range");
        return -1;
    }
    return 0;
}

static PyObject *dec_delta(dec *d, const PyDateTime_CAPI *capi)
{
    uint64_t z, secs, us;
    if (get_bounded(d, 2 * 999999999ULL + 2, &z) < 0 || get_bounded(d, 24 * 3600, &secs) < 0 ||
        get_bounded(d, 1000000, &us) < 0)
        return NULL;
    int days = (int)(int64_t)((z >> 1) ^ (0 - (z & 1)));
    return capi->Delta_FromDelta(days, (int)secs, (int)us, 1, capi->DeltaType);
}

static PyObject *dec_text(dec *d)
{
    Py_ssize_t n;
    if (get_count(d, 1, &n) < 0)
        return NULL;
    const char *p = (const char *)d->p;
    d->p += n;
    return PyUnicode_DecodeUTF8(p, n, NULL);
}

static PyObject *dec_tz(dec *d, const PyDateTime_CAPI *capi)
{
    if (d->p >= d->end)
        return damaged(d, "truncated tzinfo");
    switch (*d->p++) {
    case TZ_NONE: Py_RETURN_NONE;
    case TZ_UTC: return Py_NewRef(capi->TimeZone_UTC);
    case TZ_FIXED: {
        PyObject *offset = dec_delta(d, capi);
        if (offset == NULL)
            return NULL;
        PyObject *name = NULL, *tz = NULL;
        if (d->p >= d->end || *d->p > 1)
            damaged(d, "bad timezone name flag");
        else if (*d->p++ == 0 || (name = dec_text(d)) != NULL)
            tz = capi->TimeZone_FromTimeZone(offset, name); /* checks the range */
        Py_DECREF(offset);
        Py_XDECREF(name);
        return tz;
    }
    case TZ_ZONEINFO: {
        if (d->p >= d->end || *d->p > 1)
            return damaged(d, "bad ZoneInfo cache flag");
        int from_cache = *d->p++;
        PyObject *key = dec_text(d);
        if (key == NULL)
            return NULL;
        PyObject *tz = NULL;
        /* What ZoneInfo._unpickle(key, from_cache) does. */
        if (resolve_zoneinfo(d->st) == 0) {
            if (d->st->zoneinfo_type == Py_None)
                PyErr_SetString(PyExc_ValueError,
                                "fastcache: cached value holds a zoneinfo.ZoneInfo, and "
                                "this interpreter has no C zoneinfo");
            else
                tz = PyObject_CallOneArg(
                    from_cache ? d->st->zoneinfo_type : d->st->zoneinfo_no_cache, key);
        }
        Py_DECREF(key);
        return tz;
    }
    default: d->p--; return damaged(d, "unknown tzinfo kind");
    }
}

static PyObject *dec_datetime(dec *d, int tag)
{
    const PyDateTime_CAPI *capi = dec_capi(d);
    if (capi == NULL)
        return NULL;
    if (tag == T_TIMEDELTA)
        return dec_delta(d, capi);
    if (tag == T_TZINFO) {
        if (d->p < d->end && *d->p == TZ_NONE)
            return damaged(d, "tzinfo None");
        return dec_tz(d, capi);
    }
    int y = 0, mo = 0, day = 0;
    if (tag != T_TIME) {
        if (d->end - d->p < 4)
            return damaged(d, "truncated date");
        y = d->p[0] | d->p[1] << 8;
        mo = d->p[2];
        day = d->p[3];
        d->p += 4;
        if (tag == T_DATE) /* the constructors check every range */
            return capi->Date_FromDate(y, mo, day, capi->DateType);
    }
    if (d->end - d->p < 7)
        return damaged(d, "truncated time");
    int h = d->p[0], mi = d->p[1], s = d->p[2];
    int us = d->p[3] | d->p[4] << 8 | d->p[5] << 16;
    int fold = d->p[6];
    d->p += 7;
    PyObject *tz = dec_tz(d, capi);
    if (tz == NULL)
        return NULL;
    PyObject *r = tag == T_TIME ? capi->Time_FromTimeAndFold(h, mi, s, us, tz, fold, capi->TimeType)
                                : capi->DateTime_FromDateAndTimeAndFold(
                                      y, mo, day, h, mi, s, us, tz, fold, capi->DateTimeType);
    Py_DECREF(tz);
    return r;
}

/* Whether n bytes are a text str(Decimal) makes: [-] then Infinity, NaN or
 * sNaN and payload digits, or digits [. digits] [E|e +|- digits].  The
 * constructor takes more (spaces, "_", "+", "inf"): damage must not pass. */
static int decimal_text_ok(const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
#define DIGITS(q)                                   \
    while ((q) < end && *(q) >= '0' && *(q) <= '9') \
    (q)++
    if (p < end && *p == '-')
        p++;
    if ((size_t)(end - p) == 8 && memcmp(p, "Infinity", 8) == 0)
        return 1;
    if (end - p >= 3 && memcmp(p, "NaN", 3) == 0)
        p += 3;
    else if (end - p >= 4 && memcmp(p, "sNaN", 4) == 0)
        p += 4;
    else {
        const unsigned char *q = p;
        DIGITS(p);
        if (p == q)
            return 0;
        if (p < end && *p == '.') {
            q = ++p;
            DIGITS(p);
            if (p == q)
                return 0;
        }
        if (p < end && (*p == 'E' || *p == 'e')) {
            p++;
            if (p == end || (*p != '+' && *p != '-'))
                return 0;
            q = ++p;
            DIGITS(p);
            if (p == q)
                return 0;
        }
        return p == end;
    }
    DIGITS(p);
    return p == end;
#undef DIGITS
}

/* Decimal(text, context): what unpickling does, with the codec's context
 * (for valid text, the context changes nothing: construction is exact). */
static PyObject *dec_decimal(dec *d)
{
    Py_ssize_t n;
    if (get_count(d, 1, &n) < 0)
        return NULL;
    if (!decimal_text_ok(d->p, (size_t)n))
        return damaged(d, "bad Decimal text");
    if (dec_need_state(d, "decimal.Decimal") < 0 || resolve_decimal(d->st) < 0)
        return NULL;
    if (d->st->decimal_type == Py_None) {
        PyErr_SetString(PyExc_ValueError, "fastcache: cached value holds a decimal.Decimal, and "
                                          "this interpreter has no C decimal");
        return NULL;
    }
    PyObject *text = PyUnicode_New(n, 127);
    if (text == NULL)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(text), d->p, (size_t)n);
    PyObject *r =
        PyObject_CallFunctionObjArgs(d->st->decimal_type, text, d->st->decimal_context, NULL);
    Py_DECREF(text);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_ArithmeticError)) {
        /* an exponent beyond what a Decimal holds */
        PyErr_Clear();
        return damaged(d, "Decimal out of range");
    }
    d->p += n;
    return r;
}

/* A UUID as unpickling makes it: object.__new__(UUID), then the slots set
 * as UUID.__setstate__ sets them (directly, while the class is unchanged;
 * otherwise by calling its __setstate__ as pickle would). */
static PyObject *dec_uuid(dec *d)
{
    if (d->end - d->p < 17)
        return damaged(d, "truncated UUID");
    if (d->p[16] > 2)
        return damaged(d, "bad UUID is_safe");
    if (dec_need_state(d, "uuid.UUID") < 0)
        return NULL;
    fc_codec_state *st = d->st;
    if (st->uuid_type == NULL ||
        (st->uuid_type != Py_None &&
         ((PyTypeObject *)st->uuid_type)->tp_version_tag != st->uuid_tag)) {
        if (resolve_uuid(st) < 0)
            return NULL;
    }
    if (st->uuid_type == Py_None) {
        PyErr_SetString(PyExc_ValueError,
                        "fastcache: cached value holds a uuid.UUID, and uuid is not importable");
        return NULL;
    }
    PyObject *i = _PyLong_FromByteArray(d->p, 16, 1, 0);
    if (i == NULL)
        return NULL;
    PyObject *safe = st->uuid_safe[d->p[16]];
    d->p += 17;
    PyTypeObject *tp = (PyTypeObject *)st->uuid_type;
    if (st->uuid_fast) {
        PyObject *u = tp->tp_alloc(tp, 0);
        if (u == NULL) {
            Py_DECREF(i);
            return NULL;
        }
        *(PyObject **)((char *)u + st->uuid_int_off) = i;
        *(PyObject **)((char *)u + st->uuid_safe_off) = Py_NewRef(safe);
        return u;
    }
    /* {'int': i} and, unless unknown, 'is_safe': safe.value */
    PyObject *u = NULL, *state = PyDict_New();
    PyObject *value = safe == st->uuid_safe[0] ? NULL : PyObject_GetAttrString(safe, "value");
    if (state != NULL && PyDict_SetItemString(state, "int", i) == 0 &&
        (safe == st->uuid_safe[0] ||
         (value != NULL && PyDict_SetItemString(state, "is_safe", value) == 0))) {
        u = PyObject_CallMethod((PyObject *)tp, "__new__", "O", (PyObject *)tp);
        PyObject *r = u != NULL ? PyObject_CallMethod(u, "__setstate__", "O", state) : NULL;
        if (r == NULL)
            Py_CLEAR(u);
        Py_XDECREF(r);
    }
    Py_XDECREF(value);
    Py_XDECREF(state);
    Py_DECREF(i);
    return u;
}

/* The class a SUBCLASS payload names (module "\0" qualname): the state's
 * entry, else found as pickle's find_class would, without running Python
 * code: a module not imported yet is left in d->need_module for
 * fc_codec_decode to import outside the walk.  New reference, or NULL with
 * an error set. */
static PyObject *dec_find_class(dec *d, const unsigned char *name, size_t n)
{
    fc_codec_state *st = d->st;
    for (int i = 0; i < st->nsub; i++) {
        PyObject *o = st->sub[i].name;
        if (o != NULL && (size_t)PyBytes_GET_SIZE(o) == n &&
            memcmp(PyBytes_AS_STRING(o), name, n) == 0)
            return Py_NewRef(st->sub[i].type);
    }
    size_t nm = strlen((const char *)name);
    PyObject *module = PyUnicode_DecodeUTF8((const char *)name, (Py_ssize_t)nm, NULL);
    PyObject *qualname = module != NULL ? PyUnicode_DecodeUTF8((const char *)name + nm + 1,
                                                               (Py_ssize_t)(n - nm - 1), NULL)
                                        : NULL;
    PyObject *cls = qualname != NULL ? find_by_name(module, qualname) : NULL;
    if (cls == NULL && !PyErr_Occurred()) {
        PyObject *mod = PyImport_GetModule(module);
        if (mod == NULL && !PyErr_Occurred()) {
            d->need_module = Py_NewRef(module);
            PyErr_SetString(PyExc_ImportError, "fastcache: module not imported yet");
        }
        else if (mod != NULL)
            PyErr_Format(PyExc_AttributeError, "Can't get attribute %R on %R", qualname, mod);
        Py_XDECREF(mod);
    }
    if (cls != NULL && !PyType_Check(cls)) {
        PyErr_Format(PyExc_TypeError, "fastcache: cached value names %U.%U, which is not a class",
                     module, qualname);
        Py_CLEAR(cls);
    }
    if (cls != NULL && st->nsub < FC_CODEC_SUBTYPES) {
        /* Remembered for the next decode; judged when first encoded. */
        PyObject *b = PyBytes_FromStringAndSize((const char *)name, (Py_ssize_t)n);
        if (b == NULL)
            Py_CLEAR(cls);
        else {
            struct fc_codec_subtype *s = &st->sub[st->nsub++];
            s->type = Py_NewRef(cls);
            s->name = b;
            s->tag = 0;
            s->plain = 0;
        }
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return cls;
}

/* An instance of a subclass of str or bytes, made as unpickling makes it:
 * cls->tp_new(cls, (value,), NULL).  For the classes the codec writes, that
 * is str's or bytes' own __new__ (C); a class changed since may run its own
 * __new__, as pickle.loads would. */
static PyObject *dec_subclass(dec *d, int depth)
{
    Py_ssize_t n;
    if (get_count(d, 1, &n) < 0)
        return NULL;
    const unsigned char *name = d->p;
    d->p += n;
    if (n < 3 || n > FC_CODEC_NAME_MAX || memchr(name, 0, (size_t)n) == NULL ||
        memchr(name, 0, (size_t)n) != memrchr(name, 0, (size_t)n) || name[0] == 0 ||
        name[n - 1] == 0)
        return damaged(d, "bad class name");
    if (d->p >= d->end || (*d->p != T_ASCII && *d->p != T_UTF8 && *d->p != T_BYTES))
        return damaged(d, "bad subclass value");
    if (dec_need_state(d, "subclass of str or bytes") < 0)
        return NULL;
    PyObject *cls = dec_find_class(d, name, (size_t)n);
    if (cls == NULL)
        return NULL;
    PyObject *r = NULL, *args = NULL, *value = dec_value(d, depth);
    if (value != NULL)
        args = PyTuple_Pack(1, value);
    if (args != NULL) {
        PyTypeObject *tp = (PyTypeObject *)cls;
        if (tp->tp_new == NULL)
            PyErr_Format(PyExc_TypeError, "fastcache: cannot create '%.200s' instances",
                         tp->tp_name);
        else
            r = tp->tp_new(tp, args, NULL);
    }
    Py_XDECREF(args);
    Py_XDECREF(value);
    Py_DECREF(cls);
    return r;
}

static PyObject *dec_value(dec *d, int depth)
{
    if (d->p >= d->end)
        return damaged(d, "truncated value");
    int tag = *d->p++;
    if (tag >= T_SMALL_INT)
        return small_int(d, tag);
    Py_ssize_t n;
    switch (tag) {
    case T_NONE: Py_RETURN_NONE;
    case T_TRUE: Py_RETURN_TRUE;
    case T_FALSE: Py_RETURN_FALSE;
    case T_INT: {
        uint64_t z;
        if (get_varint(d, &z) < 0)
            return NULL;
        return PyLong_FromLongLong((long long)((z >> 1) ^ (0 - (z & 1))));
    }
    case T_FLOAT: {
        double v;
        if (d->end - d->p < (ptrdiff_t)sizeof v)
            return damaged(d, "truncated float");
        memcpy(&v, d->p, sizeof v);
        d->p += sizeof v;
        return PyFloat_FromDouble(v);
    }
    case T_ASCII:
        if (get_count(d, 1, &n) < 0)
            return NULL;
        return new_ascii(d, (size_t)n);
    case T_UTF8:
    case T_BYTES: {
        if (get_count(d, 1, &n) < 0)
            return NULL;
        const char *p = (const char *)d->p;
        d->p += n;
        return tag == T_UTF8 ? PyUnicode_DecodeUTF8(p, n, NULL) : PyBytes_FromStringAndSize(p, n);
    }
    case T_LIST:
    case T_TUPLE:
    case T_SET:
    case T_FROZENSET:
    case T_DICT:
        if (depth >= FC_CODEC_MAX_DEPTH)
            return damaged(d, "nesting too deep");
        if (tag == T_DICT)
            return dec_dict(d, depth + 1);
        if (tag == T_SET || tag == T_FROZENSET)
            return dec_set(d, tag, depth + 1);
        return dec_seq(d, tag, depth + 1);
    case T_DATETIME:
    case T_DATE:
    case T_TIME:
    case T_TIMEDELTA:
    case T_TZINFO: return dec_datetime(d, tag);
    case T_DECIMAL: return dec_decimal(d);
    case T_UUID: return dec_uuid(d);
    case T_SUBCLASS: return dec_subclass(d, depth);
    default: d->p--; return damaged(d, "unknown tag");
    }
}

PyObject *fc_codec_decode(fc_codec_state *st, const char *p, size_t n)
{
    dec d = {(const unsigned char *)p, (const unsigned char *)p + n, (const unsigned char *)p, st,
             NULL};
    if (n == 0)
        return damaged(&d, "empty");
    if (d.p[0] != FC_CODEC_VERSION) {
        PyErr_Format(PyExc_ValueError,
                     "fastcache: cached value has codec version %d, this build reads "
                     "version %d (damaged, or written by another build)",
                     (int)d.p[0], FC_CODEC_VERSION);
        return NULL;
    }
    d.p++;
    PyObject *v;
    for (;;) {
        /* A list or tuple is made at its full size and filled item by item:
         * no collection (whose callbacks and finalizers run Python code that
         * could reach it through gc.get_objects()) may see it half filled. */
        int gc_was_on = PyGC_Disable();
        v = dec_value(&d, 0);
        if (gc_was_on)
            PyGC_Enable();
        if (d.need_module == NULL)
            break;
        /* A subclass's module not imported yet: pickle would import it;
         * done here, with nothing half built, then the walk starts over
         * (each time with one more module imported, so this ends). */
        PyErr_Clear();
        PyObject *mod = PyImport_Import(d.need_module);
        Py_CLEAR(d.need_module);
        if (mod == NULL)
            return NULL;
        Py_DECREF(mod);
        d.p = d.start + 1;
    }
    if (v != NULL && d.p != d.end) {
        Py_DECREF(v);
        return damaged(&d, "bytes after the value");
    }
    return v;
}

int fc_codec_init(fc_codec_state *st)
{
    (void)PyDateTimeAPI; /* the header's global: this module keeps its own */
    /* The capsule's table and the types in it are static in _datetime, one
     * for the process; an interpreter where _datetime does not load (an
     * isolated one, before 3.13) has no capsule, and no values of those
     * types: the codec then leaves datetimes to pickle. */
    st->datetime_capi = PyCapsule_Import(PyDateTime_CAPSULE_NAME, 0);
    if (st->datetime_capi == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError))
            return -1;
        PyErr_Clear();
    }
    return 0;
}

int fc_codec_state_traverse(fc_codec_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->zoneinfo_type);
    Py_VISIT(st->zoneinfo_no_cache);
    Py_VISIT(st->decimal_type);
    Py_VISIT(st->decimal_context);
    Py_VISIT(st->uuid_type);
    Py_VISIT(st->uuid_getstate);
    Py_VISIT(st->uuid_setstate);
    for (size_t i = 0; i < 3; i++)
        Py_VISIT(st->uuid_safe[i]);
    for (int i = 0; i < st->nsub; i++)
        Py_VISIT(st->sub[i].type);
    Py_VISIT(st->dispatch_table);
    return 0;
}

void fc_codec_state_clear(fc_codec_state *st)
{
    for (size_t i = 0; i < FC_CODEC_KEY_SLOTS; i++)
        Py_CLEAR(st->slot[i]);
    for (size_t i = 0; i < 128; i++)
        Py_CLEAR(st->small_int[i]);
    Py_CLEAR(st->zoneinfo_type);
    Py_CLEAR(st->zoneinfo_no_cache);
    Py_CLEAR(st->decimal_type);
    Py_CLEAR(st->decimal_context);
    Py_CLEAR(st->uuid_type);
    Py_CLEAR(st->uuid_getstate);
    Py_CLEAR(st->uuid_setstate);
    for (size_t i = 0; i < 3; i++)
        Py_CLEAR(st->uuid_safe[i]);
    st->uuid_fast = 0;
    for (int i = 0; i < st->nsub; i++) {
        Py_CLEAR(st->sub[i].type);
        Py_CLEAR(st->sub[i].name);
    }
    st->nsub = 0;
    Py_CLEAR(st->dispatch_table);
}
