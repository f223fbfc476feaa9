"""SharedMemoryCache across processes: visibility, atomicity, crash recovery,
segment security and life cycle, fork, and LocMemCache semantics.

Every test points DJANGO_FASTCACHE_SHM_DIR at its own tmp_path and uses a
unique LOCATION, so nothing here touches /dev/shm or another test.  Other
processes are either "peers" (shared_worker.py serve, driven one request at a
time over a pipe) or one-shot scenarios (shared_worker.py killer/fork_*); all
run in their own session with hard deadlines, and are SIGKILLed (process
group and all) when a deadline passes, which fails the test.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import pickle
import random
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from unittest import mock

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import ImproperlyConfigured

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from django.core.cache.backends import locmem  # noqa: E402
from django.core.cache.backends.locmem import LocMemCache  # noqa: E402

import django_fastcache.backend as backend  # noqa: E402
from django_fastcache import (  # noqa: E402
    FastCache,
    SharedMemoryCache,
    remove_segment,
    segment_path,
)

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "shared_worker.py")
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from fc_helpers import child_pythonpath  # noqa: E402
from shared_worker import make_value, value_problem  # noqa: E402

MiB = 2**20

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform != "linux",
    reason="SharedMemoryCache tests need Linux (robust process-shared mutexes, fork)",
)


# --------------------------------------------------------------------------
# Infrastructure


class PeerError(Exception):
    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class Peer:
    """Another process with the same segment directory, one call at a time."""

    def __init__(self, env: dict, errfile: str) -> None:
        self.errfile = errfile
        with open(errfile, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-W", "error", WORKER, "serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        self.buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        with open(self.errfile, encoding="utf-8", errors="replace") as f:
            return f.read()[-3000:]

    def send(self, name: str, *args, **kwargs) -> None:
        line = base64.b64encode(pickle.dumps((name, args, kwargs))) + b"\n"
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 30.0):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(
                    f"peer {self.pid} did not answer within {timeout} s "
                    f"(hang?); stderr:\n{self.stderr()}"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.kill()
                    pytest.fail(f"peer {self.pid} died; stderr:\n{self.stderr()}")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        status, *payload = pickle.loads(base64.b64decode(line))
        if status == "err":
            raise PeerError(*payload)
        return payload[0]

    def call(self, name: str, *args, timeout: float = 30.0, **kwargs):
        self.send(name, *args, **kwargs)
        return self.recv(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def close(self) -> None:
        """Ends the peer normally (EOF), killing it if it does not go."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


