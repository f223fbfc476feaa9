"""bench/bench_herd.py measures what single-flight is for; this checks that the
script runs and that what it counts is what the backends promise (compute runs,
not timings: those are the benchmark's business)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fc_helpers import child_pythonpath

pytest.importorskip("django_fastcache._fastcache")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_herd_benchmark_counts_one_computation_per_table(tmp_path) -> None:
    out = tmp_path / "herd.json"
    proc = subprocess.run(
        [sys.executable, "-P", os.path.join(ROOT, "bench", "bench_herd.py"),
         "--threads", "8", "--processes", "2", "--compute-ms", "50",
         "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=child_pythonpath(),
                 DJANGO_FASTCACHE_SHM_DIR=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    runs = {(r["scenario"], r["backend"]): r["computations"]
            for r in json.loads(out.read_text())}
    assert runs == {
        ("threads", "LocMemCache"): 8,        # every caller computes
        ("threads", "FastCache"): 1,
        ("threads", "SharedMemoryCache"): 1,
        ("processes", "LocMemCache"): 8,
        ("processes", "FastCache"): 2,        # one table per process
        ("processes", "SharedMemoryCache"): 1,  # one table per host
        ("threads", "FastCache + stale"): 1,
        ("threads", "SharedMemoryCache + stale"): 1,
        ("processes", "FastCache + stale"): 2,
        ("processes", "SharedMemoryCache + stale"): 1,
    }
    rows = {(r["scenario"], r["backend"]): r for r in json.loads(out.read_text())}
    # Every caller computed: no one waited on another.
    assert rows["threads", "LocMemCache"]["others_p99_ms"] is None
    # The waiters of single-flight waited for the computation (50 ms)...
    assert rows["threads", "FastCache"]["others_p99_ms"] >= 40
    assert "| 1 process | FastCache | 1 |" in proc.stdout
