"""TieredCache.get_or_set computes a missing value once for the whole cluster:
3 "hosts" (processes with their own L1 tables, one Redis as L2) x 8 threads
call it at once with a slow callable, which runs exactly once; the others get
its value.  A computing host SIGKILLed is taken over once its lock expires
(LOCK_TIMEOUT); a callable that raises lets another caller compute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

redis = pytest.importorskip("redis", exc_type=ImportError)  # in requirements/test

import servers  # noqa: E402
from test_tiered import (  # noqa: E402
    WORKER,
    _unique,
    hosts,
    plain_redis,
    redis_l2,
    run_workers,
    tiered,
)

redis_server = servers.redis_server


def _runs(path: Any) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def test_three_hosts_compute_once(redis_server: Any, tmp_path: Any) -> None:
    plain_redis(redis_server.url).delete("flight")
    runs = tmp_path / "runs"
    configs = [{**cfg, "mode": "flight", "threads": 8, "sleep": 0.5,
                "runs": str(runs)}
               for cfg in hosts(redis_server.url, shared_pair=False)]
    results = run_workers(configs, tmp_path)
    computed = _runs(runs)
    assert len(computed) == 1, computed
    values = [v for r in results for v in r["values"]]
    assert values == [f"value-{computed[0]}"] * 24
    stats = [r["stats"] for r in results]
    assert sum(s["single_flight_computations"] for s in stats) == 1
    assert sum(s["single_flight_waits"] for s in stats) >= 2  # the other hosts


def test_a_killed_computing_host_is_taken_over(
    redis_server: Any, tmp_path: Any
) -> None:
    plain_redis(redis_server.url).delete("flight")
    runs = tmp_path / "runs"
    cfg = {**hosts(redis_server.url, shared_pair=False, n=1)[0], "mode": "flight",
           "threads": 1, "sleep": 0, "runs": str(runs), "hang": True,
           "lock_timeout": 2, "index": 0, "workers": 1, "go": str(tmp_path / "go"),
           "out": str(tmp_path / "hung.json")}
    (tmp_path / "go").write_text(repr(time.time()))
    hung = subprocess.Popen([sys.executable, "-P", WORKER, json.dumps(cfg)],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _runs(runs):
            assert time.monotonic() < deadline and hung.poll() is None
            time.sleep(0.02)
        os.killpg(hung.pid, signal.SIGKILL)
        hung.wait(10)
    finally:
        if hung.poll() is None:
            os.killpg(hung.pid, signal.SIGKILL)
            hung.wait(10)
    # A fresh host: the dead holder's lock expires within LOCK_TIMEOUT (2 s).
    other = tiered(redis_l2(redis_server), url=redis_server.url,
                   l1={"BACKEND": "django_fastcache.FastCache",
                       "LOCATION": _unique("flight-l1")})
    other._lock_timeout = 2.0
    t0 = time.monotonic()
    assert other.get_or_set("flight", lambda: "mine", timeout=300) == "mine"
    assert time.monotonic() - t0 < 4.0
    assert other.stats()["single_flight_takeovers"] + other.stats()[
        "single_flight_lock_timeouts"] >= 1


def test_a_raising_callable_lets_another_caller_compute(redis_server: Any) -> None:
    a = tiered(redis_l2(redis_server), url=redis_server.url,
               l1={"BACKEND": "django_fastcache.FastCache",
                   "LOCATION": _unique("flight-a")})
    a.delete("boom")

    def boom() -> str:
        raise RuntimeError("computation failed")

    with pytest.raises(RuntimeError, match="computation failed"):
        a.get_or_set("boom", boom)
    # Its lock was deleted: the next caller computes at once.
    t0 = time.monotonic()
    assert a.get_or_set("boom", lambda: "ok") == "ok"
    assert time.monotonic() - t0 < 1.0
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert not client.exists("fastcache-lock::1:boom")
    finally:
        client.close()
