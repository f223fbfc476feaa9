"""SharedMemoryCache segments that are damaged, or that others hold or link.

A segment is a file any process of its user can write.  Damage to it (one
bad word: a bit flip, a stray write) must never kill the processes that map
it: the table checks every offset it follows, repairs a damaged table by
dropping its entries (counted in stats()["repairs"] and reported with a
RuntimeWarning naming the file), and refuses, with an ImproperlyConfigured
naming the file and saying how to remove it, a segment whose identity
(magic, layout version, size) is damaged.  Values are not checksummed: a
damaged value's bytes give another value, or the error decoding them.

Opening never waits without end for another process's lock on the file,
and refuses a file with a second hard link, before taking any lock.

Every scenario that could crash or hang runs in a child interpreter with a
deadline, so a crash fails the test as a signal exit status rather than
killing pytest, and a hang fails it at the deadline.  This file is also that
child: ``python test_segment_damage.py fuzz|read|scenario|hold JSON``.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

MiB = 2**20
SHM_DIR_ENV = "DJANGO_FASTCACHE_SHM_DIR"

# Offsets in a segment (csrc/fc_shm.h: fc_shm_header; fc_table.h: fc_header).
HDR_SIZE = 16  # u64 size
HDR_LAYOUT = 56  # u64 table, buckets, nbuckets, arena_start, arena_end
LOCK_AT, LOCK_END = 16, 56  # the table header's mutex, relative to the table

DAMAGED_WARNING = "was found damaged and has been reset"


def read_layout(path: str) -> dict[str, int]:
    with open(path, "rb") as f:
        head = f.read(96)
    names = ("table", "buckets", "nbuckets", "arena_start", "arena_end")
    layout = dict(zip(names, struct.unpack_from("<5Q", head, HDR_LAYOUT), strict=True))
    layout["size"] = os.path.getsize(path)
    return layout


def write_word(path: str, at: int, value: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<Q", value & (2**64 - 1)), at)
    finally:
        os.close(fd)


def read_word(path: str, at: int) -> int:
    with open(path, "rb") as f:
        f.seek(at)
        return struct.unpack("<Q", f.read(8))[0]


# --------------------------------------------------------------------------
# The child: Django set up, a cache, and one scenario.


def setup_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, USE_TZ=True, SECRET_KEY="x", INSTALLED_APPS=[])
        django.setup()


def open_cache(location: str, **options):
    from django_fastcache import SharedMemoryCache

    options.setdefault("MAX_BYTES", MiB)
    return SharedMemoryCache(location, {"OPTIONS": options})


def forget(location: str) -> None:
    """Drops this process's mapping from the registry (as a restart would)."""
    from django_fastcache import backend

    with backend._stores_lock:
        backend._segments.pop(backend.segment_path(location), None)


def value_for(i: int, rng: random.Random):
    kind = i % 5
    if kind == 0:
        return i * 7
    if kind == 1:
        return b"b" * rng.randrange(0, 300)
    if kind == 2:
        return f"s{i}" * rng.randrange(1, 20)
    if kind == 3:
        return {"n": i, "l": list(range(i % 13))}
    return None if i % 2 else True


# What a call may raise on a damaged segment.  ImproperlyConfigured (from
# opening) and the RuntimeWarning (a repair) are checked for their text
# where they are caught.  Keys and values are not checksummed: a damaged
# value (or a damaged key, listed) may fail to decode.
DECODE_ERRORS = (UnicodeDecodeError, pickle.UnpicklingError, EOFError, ValueError)
DECODING_CALLS = {"get", "get_many", "get_or_set", "raw", "incr", "keys"}


