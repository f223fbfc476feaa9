"""Helper processes for test_shared.py (SharedMemoryCache across processes).

    python shared_worker.py serve
    python shared_worker.py killer JSON
    python shared_worker.py fork_preload JSON
    python shared_worker.py fork_hammer JSON

The segment directory comes from $DJANGO_FASTCACHE_SHM_DIR, which the tests
always point at a private pytest tmp_path.

serve         A peer process driven over stdin/stdout, one request per line:
              base64(pickle((name, args, kwargs))).  Names are methods of the
              open cache, or "!"-prefixed helpers (see Peer below).  Each reply
              is one line: base64(pickle(("ok", value) | ("err", type, text))).
              EOF on stdin ends it.
killer        Forks writer processes that hammer a small cache, SIGKILLs them at
              random moments (some while they hold the table lock), and checks
              the cache after every kill.  Prints one JSON summary line.
fork_preload  gunicorn --preload style: the cache is mapped before fork, the
              children read and incr, the parent sees their writes.
fork_hammer   forks while a thread of the parent hammers the shared cache; the
              children must not deadlock.
torn_reads    forked readers get small values (read without the lock) while
              forked writers rewrite them in place with other lengths, delete,
              re-add, incr and clear; every value read must be one a writer
              wrote.

Hangs: the scenario parents dump their stacks on SIGALRM (an alarm armed
as a watchdog) and the test kills the whole process group at its deadline.
Forked children get a plain SIGALRM deadline of their own (default action:
terminate).  faulthandler.dump_traceback_later is not used: its watchdog
thread does not survive fork, and re-arming or cancelling it in a child
waits forever for that thread.
"""

from __future__ import annotations

import base64
import faulthandler
import json
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# django_fastcache comes from the PYTHONPATH the test gives (the built
# package); putting the source checkout first would shadow it.
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def child_watchdog(seconds: int) -> None:
    """In a forked child: die (SIGALRM, default action) after seconds."""
    faulthandler.unregister(signal.SIGALRM)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(seconds)


def setup_django() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            USE_TZ=True,
            SECRET_KEY="django-fastcache-shared-worker",
            INSTALLED_APPS=[],
            DATABASES={},
            CACHES={
                "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
            },
        )
        import django

        django.setup()


def open_cache(location: str, params: dict | None = None):
    from django_fastcache import SharedMemoryCache

    return SharedMemoryCache(location, dict(params or {}))


# --------------------------------------------------------------------------
# Self-describing values (shared with the tests)


def make_value(key: str, n: int, size: int) -> dict:
    return {"k": key, "n": n, "size": size, "pad": "x" * size}


def value_problem(key: str, value) -> str | None:
    """None when value is one the writers could have written under key."""
    if key.startswith("c"):  # counters: ints (incr) or floats (incr by 1.0)
        if type(value) in (int, float) and value >= 0:
            return None
        return f"counter {key!r} holds {value!r:.200}"
    if not isinstance(value, dict) or set(value) != {"k", "n", "size", "pad"}:
        return f"{key!r} holds a foreign value {value!r:.200}"
    if value["k"] != key:
        return f"{key!r} holds the value of {value['k']!r}"
    if type(value["n"]) is not int or value["n"] < 0:
        return f"{key!r} holds a bad n {value['n']!r}"
    if value["pad"] != "x" * value["size"]:
        return f"{key!r} holds a torn pad (size {value['size']!r})"
    return None


# --------------------------------------------------------------------------
# serve


def _reply(out, status, *payload) -> None:
    line = base64.b64encode(pickle.dumps((status, *payload))) + b"\n"
    out.write(line)
    out.flush()


class Server:
    def __init__(self) -> None:
        self.cache = None

    def h_open(self, location, params=None):
        self.cache = open_cache(location, params)
        return os.getpid()

    def h_open_at(self, location, params, start_at):
        while time.time() < start_at:
            pass
        return self.h_open(location, params)

    def h_pid(self):
        return os.getpid()

    def h_keys(self):
        return list(self.cache._cache)

    def h_expire_info(self, made_key):
        return self.cache._expire_info[made_key]

    def h_check(self):
        return self.cache._fc.store.check()

    def h_stats(self):
        return self.cache.stats()

    def h_ring(self):
        return self.cache._fc.store._ring()

    def h_acquire(self):
        return self.cache._lock.acquire()

    def h_release(self):
        return self.cache._lock.release()

    def h_segment_path(self, location):
        from django_fastcache import segment_path

        return segment_path(location)

    def h_incr_loop(self, key, delta, n, start_at):
        while time.time() < start_at:
            pass
        result = None
        for _ in range(n):
            result = self.cache.incr(key, delta)
        return result

    def h_add_race(self, keys, wid, start_at):
        while time.time() < start_at:
            pass
        return [k for k in keys if self.cache.add(k, wid)]

    def h_sleep(self, seconds):
        time.sleep(seconds)

    def run(self) -> None:
        inp, out = sys.stdin.buffer, sys.stdout.buffer
        for line in inp:
            try:
                name, args, kwargs = pickle.loads(base64.b64decode(line))
                if name.startswith("!"):
                    fn = getattr(self, "h_" + name[1:])
                else:
                    fn = getattr(self.cache, name)
                value = fn(*args, **kwargs)
            except Exception as exc:  # reported to the test, which decides
                _reply(out, "err", type(exc).__name__, str(exc))
            else:
                _reply(out, "ok", value)


