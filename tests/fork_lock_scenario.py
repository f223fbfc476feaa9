"""Fork-and-lock scenarios, run as separate processes by test_fork_lock.py.

    python fork_lock_scenario.py opposite JSON
    python fork_lock_scenario.py with_lock JSON
    python fork_lock_scenario.py lazy JSON
    python fork_lock_scenario.py reuse JSON

opposite   Two SharedMemoryCaches, opened and used in the order cfg["order"]
           gives (the test starts two of these processes with opposite
           orders; each waits for the other to be ready before forking).
           Two threads hammer both caches in that order while the main
           thread forks cfg["forks"] times; each child does a set/get on
           both caches (and writes a key the parent checks) and exits 0.
with_lock  One cache of kind cfg["impl"] (locmem, fastcache or shared), and a
           thread hammering it; the main thread forks cfg["forks"] times
           inside ``with cache._lock:``.  The child checks the lock is still
           held inside the block (as a threading.Lock is), leaves the block,
           then does a set/get and takes and releases the lock again (and
           every 25th child forks a grandchild the same way); the parent
           does a set/get after its block too.
lazy       Stores made directly (outside the backends' registries, so the
           at-fork hook does not see them), some held by the forking thread
           and some by another thread: the child finds its own holds still
           its own and the other thread's not its own.
reuse      A child's new thread with the ident of a parent's lock holder
           forks again: the grandchild gets none of that holder's holds.

Both print one JSON line: per-child outcome counts ("ok", "fail", "hang":
killed at its deadline) and the elapsed time, and exit 0 only when every
child was ok.  A deadlock in the forking process itself (the bug these
scenarios exist for) is caught by the test's own deadline, which kills the
whole process group.  Segments live in $DJANGO_FASTCACHE_SHM_DIR (the test's
tmp_path).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def setup_django() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY="fork-lock-scenario", INSTALLED_APPS=[])
        import django

        django.setup()


def make_cache(impl: str, location: str):
    options = {"OPTIONS": {"MAX_ENTRIES": 1000}}
    if impl == "locmem":
        from django.core.cache.backends.locmem import LocMemCache

        return LocMemCache(location, options)
    if impl == "fastcache":
        from django_fastcache import FastCache

        return FastCache(location, options)
    from django_fastcache import SharedMemoryCache

    options["OPTIONS"]["MAX_BYTES"] = 2**20
    return SharedMemoryCache(location, options)


def wait_child(pid: int, deadline: float) -> str:
    """"ok", "fail <code>" or "hang" (then the child is killed)."""
    until = time.monotonic() + deadline
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return "ok" if code == 0 else f"fail {code}"
        if time.monotonic() > until:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang"
        time.sleep(0.001)


def in_child(work, watchdog: int) -> None:
    """Runs work() in a forked child and exits with its status; never returns.

    SIGALRM's default action ends a child that hangs, even one stuck in C."""
    code = 1
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(watchdog)
        work()
        code = 0
    except BaseException:
        os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(code)


def hammer(caches, stop: threading.Event, counts: list[int], idx: int) -> None:
    i = 0
    while not stop.is_set():
        for c in caches:
            c.set(f"h{i % 20}", i)
            c.get(f"h{(i * 7) % 20}")
            c.add("hc", 0)
            c.incr("hc")
        i += 1
        counts[idx] = i


def summary(results: list[str], started: float, **extra) -> int:
    out = {
        "forks": len(results),
        "ok": results.count("ok"),
        "hang": results.count("hang"),
        "fail": [r for r in results if r.startswith("fail")],
        "seconds": round(time.monotonic() - started, 3),
        **extra,
    }
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] == len(results) else 1


def opposite(cfg: dict) -> int:
    caches = [make_cache("shared", loc) for loc in cfg["order"]]
    for c in caches:  # first use in this order, too
        c.set("before-fork", 42)
    stop = threading.Event()
    counts = [0, 0]
    threads = [
        threading.Thread(target=hammer, args=(caches, stop, counts, i), daemon=True)
        for i in range(2)
    ]
    for t in threads:
        t.start()
    # Start forking when the other process is ready too.
    open(os.path.join(cfg["sync_dir"], cfg["tag"]), "w").close()
    until = time.monotonic() + 60
    while len(os.listdir(cfg["sync_dir"])) < 2 and time.monotonic() < until:
        time.sleep(0.001)
    started = time.monotonic()
    tag = cfg["tag"]
    results = []
    for n in range(cfg["forks"]):
        pid = os.fork()
        if pid == 0:

            def work(n=n):
                for c in caches:
                    c.set(f"{tag}-child", (os.getpid(), n))
                    assert c.get(f"{tag}-child") == (os.getpid(), n)
                    assert c.get("before-fork") == 42
                caches[-1].set(f"{tag}-last", n)

            in_child(work, 10)
        results.append(wait_child(pid, cfg["child_timeout"]))
    stop.set()
    for t in threads:
        t.join(10)
    return summary(
        results,
        started,
        last=caches[-1].get(f"{tag}-last"),
        hammered=sum(counts),
        threads_alive=sum(t.is_alive() for t in threads),
    )