class Shm:
    """A private segment directory, unique LOCATIONs and peers for one test."""

    def __init__(self, tmp_path) -> None:
        self.dir = str(tmp_path)
        self.tmp_path = tmp_path
        self.env = dict(os.environ)
        self.env[backend.SHM_DIR_ENV] = self.dir
        self.env["PYTHONPATH"] = child_pythonpath()
        self.peers: list[Peer] = []
        self.count = itertools.count()

    def loc(self, tag: str = "t") -> str:
        return f"{tag}-{uuid.uuid4().hex[:12]}"

    def cache(self, location: str, **options) -> SharedMemoryCache:
        options.setdefault("MAX_BYTES", MiB)
        return SharedMemoryCache(location, {"OPTIONS": options})

    def peer(self, location: str | None = None, **options) -> Peer:
        p = Peer(self.env, str(self.tmp_path / f"peer{next(self.count)}.err"))
        self.peers.append(p)
        if location is not None:
            options.setdefault("MAX_BYTES", MiB)
            p.call("!open", location, {"OPTIONS": options}, timeout=60)
        return p

    def run(self, mode: str, cfg: dict, timeout: float) -> dict:
        """Runs a one-shot scenario; kills its whole process group when late."""
        cmd = [sys.executable, "-W", "error", WORKER, mode, json.dumps(cfg)]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{mode} scenario hung (> {timeout} s):\n{out}\n{err[-4000:]}")
        finally:
            try:  # its forked children are in its process group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert proc.returncode == 0, (proc.returncode, out, err[-4000:])
        lines = out.strip().splitlines()
        assert lines, (out, err)
        return json.loads(lines[-1])

    def cleanup(self) -> None:
        for p in self.peers:
            p.close()
        with backend._stores_lock:
            mine = [p for p in backend._segments if p.startswith(self.dir + os.sep)]
            for path in mine:
                del backend._segments[path]
        for name in os.listdir(self.dir):  # segments are up to 64 MiB each
            if name.startswith("django_fastcache."):
                path = os.path.join(self.dir, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    os.unlink(path)


@pytest.fixture
def shm(tmp_path, monkeypatch):
    monkeypatch.setenv(backend.SHM_DIR_ENV, str(tmp_path))
    s = Shm(tmp_path)
    yield s
    s.cleanup()


def made(key, version=1):
    return f":{version}:{key}"


def forget_store(location: str) -> None:
    """Drops this process's mapping of a segment without deleting the file,
    as if this process had restarted."""
    with backend._stores_lock:
        backend._segments.pop(segment_path(location), None)


# --------------------------------------------------------------------------
# 1. Visibility


def test_set_get_delete_clear_are_seen_by_another_process(shm):
    loc = shm.loc()
    a = shm.cache(loc)
    b = shm.peer(loc)
    assert os.path.exists(
        os.path.join(shm.dir, f"django_fastcache.{os.geteuid()}.{loc}")
    )

    a.set("a", {"x": [1, 2.5, "three"]})
    assert b.call("get", "a") == {"x": [1, 2.5, "three"]}
    assert b.call("set", "b", (1, "two")) is None
    assert a.get("b") == (1, "two")
    assert b.call("add", "a", "other") is False
    assert a.add("c", 3) is True
    assert b.call("has_key", "c") is True

    assert b.call("delete", "a") is True
    assert a.get("a", "missing") == "missing"
    assert a.delete("a") is False

    assert b.call("set_many", {"m1": 1, "m2": None, "m3": b"\x00bytes"}) == []
    assert a.get_many(["m1", "m2", "m3", "nope"]) == {
        "m1": 1,
        "m2": None,
        "m3": b"\x00bytes",
    }
    a.delete_many(["m1", "m3"])
    assert b.call("get_many", ["m1", "m2", "m3"]) == {"m2": None}
    assert b.call("!keys") == list(a._cache)

    assert len(a._cache) > 0
    b.call("clear")
    assert list(a._cache) == []
    assert a.get_many(["b", "c", "m2"]) == {}
    a.set("after-clear", 1)
    assert b.call("get", "after-clear") == 1
    assert a._fc.store.check() == 0
    assert b.call("!check") == 0


def test_incr_version_expiry_and_touch_are_seen_by_another_process(shm):
    loc = shm.loc()
    a = shm.cache(loc)
    b = shm.peer(loc)

    a.set("v", "value")
    assert b.call("incr_version", "v") == 2
    assert a.get("v") is None
    assert a.get("v", version=2) == "value"
    assert a.decr_version("v", version=2) == 1
    assert b.call("get", "v") == "value"
    assert b.call("get", "v", version=2) is None
    with pytest.raises(PeerError) as info:
        b.call("incr_version", "never-set")
    assert info.value.type_name == "ValueError"

    now = time.time()
    a.set("short", 1, timeout=0.5)
    assert b.call("get", "short") == 1
    a.set("long", 2, timeout=300)
    a.set("forever", 3, timeout=None)
    a.set("zero", 4, timeout=0)
    a.set("negative", 5, timeout=-10)
    expiry = a._expire_info[made("long")]
    assert now + 299 < expiry < now + 301
    # the absolute expiry is shared, bit for bit
    assert b.call("!expire_info", made("long")) == expiry
    assert b.call("!expire_info", made("forever")) is None
    assert b.call("get", "zero") is None
    assert b.call("get", "negative") is None
    assert b.call("add", "zero", 40) is True
    assert a.get("zero") == 40

    time.sleep(max(0.0, now + 0.55 - time.time()))
    assert b.call("has_key", "short") is False
    assert a.get("short") is None
    assert b.call("touch", "short", 100) is False
    assert b.call("get", "long") == 2
    assert b.call("touch", "long", 1000) is True
    new_expiry = a._expire_info[made("long")]
    assert new_expiry > expiry + 600
    assert b.call("touch", "forever", 5) is True
    assert a._expire_info[made("forever")] is not None
    assert b.call("touch", "forever", None) is True
    assert a._expire_info[made("forever")] is None


def test_stats_and_lock_are_shared_across_processes(shm):
    loc = shm.loc()
    a = shm.cache(loc)
    b = shm.peer(loc)
    a.reset_stats()
    a.set("x", 1)
    assert b.call("get", "x") == 1
    assert b.call("get", "nope") is None
    stats = a.stats()
    counts = [stats[k] for k in ("sets", "hits", "misses", "entries")]
    assert counts == [1, 1, 1, 1], stats
    assert b.call("!stats") == stats
    b.call("reset_stats")
    assert a.stats()["hits"] == 0 and a.stats()["entries"] == 1

    # the table lock excludes the other process: a set waits for it
    assert b.call("!acquire") is True
    done = threading.Event()
    t = threading.Thread(target=lambda: (a.set("x", 2), done.set()), daemon=True)
    t.start()
    assert not done.wait(0.3)
    b.call("!release")
    assert done.wait(10), "set did not proceed after the other process released"
    t.join(10)
    assert b.call("get", "x") == 2


@pytest.mark.parametrize("max_bytes", [MiB, 8 * MiB], ids=["one-ring", "ten-rings"])
def test_lru_culling_across_processes_matches_one_locmem_process(shm, max_bytes):
    """Two processes interleave operations on a table with MAX_ENTRIES=6; the
    keys left, and their LRU order, are what one LocMemCache gets from the
    same sequence.  With one ring only the first reader gets without the
    lock; with ten, both do, and their logged uses must order the same."""
    loc = shm.loc()
    a = shm.cache(loc, MAX_ENTRIES=6, CULL_FREQUENCY=3, MAX_BYTES=max_bytes)
    b = shm.peer(loc, MAX_ENTRIES=6, CULL_FREQUENCY=3, MAX_BYTES=max_bytes)
    ref = LocMemCache(
        f"ref-{loc}", {"OPTIONS": {"MAX_ENTRIES": 6, "CULL_FREQUENCY": 3}}
    )
    rnd = random.Random(7)
    try:
        for step in range(150):
            key = f"k{rnd.randrange(12)}"
            op = rnd.choice(
                ["set", "set", "set", "get", "add", "incr", "delete", "touch"]
            )
            args = {
                "set": (key, step),
                "add": (key, step),
                "get": (key,),
                "incr": (key, 1),
                "delete": (key,),
                "touch": (key, 60),
            }[op]
            try:
                expected = ("ok", getattr(ref, op)(*args))
            except ValueError as exc:
                expected = ("ValueError", str(exc))
            if step % 2:
                try:
                    got = ("ok", b.call(op, *args))
                except PeerError as exc:
                    got = (exc.type_name, exc.message)
            else:
                try:
                    got = ("ok", getattr(a, op)(*args))
                except ValueError as exc:
                    got = ("ValueError", str(exc))
            assert got == expected, (step, op, args)
            assert list(a._cache) == list(ref._cache), (step, op, args)
        assert b.call("!keys") == list(ref._cache)
        assert {k: a.get(k[3:]) for k in list(a._cache)} == {
            k: ref.get(k[3:]) for k in list(ref._cache)
        }
    finally:
        ref.clear()
        for d in (locmem._caches, locmem._expire_info, locmem._locks):
            d.pop(f"ref-{loc}", None)


# --------------------------------------------------------------------------
# 2. Atomicity across processes


def start_peers(shm, loc, n=4, **options):
    peers = [shm.peer() for _ in range(n)]
    options.setdefault("MAX_BYTES", MiB)
    for p in peers:  # start them all, then wait: imports overlap
        p.send("!open", loc, {"OPTIONS": options})
    for p in peers:
        p.recv(60)
    return peers


@pytest.mark.parametrize(
    "initial, deltas, n",
    [
        (0, [1, 1, 1, 1], 3000),  # in place, under the lock
        (0.0, [1.0, 1.0, 1.0, 1.0], 1000),  # read / compute / compare-and-swap
        (0, [1, 1.0, 1, 1.0], 1000),  # both paths on the same key
    ],
    ids=["int", "float", "mixed"],
)
def test_concurrent_incr_is_exact(shm, initial, deltas, n):
    loc = shm.loc()
    a = shm.cache(loc)
    a.set("counter", initial)
    peers = start_peers(shm, loc)
    start_at = time.time() + 0.2
    for p, delta in zip(peers, deltas, strict=True):
        p.send("!incr_loop", "counter", delta, n, start_at)
    finals = [p.recv(60) for p in peers]
    total = initial + sum(d * n for d in deltas)
    assert a.get("counter") == total
    assert type(a.get("counter")) is type(total)
    # every process saw its own increments land: the last result it got is
    # at least its own count, and one of them saw the total
    assert all(f >= n for f in finals)
    assert max(finals) == total
    assert a._fc.store.check() == 0


def test_processes_racing_to_create_a_segment_share_one(shm):
    """Creation is serialised (flock): of 4 processes opening a LOCATION
    that does not exist yet at the same moment, one creates it and the
    others map that one; nobody initialises it again under another's feet."""
    peers = [shm.peer() for _ in range(4)]
    for p in peers:
        p.call("!pid", timeout=60)
    for _ in range(8):
        loc = shm.loc()
        start_at = time.time() + 0.1
        for wid, p in enumerate(peers):
            p.send("!open_at", loc, {"OPTIONS": {"MAX_BYTES": MiB}}, start_at)
            p.send("add", "first", wid)
            p.send("set", f"mine{wid}", wid)
        replies = [[p.recv(30) for _ in range(3)] for p in peers]  # open, add, set
        added = [r[1] for r in replies]
        assert added.count(True) == 1, added
        winner = added.index(True)
        for p in peers:
            assert p.call("get", "first") == winner
            assert p.call("get_many", [f"mine{w}" for w in range(4)]) == {
                f"mine{w}": w for w in range(4)
            }
        assert os.listdir(shm.dir).count(os.path.basename(segment_path(loc))) == 1


def test_concurrent_add_has_exactly_one_winner_per_key(shm):
    loc = shm.loc()
    a = shm.cache(loc, MAX_ENTRIES=10_000)
    peers = start_peers(shm, loc, MAX_ENTRIES=10_000)
    for round_ in range(5):
        keys = [f"r{round_}-{i}" for i in range(200)]
        start_at = time.time() + 0.15
        for wid, p in enumerate(peers):
            order = list(keys)
            if wid % 2:  # half in the same order, half shuffled
                random.Random(round_ * 10 + wid).shuffle(order)
            p.send("!add_race", order, wid, start_at)
        won = [set(p.recv(60)) for p in peers]
        assert sum(len(w) for w in won) == len(keys), [len(w) for w in won]
        assert set().union(*won) == set(keys)
        for wid, keys_won in enumerate(won):
            for key in keys_won:
                assert a.get(key) == wid, (key, wid)
    assert len(a._cache) == 1000
    assert a._fc.store.check() == 0


# --------------------------------------------------------------------------
# 3. Killed writers


def test_gets_without_the_lock_never_see_a_torn_value(shm):
    """Six readers (five with a ring of the 4 MiB segment's five, one on the
    locked path) get small values while two writers rewrite them in place
    with other lengths, delete, add, incr and clear: every value read is one
    that was written, and the hits are counted."""
    cfg = {"location": shm.loc(), "readers": 6, "writers": 2, "seconds": 3,
           "watchdog": 50}
    result = shm.run("torn_reads", cfg, timeout=60)
    assert result["statuses"] == ["ok"] * 8, result
    assert result["problems"] == [], result
    assert result["check"] == 0
    assert result["reads"] > 10_000, result
    assert result["hits"] > 1_000, result
    assert result["stats"]["hits"] >= result["hits"], result


def test_each_process_reads_through_a_ring_of_its_own(shm):
    loc = shm.loc()
    a = shm.cache(loc, MAX_BYTES=8 * MiB)  # ten rings
    a.set("k", "v")
    assert a.get("k") == "v"
    ring = a._fc.store._ring()
    assert ring >= 0
    b = shm.peer(loc, MAX_BYTES=8 * MiB)
    assert b.call("get", "k") == "v"
    other = b.call("!ring")
    assert other >= 0 and other != ring
    # a forked child never logs to its parent's ring
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ok = a.get("k") == "v" and a._fc.store._ring() not in (-1, ring, other)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"1"
    # a FastCache has none; a 1 MiB segment has one ring: the second
    # process to read there takes the lock, with the same results
    assert FastCache(f"private-{loc}", {})._fc.store._ring() == -1
    small = shm.loc()
    c = shm.cache(small)
    c.set("k", 1)
    assert c.get("k") == 1 and c._fc.store._ring() == 0
    d = shm.peer(small)
    assert d.call("get", "k") == 1 and d.call("!ring") == -1


def test_writers_killed_at_random_moments_never_leave_garbage(shm):
    """300 writers (some in pairs, some holding the table lock on purpose)
    are SIGKILLed at random moments while hammering a 1 MiB cache; after
    each kill the cache must answer at once, hold only values that were
    written, pass the table checker and report sane stats."""
    loc = shm.loc()
    cfg = {
        "location": loc,
        "iterations": 800,
        "seed": 20240601,
        "max_bytes": MiB,
        "max_entries": 40,
        "budget": 35,
        "watchdog": 55,
    }
    summary = shm.run("killer", cfg, timeout=60)
    assert summary["problems"] == []
    assert summary["iterations"] >= 300, summary  # a slow machine may do fewer
    assert summary["held_kills"] > 30, summary
    assert summary["pair_kills"] > 50, summary
    assert summary["nonempty_checks"] > 0, summary
    # and a process that was never part of it can use what is left
    c = shm.cache(loc, MAX_ENTRIES=40)
    assert c._fc.store.check() == 0
    for key in list(c._cache):
        value = c.get(key[3:])
        if value is not None:
            assert value_problem(key[3:], value) is None
    c.set("k0", make_value("k0", 1, 10))
    assert c.get("k0") == make_value("k0", 1, 10)


def test_peer_killed_holding_the_lock_is_recovered(shm):
    loc = shm.loc()
    a = shm.cache(loc)
    a.set("x", "before")
    b = shm.peer(loc)
    assert b.call("!acquire") is True
    assert a._lock.locked() is True
    assert a._lock.acquire(True, 0.2) is False  # really held by the other one
    os.killpg(b.pid, signal.SIGKILL)
    b.proc.wait(10)
    # the lock comes back at once; the dead holder may have been mid-write,
    # so the table was emptied rather than trusted
    assert a._lock.acquire(True, 5.0) is True
    a._lock.release()
    assert a._lock.locked() is False
    assert a.get("x") is None
    assert a._fc.store.check() == 0
    assert a.stats()["entries"] == 0
    a.set("x", "after")
    c = shm.peer(loc)
    assert c.call("get", "x") == "after"
    assert c.call("!check") == 0


def test_views_can_be_read_while_holding_the_lock(shm):
    """LocMemCache allows `with cache._lock: list(cache._cache)`."""
    ref = LocMemCache(f"ref-{shm.loc()}", {})
    with ref._lock:
        assert list(ref._cache) == []
    b = shm.peer(shm.loc())
    b.call("set", "x", 1)
    assert b.call("!acquire") is True
    b.send("!keys")
    answered = select.select([b.proc.stdout.fileno()], [], [], 3.0)[0] != []
    b.kill()
    assert answered, "list(cache._cache) under cache._lock deadlocked"


def test_lock_released_by_a_process_that_does_not_hold_it(shm):
    loc = shm.loc()
    a = shm.cache(loc)
    a.set("x", "before")
    b = shm.peer(loc)
    assert b.call("!acquire") is True
    try:
        with pytest.raises(RuntimeError):
            a._lock.release()
    finally:
        os.killpg(b.pid, signal.SIGKILL)
        b.proc.wait(10)
    # the holder died holding the lock: the table must be treated as dirty
    assert a.get("x") is None
    assert a._fc.store.check() == 0


# --------------------------------------------------------------------------
# 4. Security and life cycle


def test_segment_is_created_0600_even_with_a_permissive_umask(shm):
    loc = shm.loc()
    old = os.umask(0)
    try:
        shm.cache(loc)
    finally:
        os.umask(old)
    path = segment_path(loc)
    assert os.path.dirname(path) == shm.dir
    assert os.path.basename(path) == f"django_fastcache.{os.geteuid()}.{loc}"
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == os.geteuid()
    assert st.st_size == MiB


@pytest.mark.parametrize(
    "location",
    [
        "../x",
        "a/b",
        "/abs",
        ".hidden",
        "-dash",
        "_under",
        "x" * 101,
        "sp ace",
        "tab\t",
        "nul\x00",
        "é",
        "a\nb",
        5,
        b"bytes",
    ],
)
def test_bad_locations_are_refused(shm, location):
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}})
    assert os.listdir(shm.dir) == []


