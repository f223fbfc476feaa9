"""A process for test_single_flight: one get_or_set on a SharedMemoryCache.

usage: single_flight_worker.py LOCATION LOCK_TIMEOUT RUNS_FILE START_AT SLEEP [hang]

Waits until time.time() >= START_AT (so that the processes overlap), then
get_or_set("k", compute) where compute appends a line to RUNS_FILE, sleeps
SLEEP seconds (for ever with "hang") and returns "value-<pid>".  Prints the
result, the stats and the seconds get_or_set took as JSON.  With SF_STALE in
the environment, get_or_set is called with stale=SF_STALE and timeout
SF_TIMEOUT (default None).
"""

from __future__ import annotations

import json
import os
import sys
import time

import django
from django.conf import settings


def main() -> None:
    location, lock_timeout, runs_file, start_at, sleep = sys.argv[1:6]
    hang = sys.argv[6:] == ["hang"]
    settings.configure()
    django.setup()
    from django_fastcache import SharedMemoryCache

    cache = SharedMemoryCache(
        location, {"OPTIONS": {"LOCK_TIMEOUT": float(lock_timeout)}}
    )

    def compute() -> str:
        fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        if hang:
            while True:
                time.sleep(1)
        time.sleep(float(sleep))
        return f"value-{os.getpid()}"

    delay = float(start_at) - time.time()
    if delay > 0:
        time.sleep(delay)
    kwargs = {}
    timeout = None
    if "SF_STALE" in os.environ:
        kwargs["stale"] = float(os.environ["SF_STALE"])
        timeout = float(os.environ.get("SF_TIMEOUT", "300"))
    started, t0 = time.time(), time.monotonic()
    result = cache.get_or_set("k", compute, timeout=timeout, **kwargs)
    took = time.monotonic() - t0
    print(json.dumps({"result": result, "stats": cache.stats(), "took": took,
                      "started": started, "pid": os.getpid()}), flush=True)


if __name__ == "__main__":
    main()
