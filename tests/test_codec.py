"""The container codec (csrc/fc_codec.c): results equal pickle's round trip.

- property tests over generated nested values: what the codec takes comes back
  with the types, order (dicts, and sets as pickle rebuilds them), float bits
  and contents of ``pickle.loads(pickle.dumps(v, HIGHEST_PROTOCOL))``, through
  the private hooks and through FastCache and SharedMemoryCache gets, with
  fresh mutable containers on every get;
- what the codec must decline (the whole value is then pickled, so sharing
  and subclasses survive): subclasses, unknown types, big ints, lone
  surrogates, a mutable container met twice, cycles, nesting beyond 32;
- damaged payloads (values live in shared memory other processes write) raise
  exceptions, never crash: a fuzz loop in a subprocess, so a crash shows as a
  signal exit (and under ASan in scripts/test.sh's sanitize stage).
"""

from __future__ import annotations

import _pydecimal
import collections
import datetime as dt
import decimal
import math
import os
import pickle
import struct
import sysconfig
import textwrap
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
from fc_helpers import run_child
from hypothesis import given, settings
from hypothesis import strategies as st

fc = pytest.importorskip("django_fastcache._fastcache")

from django.utils.safestring import SafeString, mark_safe  # noqa: E402

from django_fastcache import FastCache, SharedMemoryCache  # noqa: E402
from django_fastcache import backend as fc_backend  # noqa: E402

MAX_DEPTH = 32
INT64 = 2**63
MUTABLE = (list, dict, set)
DATETIMES = (dt.datetime, dt.date, dt.time, dt.timedelta)
UTC = dt.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def roundtrip(v: Any) -> Any:
    return pickle.loads(pickle.dumps(v, pickle.HIGHEST_PROTOCOL))