# --------------------------------------------------------------------------
# killer

WRITER_KEYS = [f"k{i}" for i in range(48)]
COUNTER_KEYS = [f"c{i}" for i in range(6)]


def writer(cache, seed: int, report_fd: int, hold_after: int, lock_fd: int) -> None:
    """Hammers the cache until killed; writes any garbage it reads to report_fd.

    hold_after >= 0: after that many operations take the table lock, tell the
    parent on lock_fd and wait there to be killed."""
    rnd = random.Random(seed)
    sizes = [0, 1, 10, 100, 1000, 5000, 20000, 60000, 150000]
    n = 0
    while True:
        if n == hold_after:
            cache._lock.acquire()
            os.write(lock_fd, b"L")
            time.sleep(60)
            os._exit(0)
        n += 1
        op = rnd.random()
        key = rnd.choice(WRITER_KEYS)
        try:
            if op < 0.35:
                size = rnd.choice(sizes) + rnd.randrange(50)
                cache.set(key, make_value(key, n, size))
            elif op < 0.45:
                keys = rnd.sample(WRITER_KEYS, rnd.randint(1, 6))
                cache.set_many(
                    {k: make_value(k, n, rnd.choice(sizes[:6])) for k in keys}
                )
            elif op < 0.6:
                ckey = rnd.choice(COUNTER_KEYS)
                cache.add(ckey, 0 if rnd.random() < 0.7 else 0.0)
                try:
                    cache.incr(ckey, 1 if rnd.random() < 0.7 else 1.0)
                except ValueError:  # evicted between add and incr
                    pass
            elif op < 0.7:
                cache.delete(key)
            elif op < 0.75:
                cache.delete_many(rnd.sample(WRITER_KEYS, 3))
            elif op < 0.9:
                found = cache.get_many(rnd.sample(WRITER_KEYS + COUNTER_KEYS, 5))
                for k, v in found.items():
                    problem = value_problem(k, v)
                    if problem:
                        os.write(report_fd, (problem + "\n").encode())
            else:
                v = cache.get(key)
                if v is not None:
                    problem = value_problem(key, v)
                    if problem:
                        os.write(report_fd, (problem + "\n").encode())
        except ValueError as exc:  # only "value too large" is acceptable
            os.write(report_fd, f"writer op raised ValueError: {exc}\n".encode())


def check_cache(cache, segment_bytes: int, max_entries: int) -> list[str]:
    problems = []
    if not cache._lock.acquire(True, 5.0):
        return ["the table lock could not be taken within 5 s"]
    cache._lock.release()
    rc = cache._fc.store.check()
    if rc != 0:
        problems.append(f"table check failed: {rc}")
    keys = list(cache._cache)
    for made in keys:
        prefix, _, key = made.partition(":1:")
        if prefix or key not in WRITER_KEYS + COUNTER_KEYS:
            problems.append(f"unknown key {made!r}")
            continue
        value = cache.get(key)
        if value is not None:
            problem = value_problem(key, value)
            if problem:
                problems.append(problem)
    stats = cache.stats()
    if not 0 <= stats["entries"] <= max_entries:
        problems.append(f"entries out of range: {stats}")
    if not 0 <= stats["bytes"] <= segment_bytes:
        problems.append(f"bytes out of range: {stats}")
    if stats["segment_bytes"] != segment_bytes:
        problems.append(f"segment size changed: {stats}")
    return problems


