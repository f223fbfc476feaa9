/*
 * fc_values.c - values: exact None, bool, 64-bit int, float, str and bytes
 * encoded inline, exact containers (and the other types fc_codec.c takes)
 * by the codec, anything else pickled; the copy a get makes under the lock
 * and its decoding after the lock is released.  It must not take a lock.
 * A pickle round trip of every inline type returns an equal object of the
 * same type, so copy-on-read semantics are LocMemCache's.
 */
#include "fc_binding.h"

#include <stdlib.h>
#include <string.h>

int copy_out(copied *c, const fc_entry *e)
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

void copied_release(copied *c)
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
    case FC_VT_CODEC: return fc_codec_decode(&st->codec, p, n);
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

PyObject *decode_copied(fc_state *st, copied *c)
{
    PyObject *r = decode_value(st, c->vtype, c->p, c->n);
    copied_release(c);
    return r;
}

int encode_value(fc_state *st, HandleObject *h, PyObject *v, enc_value *ev)
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
    PyObject *b;
    int proto = FC_LOAD(&h->pickle_protocol);
    int rc = fc_codec_encode(&st->codec, v, proto, &b);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        ev->owned = b;
        ev->p = PyBytes_AS_STRING(b);
        ev->n = (size_t)PyBytes_GET_SIZE(b);
        ev->vtype = FC_VT_CODEC;
        return 0;
    }
    PyObject *protocol = PyLong_FromLong(proto);
    if (protocol == NULL)
        return -1;
    PyObject *args[2] = {v, protocol};
    b = PyObject_Vectorcall(st->pickle_dumps, args, 2, NULL);
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