def with_lock(cfg: dict) -> int:
    cache = make_cache(cfg["impl"], cfg["location"])
    cache.clear()
    stop = threading.Event()
    counts = [0]
    thread = threading.Thread(
        target=hammer, args=([cache], stop, counts, 0), daemon=True
    )
    thread.start()
    started = time.monotonic()
    results = []
    parent_ok = 0
    for n in range(cfg["forks"]):
        held_in_child = None
        with cache._lock:
            pid = os.fork()
            if pid == 0:
                held_in_child = cache._lock.locked()
        if pid == 0:

            def work(n=n, held_in_child=held_in_child):
                assert held_in_child is True, held_in_child
                cache.set("child", (os.getpid(), n))
                assert cache.get("child") == (os.getpid(), n)
                assert cache._lock.acquire(timeout=5)
                assert cache._lock.locked()
                cache._lock.release()
                cache.set("child-again", n)
                assert cache.get("child-again") == n
                if n % 25 == 0:  # and once more, from the child
                    with cache._lock:
                        pid2 = os.fork()
                        if pid2 == 0:
                            held = cache._lock.locked()
                    if pid2 == 0:

                        def grandchild():
                            assert held is True
                            cache.set("grandchild", n)
                            assert cache.get("grandchild") == n

                        in_child(grandchild, 10)
                    assert wait_child(pid2, 10) == "ok"

            in_child(work, 10)
        cache.set("parent", n)
        parent_ok += cache.get("parent") == n
        results.append(wait_child(pid, cfg["child_timeout"]))
    stop.set()
    thread.join(10)
    return summary(
        results,
        started,
        parent_ok=parent_ok,
        locked_after=cache._lock.locked(),
        hammered=counts[0],
        thread_alive=thread.is_alive(),
    )


def lazy(cfg: dict) -> int:
    """Stores outside the backends' registries, which the at-fork hook does
    not see: each settles its lock on the child's first use of it."""
    from django_fastcache import _fastcache

    shm_dir = os.environ["DJANGO_FASTCACHE_SHM_DIR"]
    mine = [
        _fastcache.Store(),
        _fastcache.Store.shared(os.path.join(shm_dir, "lazy-mine"), 2**20),
    ]
    others = [
        _fastcache.Store(),
        _fastcache.Store.shared(os.path.join(shm_dir, "lazy-other"), 2**20),
    ]
    took, go = threading.Event(), threading.Event()

    def hold() -> None:
        for s in others:
            s.acquire(True, -1)
        took.set()
        go.wait(60)
        for s in others:
            s.release()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert took.wait(10)
    started = time.monotonic()
    results = []
    for _ in range(cfg["forks"]):
        for s in mine:
            assert s.acquire(True, -1)
        pid = os.fork()
        if pid == 0:

            def work():
                private, shared = mine
                # This thread's holds are still its own, as threading.Lock's.
                assert private.locked() and shared.locked()
                private.release()
                shared.release()
                assert not private.locked()
                assert private.acquire(True, 5)
                private.release()
                assert shared.acquire(True, 5)  # once the parent let go
                shared.release()
                # Another thread's holds are not the child's: a private lock
                # is free, a shared one stays the parent thread's.
                other_private, other_shared = others
                assert not other_private.locked()
                assert other_private.acquire(False, -1)
                other_private.release()
                assert other_shared.locked()
                try:
                    other_shared.release()
                except RuntimeError as exc:
                    assert str(exc) == "release unlocked lock", exc
                else:
                    raise AssertionError("released the parent thread's lock")
                assert not other_shared.acquire(False, -1)

            in_child(work, 10)
        for s in mine:
            s.release()
        results.append(wait_child(pid, cfg["child_timeout"]))
    go.set()
    holder.join(10)
    return summary(results, started, locked_after=[s.locked() for s in mine + others])


def reuse(cfg: dict) -> int:
    """Thread A of the parent holds two stores (outside the registries) when
    the main thread forks.  In the child a new thread, which glibc usually
    gives A's old stack and so A's ident, forks again before anything uses
    the stores: the grandchild must not take A's holds for that thread's."""
    from django_fastcache import _fastcache

    shm_dir = os.environ["DJANGO_FASTCACHE_SHM_DIR"]
    private = _fastcache.Store()
    shared = _fastcache.Store.shared(os.path.join(shm_dir, "reuse"), 2**20)
    took, go = threading.Event(), threading.Event()
    holder_ident = []

    def hold() -> None:
        holder_ident.append(threading.get_ident())
        private.acquire(True, -1)
        shared.acquire(True, -1)
        took.set()
        go.wait(60)
        shared.release()
        private.release()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert took.wait(10)
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:

        def grandchild():
            assert not private.locked()
            for store in (private, shared):
                try:
                    store.release()
                except RuntimeError as exc:
                    assert str(exc) == "release unlocked lock", exc
                else:
                    raise AssertionError("released a hold nobody here took")
            assert private.acquire(False, -1)
            private.release()

        def work():
            box = {}

            def second_fork():
                box["reused"] = threading.get_ident() == holder_ident[0]
                pid2 = os.fork()
                if pid2 == 0:
                    in_child(grandchild, 10)
                box["grandchild"] = wait_child(pid2, 10)

            t = threading.Thread(target=second_fork)
            t.start()
            t.join(20)
            os.write(write_end, b"1" if box.get("reused") else b"0")
            assert box.get("grandchild") == "ok", box

        in_child(work, 30)
    os.close(write_end)
    results = [wait_child(pid, cfg["child_timeout"])]
    reused = os.read(read_end, 1) == b"1"
    go.set()
    holder.join(10)
    return summary(results, started, reused=reused)


def main() -> int:
    # Python 3.12+ warns about fork() in a multi-threaded process.
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    setup_django()
    mode, cfg = sys.argv[1], json.loads(sys.argv[2])
    modes = {
        "opposite": opposite,
        "with_lock": with_lock,
        "lazy": lazy,
        "reuse": reuse,
    }
    return modes[mode](cfg)


if __name__ == "__main__":
    sys.exit(main())