class Outcomes:
    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def call(self, name: str, fn, *args, **kwargs):
        """fn(*args) with warnings recorded: it works, or raises what its
        name allows; every warning is the repair warning naming the file."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified here
            if name == "incr" and type(exc) is ValueError and "not found" in str(exc):
                self.count("incr of a missing key")
            elif name in DECODING_CALLS and isinstance(exc, DECODE_ERRORS):
                self.count(f"{name}: {type(exc).__name__} decoding")
            else:
                self.problems.append(f"{name}: {exc!r}")
            return None
        for w in caught:
            text = str(w.message)
            ours = DAMAGED_WARNING in text and self.path in text
            if w.category is RuntimeWarning and ours:
                self.count("repair warnings")
            else:
                kind = w.category.__name__
                self.problems.append(f"{name}: unexpected warning {kind}: {text}")
        return result


def exercise(cache, out: Outcomes, rng: random.Random, nkeys: int) -> None:
    """Every operation, on keys that exist and keys that do not."""
    store = cache._fc.store
    for _ in range(120):
        k = f"k{rng.randrange(nkeys + 20)}"
        op = rng.randrange(16)
        if op == 0:
            out.call("get", cache.get, k)
        elif op == 1:
            out.call("set", cache.set, k, value_for(rng.randrange(1000), rng))
        elif op == 2:
            out.call("add", cache.add, k, rng.randrange(100))
        elif op == 3:
            out.call("delete", cache.delete, k)
        elif op == 4:
            out.call("set", cache.set, k, rng.randrange(100))
            out.call("incr", cache.incr, k, 3)
        elif op == 5:
            out.call("touch", cache.touch, k, 100)
        elif op == 6:
            out.call("has_key", cache.has_key, k)
        elif op == 7:
            out.call("get_many", cache.get_many, [k, f"k{rng.randrange(nkeys)}"])
        elif op == 8:
            other = f"k{rng.randrange(nkeys)}"
            out.call("set_many", cache.set_many, {k: 1, other: b"x"})
        elif op == 9:
            out.call("delete_many", cache.delete_many, [k])
        elif op == 10:
            out.call("keys", lambda: list(cache._cache))
            out.call("len", lambda: len(cache._cache))
        elif op == 11:
            out.call("raw", cache._cache.get, f":1:{k}")
            out.call("expiry", cache._expire_info.get, f":1:{k}")
        elif op == 12:
            out.call("stats", cache.stats)
            out.call("check", store.check)
        elif op == 13:
            out.call("get_or_set", cache.get_or_set, k, 5)
        elif op == 14 and rng.randrange(8) == 0:
            out.call("clear", cache.clear)
        else:
            out.call("get", cache.get, f"k{rng.randrange(nkeys)}")


def damage(path: str, rng: random.Random, live_offsets: list[int]) -> str:
    """One to three words of the segment damaged; returns where, as text."""
    lay = read_layout(path)
    table = lay["table"]
    regions = [
        ("buckets", lay["buckets"], lay["buckets"] + 8 * lay["nbuckets"]),
        ("arena", lay["arena_start"], lay["arena_end"]),
        ("table header", table + LOCK_END, lay["buckets"]),
        ("segment header", 0, table),
    ]
    done = []
    for _ in range(rng.randrange(1, 4)):
        name, lo, hi = rng.choices(regions, weights=(30, 50, 10, 10))[0]
        at = (lo + rng.randrange(hi - lo)) & ~7
        old = read_word(path, at)
        how = rng.randrange(4)
        if how == 0:
            new = old ^ (1 << rng.randrange(64))
        elif how == 1:
            new = rng.getrandbits(64)
        elif how == 2:
            arena = lay["arena_end"] - lay["arena_start"]
            new = (lay["arena_start"] + rng.randrange(arena)) & ~15
        else:
            new = rng.choice(live_offsets) if live_offsets else 0
        write_word(path, at, new)
        done.append(f"{name}@{at}:{old:#x}->{new:#x}")
    return " ".join(done)


def entry_offsets(path: str) -> list[int]:
    """Some offsets of live entries: the heads of the bucket chains."""
    lay = read_layout(path)
    with open(path, "rb") as f:
        f.seek(lay["buckets"])
        slots = struct.unpack(f"<{lay['nbuckets']}Q", f.read(8 * lay["nbuckets"]))
    return [s for s in slots if s][:64]


def fuzz(cfg: dict) -> int:
    """cfg: location, seed, trials.  Prints one JSON line of counts."""
    from django.core.exceptions import ImproperlyConfigured

    from django_fastcache import remove_segment, segment_path

    location = cfg["location"]
    path = segment_path(location)
    rng = random.Random(cfg["seed"])
    out = Outcomes(path)
    for trial in range(cfg["trials"]):
        remove_segment(location)
        options = {"MAX_ENTRIES": rng.choice([10**6, 10**6, 60]),
                   "CULL_FREQUENCY": rng.choice([3, 0])}
        cache = open_cache(location, **options)
        nkeys = rng.randrange(20, 400)
        for i in range(nkeys):
            cache.set(f"k{i}", value_for(i, rng), rng.choice([None, 300, -1]))
        for i in range(0, nkeys, 5):
            cache.delete(f"k{i}")
        for _ in range(nkeys // 2):
            cache.get(f"k{rng.randrange(nkeys)}")
        where = damage(path, rng, entry_offsets(path))
        # Last words before anything touches the damage: a crash or hang
        # names its trial.
        print(f"trial {trial}: {where}", file=sys.stderr, flush=True)
        warned_before = out.counts.get("repair warnings", 0)
        # (read after the damage, which may have hit the counter itself)
        repairs_before = cache.stats().get("repairs", 0)
        caches = [cache]
        reopen_first = rng.randrange(2) == 0
        for step in range(2):
            if step == int(reopen_first):
                exercise(cache, out, rng, nkeys)
            else:
                forget(location)
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        other = open_cache(location, **options)
                except ImproperlyConfigured as exc:
                    text = str(exc)
                    if path in text and "remove_segment" in text:
                        out.count("reopen refused")
                    else:
                        out.problems.append(f"reopen refused unclearly: {text}")
                    continue
                for w in caught:
                    if DAMAGED_WARNING in str(w.message) and path in str(w.message):
                        out.count("repair warnings")
                    else:
                        out.problems.append(f"reopen warned: {w.message}")
                caches.append(other)
                exercise(other, out, rng, nkeys)
        # A repair made is reported by the next call of its process, here.
        stats = [out.call("stats", c.stats) or {} for c in caches]
        repaired = any(st.get("repairs", 0) != repairs_before for st in stats)
        for c in caches:
            out.call("set", c.set, "last", 1)
        if repaired and out.counts.get("repair warnings", 0) == warned_before:
            out.problems.append(f"trial {trial}: repaired ({where}) but never warned")
        if repaired:
            out.count("trials with a repair")
        # A clear makes the table whole again, for every mapping.
        for c in caches:
            out.call("clear", c.clear)
            rc = c._fc.store.check()
            if rc != 0:
                out.problems.append(f"trial {trial}: check {rc} after clear ({where})")
            c.set("k", 1)
            if c.get("k") != 1:
                out.problems.append(f"trial {trial}: a set after clear lost ({where})")
        out.count("trials")
        if out.problems:
            break
    remove_segment(location)
    print(json.dumps({"counts": out.counts, "problems": out.problems[:20]}))
    return 0


def scenario_live() -> None:
    from django_fastcache import segment_path

    cache = open_cache("live")
    for i in range(200):
        cache.set(f"k{i}", i)
    path = segment_path("live")
    lay = read_layout(path)
    # Every chain head points into the segment header: the next lookup of any
    # key meets it, with or without the lock.
    for i in range(lay["nbuckets"]):
        at = lay["buckets"] + 8 * i
        if read_word(path, at):
            write_word(path, at, 4096 + 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get("k5") is None  # found damaged, repaired: a miss
        try:
            cache.get("k6")  # the next call reports it
            raise AssertionError("no RuntimeWarning")
        except RuntimeWarning as exc:
            text = str(exc)
        assert DAMAGED_WARNING in text and path in text, text
        assert "remove_segment(LOCATION)" in text, text
        assert cache.get("k6") is None
        cache.set("k6", 6)
        assert cache.get("k6") == 6
    assert cache.stats()["repairs"] == 1
    assert cache._fc.store.check() == 0


def scenario_links() -> None:
    from django_fastcache import segment_path

    cache = open_cache("links")
    for i in range(100):
        cache.set(f"k{i}", i)
    path = segment_path("links")
    lay = read_layout(path)
    root_next = lay["table"] + 208  # fc_header.root: prev, next
    write_word(path, root_next, 0x7FFF_FFFF_FFF0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(cache._cache) == []  # iteration met it: repaired, empty
        cache.set("a", 1)
        free_heads = 192  # fc_shm_header.free_heads[496]: 16-aligned, never a block
        for c in range(496):
            write_word(path, free_heads + 8 * c, lay["arena_start"] + 16 * (c + 1))
        cache.set("b", b"x" * 5000)  # the allocator meets it
        cache.set("c", 3)
        assert cache.get("c") == 3
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all(DAMAGED_WARNING in m for m in messages), messages
    assert cache.stats()["repairs"] == 2
    assert cache._fc.store.check() == 0


def scenario(cfg: dict) -> int:
    """Runs scenario_<name>, which asserts what it expects."""
    globals()["scenario_" + cfg["name"]]()
    print("ok")
    return 0


def read(cfg: dict) -> int:
    """Opens the segment, gets every key and runs a few writes; one JSON line."""
    location = cfg["location"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = open_cache(location)
        values = {f"k{i}": cache.get(f"k{i}") for i in range(cfg["keys"])}
        cache.set("after", "works")
        after = cache.get("after")
    stats = cache.stats()
    print(json.dumps({
        "found": sum(1 for i, v in enumerate(values.values()) if v == i),
        "wrong": sum(1 for i, v in enumerate(values.values()) if v not in (None, i)),
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "repairs": stats.get("repairs"),
        "check": cache._fc.store.check(),
        "after": after,
    }))
    return 0


def hold(cfg: dict) -> int:
    """Holds an exclusive flock on the file until stdin closes."""
    import fcntl

    fd = os.open(cfg["path"], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.read()
    return 0


def main(argv: list[str]) -> int:
    setup_django()
    cfg = json.loads(argv[2])
    signal.alarm(cfg.get("watchdog", 600))
    modes = {"fuzz": fuzz, "read": read, "hold": hold, "scenario": scenario}
    return modes[argv[1]](cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))


# --------------------------------------------------------------------------
# The tests

import pytest  # noqa: E402
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON  # noqa: E402

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from fc_helpers import child_pythonpath  # noqa: E402

from django_fastcache import backend, remove_segment, segment_path  # noqa: E402

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="SharedMemoryCache needs Linux"
)


@pytest.fixture
def shm(tmp_path, monkeypatch):
    """A private segment directory; this process's stores of it forgotten after."""
    monkeypatch.setenv(SHM_DIR_ENV, str(tmp_path))
    yield tmp_path
    with backend._stores_lock:
        prefix = str(tmp_path) + os.sep
        for path in [p for p in backend._segments if p.startswith(prefix)]:
            del backend._segments[path]


