/*
 * fc_expiry.c - the clock and timeouts: time.time() (read in C unless a test
 * or freezegun replaced it) and BaseCache.get_backend_timeout's arithmetic
 * (None never, 0 at once, else now + timeout), or the backend's own
 * get_backend_timeout when it has one.
 */
#include "fc_binding.h"

#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* Clock: time.time(), unless a test or freezegun replaced it               */

double c_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    /* Same rounding as CPython's time.time() */
    if (ns % 1000000000 == 0)
        return (double)(ns / 1000000000);
    return (double)ns / 1e9;
}

/* Whether f is the time module's own builtin time().  Decided on what f is,
 * never on what time.time was at import: a test that patched time.time
 * before this module was first imported (freezegun reuses one fake for
 * every freeze) must still be honoured. */
static inline int is_real_time(fc_state *st, PyObject *f)
{
    if (!PyCFunction_CheckExact(f) || PyCFunction_GET_SELF(f) != st->time_module)
        return 0;
    const PyMethodDef *ml = ((PyCFunctionObject *)f)->m_ml;
    if (ml == FC_LOAD(&st->time_ml))
        return 1;
    if (ml->ml_name == NULL || strcmp(ml->ml_name, "time") != 0)
        return 0;
    FC_STORE(&st->time_ml, ml); /* threads that race here store the same */
    return 1;
}

int get_now(fc_state *st, double *now)
{
    /* A strong reference: another thread may reassign time.time meanwhile. */
    PyObject *f;
    int found = PyDict_GetItemRef(st->time_dict, st->str_time, &f);
    if (found == 0)
        PyErr_SetString(PyExc_AttributeError, "module 'time' has no attribute 'time'");
    if (found <= 0)
        return -1;
    if (is_real_time(st, f)) {
        Py_DECREF(f);
        *now = c_time();
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(f);
    Py_DECREF(f);
    if (r == NULL)
        return -1;
    *now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

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

int compute_expiry(fc_state *st, HandleObject *h, PyObject *timeout, double now, expiry *out)
{
    if (!FC_LOAD(&h->fast_timeout)) {
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
    if (timeout == st->default_timeout) {
        /* held: adding an odd timeout object runs its __radd__ */
        PyObject *dt;
        handle_lock(h);
        dt = Py_NewRef(h->default_timeout);
        handle_unlock(h);
        int rc = number_expiry(dt, now, out);
        Py_DECREF(dt);
        return rc;
    }
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