def same(a: Any, b: Any) -> bool:
    """Identical types recursively, equal contents, floats bit for bit,
    dicts and sets in the same iteration order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (dt.datetime, dt.time)):  # == compares instants: not enough
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and same(a.tzinfo, b.tzinfo)
        )
    if isinstance(a, dt.tzinfo):
        if isinstance(a, zoneinfo.ZoneInfo):  # the cached instance, or a fresh one
            return a.key == b.key and (a is zoneinfo.ZoneInfo(a.key)) == (
                b is zoneinfo.ZoneInfo(b.key)
            )
        return repr(a) == repr(b) and (a is UTC) == (b is UTC)
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, decimal.Decimal):  # == is numeric (and raises for sNaN)
        return str(a) == str(b)
    if isinstance(a, uuid.UUID):  # == compares int only
        return a == b and type(a.int) is type(b.int) and a.is_safe is b.is_safe
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (set, frozenset)):
        if len(a) != len(b):
            return False
        if has_nan(a):  # hashed by id (NaN, ZoneInfo): no two rebuilds share an order
            return canon(a) == canon(b)
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return bool(a == b)


def canon(v: Any) -> str:
    """A text for hashable v that ignores set order (floats bit for bit)."""
    if isinstance(v, float):
        return struct.pack("<d", v).hex()
    if isinstance(v, (set, frozenset)):
        return f"{type(v).__name__}{{{','.join(sorted(map(canon, v)))}}}"
    if isinstance(v, tuple):
        return f"({','.join(map(canon, v))})"
    return f"{type(v).__name__}:{v!r}"


def has_nan(v: Any) -> bool:
    """Whether v holds an item hashed by its id (a NaN float or Decimal, a
    ZoneInfo)."""
    if isinstance(v, zoneinfo.ZoneInfo):
        return True
    if isinstance(v, (float, decimal.Decimal)):
        return v.is_nan() if isinstance(v, decimal.Decimal) else math.isnan(v)
    if isinstance(v, (tuple, frozenset, set)):
        return any(has_nan(x) for x in v)
    return False


def containers(v: Any) -> Iterator[Any]:
    """Every list, dict and set inside v (v included)."""
    if isinstance(v, MUTABLE):
        yield v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from containers(k)
            yield from containers(x)
    elif isinstance(v, (list, tuple, set, frozenset)):
        for x in v:
            yield from containers(x)


def utf8(v: Any) -> bool:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def tz_takes(tz: Any) -> bool:
    if tz is None or tz is UTC:
        return True
    if type(tz) is dt.timezone:
        args = tz.__getinitargs__()
        return len(args) == 1 or (type(args[1]) is str and utf8(args[1]))
    if type(tz) is zoneinfo.ZoneInfo:
        try:
            _, (key, _) = tz.__reduce__()
        except pickle.PicklingError:  # from_file
            return False
        return type(key) is str and utf8(key)
    return False


class PlainStr(str):
    """A subclass as SafeString is one: no state, pickled by NEWOBJ."""

    __slots__ = ()

    def shout(self) -> str:
        return self.upper()


class PlainBytes(bytes):
    __slots__ = ()


def codec_takes(
    v: Any, depth: int = 0, seen: set[int] | None = None, protocol: int = 5
) -> bool:
    """What fc_codec.c is specified to encode (a Python model of it)."""
    seen = set() if seen is None else seen
    t = type(v)
    if v is None or t in (bool, float, bytes):
        return True
    if t is int:
        return -INT64 <= v < INT64
    if t in (str, SafeString, PlainStr):
        return utf8(v)
    if t is PlainBytes:
        return True
    if t in (dt.date, dt.timedelta, decimal.Decimal):
        return True
    if t is uuid.UUID:
        i, safe = getattr(v, "int", None), getattr(v, "is_safe", None)
        return type(i) is int and 0 <= i < 2**128 and type(safe) is uuid.SafeUUID
    if t in (dt.datetime, dt.time):
        return (protocol >= 4 or not v.fold) and tz_takes(v.tzinfo)
    if t in (dt.timezone, zoneinfo.ZoneInfo):
        return tz_takes(v)
    if t not in (list, tuple, dict, set, frozenset) or depth >= MAX_DEPTH:
        return False
    if t in MUTABLE:
        if id(v) in seen:
            return False
        seen.add(id(v))
    items = [x for kv in v.items() for x in kv] if t is dict else list(v)
    return all(codec_takes(x, depth + 1, seen, protocol) for x in items)


# --------------------------------------------------------------------------
# Strategies

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [-0.0, 0.0, math.inf, struct.unpack("<d", struct.pack("<Q", 0x7FF8DEADBEEF0001))[0]]
)
ints = st.integers(-40, 140) | st.integers(-(2**63), 2**63 - 1) | st.integers(
    -(2**80), 2**80
)
texts = (
    st.text(max_size=40)
    | st.text(st.characters(max_codepoint=127), max_size=40)
    | st.sampled_from(["", "é", "😀 non-BMP", "x" * 300, "a\ud800b"])
)
ZONE_KEYS = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]
fixed_offsets = st.timedeltas(
    dt.timedelta(hours=-24) + dt.timedelta.resolution,
    dt.timedelta(hours=24) - dt.timedelta.resolution,
)
tz_objects = (
    st.just(UTC)
    | st.builds(dt.timezone, fixed_offsets)
    | st.builds(dt.timezone, fixed_offsets, st.text(max_size=8) | st.just("a\ud800b"))
    | st.sampled_from(ZONE_KEYS).map(zoneinfo.ZoneInfo)
    | st.sampled_from(ZONE_KEYS).map(zoneinfo.ZoneInfo.no_cache)
)
tzinfos = st.none() | tz_objects
_datetimes = (
    st.builds(
        lambda d, tz, fold: d.replace(tzinfo=tz, fold=fold),
        st.datetimes(),
        tzinfos,
        st.integers(0, 1),
    )
    | st.dates()
    | st.builds(
        lambda t, tz, fold: t.replace(tzinfo=tz, fold=fold),
        st.times(),
        tzinfos,
        st.integers(0, 1),
    )
    | st.timedeltas()
    | tz_objects
)


@st.composite
def datetimes(draw: Any) -> Any:
    """datetime values (a named strategy keeps hypothesis's reprs short)."""
    return draw(_datetimes)


D = decimal.Decimal
# sNaN is unhashable (no set item or dict key): only in `values`.
_decimals = (
    st.decimals(allow_nan=False)
    | st.decimals(places=2, allow_nan=False)
    | st.builds(D.scaleb, st.integers(-(10**30), 10**30).map(D), st.integers(-40, 40))
    | st.sampled_from(
        [D("NaN"), D("-NaN"), D("NaN123"), D("Infinity"), D("-Infinity"), D("-0"),
         D("0E-7"), D("-0.000"), D("1E+999999999999999999"),
         D("1E-1999999999999999997"), D("1." + "7" * 300),
         D("12345678901234567890.123456789E-20"), D("1E+2")]
    )
)
signaling = st.sampled_from([D("sNaN"), D("-sNaN"), D("sNaN42")])


_uuids = st.builds(
    uuid.UUID,
    int=st.integers(0, 2**128 - 1) | st.sampled_from([0, 2**128 - 1]),
    is_safe=st.sampled_from(list(uuid.SafeUUID)),
) | st.uuids()


@st.composite
def uuids(draw: Any) -> Any:
    """UUID values (named, as datetimes())."""
    return draw(_uuids)


@st.composite
def decimals(draw: Any) -> Any:
    """Decimal values (named, as datetimes())."""
    return draw(_decimals)


_subclassed = (
    st.builds(SafeString, texts)
    | st.builds(PlainStr, texts)
    | st.builds(PlainBytes, st.binary(max_size=9))
)


@st.composite
def subclassed(draw: Any) -> Any:
    """Plain str and bytes subclasses, SafeString among them (named, as datetimes())."""
    return draw(_subclassed)


atoms = (
    st.none() | st.booleans() | ints | floats | texts | st.binary(max_size=40)
    | datetimes() | decimals() | uuids()
    | subclassed()
)
hashables = st.recursive(
    atoms,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
values = st.recursive(
    atoms | signaling,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=6)
        | st.sets(hashables, max_size=6)
        | st.frozensets(hashables, max_size=6)
    ),
    max_leaves=30,
)