def test_location_names_and_default(shm):
    for location in ["x" * 100, "a", "A.b_c-9", "0"]:
        assert os.path.basename(segment_path(location)).endswith("." + location)
        SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}}).set("k", location)
    # an empty LOCATION (Django's default) is the segment named "default"
    assert segment_path("") == segment_path("default")
    c = SharedMemoryCache("", {"OPTIONS": {"MAX_BYTES": MiB}})
    assert c.get("k") is None
    c.set("k", "empty")
    assert (
        SharedMemoryCache("default", {"OPTIONS": {"MAX_BYTES": MiB}}).get("k")
        == "empty"
    )
    assert sorted(os.listdir(shm.dir)) == sorted(
        f"django_fastcache.{os.geteuid()}.{n}"
        for n in ["x" * 100, "a", "A.b_c-9", "0", "default"]
    )


def test_default_directory_without_the_env_var(monkeypatch):
    monkeypatch.delenv(backend.SHM_DIR_ENV, raising=False)
    assert segment_path("abc") == f"/dev/shm/django_fastcache.{os.geteuid()}.abc"
    monkeypatch.setenv(backend.SHM_DIR_ENV, "")
    assert segment_path("abc") == f"/dev/shm/django_fastcache.{os.geteuid()}.abc"


def _snapshot(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return (st.st_size, st.st_mode, st.st_mtime_ns, f.read())


@pytest.mark.parametrize(
    "content, message",
    [
        (os.urandom(MiB), "bad magic"),
        (b"FCSHMEM1" + os.urandom(MiB - 8), "incompatible"),
        (b"hello", "too small"),
        (b"\x01" * 4000, "too small"),
    ],
    ids=["random", "magic-only", "tiny", "small"],
)
def test_a_foreign_file_is_refused_and_untouched(shm, content, message):
    loc = shm.loc()
    path = segment_path(loc)
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, 0o600)
    before = _snapshot(path)
    with pytest.raises(ImproperlyConfigured) as info:
        shm.cache(loc)
    assert path in str(info.value)
    assert message in str(info.value)
    assert _snapshot(path) == before
    assert path not in backend._segments


