/*
 * test_codec.c - the value codec (../fc_codec.c) through its C API, in an
 * embedded CPython: no extension module, no cache, only fc_codec_init,
 * fc_codec_encode, fc_codec_decode and fc_codec_state_clear.
 *
 *   1. round trips: representative values of every supported type, at every
 *      pickle protocol, decode(encode(v)) against pickle.loads(pickle.dumps(
 *      v, protocol)): the same types recursively, dicts and sets in the same
 *      order, floats bit for bit (NaN payloads, -0.0), datetimes field by
 *      field with fold and tzinfo (the UTC singleton, named and unnamed fixed
 *      offsets, cached and uncached ZoneInfo), Decimal by its text (NaN,
 *      sNaN, infinities, signed zeros, extreme exponents), UUID with its
 *      int's type and is_safe; fresh mutable containers on every decode;
 *      the state NULL (no key cache, no datetimes);
 *   2. declines: each rule of fc_codec.h answers 0 with no exception set and
 *      *out untouched, and the value just inside each limit is taken;
 *   3. damage: every truncation of several payloads (ValueError), every
 *      single-bit flip, every foreign version byte, and random payloads
 *      (random bytes, overwrites, splices): NULL with an exception set (never
 *      SystemError) or an object with none.  Each payload is decoded from a
 *      malloc'ed copy of exactly its size, so an over-read is one ASan
 *      reports;
 *   4. references and memory: encoding, decoding, declining and damage in a
 *      loop leave the reference counts of the objects involved (the value's
 *      parts, None/True/False, the UTC singleton, a cached ZoneInfo, SafeUUID
 *      members, the key cache's strs) unchanged, and tracemalloc's traced
 *      memory flat (a release build has no sys.gettotalrefcount).
 *
 *   ./test_codec [seed] [random trials]
 * Output: each failed check with its line (and the value it was about), then
 * the totals; the exit status is non-zero when any check failed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <datetime.h>

#include "../fc_codec.h"
#include "check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static fc_codec_state g_st;
static int g_pymalloc = 1; /* CPython's allocator on (not under ASan or PYTHONMALLOC=malloc) */
static PyObject *g_ns;     /* the namespace of SETUP below */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static void fatal(const char *what)
{
    fprintf(stderr, "test_codec: fatal: %s\n", what);
    if (PyErr_Occurred())
        PyErr_Print();
    exit(2);
}

/* A Python expression evaluated in g_ns: a new reference (fatal if it
 * raises: the test's own setup is broken). */
static PyObject *py(const char *expr)
{
    PyObject *r = PyRun_String(expr, Py_eval_input, g_ns, g_ns);
    if (r == NULL) {
        fprintf(stderr, "test_codec: while evaluating: %s\n", expr);
        fatal("a test expression raised");
    }
    return r;
}

static void py_exec(const char *code)
{
    PyObject *r = PyRun_String(code, Py_file_input, g_ns, g_ns);
    if (r == NULL) {
        fprintf(stderr, "test_codec: while running: %s\n", code);
        fatal("test code raised");
    }
    Py_DECREF(r);
}

