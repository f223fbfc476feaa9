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

import collections
import decimal
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from fc_helpers import child_pythonpath
from hypothesis import given, settings
from hypothesis import strategies as st

fc = pytest.importorskip("django_fastcache._fastcache")

from django_fastcache import FastCache, SharedMemoryCache  # noqa: E402
from django_fastcache import backend as fc_backend  # noqa: E402

MAX_DEPTH = 32
INT64 = 2**63
MUTABLE = (list, dict, set)


def roundtrip(v: Any) -> Any:
    return pickle.loads(pickle.dumps(v, pickle.HIGHEST_PROTOCOL))


def same(a: Any, b: Any) -> bool:
    """Identical types recursively, equal contents, floats bit for bit,
    dicts and sets in the same iteration order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (set, frozenset)):
        if len(a) != len(b):
            return False
        if has_nan(a):  # hash(nan) is its id: no two rebuilds share an order
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
    if isinstance(v, float):
        return math.isnan(v)
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


def codec_takes(v: Any, depth: int = 0, seen: set[int] | None = None) -> bool:
    """What fc_codec.c is specified to encode (a Python model of it)."""
    seen = set() if seen is None else seen
    t = type(v)
    if v is None or t in (bool, float, bytes):
        return True
    if t is int:
        return -INT64 <= v < INT64
    if t is str:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if t not in (list, tuple, dict, set, frozenset) or depth >= MAX_DEPTH:
        return False
    if t in MUTABLE:
        if id(v) in seen:
            return False
        seen.add(id(v))
    items = [x for kv in v.items() for x in kv] if t is dict else list(v)
    return all(codec_takes(x, depth + 1, seen) for x in items)


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
atoms = st.none() | st.booleans() | ints | floats | texts | st.binary(max_size=40)
hashables = st.recursive(
    atoms,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
values = st.recursive(
    atoms,
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


def test_nesting_to_32_is_taken_deeper_is_not() -> None:
    def nest(n: int) -> list:
        v: list = []
        for _ in range(n - 1):
            v = [v]
        return v

    assert fc._codec_encode(nest(MAX_DEPTH)) is not None
    assert fc._codec_encode(nest(MAX_DEPTH + 1)) is None


class ListSub(list):
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
        lambda: [decimal.Decimal("1.5")],
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
import random, sys
from django_fastcache import _fastcache as fc
rng = random.Random(int(sys.argv[1]))
seeds = [
    {"id": 7, "name": "alice", "tags": ["a", "b"], "score": 1.5, "raw": b"\\x00\\xff"},
    [list(range(40)), (None, True, False), {1, 2, 3}, frozenset({"x", (1, 2)})],
    {("k", 1): {"deep": [[[{"é": "😀"}]]]}, -(2**63): 2**63 - 1, 0.0: -0.0},
    ["x" * 200, "y" * 7, "", b"", ()],
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
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        outcome = type(exc).__name__
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
print(sorted(outcomes.items()))
"""


def test_fuzzed_payloads_raise_and_never_crash() -> None:
    proc = subprocess.run(
        [sys.executable, "-P", "-c", textwrap.dedent(FUZZ), "1234", "20000"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=child_pythonpath()),
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "ValueError" in proc.stdout