def test_a_truncated_segment_is_refused(shm):
    loc = shm.loc()
    shm.cache(loc).set("k", 1)
    forget_store(loc)
    path = segment_path(loc)
    os.truncate(path, MiB // 2)
    before = _snapshot(path)
    with pytest.raises(ImproperlyConfigured, match="does not match its size"):
        shm.cache(loc)
    assert _snapshot(path) == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666, 0o610, 0o601])
def test_a_segment_open_to_others_is_refused(shm, mode):
    loc = shm.loc()
    shm.cache(loc).set("k", 1)
    forget_store(loc)
    path = segment_path(loc)
    os.chmod(path, mode)
    before = _snapshot(path)
    with pytest.raises(ImproperlyConfigured, match="mode 0600"):
        shm.cache(loc)
    assert _snapshot(path) == before
    os.chmod(path, 0o600)
    assert shm.cache(loc).get("k") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_a_segment_of_another_user_is_refused(shm):
    loc = shm.loc()
    shm.cache(loc).set("k", 1)
    forget_store(loc)
    path = segment_path(loc)
    os.chown(path, 65534, 65534)
    before = _snapshot(path)
    with pytest.raises(ImproperlyConfigured, match="of this user"):
        shm.cache(loc)
    assert _snapshot(path) == before