# --------------------------------------------------------------------------
# Through the private hooks


@settings(max_examples=400, deadline=None)
@given(values)
def test_codec_round_trip_equals_pickle_round_trip(v: Any) -> None:
    payload = fc._codec_encode(v)
    assert (payload is not None) == codec_takes(v)
    if payload is not None:
        assert payload[0] == 1  # the format version byte
        assert same(fc._codec_decode(payload), roundtrip(v))


@pytest.mark.parametrize(
    "v",
    [
        [], (), {}, set(), frozenset(), [[]], ((),), {"": b""},
        {3: "x", "a": None, 1.5: True, b"k": False, (1, ("n",)): [1], None: 0},
        {frozenset({1, (2, 3)}): {"deep": [{"er": (set(),)}]}},
        [-(2**63), 2**63 - 1, -33, -32, 95, 96, 127, 128, 2**31],
        ["é", "😀", "\U0010ffff", "x" * 1000, "ascii"],
        list(range(1000)),
        {f"k{i}": i for i in range(2000)},
    ],
)
def test_examples_round_trip(v: Any) -> None:
    payload = fc._codec_encode(v)
    assert payload is not None
    assert same(fc._codec_decode(payload), roundtrip(v))


def test_set_order_is_the_order_pickle_rebuilds() -> None:
    # A set whose iteration order depends on its history, not just contents.
    s = set(range(0, 4000, 7))
    for i in range(0, 4000, 14):
        s.discard(i)
    s |= {2**40 + 1, -5, 10**15}
    r = fc._codec_decode(fc._codec_encode(s))
    assert list(r) == list(roundtrip(s))
    fs = frozenset(s)
    assert list(fc._codec_decode(fc._codec_encode(fs))) == list(roundtrip(fs))


def test_floats_are_bit_exact() -> None:
    nan = struct.unpack("<d", struct.pack("<Q", 0xFFF0000000000123))[0]
    r = fc._codec_decode(fc._codec_encode([nan, -0.0, 5e-324]))
    assert [struct.pack("<d", x) for x in r] == [
        struct.pack("<d", x) for x in (nan, -0.0, 5e-324)
    ]


@pytest.mark.parametrize(
    "text",
    ["1.5", "-0", "0E-7", "-0.000", "NaN", "-NaN", "NaN123", "sNaN", "-sNaN42",
     "Infinity", "-Infinity", "1E+999999999999999999", "1E-1999999999999999997",
     "1." + "7" * 5000,
     "12345678901234567890.123456789E-20", "1E+2", "100", "2.50"],
)
def test_decimal_round_trip_is_pickles(text: str) -> None:
    v = decimal.Decimal(text)
    payload = fc._codec_encode([v])
    assert payload is not None
    (got,) = fc._codec_decode(payload)
    want = roundtrip(v)
    assert type(got) is decimal.Decimal and str(got) == str(want) == str(v)
    assert got.as_tuple() == want.as_tuple()


def test_decimal_ignores_the_thread_context_as_pickle_does() -> None:
    v = [decimal.Decimal("1.23456789E+20"), decimal.Decimal("-1.5")]
    with decimal.localcontext() as ctx:
        ctx.capitals = 0  # str() then writes "e": still the same Decimal
        ctx.prec = 3  # construction from text is exact
        ctx.traps[decimal.InvalidOperation] = False
        ctx.clear_flags()
        payload = fc._codec_encode(v)
        assert payload is not None and b"e+20" in payload
        got = fc._codec_decode(payload)
        assert [str(x) for x in got] == [str(x) for x in roundtrip(v)]
        # a damaged text raises though InvalidOperation is not trapped, and
        # leaves the context's flags alone
        with pytest.raises(ValueError, match="Decimal out of range"):
            fc._codec_decode(b"\x01\x13\x171E+99999999999999999999")
        assert not any(ctx.flags.values())


@pytest.mark.parametrize("safe", list(uuid.SafeUUID))
@pytest.mark.parametrize("i", [0, 1, 2**64, 2**128 - 1, uuid.uuid4().int])
def test_uuid_round_trip_is_pickles(i: int, safe: uuid.SafeUUID) -> None:
    v = uuid.UUID(int=i, is_safe=safe)
    payload = fc._codec_encode(v)
    assert payload is not None and len(payload) == 19
    got, want = fc._codec_decode(payload), roundtrip(v)
    assert type(got) is uuid.UUID and got == want and got.is_safe is want.is_safe
    assert type(got.int) is int and hash(got) == hash(v) and str(got) == str(v)
    with pytest.raises(TypeError, match="immutable"):
        got.int = 5


def _uuid_with(**slots: Any) -> uuid.UUID:
    v = uuid.UUID(int=1)
    for name, value in slots.items():
        object.__setattr__(v, name, value)
    return v


@pytest.mark.parametrize(
    "v",
    [
        _uuid_with(int=2**128),
        _uuid_with(int=-1),
        _uuid_with(int=True),
        _uuid_with(is_safe=0),
        _uuid_with(is_safe=None),
        object.__new__(uuid.UUID),  # no slots set: pickle raises too
    ],
    ids=["2**128", "negative", "bool", "is_safe 0", "is_safe None", "unset"],
)
def test_uuid_with_odd_slots_is_declined(v: uuid.UUID) -> None:
    assert fc._codec_encode([v]) is None


