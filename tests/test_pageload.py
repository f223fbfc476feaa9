"""example/pageload.py: one page under load on gunicorn workers, the page
expiring every second.  The page cache with single-flight renders it once per
expiry for the whole host (drop-ins and front on SharedMemoryCache); Django's
middleware on per-worker LocMemCaches renders it once per request that misses.

Counts renders, not speed: throughput is the load test's own business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fc_helpers import child_pythonpath

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "example")
SECONDS = 3


def test_an_expiring_page_renders_once_per_expiry_per_host(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLE, "pageload.py"),
         "--seconds", str(SECONDS), "--page-seconds", "1", "--warmup", "1",
         "--clients", "1", "--connections", "8", "--json", str(out)],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=240,
        env=dict(os.environ, PYTHONPATH=child_pythonpath()),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["run"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"django+locmem", "dropin+shared", "front+shared"}
    for name in ("dropin+shared", "front+shared"):
        # One render per expiry: at most one per started second of the window
        # (the render in flight at its start may land in it).
        assert 1 <= rows[name]["renders"] <= SECONDS + 1, rows[name]
        assert rows[name]["non_200"] == 0
    # Without single-flight, every request that misses renders: several per
    # expiry with 8 connections on 2 workers (each with its own table).
    assert rows["django+locmem"]["renders"] > SECONDS + 1, rows["django+locmem"]