def test_symlinks_and_directories_are_refused(shm):
    loc = shm.loc()
    target = shm.tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    os.chmod(target, 0o600)
    os.symlink(target, segment_path(loc))
    with pytest.raises(ImproperlyConfigured, match="cannot open"):
        shm.cache(loc)
    assert target.read_bytes() == b"precious"
    loc2 = shm.loc()
    os.mkdir(segment_path(loc2))
    with pytest.raises(ImproperlyConfigured):
        shm.cache(loc2)


def test_a_segment_whose_creator_died_half_way_is_initialised_again(shm):
    loc = shm.loc()
    shm.cache(loc).set("k", 1)
    forget_store(loc)
    path = segment_path(loc)
    # magic written but `ready` (the u32 after the u32 layout) still 0
    with open(path, "r+b") as f:
        f.seek(12)
        f.write(b"\0\0\0\0")
    c = shm.cache(loc)
    assert c.get("k") is None
    assert c._fc.store.check() == 0
    c.set("k", 2)
    forget_store(loc)
    assert shm.cache(loc).get("k") == 2
    # a creator that died right after reserving the file: all zeros
    loc2 = shm.loc()
    with open(segment_path(loc2), "wb") as f:
        f.write(bytes(MiB))
    os.chmod(segment_path(loc2), 0o600)
    c2 = shm.cache(loc2)
    c2.set("z", 1)
    assert c2.get("z") == 1 and c2._fc.store.check() == 0