def test_uuid_class_modified_is_checked_again(monkeypatch) -> None:
    v = uuid.UUID(int=7, is_safe=uuid.SafeUUID.safe)
    payload = fc._codec_encode(v)
    assert payload is not None
    calls = []
    original = uuid.UUID.__setstate__

    def setstate(self: uuid.UUID, state: dict) -> None:
        calls.append(state)
        original(self, state)

    with monkeypatch.context() as m:
        m.setattr(uuid.UUID, "__getstate__", lambda self: {"int": 8})
        assert fc._codec_encode(v) is None  # pickled: the patch is honoured
        assert pickle.loads(pickle.dumps(v)).int == 8
    assert fc._codec_encode(v) == payload  # unpatched: fast again
    with monkeypatch.context() as m:
        m.setattr(uuid.UUID, "__setstate__", setstate)
        got = fc._codec_decode(payload)  # decoded as pickle would: its __setstate__
        assert calls == [{"int": 7, "is_safe": 0}]
        assert got == v and got.is_safe is uuid.SafeUUID.safe
    got = fc._codec_decode(payload)
    assert len(calls) == 1 and got == v and got.is_safe is uuid.SafeUUID.safe
    # an unrelated class attribute changes the version tag: checked, still fast
    with monkeypatch.context() as m:
        m.setattr(uuid.UUID, "unrelated", 1, raising=False)
        assert fc._codec_encode(v) == payload


class UUIDSub(uuid.UUID):
    pass


def test_pure_python_decimal_is_declined() -> None:
    # _pydecimal.Decimal (tp_name "Decimal") runs Python code in str():
    # declined, and pickled (here pickle refuses it: it is not decimal.Decimal).
    assert fc._codec_encode([_pydecimal.Decimal("1.5")]) is None


def test_decimal_is_looked_up_lazily() -> None:
    code = (
        "import sys\n"
        "from django_fastcache import _fastcache as fc\n"
        "assert 'decimal' not in sys.modules, 'imported at module import'\n"
        "assert fc._codec_decode(fc._codec_encode([1])) == [1]\n"
        "assert 'decimal' not in sys.modules\n"
        "import decimal\n"
        "v = decimal.Decimal('-0')\n"
        "assert str(fc._codec_decode(fc._codec_encode(v))) == '-0'\n"
    )
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        # Free-threaded builds look every type up once, at import, before any
        # thread can encode (fc_codec_prepare): a lookup during a call would
        # write the codec's state while other threads read it.
        code = (
            "import sys\n"
            "from django_fastcache import _fastcache as fc\n"
            "assert 'decimal' in sys.modules, 'not looked up at import'\n"
            "import decimal\n"
            "v = decimal.Decimal('-0')\n"
            "assert str(fc._codec_decode(fc._codec_encode(v))) == '-0'\n"
        )
    proc = run_child(code)
    assert proc.returncode == 0, proc.stderr


def test_nesting_to_32_is_taken_deeper_is_not() -> None:
    def nest(n: int) -> list:
        v: list = []
        for _ in range(n - 1):
            v = [v]
        return v

    assert fc._codec_encode(nest(MAX_DEPTH)) is not None
    assert fc._codec_encode(nest(MAX_DEPTH + 1)) is None


@pytest.mark.parametrize(
    "v",
    [
        dt.datetime(2020, 1, 2, 3, 4, 5, 678901),
        dt.datetime.min, dt.datetime.max, dt.date.min, dt.date.max, dt.time.max,
        dt.timedelta.min, dt.timedelta.max, dt.timedelta(days=-1, microseconds=1),
        dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=PARIS),
        dt.time(1, 2, fold=1, tzinfo=zoneinfo.ZoneInfo.no_cache("Asia/Kolkata")),
        dt.datetime(2020, 1, 1, tzinfo=UTC),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(0), "UTC")),
        dt.time(tzinfo=dt.timezone(dt.timedelta.resolution - dt.timedelta(1), "é")),
        {"at": dt.datetime(2024, 2, 29, tzinfo=UTC), "on": [dt.date(2024, 2, 29)]},
        UTC, zoneinfo.ZoneInfo("UTC"), dt.timezone(dt.timedelta(hours=5, minutes=30)),
    ],
)
def test_datetime_examples_round_trip(v: Any) -> None:
    payload = fc._codec_encode(v)
    assert payload is not None
    got, want = fc._codec_decode(payload), roundtrip(v)
    assert same(got, want)
    tz = getattr(want, "tzinfo", want)
    if tz is UTC or (type(tz) is zoneinfo.ZoneInfo and tz is zoneinfo.ZoneInfo(tz.key)):
        assert getattr(got, "tzinfo", got) is tz  # the singleton, the cached instance


