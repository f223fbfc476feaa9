"""A "host" process for test_tiered.py: a TieredCache on a real Redis.

    python tiered_worker.py JSON

JSON: {"redis": URL, "l1": "fast" | "shared", "location": L1 LOCATION,
"l1_timeout": seconds, "mode": ..., "out": path, "go": path, "seconds": run
time, "index": worker number, "workers": count, ...}.  Each worker sets up
its cache, creates "<out>.ready", waits for the parent to write the common
start time (epoch seconds) to "go" and for that time, runs the mode, and
writes a JSON result to "out".

Modes
latency   worker 0 writes key "lat" = n (n = 1, 2, ...) every "interval"
          seconds and records the monotonic time each set returned; the
          others poll it and record the monotonic time each value was first
          seen.  (CLOCK_MONOTONIC is one clock for every process of a host.)
mixed     randomized: every worker owns the keys k where k % workers ==
          index and sets them to increasing numbers (10% of its operations);
          90% are gets of random keys, each logged with the time the get
          started.  The parent's checker flags reads older than the bound.
          L2 errors (Redis down) are counted, the operation skipped.
incr      "count" incr of one key; the values incr returned, and the value
          read once this host sees the total (or after 20 s).
add       add("add:<i>") for i in range("count"); the i it won are reported.
fork      the cache used, then os.fork(): the child's listener, and the
          parent's write seen by the child.
flight    "threads" threads call get_or_set("flight", compute) at once;
          compute appends this pid to "runs", sleeps "sleep" seconds (for
          ever with "hang") and returns "value-<pid>".  The values returned.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import django
from django.conf import settings


def setup(cfg: dict) -> object:
    if cfg["l1"] == "shared":
        l1 = {"BACKEND": "django_fastcache.SharedMemoryCache",
              "LOCATION": cfg["location"]}
    else:
        l1 = {"BACKEND": "django_fastcache.FastCache", "LOCATION": cfg["location"],
              "OPTIONS": {"MAX_ENTRIES": 10000}}
    settings.configure(CACHES={
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                  "LOCATION": cfg["redis"],
                  "OPTIONS": {"socket_timeout": cfg.get("socket_timeout", 10)}},
        "default": {
            "BACKEND": "django_fastcache.TieredCache",
            "OPTIONS": {"L2": "redis", "L1": l1, "L1_TIMEOUT": cfg["l1_timeout"],
                        "INVALIDATION": cfg["redis"], "CHANNEL": "tiered-test",
                        **({"LOCK_TIMEOUT": cfg["lock_timeout"]}
                           if "lock_timeout" in cfg else {})},
        },
    })
    django.setup()
    from django.core.cache import caches

    cache = caches["default"]
    deadline = time.monotonic() + 10
    while not cache._state.usable and time.monotonic() < deadline:
        time.sleep(0.01)
    return cache


def run_latency(cache, cfg, result) -> None:
    stop = time.monotonic() + cfg["seconds"]
    if cfg["index"] == 0:
        written = []
        n = 0
        while time.monotonic() < stop:
            n += 1
            cache.set("lat", n)
            written.append(time.monotonic())
            time.sleep(cfg["interval"])
        result["written"] = written
        return
    seen: dict[int, float] = {}
    last = None
    while time.monotonic() < stop + 0.5:
        value = cache.get("lat")
        now = time.monotonic()
        if value != last and value is not None:
            seen.setdefault(value, now)
            last = value
        time.sleep(0.0002)  # a reader, not a spinner: leave the CPU to others
    result["seen"] = sorted(seen.items())


def run_mixed(cache, cfg, result) -> None:
    import redis

    rng = random.Random(cfg["index"] * 7919 + 1)
    keys, workers, me = cfg["keys"], cfg["workers"], cfg["index"]
    mine = [k for k in range(keys) if k % workers == me]
    counter = dict.fromkeys(mine, 0)
    writes, reads, errors = [], [], 0
    stop = time.monotonic() + cfg["seconds"]
    while time.monotonic() < stop:
        try:
            if rng.random() < 0.1:
                k = rng.choice(mine)
                counter[k] += 1
                cache.set(f"m:{k}", counter[k])
                writes.append((k, counter[k], time.monotonic()))
            else:
                k = rng.randrange(keys)
                started = time.monotonic()
                value = cache.get(f"m:{k}")
                reads.append((k, value or 0, started))
        except (redis.exceptions.RedisError, OSError):
            errors += 1
            time.sleep(0.01)
        time.sleep(cfg.get("pause", 0.0005))
    result.update(writes=writes, reads=reads, errors=errors, final=counter)


def run_fork(cache, cfg, result) -> None:
    """gunicorn --preload: the cache is in use before fork; the child must get
    its own listener (a new token) and see the parent's later writes."""
    cache.set("f", 1)
    assert cache.get("f") == 1
    parent_token = cache._state.token
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child: dict = {}
        try:
            state = cache._state
            deadline = time.monotonic() + 10
            while not state.usable and time.monotonic() < deadline:
                time.sleep(0.01)
            child["own_listener"] = state.usable and state.token != parent_token
            child["first"] = cache.get("f")
            os.write(ready_w, b"r")
            deadline = time.monotonic() + 10
            while cache.get("f") != 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            child["after_parent_write"] = cache.get("f")
        finally:
            with open(cfg["out"] + ".child", "w") as f:
                json.dump(child, f)
            os._exit(0)
    os.read(ready_r, 1)
    cache.set("f", 2)
    os.waitpid(pid, 0)
    with open(cfg["out"] + ".child") as f:
        result["child"] = json.load(f)


def run_flight(cache, cfg, result) -> None:
    import threading

    def compute():
        fd = os.open(cfg["runs"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        while cfg.get("hang"):
            time.sleep(1)
        time.sleep(cfg["sleep"])
        return f"value-{os.getpid()}"

    values = []
    lock = threading.Lock()

    def call():
        value = cache.get_or_set("flight", compute, timeout=300)
        with lock:
            values.append(value)

    threads = [threading.Thread(target=call) for _ in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result["values"] = values


def main() -> None:
    cfg = json.loads(sys.argv[1])
    cache = setup(cfg)
    result: dict = {"index": cfg["index"], "pid": os.getpid()}
    # Ready (subscribed); the parent writes the common start time once every
    # worker is.
    with open(cfg["out"] + ".ready", "w"):
        pass
    deadline = time.monotonic() + 120
    while not os.path.exists(cfg["go"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(cfg["go"]) as f:
        start = float(f.read())
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    mode = cfg["mode"]
    if mode == "latency":
        run_latency(cache, cfg, result)
    elif mode == "mixed":
        run_mixed(cache, cfg, result)
        # After the run (faults over): every key must show its last write.
        time.sleep(cfg.get("settle", 0.5))
        result["last_seen"] = {
            str(k): cache.get(f"m:{k}") or 0 for k in range(cfg["keys"])
        }
    elif mode == "incr":
        result["returned"] = [cache.incr("counter") for _ in range(cfg["count"])]
        # The others may still be counting: wait (for at most 20 s) until this
        # host sees the total.
        total = cfg["count"] * cfg["workers"]
        deadline = time.monotonic() + 20
        while cache.get("counter") != total and time.monotonic() < deadline:
            time.sleep(0.01)
        result["final"] = cache.get("counter")
    elif mode == "add":
        result["won"] = [
            i for i in range(cfg["count"]) if cache.add(f"add:{i}", cfg["index"])
        ]
    elif mode == "fork":
        run_fork(cache, cfg, result)
    elif mode == "flight":
        run_flight(cache, cfg, result)
    result["stats"] = cache.stats()
    with open(cfg["out"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
