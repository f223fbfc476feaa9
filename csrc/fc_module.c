/*
 * fc_module.c - django_fastcache._fastcache: the module.  Multi-phase init
 * with per-module state (fc_binding.h): the Store and Handle types
 * (fc_store.c, fc_handle.c), configure() with the Django objects the
 * binding calls, and the codec's test hooks.
 */
#include "fc_binding.h"

#include <string.h>

static struct PyModuleDef fc_module_def;

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
    /* Called once, on import of django_fastcache, before any handle exists. */
    if (fc_codec_prepare(&st->codec) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *fc_configured(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    fc_state *st = PyModule_GetState(module);
    return PyBool_FromLong(st->default_timeout != NULL);
}

/* _codec_encode(value, protocol=5) -> bytes | None (None: the value would be
 * pickled). */
static PyObject *fc_codec_encode_py(PyObject *module, PyObject *args)
{
    PyObject *value, *b;
    int protocol = 5;
    if (!PyArg_ParseTuple(args, "O|i:_codec_encode", &value, &protocol))
        return NULL;
    fc_state *st = PyModule_GetState(module);
    int rc = fc_codec_encode(&st->codec, value, protocol, &b);
    if (rc <= 0)
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    return b;
}

/* _codec_decode(payload: bytes) -> value, as a get would return it. */
static PyObject *fc_codec_decode_py(PyObject *module, PyObject *b)
{
    if (!PyBytes_Check(b)) {
        PyErr_Format(PyExc_TypeError, "expected bytes, not %.200s", Py_TYPE(b)->tp_name);
        return NULL;
    }
    fc_state *st = PyModule_GetState(module);
    return fc_codec_decode(&st->codec, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))fc_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(*, default_timeout, validate_key, key_warning, pickle_dumps, pickle_loads)"},
    {"configured", fc_configured, METH_NOARGS, "Whether configure() was called."},
    {"_codec_encode", fc_codec_encode_py, METH_VARARGS, "Test hook: the codec's payload, or None."},
    {"_codec_decode", fc_codec_decode_py, METH_O, "Test hook: a payload decoded."},
    {NULL, NULL, 0, NULL},
};

static int fc_exec(PyObject *module)
{
    fc_state *st = PyModule_GetState(module);
    /* Before any store exists: the fork counter must see every fork. */
    pthread_once(&fc_setup_once, process_setup);
    st->StoreType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &store_spec, NULL);
    if (st->StoreType == NULL || PyModule_AddType(module, st->StoreType) < 0)
        return -1;
    st->HandleType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &handle_spec, NULL);
    if (st->HandleType == NULL || PyModule_AddType(module, st->HandleType) < 0)
        return -1;
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL)
        return -1;
    st->time_module = time_mod;
    st->time_dict = Py_NewRef(PyModule_GetDict(time_mod));
    st->str_time = PyUnicode_InternFromString("time");
    st->str_make_and_validate_key = PyUnicode_InternFromString("make_and_validate_key");
    st->str_get_backend_timeout = PyUnicode_InternFromString("get_backend_timeout");
    st->str_version = PyUnicode_InternFromString("version");
    st->str_refresh_fast_paths = PyUnicode_InternFromString("_refresh_fast_paths");
    if (!st->str_time || !st->str_make_and_validate_key || !st->str_get_backend_timeout ||
        !st->str_version || !st->str_refresh_fast_paths)
        return -1;
    if (PyModule_AddIntConstant(module, "MEMCACHE_MAX_KEY_LENGTH", MEMCACHE_MAX_KEY_LENGTH) < 0)
        return -1;
    return fc_codec_init(&st->codec);
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
    Py_VISIT(st->time_module);
    Py_VISIT(st->time_dict);
    return fc_codec_state_traverse(&st->codec, visit, arg);
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
    Py_CLEAR(st->time_module);
    Py_CLEAR(st->time_dict);
    Py_CLEAR(st->str_time);
    Py_CLEAR(st->str_make_and_validate_key);
    Py_CLEAR(st->str_get_backend_timeout);
    Py_CLEAR(st->str_version);
    Py_CLEAR(st->str_refresh_fast_paths);
    Py_CLEAR(st->empty_tuple);
    fc_codec_state_clear(&st->codec);
    return 0;
}

static void fc_free(void *module) { fc_clear((PyObject *)module); }

static PyModuleDef_Slot fc_slots[] = {
    {Py_mod_exec, fc_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    /* Safe without the GIL: what it protected is guarded explicitly (see
     * fc_binding.h), and a ThreadSanitizer build proves it (README). */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
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