@pytest.mark.parametrize("make", [dt.datetime, dt.time])
def test_fold_is_kept_only_where_the_pickle_protocol_keeps_it(make) -> None:
    v = make(1, 1, 1) if make is dt.datetime else make(1)
    v = v.replace(fold=1)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert (fc._codec_encode(v, protocol) is not None) == (protocol >= 4)
        assert pickle.loads(pickle.dumps(v, protocol)).fold == (protocol >= 4)
    assert fc._codec_encode(v.replace(fold=0), 2) is not None


class DateTimeSub(dt.datetime):
    pass


class FixedTZ(dt.tzinfo):
    def utcoffset(self, _: Any) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def __repr__(self) -> str:
        return "FixedTZ()"


class ZoneInfoSub(zoneinfo.ZoneInfo):
    pass


def test_zoneinfo_from_a_file_is_declined_as_pickle_refuses_it() -> None:
    paths = [os.path.join(p, "Europe/Paris") for p in zoneinfo.TZPATH]
    path = next((p for p in paths if os.path.isfile(p)), None)
    if path is None:
        pytest.skip("no system time zone files")
    with open(path, "rb") as f:
        tz = zoneinfo.ZoneInfo.from_file(f)
    for v in (tz, [dt.datetime(2020, 1, 1, tzinfo=tz)]):
        assert fc._codec_encode(v) is None
        with pytest.raises(pickle.PicklingError):
            pickle.dumps(v)


class ListSub(list):
    pass


class DecimalSub(decimal.Decimal):
    pass


class DictSub(dict):
    pass


class StrSub(str):
    pass


def _shared() -> list:
    inner = [1]
    return [inner, inner]


def _shared_via_tuple() -> list:
    inner = {"a": 1}
    t = (inner,)
    return [t, t]


def _cycle() -> list:
    v: list = [1]
    v.append(v)
    return v


@pytest.mark.parametrize(
    "make",
    [
        lambda: ListSub([1]),
        lambda: [DictSub(a=1)],
        lambda: {"k": StrSub("v")},
        lambda: collections.OrderedDict(a=1),
        lambda: [collections.defaultdict(list)],
        lambda: [DecimalSub("1.5")],
        lambda: [UUIDSub(int=1)],
        lambda: [DateTimeSub(2020, 1, 1)],
        lambda: [dt.datetime(2020, 1, 1, tzinfo=FixedTZ())],
        lambda: [dt.time(tzinfo=dt.timezone(dt.timedelta(hours=1), StrSub("X")))],
        lambda: [dt.time(tzinfo=dt.timezone(dt.timedelta(hours=1), "lone \udc80"))],
        lambda: [ZoneInfoSub("UTC")],
        lambda: [ValueError("boom")],
        lambda: [2**64],
        lambda: {"k": "lone \udc80 surrogate"},
        lambda: {("tuple", 2**70): 1},
        _shared,
        _shared_via_tuple,
        _cycle,
    ],
)
def test_declined_values_are_pickled_whole(make, make_cache_pair) -> None:
    v = make()
    assert fc._codec_encode(v) is None
    for cache in make_cache_pair:
        cache.set("k", v)
        got = cache.get("k")
        want = roundtrip(v)
        assert type(got) is type(want)
        assert repr(got) == repr(want) or isinstance(got[0], ValueError)
        if make in (_shared, _shared_via_tuple):  # pickle keeps the sharing
            assert got[0] is got[1]
        if make is _cycle:
            assert got[1] is got


def test_immutable_atoms_may_be_shared_but_containers_never() -> None:
    payload = fc._codec_encode({"key": ["value"]})
    a, b = fc._codec_decode(payload), fc._codec_decode(payload)
    assert a == b and a is not b and a["key"] is not b["key"]


# --------------------------------------------------------------------------
# Through the backends


@pytest.fixture(scope="module")
def make_cache_pair(tmp_path_factory) -> Iterator[list[Any]]:
    shm_dir = tmp_path_factory.mktemp("codec-shm")
    old = os.environ.get(fc_backend.SHM_DIR_ENV)
    os.environ[fc_backend.SHM_DIR_ENV] = str(shm_dir)
    try:
        caches = [
            FastCache("codec-tests", {"OPTIONS": {"MAX_ENTRIES": 10_000}}),
            SharedMemoryCache("codec-tests", {"OPTIONS": {"MAX_ENTRIES": 10_000}}),
        ]
        yield caches
        for c in caches:
            c.clear()
    finally:
        if old is None:
            os.environ.pop(fc_backend.SHM_DIR_ENV, None)
        else:
            os.environ[fc_backend.SHM_DIR_ENV] = old


@settings(max_examples=150, deadline=None)
@given(v=values)
def test_get_returns_the_pickle_round_trip_and_fresh_containers(
    v: Any, make_cache_pair: list[Any]
) -> None:
    want = roundtrip(v)
    for cache in make_cache_pair:
        cache.set("v", v)
        first, second = cache.get("v"), cache.get("v")
        many = cache.get_many(["v"])["v"]
        assert same(first, want) and same(second, want) and same(many, want)
        ids = [{id(c) for c in containers(r)} for r in (first, second, many, v)]
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                assert not ids[i] & ids[j], "a mutable container is shared"


