/*
 * fc_codec.h - the value codec: exact builtin containers and scalars to bytes
 * and back, several times faster than pickle, with pickle's results.
 *
 * What it owns
 * ------------
 * The FC_VT_CODEC payload format (below) and the two directions over it.
 * Together with the binding's files (fc_binding.h) it is the only code that
 * includes Python.h.
 *
 *   fc_codec_encode  a value -> a new bytes object, or "not mine" (0, no
 *                    error) for anything it cannot reproduce exactly: a
 *                    subclass (but plain ones of str and bytes), an unknown type, an int beyond 64 bits, a str
 *                    with lone surrogates, a datetime with a tzinfo of another
 *                    class or a fold pickle's protocol would drop, a mutable
 *                    container reached twice
 *                    (pickle would rebuild the sharing; so would a cycle),
 *                    nesting deeper than FC_CODEC_MAX_DEPTH.  The caller
 *                    then pickles the whole value, as before the codec.
 *   fc_codec_decode  bytes -> a fresh object equal to
 *                    pickle.loads(pickle.dumps(value)): same types
 *                    recursively, same dict order, sets rebuilt by adding
 *                    items in the order the writer iterated them (what
 *                    pickle's ADDITEMS does), new mutable containers every
 *                    call.  Immutable atoms may be shared between results, as
 *                    pickle and CPython share small ints and 1-char strs: a
 *                    small cache reuses the str objects of short ASCII dict
 *                    keys (their hashes then need no recomputing).
 *
 * What it must not do
 * -------------------
 * Run Python code: it reads only exact builtin types through the C API, so
 * no __hash__, __eq__, __reduce__ or __del__ of the user's can run, and the
 * value cannot change under the walk.  Touch the table or its lock: callers
 * encode before locking and decode a private copy after unlocking.  Trust
 * the input of decode: payloads live in shared memory other processes
 * write, so every tag, length and count is checked against the buffer and
 * a damaged payload raises ValueError; it never reads past the end.
 *
 * Format (version FC_CODEC_VERSION)
 * ---------------------------------
 *   payload := version:u8 value            (nothing may follow the value)
 *   value   := tag:u8 body
 *   NONE TRUE FALSE                        no body
 *   INT     zigzag LEB128 of an int64
 *   0x80+k  (tag alone) the int k - 32, for -32 <= int < 96
 *   FLOAT   8 bytes, the native double (bit-exact: NaN payloads, -0.0)
 *   ASCII   n:varint, n bytes < 0x80
 *   UTF8    n:varint, n bytes of strict UTF-8
 *   BYTES   n:varint, n bytes
 *   LIST TUPLE SET FROZENSET   n:varint, n values
 *   DICT    n:varint, n (key value) pairs
 *   DATETIME year:u16le month:u8 day:u8 hour minute second:u8 us:u24le fold:u8 tz
 *   DATE    year:u16le month:u8 day:u8
 *   TIME    hour minute second:u8 us:u24le fold:u8 tz
 *   TIMEDELTA days:zigzag varint, seconds:varint, us:varint
 *   TZINFO  tz (not TZ_NONE): a tzinfo on its own
 *   DECIMAL n:varint, n bytes: str() of an exact C decimal.Decimal (what its
 *           pickle holds), checked against str's grammar, decoded by
 *           Decimal(text) (exact; an out-of-range exponent is damage)
 *   UUID    int:16 bytes little-endian, is_safe:u8 (0 unknown, 1 safe,
 *           2 unsafe): an exact uuid.UUID, rebuilt as unpickling does
 *   SUBCLASS n:varint, n bytes "module\0qualname" (UTF-8), then an ASCII,
 *           UTF8 or BYTES value: an instance of a plain subclass of str or
 *           bytes (django.utils.safestring.SafeString, what {% cache %} and
 *           the template engine store), rebuilt as unpickling does:
 *           cls.__new__(cls, value), cls found by module and qualname
 *   tz      := TZ_NONE | TZ_UTC | TZ_FIXED delta named:u8 [n:varint n bytes UTF-8]
 *            | TZ_ZONEINFO from_cache:u8 n:varint n bytes UTF-8 (the key)
 *   Fields are decoded through the datetime C API's constructors, which
 *   check every range; damaged ones raise ValueError like any damage.
 * Native byte order: payloads never leave the machine (private heap or a
 * shared segment whose layout check already refuses another build).
 *
 * A payload of another codec version raises ValueError naming both
 * versions rather than reading as a miss: a shared segment refuses another
 * layout at attach time, so a foreign version here means damage, and
 * damage should be loud.
 */