def killer(cfg: dict) -> int:
    location = cfg["location"]
    iterations = cfg["iterations"]
    rnd = random.Random(cfg["seed"])
    params = {
        "OPTIONS": {
            "MAX_BYTES": cfg["max_bytes"],
            "MAX_ENTRIES": cfg["max_entries"],
            "CULL_FREQUENCY": 3,
        }
    }
    cache = open_cache(location, params)
    segment_bytes = cache.stats()["segment_bytes"]
    report_r, report_w = os.pipe()
    os.set_blocking(report_r, False)
    summary = {
        "iterations": 0,
        "held_kills": 0,
        "pair_kills": 0,
        "problems": [],
        "max_sets": 0,
        "nonempty_checks": 0,
    }
    last_sets = 0
    deadline = time.monotonic() + cfg["budget"]
    for it in range(iterations):
        if time.monotonic() > deadline:
            break
        signal.alarm(20)  # stacks dumped on stderr if an iteration hangs
        mode = rnd.random()
        hold = mode < 0.15  # a writer takes the lock and dies holding it
        pair = 0.15 <= mode < 0.4  # two writers at once, both killed
        lock_r, lock_w = os.pipe()
        pids = []
        for w in range(2 if pair else 1):
            hold_after = rnd.randrange(0, 200) if hold else -1
            pid = os.fork()
            if pid == 0:
                try:
                    child_watchdog(30)
                    os.close(lock_r)
                    writer(
                        cache,
                        cfg["seed"] * 100003 + it * 7 + w,
                        report_w,
                        hold_after,
                        lock_w,
                    )
                finally:
                    os._exit(0)
            pids.append(pid)
        os.close(lock_w)
        if hold:
            # wait (bounded) until it holds the lock, then a little more
            import select

            ready, _, _ = select.select([lock_r], [], [], 10.0)
            if not ready:
                summary["problems"].append(
                    f"iteration {it}: writer never took the lock"
                )
            summary["held_kills"] += 1
        time.sleep(rnd.uniform(0, 0.02))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        os.close(lock_r)
        summary["pair_kills"] += pair
        try:
            while True:
                chunk = os.read(report_r, 65536)
                if not chunk:
                    break
                for line in chunk.decode().splitlines():
                    summary["problems"].append(f"iteration {it} (writer): {line}")
        except BlockingIOError:
            pass
        problems = check_cache(cache, segment_bytes, cfg["max_entries"])
        summary["problems"].extend(f"iteration {it}: {p}" for p in problems)
        stats = cache.stats()
        if stats["sets"] < last_sets:
            summary["problems"].append(f"iteration {it}: sets went backwards {stats}")
        last_sets = stats["sets"]
        summary["nonempty_checks"] += stats["entries"] > 0
        summary["iterations"] += 1
        if len(summary["problems"]) > 20:
            break
    signal.alarm(0)
    summary["max_sets"] = last_sets
    print(json.dumps(summary), flush=True)
    return 0


# --------------------------------------------------------------------------
# fork scenarios


def wait_children(pids, timeout: float) -> list[str]:
    """Waits for every child; kills the late ones.  One status word each."""
    deadline = time.monotonic() + timeout
    results = {}
    while len(results) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid in results:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                results[pid] = "ok" if code == 0 else f"fail{code}"
        time.sleep(0.005)
    for pid in pids:
        if pid not in results:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            results[pid] = "hang"
    return [results[pid] for pid in pids]


def fork_preload(cfg: dict) -> int:
    cache = open_cache(cfg["location"], {"OPTIONS": {"MAX_BYTES": 2**20}})
    cache.set("greeting", "hello from the parent")
    cache.set("counter", 0)
    cache.set("fcounter", 0.5)
    nchildren, nincr = cfg["children"], cfg["incr"]
    pids = []
    for i in range(nchildren):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child_watchdog(15)
                assert cache.get("greeting") == "hello from the parent"
                for _ in range(nincr):
                    cache.incr("counter")
                    cache.incr("fcounter", 1.0)
                cache.set(f"child{i}", os.getpid())
                # a new instance in the child maps the same segment
                again = open_cache(cfg["location"], {"OPTIONS": {"MAX_BYTES": 2**20}})
                assert again.get(f"child{i}") == os.getpid()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    statuses = wait_children(pids, 20)
    result = {
        "statuses": statuses,
        "pids": pids,
        "counter": cache.get("counter"),
        "fcounter": cache.get("fcounter"),
        "children": [cache.get(f"child{i}") for i in range(nchildren)],
        "check": cache._fc.store.check(),
    }
    print(json.dumps(result), flush=True)
    return 0