def child(mode: str, cfg: dict, timeout: float, **popen):
    """Runs this file as a child in its own session; (returncode, out, err).
    A child past its deadline is killed with its whole group and fails the test."""
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), mode, json.dumps(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        start_new_session=True, **popen,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{mode} child hung (> {timeout} s); last words:\n{err[-3000:]}")
    return proc.returncode, out, err


def assert_no_signal(rc: int, err: str) -> None:
    assert rc >= 0, f"child killed by signal {-rc}; its last words:\n{err[-3000:]}"
    assert rc == 0, f"child failed (exit {rc}):\n{err[-3000:]}"


def filled(location: str, n: int = 300):
    cache = open_cache(location)
    for i in range(n):
        cache.set(f"k{i}", i)
    return cache


def test_a_damaged_bucket_offset_is_repaired_and_kills_no_process(shm):
    """The reported crash: one bad bucket offset made every process that
    looked up a key of that bucket die (SIGSEGV), after every restart."""
    filled("bkt")
    forget("bkt")
    path = segment_path("bkt")
    lay = read_layout(path)
    slots = [lay["buckets"] + 8 * i for i in range(lay["nbuckets"])]
    used = [at for at in slots if read_word(path, at)]
    assert used
    for at in used[:3]:  # outside the file, misaligned, and in the headers
        write_word(path, at, read_word(path, at) ^ (1 << 40))
    write_word(path, used[3], read_word(path, used[3]) | 3)
    write_word(path, used[4], 64)
    for attempt in range(2):  # and again after a "restart"
        rc, out, err = child("read", {"location": "bkt", "keys": 300}, timeout=120)
        assert_no_signal(rc, err)
        res = json.loads(out.splitlines()[-1])
        assert res["wrong"] == 0 and res["check"] == 0 and res["after"] == "works"
        if attempt == 0:
            assert res["repairs"] == 1 and res["found"] == 0
            assert len(res["warnings"]) == 1, res["warnings"]
            assert DAMAGED_WARNING in res["warnings"][0] and path in res["warnings"][0]
            assert "remove_segment" in res["warnings"][0]
            assert res["warnings"][0].startswith("RuntimeWarning")
        else:
            assert res["warnings"] == [] and res["repairs"] == 1


def test_damage_met_by_a_process_using_the_segment_is_repaired(shm):
    """Damage appearing under a process that has the segment mapped is found
    by the operation that follows it, repaired, and reported by the next
    call of that process; the cache keeps working."""
    rc, out, err = child("scenario", {"name": "live"}, timeout=120)
    assert_no_signal(rc, err)


def test_damage_in_the_lru_list_and_the_allocator_is_repaired(shm):
    """Links followed only by iteration, culling and eviction (the LRU root),
    and by the allocator (free-list heads)."""
    rc, out, err = child("scenario", {"name": "links"}, timeout=120)
    assert_no_signal(rc, err)


def test_a_segment_with_a_damaged_identity_is_refused_clearly(shm):
    filled("ident", 10)
    forget("ident")
    path = segment_path("ident")
    write_word(path, HDR_SIZE, read_word(path, HDR_SIZE) ^ (1 << 33))
    with pytest.raises(ImproperlyConfigured) as info:
        open_cache("ident")
    text = str(info.value)
    assert path in text and "does not match its size" in text
    assert "remove_segment(LOCATION)" in text
    assert remove_segment("ident")
    assert open_cache("ident").get("k1") is None  # a fresh segment


def test_a_segment_with_a_damaged_layout_field_is_put_right(shm):
    """The layout follows from the size: a damaged copy of it in the header
    is rewritten (and the table repaired) instead of refused."""
    filled("lay", 10)
    forget("lay")
    path = segment_path("lay")
    lay = read_layout(path)
    write_word(path, HDR_LAYOUT + 8, lay["buckets"] + 4096)  # buckets
    write_word(path, lay["table"] + 224, 3)  # the table header's nbuckets
    with pytest.warns(RuntimeWarning, match=DAMAGED_WARNING):
        cache = open_cache("lay")
    assert read_layout(path) == lay
    assert cache.get("k1") is None and cache.stats()["repairs"] == 1
    cache.set("k1", 1)
    forget("lay")
    assert open_cache("lay").get("k1") == 1
    assert open_cache("lay")._fc.store.check() == 0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_damage_never_kills_a_process(shm, seed):
    """Random words of a live segment damaged, 100 trials per seed: no call
    ever dies by a signal or hangs; each works, or raises what its contract
    allows (a repair warning naming the file, a refused reopen naming it and
    remove_segment, an error decoding a damaged value); a repair is always
    reported; a clear always leaves a whole table."""
    trials = 100
    rc, out, err = child(
        "fuzz",
        {"location": f"fz{seed}", "seed": seed, "trials": trials},
        timeout=600,
    )
    assert_no_signal(rc, err)
    res = json.loads(out.splitlines()[-1])
    assert res["problems"] == []
    counts = res["counts"]
    assert counts["trials"] == trials
    assert counts.get("trials with a repair", 0) >= trials // 10, counts


# --------------------------------------------------------------------------
# Opening: who owns the file, and how long to wait for it (item 11)


def test_a_segment_with_a_second_hard_link_is_refused(shm):
    filled("ln", 5)
    forget("ln")
    path = segment_path("ln")
    other = shm / "elsewhere"
    os.link(path, other)
    before = other.read_bytes()
    with pytest.raises(ImproperlyConfigured) as info:
        open_cache("ln")
    assert path in str(info.value) and "2 hard links" in str(info.value)
    assert other.read_bytes() == before
    os.unlink(other)
    assert open_cache("ln").get("k1") == 1


def test_a_file_planted_with_a_second_link_to_a_file_of_ours_is_untouched(shm):
    """The attack the link check stops: a name for another file of this user
    (mode 0600, not a segment) put at the segment's path."""
    precious = shm / "precious"
    precious.write_bytes(b"\0" * MiB)  # all zeros: would look unfinished
    os.chmod(precious, 0o600)
    os.link(precious, segment_path("plant"))
    with pytest.raises(ImproperlyConfigured, match="hard links"):
        open_cache("plant")
    assert precious.read_bytes() == b"\0" * MiB


def start_holder(path: str):
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "hold", json.dumps({"path": path})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop_holder(proc) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)
    proc.stdout.close()