def test_incr_of_a_container_value_is_a_type_error(make_cache_pair) -> None:
    for cache in make_cache_pair:
        cache.set("n", [1])
        with pytest.raises(TypeError):
            cache.incr("n")
        assert cache.get("n") == [1]


# --------------------------------------------------------------------------
# Damaged payloads


def test_foreign_version_is_a_clear_error() -> None:
    payload = bytearray(fc._codec_encode([1, 2]))
    payload[0] = 2
    with pytest.raises(ValueError, match="codec version 2, this build reads version 1"):
        fc._codec_decode(bytes(payload))


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (b"", "empty"),
        (b"\x01", "truncated value"),
        (b"\x01\x09\x05", "length beyond the end"),  # LIST of 5, no items
        (b"\x01\x06\x02a\xff", "non-ASCII"),
        (b"\x01\x04" + b"\xff" * 11, "number too long"),
        (b"\x01\x01\x01", "bytes after the value"),
        (b"\x01\x7f", "unknown tag"),
        (b"\x01" + b"\x09\x01" * 33 + b"\x01", "nesting too deep"),
        # DATETIME 0x0e, DATE 0x0f, TIME 0x10, TIMEDELTA 0x11, TZINFO 0x12
        (b"\x01\x0f\xe4\x07\x01", "truncated date"),
        (b"\x01\x0e\xe4\x07\x01\x01" + b"\x00" * 6, "truncated time"),
        (b"\x01\x0e\xe4\x07\x01\x01" + b"\x00" * 7, "truncated tzinfo"),
        (b"\x01\x0e\xe4\x07\x01\x01" + b"\x00" * 7 + b"\x09", "unknown tzinfo"),
        (b"\x01\x0f\xe4\x07\x0d\x01", "month must be in 1..12"),
        # (the message as 3.11-3.13 | 3.14 word it)
        (b"\x01\x0f\x00\x00\x01\x01", "year 0 is out of range|year must be in 1..9999"),
        (b"\x01\x10\x18" + b"\x00" * 6 + b"\x00", "hour must be in 0..23"),
        (b"\x01\x10\x00\x00\x00\x40\x42\x0f\x00\x00", "microsecond must be in"),
        (b"\x01\x10" + b"\x00" * 6 + b"\x02\x00", "fold must be either 0 or 1"),
        (b"\x01\x11\x00\x80\xa3\x05\x00", "field out of range"),  # 86400 s
        (b"\x01\x11\x80\xa8\xd6\xb9\x07\x00\x00", "field out of range"),  # 1e9 days
        (b"\x01\x12\x00", "tzinfo None"),
        (b"\x01\x12\x02\x00\x00\x00\x02", "bad timezone name flag"),
        (b"\x01\x12\x02\x02\x00\x00\x00", "offset must be a timedelta strictly"),
        (b"\x01\x12\x02\x00\x00\x00\x01\x05ab", "length beyond the end"),
        (b"\x01\x12\x03\x02\x00", "bad ZoneInfo cache flag"),
        # DECIMAL 0x13
        (b"\x01\x13\x03abc", "bad Decimal text"),
        (b"\x01\x13\x02 1", "bad Decimal text"),
        (b"\x01\x13\x03inf", "bad Decimal text"),
        (b"\x01\x13\x041E+1\x00", "bytes after the value"),
        (b"\x01\x13\x031E5", "bad Decimal text"),
        (b"\x01\x13\x021.", "bad Decimal text"),
        (b"\x01\x13\x00", "bad Decimal text"),
        (b"\x01\x13\x09", "length beyond the end"),
        (b"\x01\x13\x171E+99999999999999999999", "Decimal out of range"),
        # UUID 0x14
        (b"\x01\x14" + b"\x00" * 16, "truncated UUID"),
        (b"\x01\x14" + b"\x00" * 16 + b"\x03", "bad UUID is_safe"),
        (b"\x01\x14" + b"\x00" * 17 + b"\x00", "bytes after the value"),
    ],
)
def test_damaged_payloads_raise_value_error(payload: bytes, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        fc._codec_decode(payload)


def test_unhashable_key_in_a_damaged_payload_is_a_type_error() -> None:
    # DICT of 1: key LIST [] -> unhashable.
    with pytest.raises(TypeError):
        fc._codec_decode(b"\x01\x0d\x01\x09\x00\x01")


FUZZ = """
import datetime as dt, random, sys, uuid, zoneinfo
from decimal import Decimal as D
from django_fastcache import _fastcache as fc
from django.utils.safestring import SafeString
class Bytes(bytes):
    __slots__ = ()
rng = random.Random(int(sys.argv[1]))
seeds = [
    {"id": 7, "name": "alice", "tags": ["a", "b"], "score": 1.5, "raw": b"\\x00\\xff"},
    [list(range(40)), (None, True, False), {1, 2, 3}, frozenset({"x", (1, 2)})],
    {("k", 1): {"deep": [[[{"é": "😀"}]]]}, -(2**63): 2**63 - 1, 0.0: -0.0},
    ["x" * 200, "y" * 7, "", b"", ()],
    [dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
     dt.time(4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=-3), "Z")),
     dt.date(2000, 2, 29), dt.timedelta(-3, 4, 5),
     dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc),
     zoneinfo.ZoneInfo.no_cache("UTC")],
    [D("-1.50"), D("sNaN12"), D("-Infinity"), D("1E+999999999999999999"), D("-0E-7")],
    {uuid.UUID(int=2**128 - 1, is_safe=uuid.SafeUUID.unsafe): uuid.uuid4(),
     "u": [uuid.UUID(int=0, is_safe=uuid.SafeUUID.safe)]},
    [SafeString("<b>frag</b>"), {"s": SafeString("\\u00e9")}, Bytes(b"\\x00")],
]
payloads = [fc._codec_encode(v) for v in seeds]
assert all(p is not None for p in payloads)
outcomes = {}
for i in range(int(sys.argv[2])):
    p = bytearray(rng.choice(payloads))
    how = rng.randrange(5)
    if how == 0:                                   # flip bits
        for _ in range(rng.randint(1, 4)):
            j = rng.randrange(1, len(p))
            p[j] ^= 1 << rng.randrange(8)
    elif how == 1:                                 # truncate
        del p[rng.randrange(1, len(p)):]
    elif how == 2:                                 # random bytes after the version
        p = bytearray([1]) + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    elif how == 3:                                 # overwrite a byte
        p[rng.randrange(1, len(p))] = rng.randrange(256)
    else:                                          # splice two payloads
        q = rng.choice(payloads)
        p = p[: rng.randrange(1, len(p))] + q[rng.randrange(1, len(q)):]
    try:
        fc._codec_decode(bytes(p))
        outcome = "ok"
    except (ValueError, TypeError, OverflowError, MemoryError, KeyError, ImportError,
            AttributeError) as exc:
        # KeyError: zoneinfo.ZoneInfoNotFoundError, for a key the bytes now spell;
        # ImportError, AttributeError: a class name the bytes now spell (as pickle)
        outcome = type(exc).__name__
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
print(sorted(outcomes.items()))
"""


# A collection during a codec call runs gc.callbacks (and finalizers): Python
# code that reaches every tracked object.  The codec keeps the collector off
# while a list or tuple it made at full size is unfilled (decode, 91c2cc8:
# this copy of each crashes on a NULL item without it) and while it makes
# the set iterator of an encode walk (28be29c: this clear() frees the item
# array the walk is reading without it; both crash under ASan when reverted).
GC_STRESS = """
import gc, sys
from django_fastcache import _fastcache as fc
VICTIM = []
def copy_every_list(phase, info):
    if phase == "start":
        for o in gc.get_objects():
            if type(o) is list or type(o) is tuple:
                repr(o)
                o[:]
def clear_victim(phase, info):
    if phase == "start":
        VICTIM.clear()
gc.set_threshold(1, 1, 1)
if sys.argv[2] == "decode":
    gc.callbacks.append(copy_every_list)
    vals = [[list(range(i, i + 300)) for i in range(20)],
            [{"k": [str(j) for j in range(50)], "s": {(j, str(j)) for j in range(50)}}
             for _ in range(10)],
            [tuple([str(j)] * 3) for j in range(200)],
            [x for _ in range(5) for x in (set(range(100)), frozenset("abcdefgh"))]]
    payloads = [fc._codec_encode(v) for v in vals]
    assert all(p is not None for p in payloads)
    for i in range(10):
        for v, p in zip(vals, payloads):
            fc._codec_encode(v)
            assert fc._codec_decode(p) == v
else:
    gc.callbacks.append(clear_victim)
    for i in range(50):
        VICTIM[:] = [{j, j + 1} for j in range(50)]
        fc._codec_encode(VICTIM)
print("ok")
"""


@pytest.mark.parametrize("mode", ["decode", "encode"])
def test_collections_during_codec_calls_do_not_crash(mode: str) -> None:
    proc = run_child(textwrap.dedent(GC_STRESS), "0", mode, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip() == "ok"


def test_fuzzed_payloads_raise_and_never_crash() -> None:
    proc = run_child(textwrap.dedent(FUZZ), "1234", "20000", timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "ValueError" in proc.stdout


# --------------------------------------------------------------------------
# Subclasses of str and bytes (SafeString: what {% cache %} stores)


@pytest.mark.parametrize(
    "v",
    [
        mark_safe("<b>caf\u00e9</b>"),
        SafeString(""),
        SafeString("x" * 5000),
        {"fragment": mark_safe("<p>ok</p>"), "items": [SafeString("a"), PlainStr("b")]},
        (PlainBytes(b"\x00\xff"), PlainStr("\U0001f600")),
    ],
)
def test_plain_subclasses_round_trip_with_their_class(v: Any, make_cache_pair) -> None:
    payload = fc._codec_encode(v)
    assert payload is not None
    want = roundtrip(v)
    for got in [fc._codec_decode(payload)] + [
        (cache.set("sub", v), cache.get("sub"))[1] for cache in make_cache_pair
    ]:
        assert same(got, want)
        assert canon(got) == canon(want)


def test_safestring_keeps_its_behaviour_after_a_get(make_cache_pair) -> None:
    for cache in make_cache_pair:
        cache.set("frag", mark_safe("<i>x</i>"))
        got = cache.get("frag")
        assert type(got) is SafeString and got.__html__() is got
        assert type(got + mark_safe("y")) is SafeString


class WithReduce(str):
    __slots__ = ()

    def __reduce__(self) -> Any:
        return (str, (str(self) + "!",))


class WithGetnewargs(str):
    __slots__ = ()

    def __getnewargs__(self) -> tuple:
        return ("other",)


class WithSlots(str):
    __slots__ = ("extra",)


class WithNew(str):
    __slots__ = ()

    def __new__(cls, text: str = "") -> WithNew:
        return super().__new__(cls, text.upper())


class WithGetattr(str):
    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


class GrandChild(PlainStr):
    __slots__ = ()

    def __getstate__(self) -> Any:
        return {"x": 1}


class Registered(str):
    __slots__ = ()


def _local_class() -> Any:
    class Local(str):
        __slots__ = ()

    return Local("v")


@pytest.mark.parametrize(
    "make",
    [
        lambda: StrSub("has a __dict__"),
        lambda: WithReduce("r"),
        lambda: WithGetnewargs("g"),
        lambda: WithSlots("s"),
        lambda: WithNew("n"),
        lambda: WithGetattr("a"),
        lambda: GrandChild("c"),
        lambda: SafeString("lone \udc80"),
    ],
)
def test_subclasses_pickle_treats_otherwise_are_declined(make) -> None:
    v = make()
    assert fc._codec_encode(v) is None
    assert fc._codec_encode([v]) is None


def test_a_class_pickle_cannot_find_is_declined() -> None:
    v = _local_class()
    assert fc._codec_encode(v) is None
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(v)


def test_copyreg_registration_is_honoured() -> None:
    import copyreg

    v = Registered("k")
    assert fc._codec_encode(v) is not None
    copyreg.pickle(Registered, lambda o: (str, (str(o),)))
    try:
        assert fc._codec_encode(v) is None
        assert type(roundtrip(v)) is str  # what the registration asks for
    finally:
        del copyreg.dispatch_table[Registered]
    assert fc._codec_encode(v) is not None


def test_subclass_changed_after_use_is_judged_again(monkeypatch) -> None:
    v = PlainStr("p")
    payload = fc._codec_encode(v)
    assert payload is not None
    with monkeypatch.context() as m:
        patched = lambda self: (str, ("patched",))  # noqa: E731
        m.setattr(PlainStr, "__reduce__", patched, raising=False)
        assert fc._codec_encode(v) is None
    assert fc._codec_encode(v) == payload


def test_decode_imports_the_module_as_pickle_does() -> None:
    payload = fc._codec_encode(mark_safe("<b>x</b>"))
    code = (
        "import sys\n"
        "from django_fastcache import _fastcache as fc\n"
        "assert 'django.utils.safestring' not in sys.modules\n"
        f"v = fc._codec_decode({payload!r})\n"
        "assert type(v).__module__ == 'django.utils.safestring', type(v)\n"
        "assert type(v).__name__ == 'SafeString' and v == '<b>x</b>'\n"
        "assert 'django.utils.safestring' in sys.modules\n"
        "print('ok')\n"
    )
    proc = run_child(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


STR = b"builtins\x00str"


def _subclass_payload(name: bytes, value: bytes = b"\x06\x01x") -> bytes:
    return b"\x01\x15" + bytes([len(name)]) + name + value


@pytest.mark.parametrize(
    ("payload", "error", "what"),
    [
        (_subclass_payload(b"ab"), ValueError, "bad class name"),
        (_subclass_payload(b"nonul"), ValueError, "bad class name"),
        (_subclass_payload(b"\x00mod"), ValueError, "bad class name"),
        (_subclass_payload(b"mod\x00"), ValueError, "bad class name"),
        (_subclass_payload(b"a\x00b\x00c"), ValueError, "bad class name"),
        (_subclass_payload(STR, b"\x09\x00"), ValueError, "bad subclass value"),
        (_subclass_payload(STR, b""), ValueError, "bad subclass value"),
        (_subclass_payload(b"no_such_module_fc\x00X"), ModuleNotFoundError, "no_such"),
        (_subclass_payload(b"os\x00NoSuchClass"), AttributeError, "NoSuchClass"),
        (_subclass_payload(b"os\x00sep"), TypeError, "not a class"),
        (_subclass_payload(b"builtins\x00int"), ValueError, "invalid literal"),
    ],
)
def test_damaged_subclass_payloads_raise(
    payload: bytes, error: type, what: str
) -> None:
    with pytest.raises(error, match=what):
        fc._codec_decode(payload)


def test_subclass_payload_of_str_itself_decodes_as_pickle_would() -> None:
    # NEWOBJ(str, ("x",)) is just "x": a name that now finds a builtin still
    # decodes as pickle.loads would decode it.
    got = fc._codec_decode(_subclass_payload(b"builtins\x00str"))
    assert type(got) is str and got == "x"