def test_remove_segment_and_a_fresh_instance(shm):
    loc = shm.loc()
    old = shm.cache(loc)
    old.set("k", "old")
    path = segment_path(loc)
    inode = os.stat(path).st_ino
    assert remove_segment(loc) is True
    assert not os.path.exists(path)
    assert remove_segment(loc) is False
    # the instance that had it mapped keeps its (now nameless) copy
    assert old.get("k") == "old"
    new = shm.cache(loc)
    assert os.path.exists(path)
    assert new.get("k") is None
    new.set("k", "new")
    assert old.get("k") == "old"
    assert shm.peer(loc).call("get", "k") == "new"
    assert os.stat(path).st_ino != inode
    with pytest.raises(ImproperlyConfigured):
        remove_segment("../etc")


def test_data_outlives_the_processes_that_wrote_it(shm):
    loc = shm.loc()
    first = shm.peer(loc)
    first.call("set", "persist", {"n": 1})
    first.call("set", "counter", 10)
    first.close()
    assert first.proc.returncode == 0
    second = shm.peer(loc)
    assert second.call("get", "persist") == {"n": 1}
    assert second.call("incr", "counter", 5) == 15
    second.close()
    # and this process, which never had it open before
    c = shm.cache(loc)
    assert c.get("counter") == 15
    # the segment's size was fixed by its creator; MAX_BYTES of later openers
    # does not change it
    forget_store(loc)
    bigger = shm.cache(loc, MAX_BYTES=4 * MiB)
    assert bigger.stats()["segment_bytes"] == MiB
    assert bigger.get("persist") == {"n": 1}


@pytest.mark.parametrize(
    "max_bytes",
    [0, 1, MiB - 1, -1, -MiB, "abc", "", None, True, False, [MiB], 2.5],
)
def test_invalid_max_bytes(shm, max_bytes):
    with pytest.raises(ImproperlyConfigured, match="MAX_BYTES"):
        SharedMemoryCache(shm.loc(), {"OPTIONS": {"MAX_BYTES": max_bytes}})
    assert os.listdir(shm.dir) == []


@pytest.mark.parametrize("max_bytes", [2**64, 2**70])
def test_max_bytes_beyond_64_bits(shm, max_bytes):
    with pytest.raises(ImproperlyConfigured, match="MAX_BYTES"):
        SharedMemoryCache(shm.loc(), {"OPTIONS": {"MAX_BYTES": max_bytes}})