def open_in_child_code(location: str) -> str:
    """A child that opens the segment and prints [outcome, seconds taken]."""
    return (
        "import json, time\n"
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(SECRET_KEY='x')\n"
        "django.setup()\n"
        "from django.core.exceptions import ImproperlyConfigured\n"
        "from django_fastcache import SharedMemoryCache\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        f"    SharedMemoryCache({location!r}, {{'OPTIONS': {{'MAX_BYTES': {MiB}}}}})\n"
        "    res = 'opened'\n"
        "except ImproperlyConfigured as exc:\n"
        "    res = str(exc)\n"
        "print(json.dumps([res, time.monotonic() - t0]))\n"
    )


def open_in_child(location: str, timeout: float) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", open_in_child_code(location)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"opening a segment another process holds hung (> {timeout} s)")
    assert proc.returncode == 0, err[-3000:]
    res, took = json.loads(out.splitlines()[-1])
    return res, took


def test_a_segment_locked_by_another_process_fails_in_bounded_time(shm):
    filled("held", 5)
    forget("held")
    path = segment_path("held")
    holder = start_holder(path)
    try:
        res, took = open_in_child("held", timeout=60)
    finally:
        stop_holder(holder)
    assert path in res and "stayed locked" in res and "remove_segment" in res, res
    assert 9 <= took < 30, took
    assert open_cache("held").get("k1") == 1  # free again: opens at once


def test_a_lock_released_while_waiting_is_taken(shm):
    filled("brief", 5)
    forget("brief")
    holder = start_holder(segment_path("brief"))
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", open_in_child_code("brief")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        start_new_session=True,
    )
    time.sleep(1.5)
    stop_holder(holder)
    out, err = proc.communicate(timeout=60)
    assert json.loads(out.splitlines()[-1])[0] == "opened", err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_a_foreign_segment_held_locked_is_refused_at_once(shm):
    """Another user's file at the path, held under flock by its owner: refused
    for its owner before any lock is waited for (the site used to hang)."""
    filled("foreign", 5)
    forget("foreign")
    path = segment_path("foreign")
    os.chown(path, 65534, 65534)
    holder = start_holder(path)
    try:
        res, took = open_in_child("foreign", timeout=60)
    finally:
        stop_holder(holder)
    assert path in res and "of this user" in res, res
    assert took < 5, took