#ifndef FC_CODEC_H
#define FC_CODEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

#define FC_CODEC_VERSION 1
#define FC_CODEC_MAX_DEPTH 32

/* The codec's per-interpreter state, in the module state; zero-initialised
 * is empty.  Holds strong references.
 *
 *  - a cache of decoded dict-key strs (short, ASCII) and small ints;
 *  - the datetime C API (the capsule's table: the types in it are static,
 *    process-wide objects), fetched once by fc_codec_init at module exec;
 *    NULL when this interpreter has no _datetime (then datetimes are
 *    pickled, and a payload holding one raises);
 *  - the types of modules the codec does not import itself: looked up the
 *    first time a value or payload needs them.  NULL: not looked up yet;
 *    Py_None: unavailable (the values are pickled). */
#define FC_CODEC_KEY_BITS 9
#define FC_CODEC_KEY_SLOTS (1 << FC_CODEC_KEY_BITS)
#define FC_CODEC_KEY_MAX 32
#define FC_CODEC_SUBTYPES 16
#define FC_CODEC_NAME_MAX 1024 /* module and qualname of a subclass, in bytes */
typedef struct {
    PyObject *slot[FC_CODEC_KEY_SLOTS];
    PyObject *small_int[128];  /* the ints of the small-int tags, filled lazily */
    const void *datetime_capi; /* PyDateTime_CAPI *, or NULL */
    PyObject *zoneinfo_type;   /* zoneinfo.ZoneInfo (the C one) */
    PyObject *zoneinfo_no_cache;
    PyObject *decimal_type;                  /* decimal.Decimal (the C one) */
    PyObject *decimal_context;               /* a private decimal.Context trapping errors */
    PyObject *uuid_type;                     /* uuid.UUID */
    PyObject *uuid_safe[3];                  /* SafeUUID.unknown, .safe, .unsafe */
    PyObject *uuid_getstate, *uuid_setstate; /* UUID's own, as first seen */
    Py_ssize_t uuid_int_off, uuid_safe_off;  /* its slots */
    unsigned int uuid_tag;                   /* its version tag when last checked */
    int uuid_fast; /* it pickles as the codec expects (slots read directly) */
    /* Subclasses of str and bytes met so far (see fc_codec.c "Subclasses"):
     * strong references, filled in order, never removed before clear. */
    struct fc_codec_subtype {
        PyObject *type;   /* the class */
        PyObject *name;   /* bytes: module "\0" qualname, as written */
        unsigned int tag; /* its version tag when judged (0: never plain) */
        int plain;        /* pickles as NEWOBJ(cls, (base(value),)), no state */
    } sub[FC_CODEC_SUBTYPES];
    int nsub;
    PyObject *dispatch_table; /* copyreg.dispatch_table: a type in it pickles its own way */
} fc_codec_state;

/* At module exec: fetches the datetime C API.  0, or -1 with an error set
 * (only MemoryError-like failures; a missing _datetime is not an error). */
int fc_codec_init(fc_codec_state *st);
/* Free-threaded builds: resolves the lazily looked-up types (zoneinfo,
 * decimal, uuid) at once; a no-op elsewhere.  0, or -1 with an error. */
int fc_codec_prepare(fc_codec_state *st);

/* 1 and *out = new bytes: encoded.  0: not the codec's (no error set; the
 * caller pickles).  -1: an error is set (MemoryError).  protocol is the
 * pickle protocol the value would otherwise be pickled with (what it keeps,
 * such as a datetime's fold, the codec keeps). */
int fc_codec_encode(fc_codec_state *st, PyObject *v, int protocol, PyObject **out);

/* New reference, or NULL with ValueError (damaged or foreign payload) or
 * MemoryError, or whatever a constructor raised (ZoneInfo(key) for a key
 * this machine no longer has, as pickle.loads would).  st may be NULL (no
 * key reuse; a payload holding a datetime, a Decimal or a UUID raises
 * ValueError). */
PyObject *fc_codec_decode(fc_codec_state *st, const char *p, size_t n);

/* Module traverse/clear/free. */
int fc_codec_state_traverse(fc_codec_state *st, visitproc visit, void *arg);
void fc_codec_state_clear(fc_codec_state *st);

#endif