def test_max_bytes_that_cannot_be_reserved(shm):
    loc = shm.loc()
    with pytest.raises(ImproperlyConfigured, match="cannot reserve"):
        # the largest MAX_BYTES accepted (64 TiB): no filesystem here has it
        SharedMemoryCache(loc, {"OPTIONS": {"MAX_BYTES": 2**46}})
    # what it leaves behind does not stop a later, sane configuration
    c = shm.cache(loc)
    c.set("k", 1)
    assert c.get("k") == 1
    assert os.stat(segment_path(loc)).st_size == MiB


def test_unknown_options_and_valid_max_bytes(shm):
    with pytest.raises(ImproperlyConfigured, match="Unknown OPTIONS"):
        SharedMemoryCache(shm.loc(), {"OPTIONS": {"MAX_BYTE": MiB}})
    c = SharedMemoryCache(shm.loc(), {"OPTIONS": {"MAX_BYTES": str(2 * MiB)}})
    assert c.stats()["segment_bytes"] == 2 * MiB
    d = SharedMemoryCache(shm.loc(), {})
    assert d.stats()["segment_bytes"] == backend.DEFAULT_MAX_BYTES


def test_top_level_max_bytes_is_honoured_or_refused(shm):
    """BaseCache takes lower-case max_entries / cull_frequency at the top
    level of the params; validate_params checks a top-level max_bytes too."""
    with pytest.raises(ImproperlyConfigured, match="max_bytes"):
        SharedMemoryCache(shm.loc(), {"max_bytes": -1})
    try:
        c = SharedMemoryCache(shm.loc(), {"max_bytes": 2 * MiB})
    except ImproperlyConfigured:
        return
    assert c.stats()["segment_bytes"] == 2 * MiB


def test_a_value_larger_than_max_bytes_is_refused_and_nothing_is_lost(shm):
    c = shm.cache(shm.loc(), MAX_ENTRIES=1000)
    for i in range(50):
        c.set(f"k{i}", make_value(f"k{i}", i, 1000))
    keys, stats = list(c._cache), c.stats()
    for size in [MiB, MiB - 100, 900_000, 10 * MiB]:
        with pytest.raises(ValueError, match="MAX_BYTES"):
            c.set("big", b"x" * size)
        with pytest.raises(ValueError, match="MAX_BYTES"):
            c.add("big", b"x" * size)
        with pytest.raises(ValueError, match="MAX_BYTES"):
            c.set("k3", b"x" * size)  # not even the old value goes
    assert list(c._cache) == keys
    assert c.get("big") is None
    assert {k: v for k, v in c.stats().items() if k in ("entries", "bytes")} == {
        "entries": stats["entries"],
        "bytes": stats["bytes"],
    }
    for i in range(50):
        assert c.get(f"k{i}") == make_value(f"k{i}", i, 1000)
    # something that fits after evicting everything else is stored
    c.set("large", b"y" * 700_000)
    assert c.get("large") == b"y" * 700_000
    assert c._fc.store.check() == 0


def test_filling_beyond_max_bytes_evicts_least_recently_used(shm):
    c = shm.cache(shm.loc(), MAX_ENTRIES=100_000)
    c.set("hot", make_value("hot", 0, 100))
    for i in range(600):  # ~6 MiB through a 1 MiB segment
        c.set(f"k{i}", make_value(f"k{i}", i, 10_000))
        assert c.get("hot") is not None, i  # used all the time: never evicted
        if i % 50 == 49:
            present = [j for j in range(i + 1) if c.has_key(f"k{j}")]
            # the survivors are the newest keys, without gaps
            assert present == list(range(i + 1 - len(present), i + 1)), i
            assert len(present) >= 40
    stats = c.stats()
    assert stats["evictions"] > 400
    assert stats["bytes"] <= MiB
    assert c._fc.store.check() == 0


def test_mixed_sizes_beyond_max_bytes_never_error_and_evict_oldest_first(shm):
    c = shm.cache(shm.loc(), MAX_ENTRIES=100_000)
    rnd = random.Random(3)
    for i in range(1500):
        c.set(
            f"k{i}",
            make_value(f"k{i}", i, rnd.choice([10, 300, 4000, 30_000, 120_000])),
        )
        if i % 100 == 99:
            present = [j for j in range(i + 1) if c.has_key(f"k{j}")]
            assert present == list(range(i + 1 - len(present), i + 1)), i
            assert present and present[-1] == i
            for j in present:
                assert value_problem(f"k{j}", c.get(f"k{j}")) is None
    assert c._fc.store.check() == 0


def test_mixed_sizes_keep_most_of_max_bytes_in_use(shm):
    c = shm.cache(shm.loc(), MAX_ENTRIES=100_000)
    rnd = random.Random(1)
    samples = []
    for i in range(4000):
        c.set(f"k{i}", "x" * rnd.randint(100, 30_000))
        if i >= 1000 and i % 10 == 0:
            samples.append(c.stats()["bytes"])
    mean = sum(samples) / len(samples)
    # with ~15 KB values a 1 MiB cache should stay well over half full, and a
    # set of one value should never flush (nearly) everything
    assert mean > MiB / 2 and min(samples) > MiB / 4, (mean, min(samples))