static int py_true(const char *expr)
{
    PyObject *r = py(expr);
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

/* Decodes n bytes from a heap block of exactly n bytes, so that ASan
 * reports a read past the end. */
static PyObject *decode_exact(fc_codec_state *st, const char *p, size_t n)
{
    char *copy = malloc(n ? n : 1);
    if (copy == NULL)
        fatal("out of memory");
    if (n)
        memcpy(copy, p, n);
    PyObject *r = fc_codec_decode(st, copy, n);
    free(copy);
    return r;
}

/* encode, asserting the result is 1 and returning the bytes (NULL if not). */
static PyObject *encode(PyObject *v, int protocol)
{
    PyObject *out = NULL;
    int rc = fc_codec_encode(&g_st, v, protocol, &out);
    CHECK_EQ(rc, 1);
    CHECK(rc == 1 ? out != NULL && PyBytes_CheckExact(out) : out == NULL);
    if (rc < 0)
        PyErr_Clear();
    return rc == 1 ? out : NULL;
}

static PyObject *pickle_round_trip(PyObject *v, int protocol)
{
    PyObject *b = PyObject_CallFunction(PyDict_GetItemString(g_ns, "dumps"), "Oi", v, protocol);
    if (b == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(PyDict_GetItemString(g_ns, "loads"), b);
    Py_DECREF(b);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Sameness: identical types recursively, containers in the same order,     */
/* floats bit for bit, datetimes field by field; other atoms by leaf_same.  */

static int same(PyObject *a, PyObject *b);

static int same_iter(PyObject *a, PyObject *b)
{
    PyObject *ia = PyObject_GetIter(a), *ib = PyObject_GetIter(b);
    int ok = ia != NULL && ib != NULL;
    while (ok) {
        PyObject *x = PyIter_Next(ia), *y = PyIter_Next(ib);
        if (x == NULL || y == NULL)
            ok = x == NULL && y == NULL;
        else
            ok = same(x, y);
        Py_XDECREF(x);
        Py_XDECREF(y);
        if (x == NULL || y == NULL)
            break;
    }
    Py_XDECREF(ia);
    Py_XDECREF(ib);
    if (PyErr_Occurred()) {
        PyErr_Print();
        return 0;
    }
    return ok;
}

static int leaf_same(PyObject *a, PyObject *b)
{
    PyObject *r = PyObject_CallFunctionObjArgs(PyDict_GetItemString(g_ns, "leaf_same"), a, b, NULL);
    if (r == NULL) {
        PyErr_Print();
        return 0;
    }
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t == 1;
}

static int same(PyObject *a, PyObject *b)
{
    PyTypeObject *tp = Py_TYPE(a);
    if (tp != Py_TYPE(b))
        return 0;
    if (tp == &PyFloat_Type) {
        double x = PyFloat_AS_DOUBLE(a), y = PyFloat_AS_DOUBLE(b);
        return memcmp(&x, &y, sizeof x) == 0;
    }
    if (tp == &PyList_Type || tp == &PyTuple_Type || tp == &PySet_Type || tp == &PyFrozenSet_Type)
        return PyObject_Length(a) == PyObject_Length(b) && same_iter(a, b);
    if (tp == &PyDict_Type) {
        if (PyDict_GET_SIZE(a) != PyDict_GET_SIZE(b))
            return 0;
        Py_ssize_t i = 0, j = 0;
        PyObject *ka, *va, *kb, *vb;
        while (PyDict_Next(a, &i, &ka, &va) && PyDict_Next(b, &j, &kb, &vb))
            if (!same(ka, kb) || !same(va, vb))
                return 0;
        return 1;
    }
    if (tp == PyDateTimeAPI->DateTimeType)
        return PyDateTime_GET_YEAR(a) == PyDateTime_GET_YEAR(b) &&
               PyDateTime_GET_MONTH(a) == PyDateTime_GET_MONTH(b) &&
               PyDateTime_GET_DAY(a) == PyDateTime_GET_DAY(b) &&
               PyDateTime_DATE_GET_HOUR(a) == PyDateTime_DATE_GET_HOUR(b) &&
               PyDateTime_DATE_GET_MINUTE(a) == PyDateTime_DATE_GET_MINUTE(b) &&
               PyDateTime_DATE_GET_SECOND(a) == PyDateTime_DATE_GET_SECOND(b) &&
               PyDateTime_DATE_GET_MICROSECOND(a) == PyDateTime_DATE_GET_MICROSECOND(b) &&
               PyDateTime_DATE_GET_FOLD(a) == PyDateTime_DATE_GET_FOLD(b) &&
               same(PyDateTime_DATE_GET_TZINFO(a), PyDateTime_DATE_GET_TZINFO(b));
    if (tp == PyDateTimeAPI->TimeType)
        return PyDateTime_TIME_GET_HOUR(a) == PyDateTime_TIME_GET_HOUR(b) &&
               PyDateTime_TIME_GET_MINUTE(a) == PyDateTime_TIME_GET_MINUTE(b) &&
               PyDateTime_TIME_GET_SECOND(a) == PyDateTime_TIME_GET_SECOND(b) &&
               PyDateTime_TIME_GET_MICROSECOND(a) == PyDateTime_TIME_GET_MICROSECOND(b) &&
               PyDateTime_TIME_GET_FOLD(a) == PyDateTime_TIME_GET_FOLD(b) &&
               same(PyDateTime_TIME_GET_TZINFO(a), PyDateTime_TIME_GET_TZINFO(b));
    if (a == Py_None)
        return b == Py_None;
    return leaf_same(a, b);
}

/* ------------------------------------------------------------------------ */
/* Python-side fixtures                                                     */

static const char SETUP[] =
    "import collections, datetime as dt, decimal, os, pickle, uuid, zoneinfo\n"
    "import _pydecimal, tracemalloc\n"
    "from pickle import dumps, loads\n"
    "D = decimal.Decimal\n"
    "UTC = dt.timezone.utc\n"
    "PARIS = zoneinfo.ZoneInfo('Europe/Paris')\n"
    "KOLKATA_NC = zoneinfo.ZoneInfo.no_cache('Asia/Kolkata')\n"
    "SAFE = uuid.SafeUUID\n"
    "def leaf_same(a, b):\n"
    "    if isinstance(a, zoneinfo.ZoneInfo):  # the cached instance, or a fresh one\n"
    "        return a.key == b.key and (a is zoneinfo.ZoneInfo(a.key)) == (\n"
    "            b is zoneinfo.ZoneInfo(b.key))\n"
    "    if isinstance(a, dt.tzinfo):\n"
    "        return repr(a) == repr(b) and (a is UTC) == (b is UTC)\n"
    "    if isinstance(a, D):  # == is numeric (and raises for sNaN)\n"
    "        return str(a) == str(b)\n"
    "    if isinstance(a, uuid.UUID):  # == compares int only\n"
    "        return (a == b and type(a.int) is int and type(b.int) is int\n"
    "                and a.is_safe is b.is_safe)\n"
    "    return type(a) is type(b) and a == b\n"
    "class ListSub(list): pass\n"
    "class DictSub(dict): pass\n"
    "class TupleSub(tuple): pass\n"
    "class SetSub(set): pass\n"
    "class StrSub(str): pass\n"
    "class BytesSub(bytes): pass\n"
    "class IntSub(int): pass\n"
    "class FloatSub(float): pass\n"
    "class DecimalSub(D): pass\n"
    "class UUIDSub(uuid.UUID): pass\n"
    "class DateTimeSub(dt.datetime): pass\n"
    "class DateSub(dt.date): pass\n"
    "class DeltaSub(dt.timedelta): pass\n"
    "class ZoneInfoSub(zoneinfo.ZoneInfo): pass\n"
    "class FixedTZ(dt.tzinfo):\n"
    "    def utcoffset(self, _): return dt.timedelta(hours=1)\n"
    "class TimezoneName(str): pass\n"
    "def nest(kind, n):\n"
    "    v = kind()\n"
    "    for _ in range(n - 1):\n"
    "        v = [v] if kind is list else (v,) if kind is tuple else {'k': v}\n"
    "    return v\n"
    "def shared(make):\n"
    "    inner = make()\n"
    "    return [inner, {'again': inner}]\n"
    "def cycle_list():\n"
    "    v = [1]\n"
    "    v.append(v)\n"
    "    return v\n"
    "def cycle_dict():\n"
    "    v = {}\n"
    "    v['self'] = [v]\n"
    "    return v\n"
    "def uuid_with(**kw):\n"
    "    u = uuid.UUID(int=1)\n"
    "    for k, x in kw.items():\n"
    "        object.__setattr__(u, k, x)\n"
    "    return u\n"
    "def zoneinfo_from_file():\n"
    "    for d in zoneinfo.TZPATH:\n"
    "        p = os.path.join(d, 'Europe/Paris')\n"
    "        if os.path.isfile(p):\n"
    "            with open(p, 'rb') as f:\n"
    "                return zoneinfo.ZoneInfo.from_file(f)\n"
    "    return FixedTZ()\n"
    "def history_set():\n"
    "    s = set(range(0, 4000, 7))\n"
    "    for i in range(0, 4000, 14):\n"
    "        s.discard(i)\n"
    "    return s | {2**40 + 1, -5, 10**15}\n";

/* Values the codec takes: compared against pickle's round trip. */
static const char *const TAKEN[] = {
    "None",
    "True",
    "False",
    "[0, 1, -1, -32, 95, 96, -33, 127, 128, 255, 256, 2**31, -2**31, 2**62]",
    "[2**63 - 1, -2**63, -2**63 + 1, 10**18]",
    "[0.0, -0.0, 1.5, -2.25e-310, 5e-324, 1.7976931348623157e308, float('inf'),"
    " float('-inf'), float('nan')]",
    "['', 'a', 'x' * 300, 'é', 'ünïcödé ' * 20, '😀 non-BMP', '\\x00nul', '\\x7f']",
    "[b'', b'\\x00\\xff', bytes(range(256)), b'x' * 1000]",
    "[[], (), {}, set(), frozenset()]",
    "[list(range(200)), tuple(range(-40, 140)), (1,), ((),), [[[]]]]",
    "{'id': 7, 'name': 'alice', 'tags': ['a', 'b'], 'score': 1.5, 'raw': b'\\x00\\xff'}",
    "{3: 'c', 1: 'a', 2: 'b', 'z': 0, 'a': 1, (1, 'x'): None, 1.5: 2, -0.0: 3,"
    " frozenset({1, 2}): 4, b'k': 5, None: 6, True: 7}",
    "dict.fromkeys(['k%d' % i for i in range(100, 0, -1)], 0)",
    "{'x' * 33: 1, 'y' * 32: 2, 'z' * 8: 3, 'w' * 16: 4, 'v' * 17: 5, '': 6, 'é': 7}",
    "{1, 2, 3, 'a', 'b', (1, 2), frozenset({'x'}), b'y', None, 2**40}",
    "frozenset({1, 'two', (3, 4.5), frozenset({6})})",
    "history_set()",
    "frozenset(history_set())",
    "nest(list, 32)",
    "nest(tuple, 32)",
    "nest(dict, 32)",
    "[(1, 2)] * 3",
    "(lambda t: [t, {'again': t}])(('shared', 'tuple'))",
    "(lambda f: [f, f])(frozenset({1, 2}))",
    "(lambda s: [s, s, {s: s}])('shared str')",
    "[dt.datetime(2020, 1, 2, 3, 4, 5, 678901), dt.datetime.min, dt.datetime.max]",
    "[dt.date(2024, 2, 29), dt.date.min, dt.date.max]",
    "[dt.time(), dt.time(23, 59, 59, 999999), dt.time.max, dt.time(1, 2, 3, 4)]",
    "[dt.timedelta(), dt.timedelta.min, dt.timedelta.max, dt.timedelta(-1, 1, 1),"
    " dt.timedelta(days=-999999999), dt.timedelta(microseconds=-1)]",
    "[dt.datetime(2020, 1, 1, tzinfo=UTC), dt.time(12, tzinfo=UTC), UTC]",
    "[dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(0), 'UTC')),"
    " dt.timezone(dt.timedelta(hours=5, minutes=30)),"
    " dt.timezone(dt.timedelta(hours=-3), 'Z'),"
    " dt.time(tzinfo=dt.timezone(dt.timedelta.resolution - dt.timedelta(1), 'é')),"
    " dt.timezone(dt.timedelta(1) - dt.timedelta.resolution, '')]",
    "[dt.datetime(2021, 10, 31, 2, 30, tzinfo=PARIS), PARIS, zoneinfo.ZoneInfo('UTC')]",
    "[dt.time(1, 2, tzinfo=KOLKATA_NC), KOLKATA_NC,"
    " dt.datetime(2000, 1, 1, tzinfo=zoneinfo.ZoneInfo.no_cache('America/New_York'))]",
    "[dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=PARIS), dt.time(1, fold=1),"
    " dt.datetime(1, 1, 1, fold=1)]",
    "{'at': dt.datetime(2024, 2, 29, tzinfo=UTC), 'on': [dt.date(2024, 2, 29)],"
    " dt.date(2000, 1, 1): dt.timedelta(3)}",
    "[D('1.5'), D('-0'), D('0E-7'), D('-0.000'), D('100'), D('2.50'), D('1E+2'),"
    " D('12345678901234567890.123456789E-20'), D('1.' + '7' * 3000)]",
    "[D('NaN'), D('-NaN'), D('NaN123'), D('sNaN'), D('-sNaN42'), D('Infinity'),"
    " D('-Infinity'), D('1E+999999999999999999'), D('1E-1999999999999999997')]",
    "{D('1.1'): D('-1.1'), (D('0'), D('-0')): [D('5E+3')]}",
    "[uuid.UUID(int=0), uuid.UUID(int=2**128 - 1),"
    " uuid.UUID('12345678-1234-5678-1234-567812345678')]",
    "[uuid.UUID(int=7, is_safe=SAFE.safe), uuid.UUID(int=2**127, is_safe=SAFE.unsafe),"
    " uuid.UUID(int=9, is_safe=SAFE.unknown)]",
    "{uuid.UUID(int=2**128 - 1, is_safe=SAFE.unsafe): uuid.UUID(int=3),"
    " 'u': (uuid.UUID(int=0, is_safe=SAFE.safe),)}",
    "[None, True, 1, 1.0, 'one', b'one', (1,), [1], {1: 1}, {1}, frozenset({1}),"
    " dt.date(1, 1, 1), dt.timedelta(1), D('1'), uuid.UUID(int=1), UTC]",
};

/* Values the codec must decline (at protocol 5 unless said). */
static const char *const DECLINED[] = {
    "ListSub([1])",
    "[DictSub(a=1)]",
    "(TupleSub((1,)),)",
    "[SetSub()]",
    "{'k': StrSub('v')}",
    "[BytesSub(b'x')]",
    "[IntSub(1)]",
    "[FloatSub(1.0)]",
    "collections.OrderedDict(a=1)",
    "[collections.defaultdict(list)]",
    "[DecimalSub('1.5')]",
    "[_pydecimal.Decimal('1.5')]",
    "[UUIDSub(int=1)]",
    "[DateTimeSub(2020, 1, 1)]",
    "[DateSub(2020, 1, 1)]",
    "[DeltaSub(1)]",
    "[dt.datetime(2020, 1, 1, tzinfo=FixedTZ())]",
    "[FixedTZ()]",
    "[dt.time(tzinfo=dt.timezone(dt.timedelta(hours=1), TimezoneName('X')))]",
    "[dt.time(tzinfo=dt.timezone(dt.timedelta(hours=1), 'lone \\udc80'))]",
    "[ZoneInfoSub('UTC')]",
    "[dt.datetime(2020, 1, 1, tzinfo=ZoneInfoSub('UTC'))]",
    "[zoneinfo_from_file()]",
    "[dt.datetime(2020, 1, 1, tzinfo=zoneinfo_from_file())]",
    "[object()]",
    "[ValueError('boom')]",
    "[bytearray(b'x')]",
    "[1j]",
    "[range(3)]",
    "[2**63]",
    "[-2**63 - 1]",
    "{2**64: 1}",
    "{'k': 'lone \\udc80 surrogate'}",
    "{'lone \\ud800': 1}",
    "{('tuple', 2**70): 1}",
    "shared(list)",
    "shared(dict)",
    "shared(set)",
    "(lambda inner: [(inner,), (inner,)])([1])",
    "(lambda inner: ((inner,), ((1, inner),)))({})",
    "cycle_list()",
    "cycle_dict()",
    "nest(list, 33)",
    "nest(tuple, 33)",
    "nest(dict, 33)",
    "[nest(list, 31), [nest(list, 32)]]",
    "[uuid_with(int=2**128)]",
    "[uuid_with(int=-1)]",
    "[uuid_with(int=True)]",
    "[uuid_with(is_safe=0)]",
    "[uuid_with(is_safe=None)]",
    "[object.__new__(uuid.UUID)]",
    "[1, 2, 3, object()]",
};

/* same() tells apart what a wrong decode could give: pairs equal under ==
 * that must not pass. */
static void test_same_itself(void)
{
    static const char *const differ[] = {
        "([1], (1,))",
        "(0.0, -0.0)",
        "(1, 1.0)",
        "(1, True)",
        "('a', b'a')",
        "({'a': 1, 'b': 2}, {'b': 2, 'a': 1})",
        "({8, 16}, {16, 8})", /* colliding: the order is the insertion order */
        "({1}, frozenset({1}))",
        "(float('nan'), -float('nan'))",
        "(dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2020, 1, 1, tzinfo="
        "dt.timezone(dt.timedelta(0), 'UTC')))",
        "(dt.datetime(2020, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),"
        " dt.datetime(2020, 1, 1, tzinfo=UTC))",
        "(dt.time(1), dt.time(1, fold=1))",
        "(PARIS, zoneinfo.ZoneInfo.no_cache('Europe/Paris'))",
        "(dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=1), 'X'))",
        "(D('1.0'), D('1'))",
        "(uuid.UUID(int=1), uuid.UUID(int=1, is_safe=SAFE.safe))",
        "([dt.date(2020, 1, 1)], [dt.datetime(2020, 1, 1)])",
    };
    for (size_t i = 0; i < sizeof differ / sizeof *differ; i++) {
        PyObject *pair = py(differ[i]);
        int s = same(PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1));
        CHECK(!s);
        if (s)
            fprintf(stderr, "  ... same() took %s\n", differ[i]);
        CHECK(same(PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 0)) ||
              strstr(differ[i], "nan") != NULL);
        Py_DECREF(pair);
    }
}

/* ------------------------------------------------------------------------ */
/* 1. Round trips                                                           */

static void check_round_trip(const char *expr, PyObject *v, int protocol)
{
    long failed_before = g_fail;
    PyObject *out = encode(v, protocol);
    if (out == NULL)
        goto done;
    PyObject *want = pickle_round_trip(v, protocol);
    if (want == NULL)
        fatal("pickle round trip raised");
    const char *p = PyBytes_AS_STRING(out);
    size_t n = (size_t)PyBytes_GET_SIZE(out);
    CHECK_EQ((unsigned char)p[0], FC_CODEC_VERSION);
    PyObject *got = decode_exact(&g_st, p, n), *again = decode_exact(&g_st, p, n);
    CHECK(got != NULL && again != NULL && !PyErr_Occurred());
    if (got != NULL && again != NULL) {
        CHECK(same(got, want));
        CHECK(same(again, want));
        /* a mutable container is new on every decode */
        if (PyList_CheckExact(got) || PyDict_CheckExact(got) || PySet_CheckExact(got))
            CHECK(got != again);
        /* the state is only a cache: without one, the same values (where
         * no datetime needs the C API) */
        PyObject *bare = decode_exact(NULL, p, n);
        if (bare != NULL)
            CHECK(same(bare, want));
        else {
            CHECK(PyErr_ExceptionMatches(PyExc_ValueError));
            PyErr_Clear();
        }
        Py_XDECREF(bare);
    }
    PyErr_Clear();
    Py_XDECREF(got);
    Py_XDECREF(again);
    Py_DECREF(want);
    Py_DECREF(out);
done:
    if (g_fail > failed_before)
        fprintf(stderr, "  ... round trip of %s at protocol %d\n", expr, protocol);
}

static void test_round_trips(void)
{
    for (size_t i = 0; i < sizeof TAKEN / sizeof *TAKEN; i++) {
        PyObject *v = py(TAKEN[i]);
        int has_fold = strstr(TAKEN[i], "fold=1") != NULL;
        for (int protocol = has_fold ? 4 : 0; protocol <= 5; protocol++)
            check_round_trip(TAKEN[i], v, protocol);
        Py_DECREF(v);
    }
}

/* Floats made in C, bit patterns the expressions cannot spell: the codec
 * keeps every bit, as pickle does. */
static void test_float_bits(void)
{
    static const uint64_t bits[] = {
        0x0000000000000000ULL, 0x8000000000000000ULL, /* 0.0, -0.0 */
        0x7FF8000000000000ULL, 0xFFF8000000000000ULL, /* NaN, -NaN */
        0x7FF8DEADBEEF0001ULL, 0xFFF0000000000123ULL, /* payloads, signalling */
        0x7FF0000000000001ULL, 0x0000000000000001ULL, /* sNaN, the least subnormal */
        0x7FF0000000000000ULL, 0xFFEFFFFFFFFFFFFFULL, /* inf, -max */
    };
    size_t nb = sizeof bits / sizeof *bits;
    PyObject *list = PyList_New((Py_ssize_t)nb);
    if (list == NULL)
        fatal("PyList_New");
    for (size_t i = 0; i < nb; i++) {
        double d;
        memcpy(&d, &bits[i], sizeof d);
        PyObject *f = PyFloat_FromDouble(d);
        if (f == NULL)
            fatal("PyFloat_FromDouble");
        PyList_SET_ITEM(list, (Py_ssize_t)i, f);
    }
    PyObject *out = encode(list, 5);
    PyObject *got = out ? decode_exact(&g_st, PyBytes_AS_STRING(out), PyBytes_GET_SIZE(out)) : 0;
    CHECK(got != NULL && PyList_CheckExact(got) && PyList_GET_SIZE(got) == (Py_ssize_t)nb);
    for (size_t i = 0; got != NULL && i < nb; i++) {
        PyObject *f = PyList_GET_ITEM(got, (Py_ssize_t)i);
        CHECK(PyFloat_CheckExact(f));
        double d = PyFloat_AS_DOUBLE(f);
        uint64_t b;
        memcpy(&b, &d, sizeof b);
        if (b != bits[i])
            fprintf(stderr, "  ... float %zu: %016llx came back as %016llx\n", i,
                    (unsigned long long)bits[i], (unsigned long long)b);
        CHECK(b == bits[i]);
    }
    /* and the whole list against pickle's round trip (which keeps the bits) */
    check_round_trip("C floats", list, 5);
    Py_XDECREF(got);
    Py_XDECREF(out);
    Py_DECREF(list);
}

/* A datetime with fold=1 at protocols below 4: declined (pickle drops the
 * fold there); fold=0 is taken at every protocol. */
static void test_fold_by_protocol(void)
{
    static const char *const folded[] = {"dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=PARIS)",
                                         "dt.time(1, fold=1)", "[dt.datetime(1, 1, 1, fold=1)]"};
    for (size_t i = 0; i < sizeof folded / sizeof *folded; i++) {
        PyObject *v = py(folded[i]);
        for (int protocol = 0; protocol < 4; protocol++) {
            PyObject *out = NULL;
            CHECK_EQ(fc_codec_encode(&g_st, v, protocol, &out), 0);
            CHECK(out == NULL && !PyErr_Occurred());
            PyErr_Clear();
        }
        Py_DECREF(v);
    }
    CHECK(py_true("all(loads(dumps(dt.time(1, fold=1), p)).fold == (p >= 4) for p in range(6))"));
}

/* A UUID class patched after first use is checked again: a patched
 * __getstate__ declines, a patched __setstate__ is what decoding calls, and
 * the class restored is fast again. */
static void test_uuid_class_patched(void)
{
    PyObject *v = py("uuid.UUID(int=7, is_safe=SAFE.safe)");
    PyObject *payload = encode(v, 5);
    if (payload == NULL) {
        Py_DECREF(v);
        return;
    }
    py_exec("_orig_get = uuid.UUID.__getstate__\n"
            "uuid.UUID.__getstate__ = lambda self: {'int': 8}\n");
    PyObject *out = NULL;
    CHECK_EQ(fc_codec_encode(&g_st, v, 5, &out), 0);
    CHECK(out == NULL && !PyErr_Occurred());
    py_exec("uuid.UUID.__getstate__ = _orig_get\n"
            "_orig_set = uuid.UUID.__setstate__\n"
            "calls = []\n"
            "def _set(self, state):\n"
            "    calls.append(state)\n"
            "    _orig_set(self, state)\n"
            "uuid.UUID.__setstate__ = _set\n");
    PyObject *got = decode_exact(&g_st, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload));
    CHECK(got != NULL && same(got, v));
    CHECK(py_true("calls == [{'int': 7, 'is_safe': 0}]"));
    Py_XDECREF(got);
    py_exec("uuid.UUID.__setstate__ = _orig_set\n");
    got = decode_exact(&g_st, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload));
    CHECK(got != NULL && same(got, v));
    CHECK(py_true("len(calls) == 1"));
    out = encode(v, 5);
    CHECK(out != NULL && PyObject_RichCompareBool(out, payload, Py_EQ) == 1);
    Py_XDECREF(out);
    Py_XDECREF(got);
    Py_DECREF(payload);
    Py_DECREF(v);
}