def fork_hammer(cfg: dict) -> int:
    cache = open_cache(cfg["location"], {"OPTIONS": {"MAX_BYTES": 2**20}})
    private = None
    from django_fastcache import FastCache

    private = FastCache("fork-hammer-private", {})
    cache.set("before-fork", 42)
    stop = threading.Event()
    counts = [0, 0]

    def hammer(idx):
        rnd = random.Random(idx)
        while not stop.is_set():
            k = f"h{rnd.randrange(20)}"
            cache.set(k, make_value(k, counts[idx], rnd.randrange(2000)))
            cache.get(k)
            cache.add("hc", 0)
            cache.incr("hc")
            private.set(k, 1)
            counts[idx] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    pids = []
    for i in range(cfg["forks"]):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child_watchdog(10)
                assert cache.get("before-fork") == 42
                cache.set(f"child{i}", os.getpid())
                assert cache.get(f"child{i}") == os.getpid()
                cache.add("hc", 0)
                cache.incr("hc")
                for j in range(20):
                    k = f"h{j}"
                    v = cache.get(k)
                    if v is not None:
                        assert value_problem(k, v) is None, v
                private.set("child", 1)
                assert private.get("child") == 1
                assert cache._fc.store.check() == 0
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
        time.sleep(0.01)
    statuses = wait_children(pids, 20)
    stop.set()
    for t in threads:
        t.join(10)
    result = {
        "statuses": statuses,
        "pids": pids,
        "children": [cache.get(f"child{i}") for i in range(cfg["forks"])],
        "hammered": sum(counts),
        "threads_alive": sum(t.is_alive() for t in threads),
        "check": cache._fc.store.check(),
    }
    print(json.dumps(result), flush=True)
    return 0


def small_value(key: str, n: int) -> str:
    """A value under 256 bytes (read without the lock) that names its key and
    whose length depends on n, so an overwrite in place changes the length."""
    return f"{key}|{n}|" + "x" * (n % 180)


def small_value_problem(key: str, value) -> str | None:
    if type(value) is int and key.startswith("c") and value >= 0:
        return None
    if type(value) is not str:
        return f"{key!r} holds {value!r:.100}"
    k, _, rest = value.partition("|")
    n, _, pad = rest.partition("|")
    if k != key or not n.isdigit() or pad != "x" * (int(n) % 180):
        return f"{key!r} holds a torn or foreign value {value!r:.100}"
    return None


def torn_reads(cfg: dict) -> int:
    cache = open_cache(cfg["location"], {"OPTIONS": {"MAX_BYTES": 4 * 2**20,
                                                     "MAX_ENTRIES": 64}})
    keys = [f"t{i}" for i in range(24)] + ["c0", "c1"]
    cache.clear()
    deadline = time.monotonic() + cfg["seconds"]
    pids = []
    for role, idx in [("r", i) for i in range(cfg["readers"])] + [
        ("w", i) for i in range(cfg["writers"])
    ]:
        r_fd, w_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r_fd)
            child_watchdog(int(cfg["seconds"]) + 20)
            rnd = random.Random(idx * 2 + (role == "w"))
            reads = hits = 0
            problems: list[str] = []
            n = 0
            try:
                while time.monotonic() < deadline:
                    for _ in range(200):
                        key = rnd.choice(keys)
                        if role == "r":
                            v = cache.get(key)
                            reads += 1
                            if v is not None:
                                hits += 1
                                problem = small_value_problem(key, v)
                                if problem and len(problems) < 5:
                                    problems.append(problem)
                            continue
                        n += 1
                        op = rnd.random()
                        if key.startswith("c"):
                            cache.add(key, 0)
                            try:
                                cache.incr(key)
                            except ValueError:
                                pass
                        elif op < 0.75:
                            cache.set(key, small_value(key, n + rnd.randrange(180)))
                        elif op < 0.9:
                            cache.delete(key)
                        elif op < 0.999:
                            cache.add(key, small_value(key, n))
                        else:
                            cache.clear()
                code = 0
            except BaseException:
                problems.append(traceback.format_exc())
                code = 1
            os.write(w_fd, json.dumps([role, reads, hits, problems]).encode())
            os._exit(code)
        os.close(w_fd)
        pids.append((pid, r_fd))
    reports = []
    for _pid, r_fd in pids:
        chunks = []
        while True:
            b = os.read(r_fd, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r_fd)
        reports.append(json.loads(b"".join(chunks) or b'["?", 0, 0, ["no report"]]'))
    statuses = wait_children([pid for pid, _ in pids], 20)
    result = {
        "statuses": statuses,
        "reads": sum(r[1] for r in reports if r[0] == "r"),
        "hits": sum(r[2] for r in reports if r[0] == "r"),
        "problems": [p for r in reports for p in r[3]],
        "stats": cache.stats(),
        "check": cache._fc.store.check(),
    }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str]) -> int:
    setup_django()
    mode = argv[1]
    if mode == "serve":
        Server().run()
        return 0
    cfg = json.loads(argv[2])
    faulthandler.register(signal.SIGALRM, all_threads=True)
    signal.alarm(cfg.get("watchdog", 60))
    return {
        "killer": killer,
        "fork_preload": fork_preload,
        "fork_hammer": fork_hammer,
        "torn_reads": torn_reads,
    }[mode](cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