def test_incr_that_grows_a_value_evicts_others_instead_of_failing(shm):
    c = shm.cache(shm.loc())
    c.set("s", "x" * 500_000)
    assert len(c.incr("s", "y" * 200_000)) == 700_000
    assert c.get("s") == "x" * 500_000 + "y" * 200_000


# --------------------------------------------------------------------------
# 5. fork after the segment is mapped


def test_fork_after_mapping_children_read_and_write(shm):
    loc = shm.loc()
    result = shm.run(
        "fork_preload", {"location": loc, "children": 4, "incr": 250}, timeout=60
    )
    assert result["statuses"] == ["ok"] * 4, result
    assert result["counter"] == 1000
    assert result["fcounter"] == 1000.5
    assert result["children"] == result["pids"]
    assert result["check"] == 0
    # the pytest process sees the children's writes too
    c = shm.cache(loc)
    assert c.get("counter") == 1000
    assert [c.get(f"child{i}") for i in range(4)] == result["pids"]


def test_fork_while_a_thread_hammers_the_shared_cache(shm):
    loc = shm.loc()
    result = shm.run("fork_hammer", {"location": loc, "forks": 15}, timeout=60)
    assert result["statuses"] == ["ok"] * 15, result
    assert result["children"] == result["pids"]
    assert result["threads_alive"] == 0
    assert result["hammered"] > 0
    assert result["check"] == 0


# --------------------------------------------------------------------------
# 6. Same semantics as LocMemCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize(
    "seed, max_entries, cull_frequency",
    [(1, 8, 3), (2, 5, 0), (3, 12, 2), (4, 3, 1)],
)
def test_random_operations_match_locmem(shm, seed, max_entries, cull_frequency):
    options = {"MAX_ENTRIES": max_entries, "CULL_FREQUENCY": cull_frequency}
    ref_name = f"diffref-{uuid.uuid4().hex}"
    ref = LocMemCache(ref_name, {"OPTIONS": options})
    shared = shm.cache(shm.loc(), **options)
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(10)] + [7, "sp"]
    # "L" * 300 is too large to be read without the lock: get and get_many
    # then finish under it, and the LRU order must still be LocMemCache's.
    values = [0, 1, -5, 2.5, "s", b"b", None, True, [1, 2], {"a": 1}, 10**30, "L" * 300]
    timeouts = [DEFAULT_TIMEOUT, None, 0, -1, 1, 5, 30, 0.5]
    clock = FakeClock()

    def ops():
        k = rnd.choice(keys)
        ks = rnd.sample(keys, rnd.randint(0, 4))
        v = rnd.choice(values)
        t = rnd.choice(timeouts)
        return rnd.choice(
            [
                ("set", (k, v), {"timeout": t}),
                ("set", (k, v), {}),
                ("get", (k,), {}),
                ("get", (k, "dflt"), {}),
                ("add", (k, v), {"timeout": t}),
                ("incr", (k,), {}),
                (
                    "incr",
                    (
                        k,
                        rnd.choice([1, -3, 0.5, 10**20]),
                    ),
                    {},
                ),
                ("decr", (k,), {}),
                ("delete", (k,), {}),
                ("touch", (k,), {"timeout": t}),
                ("has_key", (k,), {}),
                ("get_many", (ks,), {}),
                ("set_many", ({x: v for x in ks},), {"timeout": t}),
                ("delete_many", (ks,), {}),
                ("get_or_set", (k, v), {"timeout": t}),
                ("incr_version", (k,), {}),
                ("decr_version", (k,), {"version": 2}),
                ("get", (k,), {"version": 2}),
                ("set", (k, v), {"version": 2}),
            ]
        )

    try:
        with mock.patch("time.time", clock):
            for step in range(2000):
                if rnd.random() < 0.1:
                    clock.now += rnd.choice([0.25, 0.5, 1, 3, 10, 40])
                name, args, kwargs = ops()
                want = _outcome(getattr(ref, name), *args, **kwargs)
                got = _outcome(getattr(shared, name), *args, **kwargs)
                if name == "get_many" and want[0] == got[0] == "ok":
                    want = ("ok", list(want[1].items()))
                    got = ("ok", list(got[1].items()))
                assert got == want, (step, name, args, kwargs)
                order = list(ref._cache)
                assert list(shared._cache) == order, (step, name, args, kwargs)
                assert [shared._expire_info[k] for k in order] == [
                    ref._expire_info[k] for k in order
                ], (step, name)
        assert shared._fc.store.check() == 0
    finally:
        for d in (locmem._caches, locmem._expire_info, locmem._locks):
            d.pop(ref_name, None)
