"""Fork scenarios, run as a separate process by test_fork.py.

    python fork_scenario.py {locmem|fastcache} {hammer|held} CHILD_TIMEOUT

hammer: threads hammer three caches (taking their locks all the time) while
        the main thread forks 20 times.
held:   a thread holds the cache lock for 0.3 s; the main thread forks while it
        is held.

Each child uses the caches (get/set/incr/get_many/new instances/a new thread)
and exits 0.  The parent waits for each child with a deadline, kills it if it
is late, and prints one line per child: "ok", "hang" or "fail <status>".
Exit status: 0 all children ok, 3 some child hung, 4 some child failed.
Running this in its own process means a deadlock in the parent (at fork time)
is caught by the test's subprocess timeout instead of hanging pytest.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback


def backend(impl):
    if impl == "locmem":
        from django.core.cache.backends.locmem import LocMemCache

        return LocMemCache
    from django_fastcache import FastCache

    return FastCache


def child_work(cls, caches):
    main = caches[0]
    assert main.get("before-fork") == 42, main.get("before-fork")
    for c in caches:
        c.set("child", os.getpid())
        assert c.get("child") == os.getpid()
        c.set("n", 0)
        assert c.incr("n") == 1
        assert c.get_many(["child", "n"]) == {"child": os.getpid(), "n": 1}
        assert c.has_key("child")
    # The per-LOCATION registry works in the child: same and new locations.
    same = cls("fork-main", {})
    assert same.get("child") == os.getpid()
    fresh = cls("fork-child-only", {})
    fresh.set("x", 1)
    assert fresh.get("x") == 1
    # Threads work in the child too.
    done = []

    def in_thread():
        main.set("thread", 1)
        done.append(main.get("thread"))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(5)
    assert done == [1]
    main.set("child-wrote", True)


def fork_one(cls, caches, child_timeout):
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            child_work(cls, caches)
            status = 0
        except BaseException:
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(status)
    deadline = time.monotonic() + child_timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return "ok" if code == 0 else f"fail {code}"
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang"
        time.sleep(0.005)


def hammer(caches, stop):
    i = 0
    while not stop.is_set():
        for c in caches:
            c.set(f"h{i % 50}", [i] * 10)
            c.get(f"h{(i * 7) % 50}")
            c.set_many({"hm1": i, "hm2": i})
            c.get_many(["hm1", "hm2", "h1"])
            try:
                c.incr("hm1")
            except ValueError:
                pass
            c.delete(f"h{(i * 3) % 50}")
        i += 1


def main():
    impl, mode, child_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cls = backend(impl)
    caches = [
        cls(name, {"OPTIONS": {"MAX_ENTRIES": 1000}})
        for name in ("fork-main", "fork-second", "fork-third")
    ]
    for c in caches:
        c.clear()
    caches[0].set("before-fork", 42)
    results = []
    if mode == "hammer":
        sys.setswitchinterval(1e-5)
        stop = threading.Event()
        threads = [
            threading.Thread(target=hammer, args=(caches, stop), daemon=True)
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        try:
            for _ in range(20):
                time.sleep(0.01)
                results.append(fork_one(cls, caches, child_timeout))
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    else:
        held = threading.Event()

        def hold():
            lock = caches[0]._lock
            lock.acquire()
            held.set()
            time.sleep(0.3)
            lock.release()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        held.wait(10)
        results.append(fork_one(cls, caches, child_timeout))
        holder.join(10)
    # The children's writes stayed in the children.
    assert caches[0].get("child-wrote") is None
    assert caches[0].get("before-fork") == 42
    print(" ".join(results), flush=True)
    if "hang" in results:
        return 3
    if any(r.startswith("fail") for r in results):
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