/* ------------------------------------------------------------------------ */
/* 2. Declines                                                              */

static void test_declines(void)
{
    for (size_t i = 0; i < sizeof DECLINED / sizeof *DECLINED; i++) {
        long failed_before = g_fail;
        PyObject *v = py(DECLINED[i]);
        for (int protocol = 2; protocol <= 5; protocol += 3) {
            PyObject *out = NULL;
            int rc = fc_codec_encode(&g_st, v, protocol, &out);
            CHECK_EQ(rc, 0);
            CHECK(out == NULL);
            CHECK(!PyErr_Occurred());
            PyErr_Clear();
            if (rc == 1)
                Py_XDECREF(out);
        }
        Py_DECREF(v);
        if (g_fail > failed_before)
            fprintf(stderr, "  ... should have been declined: %s\n", DECLINED[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* 3. Damage                                                                */

static const char *const DAMAGE_SEEDS[] = {
    "{'id': 7, 'name': 'alice', 'tags': ['a', 'b'], 'score': 1.5, 'raw': b'\\x00\\xff'}",
    "[list(range(40)), (None, True, False), {1, 2, 3}, frozenset({'x', (1, 2)})]",
    "{('k', 1): {'deep': [[[{'é': '😀'}]]]}, -(2**63): 2**63 - 1, 0.0: -0.0, 300: 'x' * 40}",
    "[dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=PARIS),"
    " dt.time(4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=-3), 'Z')),"
    " dt.date(2000, 2, 29), dt.timedelta(-3, 4, 5),"
    " dt.datetime(1, 1, 1, tzinfo=UTC), zoneinfo.ZoneInfo.no_cache('UTC')]",
    "[D('-1.50'), D('sNaN12'), D('-Infinity'), D('1E+999999999999999999'), D('-0E-7')]",
    "{uuid.UUID(int=2**128 - 1, is_safe=SAFE.unsafe): uuid.UUID(int=5),"
    " 'u': [uuid.UUID(int=0, is_safe=SAFE.safe)]}",
};
#define NSEEDS (sizeof DAMAGE_SEEDS / sizeof *DAMAGE_SEEDS)

static PyObject *g_payloads[NSEEDS];
static long g_outcomes[3]; /* object, ValueError, another exception */

/* A damaged payload: an object with no error, or NULL with one that is not
 * SystemError (a C API misuse, not a judgement of the bytes). */
static void check_damaged(fc_codec_state *st, const unsigned char *p, size_t n)
{
    PyObject *r = decode_exact(st, (const char *)p, n);
    if (r != NULL) {
        CHECK(!PyErr_Occurred());
        g_outcomes[0]++;
        Py_DECREF(r);
    }
    else {
        CHECK(PyErr_Occurred() != NULL);
        CHECK(PyErr_Occurred() == NULL || !PyErr_ExceptionMatches(PyExc_SystemError));
        if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_SystemError))
            PyErr_Print();
        g_outcomes[PyErr_ExceptionMatches(PyExc_ValueError) ? 1 : 2]++;
    }
    PyErr_Clear();
}

static void test_truncations(fc_codec_state *st)
{
    for (size_t s = 0; s < NSEEDS; s++) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(g_payloads[s]);
        size_t n = (size_t)PyBytes_GET_SIZE(g_payloads[s]);
        for (size_t k = 0; k < n; k++) {
            /* the format is prefix-free: every strict prefix is damage */
            PyObject *r = decode_exact(st, (const char *)p, k);
            CHECK(r == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
            if (r != NULL || !PyErr_ExceptionMatches(PyExc_ValueError))
                fprintf(stderr, "  ... seed %zu truncated to %zu of %zu bytes\n", s, k, n);
            Py_XDECREF(r);
            PyErr_Clear();
        }
        /* and one byte too many */
        unsigned char *longer = malloc(n + 1);
        if (longer == NULL)
            fatal("out of memory");
        memcpy(longer, p, n);
        longer[n] = 0x81;
        PyObject *r = decode_exact(st, (const char *)longer, n + 1);
        CHECK(r == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
        Py_XDECREF(r);
        PyErr_Clear();
        free(longer);
    }
}

static void test_bit_flips(fc_codec_state *st)
{
    for (size_t s = 0; s < NSEEDS; s++) {
        size_t n = (size_t)PyBytes_GET_SIZE(g_payloads[s]);
        unsigned char *p = malloc(n);
        if (p == NULL)
            fatal("out of memory");
        memcpy(p, PyBytes_AS_STRING(g_payloads[s]), n);
        for (size_t bit = 0; bit < 8 * n; bit++) {
            p[bit / 8] ^= (unsigned char)(1u << bit % 8);
            check_damaged(st, p, n);
            p[bit / 8] ^= (unsigned char)(1u << bit % 8);
        }
        free(p);
    }
}

static void test_versions(fc_codec_state *st)
{
    size_t n = (size_t)PyBytes_GET_SIZE(g_payloads[0]);
    unsigned char *p = malloc(n);
    if (p == NULL)
        fatal("out of memory");
    memcpy(p, PyBytes_AS_STRING(g_payloads[0]), n);
    for (unsigned v = 0; v < 256; v++) {
        if (v == FC_CODEC_VERSION)
            continue;
        p[0] = (unsigned char)v;
        PyObject *r = decode_exact(st, (const char *)p, n);
        CHECK(r == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
        Py_XDECREF(r);
        PyErr_Clear();
        r = decode_exact(st, (const char *)p, 1); /* the version byte alone */
        CHECK(r == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
        Py_XDECREF(r);
        PyErr_Clear();
    }
    free(p);
    /* the message names both versions */
    static const char two[] = {2, 0x81};
    PyObject *r = decode_exact(st, two, 2);
    CHECK(r == NULL && PyErr_ExceptionMatches(PyExc_ValueError));
    if (r == NULL && PyErr_Occurred()) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *s = value ? PyObject_Str(value) : NULL;
        const char *text = s ? PyUnicode_AsUTF8(s) : NULL;
        CHECK(text != NULL && strstr(text, "codec version 2, this build reads version 1"));
        Py_XDECREF(s);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    Py_XDECREF(r);
    PyErr_Clear();
}

static uint64_t g_rng;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* A byte the format gives meaning to, more often than chance would. */
static unsigned char plausible_byte(void)
{
    switch (rnd() % 4) {
    case 0: return (unsigned char)(1 + rnd() % 20); /* a tag */
    case 1: return (unsigned char)(rnd() % 6);      /* a small count, a tz kind */
    case 2: return (unsigned char)(0x80 + rnd() % 128);
    default: return (unsigned char)rnd();
    }
}

static void test_random(fc_codec_state *st, long trials)
{
    unsigned char buf[512];
    for (long t = 0; t < trials; t++) {
        size_t n = 0;
        PyObject *a = g_payloads[rnd() % NSEEDS], *b = g_payloads[rnd() % NSEEDS];
        size_t na = (size_t)PyBytes_GET_SIZE(a), nb = (size_t)PyBytes_GET_SIZE(b);
        switch (t % 5) {
        case 0: /* random bytes after the version */
        case 1:
            buf[n++] = FC_CODEC_VERSION;
            for (size_t len = rnd() % 48; len > 0; len--)
                buf[n++] = t % 5 == 0 ? (unsigned char)rnd() : plausible_byte();
            break;
        case 2: /* a payload with 1 to 4 bytes overwritten */
            n = na < sizeof buf ? na : sizeof buf;
            memcpy(buf, PyBytes_AS_STRING(a), n);
            for (int k = 1 + (int)(rnd() % 4); k > 0; k--)
                buf[1 + rnd() % (n - 1)] = plausible_byte();
            break;
        case 3: { /* two payloads spliced */
            size_t cut = 1 + rnd() % (na - 1), from = 1 + rnd() % (nb - 1);
            memcpy(buf, PyBytes_AS_STRING(a), cut);
            n = cut;
            size_t rest = nb - from < sizeof buf - n ? nb - from : sizeof buf - n;
            memcpy(buf + n, PyBytes_AS_STRING(b) + from, rest);
            n += rest;
            break;
        }
        default: { /* a byte inserted or deleted */
            n = na < sizeof buf - 1 ? na : sizeof buf - 1;
            memcpy(buf, PyBytes_AS_STRING(a), n);
            size_t at = 1 + rnd() % (n - 1);
            if (rnd() % 2) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = plausible_byte();
                n++;
            }
            else {
                memmove(buf + at, buf + at + 1, n - at - 1);
                n--;
            }
        }
        }
        check_damaged(st, buf, n);
    }
}

/* Known damage, each with ValueError (hand-made: these reach the checks the
 * random ones rarely do). */
static void test_known_damage(void)
{
    static const struct {
        const char *p;
        size_t n;
    } cases[] = {
#define C(s) {s, sizeof s - 1}
        C(""),
        C("\x01"),
        C("\x01\x09\x05"),
        C("\x01\x06\x02"
          "a\xff"),
        C("\x01\x04\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
        C("\x01\x04\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"),
        C("\x01\x01\x01"),
        C("\x01\x7f"),
        C("\x01\x0f\xe4\x07\x01"),
        C("\x01\x0e\xe4\x07\x01\x01\x00\x00\x00\x00\x00\x00"),
        C("\x01\x0e\xe4\x07\x01\x01\x00\x00\x00\x00\x00\x00\x00"),
        C("\x01\x0e\xe4\x07\x01\x01\x00\x00\x00\x00\x00\x00\x00\x09"),
        C("\x01\x0f\xe4\x07\x0d\x01"),
        C("\x01\x10\x00\x00\x00\x40\x42\x0f\x00\x00"),
        C("\x01\x11\x00\x80\xa3\x05\x00"),
        C("\x01\x12\x00"),
        C("\x01\x12\x02\x00\x00\x00\x02"),
        C("\x01\x12\x02\x02\x00\x00\x00"),
        C("\x01\x12\x02\x00\x00\x00\x01\x05"
          "ab"),
        C("\x01\x12\x03\x02\x00"),
        C("\x01\x12\x03\x01\x03"
          "\xff\xfe\xfd"),
        C("\x01\x12\x03\x01\x00"),
        C("\x01\x13\x03"
          "abc"),
        C("\x01\x13\x03"
          "inf"),
        C("\x01\x13\x00"),
        C("\x01\x13\x09"),
        C("\x01\x13\x17"
          "1E+99999999999999999999"),
        C("\x01\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
        C("\x01\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03"),
        C("\x01\x07\x02\xc3"),
        C("\x01\x07\x03\xed\xa0\x80"), /* a surrogate in UTF-8 */
        C("\x01\x05\x01\x02\x03\x04\x05\x06\x07"),
#undef C
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        for (int bare = 0; bare < 2; bare++) {
            PyObject *r = decode_exact(bare ? NULL : &g_st, cases[i].p, cases[i].n);
            int ok = r == NULL && PyErr_ExceptionMatches(PyExc_ValueError);
            CHECK(ok);
            if (!ok) {
                fprintf(stderr, "  ... known damage case %zu%s\n", i, bare ? " (no state)" : "");
                if (PyErr_Occurred())
                    PyErr_Print();
            }
            Py_XDECREF(r);
            PyErr_Clear();
        }
    }
}

/* ------------------------------------------------------------------------ */
/* 4. References and memory                                                 */

#define NWATCH 64
#define CHURN 300

/* One round of work for the reference checks: encode v, decode its payload,
 * two declined encodes (one failing on a lone surrogate, deep inside), a
 * truncated payload (failing late), and with flips a bit-flipped one (which
 * may call ZoneInfo(key): Python code). */
static void churn(PyObject *v, PyObject *declined, PyObject *payload, int flips)
{
    const char *p = PyBytes_AS_STRING(payload);
    size_t n = (size_t)PyBytes_GET_SIZE(payload);
    unsigned char *damaged = malloc(n);
    if (damaged == NULL)
        fatal("out of memory");
    for (int it = 0; it < CHURN; it++) {
        PyObject *out = NULL;
        if (fc_codec_encode(&g_st, v, 5, &out) != 1)
            fatal("encode in the reference loop");
        Py_DECREF(out);
        PyObject *r = decode_exact(&g_st, p, n);
        if (r == NULL)
            fatal("decode in the reference loop");
        Py_DECREF(r);
        out = NULL;
        CHECK_EQ(fc_codec_encode(&g_st, declined, 5, &out), 0);
        r = decode_exact(&g_st, p, n - 1 - (size_t)it % (n - 1));
        CHECK(r == NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        if (flips) {
            memcpy(damaged, p, n);
            damaged[1 + (size_t)it % (n - 1)] ^= (unsigned char)(1u << it % 8);
            r = decode_exact(&g_st, (const char *)damaged, n);
            Py_XDECREF(r);
            PyErr_Clear();
        }
    }
    free(damaged);
}

/* The key cache's str for an ASCII key, or NULL. */
static PyObject *cached_key(const char *key)
{
    for (size_t s = 0; s < FC_CODEC_KEY_SLOTS; s++)
        if (g_st.slot[s] != NULL && PyUnicode_CompareWithASCIIString(g_st.slot[s], key) == 0)
            return g_st.slot[s];
    return NULL;
}

/* Rounds of churn leave the reference counts of `exact` (the value's parts,
 * the codec's singletons and types, the key cache's str for 'key') as they
 * were.  CPython's own caches (the type method cache, warmed by the
 * tzinfos' method calls, and the import system, by ZoneInfo lookups) free
 * objects as they are evicted, so None, True and False are checked exactly
 * only where no Python code or method lookup runs (loose = 0); otherwise
 * (drops of up to a hundred were seen) only for growth below half the
 * iterations: a leak in the codec adds one an iteration or more. */
static void check_references(const char *what, PyObject *v, PyObject *declined, PyObject *exact,
                             int loose)
{
    long failed_before = g_fail;
    PyObject *payload = encode(v, 5);
    /* strs too where Python code runs: short ones ('key') are the
     * interpreter's shared identifiers, which it references as it likes */
    PyObject *parts = py("lambda v, loose: [x for x in [v, *v.keys(), *v.values(),"
                         " *(x for xs in v.values() if type(xs) in (list, tuple) for x in xs)]"
                         " if x is not None and x is not True and x is not False"
                         " and not (loose and type(x) is str)]");
    PyObject *vparts = payload ? PyObject_CallFunction(parts, "Oi", v, loose) : NULL;
    PyObject *all = vparts ? PySequence_Concat(exact, vparts) : NULL;
    PyObject *singletons[3] = {Py_None, Py_True, Py_False};
    if (all == NULL || PyList_GET_SIZE(all) > NWATCH)
        fatal("reference check setup");
    Py_ssize_t nall = PyList_GET_SIZE(all);
    for (int round = 0; round < 3; round++) {
        Py_ssize_t before[NWATCH], single[3], payload_refs = Py_REFCNT(payload);
        /* with the cyclic garbage (of the setup, or of the loop) collected */
        PyGC_Collect();
        for (Py_ssize_t i = 0; i < nall; i++)
            before[i] = Py_REFCNT(PyList_GET_ITEM(all, i));
        for (int i = 0; i < 3; i++)
            single[i] = Py_REFCNT(singletons[i]);
        PyObject *key = cached_key("key");
        Py_ssize_t key_refs = key ? Py_REFCNT(key) : 0;
        churn(v, declined, payload, loose);
        PyGC_Collect();
        if (round == 0)
            continue; /* warm-up: the codec's caches filled */
        for (Py_ssize_t i = 0; i < nall; i++) {
            Py_ssize_t after = Py_REFCNT(PyList_GET_ITEM(all, i));
            if (after != before[i]) {
                PyObject *rep = PyObject_Repr(PyList_GET_ITEM(all, i));
                fprintf(stderr, "  ... references to %s: %zd -> %zd\n",
                        rep ? PyUnicode_AsUTF8(rep) : "?", before[i], after);
                Py_XDECREF(rep);
                PyErr_Clear();
            }
            CHECK_EQ(after, before[i]);
        }
        for (int i = 0; i < 3; i++) {
            Py_ssize_t d = Py_REFCNT(singletons[i]) - single[i];
            if (d != 0)
                fprintf(stderr, "  %s: references to %s moved by %zd over %d iterations\n",
                        loose ? "note" : "...",
                        i == 0   ? "None"
                        : i == 1 ? "True"
                                 : "False",
                        d, CHURN);
            CHECK(loose ? d < CHURN / 2 : d == 0);
        }
        CHECK_EQ(Py_REFCNT(payload), payload_refs);
        CHECK(key != NULL && key == cached_key("key"));
        if (key != NULL)
            CHECK_EQ(Py_REFCNT(key), key_refs);
    }
    if (g_fail > failed_before)
        fprintf(stderr, "  ... reference check: %s\n", what);
    Py_XDECREF(all);
    Py_XDECREF(vparts);
    Py_DECREF(parts);
    Py_XDECREF(payload);
}

/* The number of blocks tracemalloc traces stays flat over rounds of churn
 * once the caches are warm.  CPython's free lists and caches keep a bounded
 * number (tens to a few hundred here, not growing with the rounds); a leak of
 * one object an iteration would add CHURN * MEM_ROUNDS. */
#define MEM_ROUNDS 10

static Py_ssize_t traced_blocks(void)
{
    PyGC_Collect();
    PyObject *m = py("len(tracemalloc.take_snapshot().traces)");
    Py_ssize_t n = PyLong_AsSsize_t(m);
    Py_DECREF(m);
    return n;
}

static void check_memory(const char *what, PyObject *v, PyObject *declined, int flips, int strict)
{
    PyObject *payload = encode(v, 5);
    if (payload == NULL)
        return;
    py_exec("tracemalloc.start()\n");
    for (int round = 0; round < 2; round++)
        churn(v, declined, payload, flips);
    Py_ssize_t start = traced_blocks();
    for (int round = 0; round < MEM_ROUNDS; round++)
        churn(v, declined, payload, flips);
    Py_ssize_t end = traced_blocks();
    py_exec("tracemalloc.stop()\n");
    printf("  traced blocks, %s: %zd -> %zd over %d iterations\n", what, start, end,
           CHURN * MEM_ROUNDS);
    CHECK(end - start < (strict ? CHURN * MEM_ROUNDS / 4 : CHURN * MEM_ROUNDS));
    Py_DECREF(payload);
}

static void test_references(void)
{
    PyObject *exact = py("[UTC, PARIS, SAFE.safe, SAFE.unsafe, SAFE.unknown, uuid.UUID, D,"
                         " zoneinfo.ZoneInfo, 'key', 'value']");
    PyObject *exact_loose = py("[UTC, PARIS, SAFE.safe, SAFE.unsafe, SAFE.unknown, uuid.UUID, D,"
                               " zoneinfo.ZoneInfo]");
    /* no tzinfo but UTC: nothing in the loop looks a method up */
    PyObject *plain = py("{'key': ['value', 1, 2.5, None, True, False, (b'b', 'k2', None)],"
                         " 'dt': [dt.datetime(2020, 1, 1, tzinfo=UTC), dt.time(1),"
                         "        dt.date(2020, 1, 2), dt.timedelta(3), UTC],"
                         " 'dec': D('1.25'), 'sn': D('sNaN'),"
                         " 'u': uuid.UUID(int=5, is_safe=SAFE.safe), 'u2': uuid.UUID(int=2**100),"
                         " 'set': {1, 'a', (2, 3)}, 'fs': frozenset({4}),"
                         " 'big': [10**15, -10**15, 'x' * 100, 'é' * 3]}");
    PyObject *tz = py("{'key': [dt.time(tzinfo=PARIS), dt.datetime(2020, 1, 1, tzinfo=PARIS),"
                      "         dt.time(tzinfo=dt.timezone(dt.timedelta(hours=2), 'Extra time')),"
                      "         dt.timezone(dt.timedelta(hours=-3)), KOLKATA_NC, None],"
                      " 'value': (True, False, 'value')}");
    PyObject *declined = py("[nest(list, 31), ['é' * 3, {'k': 'lone \\udc80'}]]");
    check_references("no method calls", plain, declined, exact, 0);
    check_references("tzinfos and bit flips", tz, declined, exact_loose, 1);
    check_references("bit flips", plain, declined, exact_loose, 1);
    /* Bit flips in ZoneInfo keys reach the import system (tzdata), whose
     * caches grow by hundreds of blocks: those flips are left out here.  With
     * CPython's allocator off (ASan), the tzinfo loop's block count climbs
     * by up to ~1,700 to a fixed ceiling (2,073 blocks whatever the seed,
     * outside the codec's code: a free list filling, by the look of it), so
     * there only a leak of a block an iteration or more is caught; its
     * parts' references are checked exactly above. */
    check_memory("tzinfos", tz, declined, 0, g_pymalloc);
    check_memory("no tzinfos, bit flips", plain, declined, 1, 1);
    Py_DECREF(declined);
    Py_DECREF(tz);
    Py_DECREF(plain);
    Py_DECREF(exact_loose);
    Py_DECREF(exact);
}

/* ------------------------------------------------------------------------ */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void start_python(void)
{
    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    /* ASan and valgrind must see every block: no pymalloc arenas (an
     * isolated config ignores PYTHONMALLOC, so it is read here). */
    const char *alloc = getenv("PYTHONMALLOC");
    if (alloc != NULL && strcmp(alloc, "malloc") == 0)
        pre.allocator = PYMEM_ALLOCATOR_MALLOC;
#if defined(__SANITIZE_ADDRESS__)
    pre.allocator = PYMEM_ALLOCATOR_MALLOC;
#endif
    g_pymalloc = pre.allocator != PYMEM_ALLOCATOR_MALLOC;
    PyStatus status = Py_PreInitialize(&pre);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;   /* the stdlib is all it needs */
    config.use_hash_seed = 1; /* reproducible set orders and damage */
    config.hash_seed = 0;
    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
}

int main(int argc, char **argv)
{
    unsigned long seed = argc > 1 ? strtoul(argv[1], NULL, 10) : 1;
    long trials = argc > 2 ? strtol(argv[2], NULL, 10) : 4000;
    g_rng = 0x9E3779B97F4A7C15ULL ^ (seed * 0xBF58476D1CE4E5B9ULL);
    if (g_rng == 0)
        g_rng = 1;
    double t0 = now();

    start_python();
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        fatal("no datetime C API");
    g_ns = PyDict_New();
    if (g_ns == NULL || PyDict_SetItemString(g_ns, "__builtins__", PyEval_GetBuiltins()) < 0)
        fatal("namespace");
    py_exec(SETUP);
    if (fc_codec_init(&g_st) < 0 || g_st.datetime_capi == NULL)
        fatal("fc_codec_init");
    CHECK(g_st.decimal_type == NULL && g_st.uuid_type == NULL); /* looked up lazily */

    test_same_itself();
    test_round_trips();
    test_float_bits();
    test_fold_by_protocol();
    test_uuid_class_patched();
    printf("round trips: %zu values at every protocol (%.2fs)\n", sizeof TAKEN / sizeof *TAKEN,
           now() - t0);
    test_declines();
    printf("declines: %zu values (%.2fs)\n", sizeof DECLINED / sizeof *DECLINED, now() - t0);

    for (size_t s = 0; s < NSEEDS; s++) {
        PyObject *v = py(DAMAGE_SEEDS[s]);
        g_payloads[s] = encode(v, 5);
        Py_DECREF(v);
        if (g_payloads[s] == NULL)
            fatal("a damage seed is not encoded");
    }
    test_known_damage();
    for (int bare = 0; bare < 2; bare++) {
        fc_codec_state *st = bare ? NULL : &g_st;
        test_truncations(st);
        test_bit_flips(st);
        test_versions(st);
        test_random(st, bare ? trials / 4 : trials);
    }
    printf("damage: %ld decoded, %ld ValueError, %ld other exceptions (%.2fs)\n", g_outcomes[0],
           g_outcomes[1], g_outcomes[2], now() - t0);

    test_references();
    printf("references and memory (%.2fs)\n", now() - t0);

    for (size_t s = 0; s < NSEEDS; s++)
        Py_CLEAR(g_payloads[s]);
    fc_codec_state_clear(&g_st);
    Py_CLEAR(g_ns);
    if (Py_FinalizeEx() < 0)
        g_fail++;
    printf("test_codec: %ld passed, %ld failed (seed %lu, %ld random trials, %.2fs)\n", g_pass,
           g_fail, seed, trials, now() - t0);
    return g_fail != 0;
}
