"""example/gunicorn_demo.py: gunicorn workers share one SharedMemoryCache.

The demo runs as a subprocess (it starts gunicorn itself, on loopback, with a
private segment directory) and must report every shared-run invariant as
PASS, with and without --preload, and clean up after itself: no gunicorn
process and no segment directory left, also when SIGTERM or Ctrl-C (SIGINT)
stops it in the middle of a run.
The checks themselves are exercised on made-up observations of per-worker
caches, which they must reject.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import backend_class
from fc_helpers import child_pythonpath

try:
    import gunicorn.config
except ImportError as exc:  # a hard failure, not a skip: CI must run this
    raise ImportError(
        "tests/test_gunicorn_demo.py needs gunicorn: "
        "pip install -r requirements/test.txt"
    ) from exc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "example")
DEMO = os.path.join(EXAMPLE, "gunicorn_demo.py")
TIMEOUT = 60  # per demo run; a run takes a few seconds


@pytest.fixture(autouse=True)
def _needs_fastcache():
    backend_class("fastcache")  # skips (not built) or fails (broken build)


@functools.cache
def load_demo():
    spec = importlib.util.spec_from_file_location("gunicorn_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def demo_env() -> dict[str, str]:
    """The demo and its gunicorn import the django_fastcache this process did."""
    return {**os.environ, "PYTHONPATH": child_pythonpath()}


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, DEMO, *args],
        cwd=EXAMPLE,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    print(result.stdout, result.stderr)  # shown when the test fails
    return result


def started_pids(output: str) -> list[int]:
    """Every gunicorn master and worker pid the demo reported."""
    pids = []
    for line in output.splitlines():
        master = re.match(r"gunicorn master (\d+) .*\(pids ([\d, ]+)\)", line)
        if master:
            pids.append(int(master.group(1)))
            pids.extend(int(p) for p in master.group(2).split(", "))
    return pids


def segment_dirs(output: str) -> list[str]:
    return re.findall(r"gunicorn stopped, (\S+) removed", output)


def assert_cleaned_up(output: str, dirs: list[str] | None = None) -> None:
    pids = started_pids(output)
    assert pids, output
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        assert b"gunicorn" not in cmdline, f"gunicorn process {pid} left running"
    dirs = segment_dirs(output) if dirs is None else dirs
    assert dirs, output
    for path in dirs:
        assert not os.path.exists(path), f"{path} left behind"


def assert_shared_ok(output: str, *, preload: bool) -> None:
    assert "[FAIL]" not in output and "[ERROR]" not in output
    assert "RESULT shared: OK - all workers saw one cache" in output
    shared = output.split("== FASTCACHE_BACKEND=shared", 1)[1].split("== FASTCACHE")[0]
    passes = re.findall(r"\[PASS\] (.*)", shared)
    assert len(passes) == (6 if preload else 5), passes
    assert any(p.startswith("each of the counts 1..") for p in passes)
    assert any(p.startswith("list page rendered once for all workers") for p in passes)
    if preload:
        assert any(p.startswith("--preload: the master") for p in passes)


def assert_fast_contrast(output: str, *, preload: bool) -> None:
    fast = output.split("== FASTCACHE_BACKEND=fast", 1)[1]
    assert "UNEXPECTED" not in fast
    expected = re.findall(r"\[as expected\] (.*)", fast)
    assert len(expected) == (3 if preload else 2), expected
    assert "RESULT fast: contrast run done (one cache per worker)" in output


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-open", "preload"])
def test_demo_shared_and_fast(preload):
    args = ["--workers", "3", "--requests", "60", "--threads", "6"]
    result = run_demo(*args, *(["--preload"] if preload else []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_shared_ok(result.stdout, preload=preload)
    assert_fast_contrast(result.stdout, preload=preload)
    assert_cleaned_up(result.stdout)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_gunicorn_and_removes_the_segment(signum):
    proc = subprocess.Popen(
        # -X faulthandler: if it hangs, SIGABRT shows where (below).
        [sys.executable, "-X", "faulthandler", DEMO, "--workers", "2",
         "--requests", "100000", "--backends", "shared"],
        cwd=EXAMPLE,
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                pytest.fail(
                    "the demo ended before gunicorn answered:\n" + "".join(seen)
                )
            seen.append(line)
            if line.startswith("segment: "):
                break
        segment = line.split()[1]
        assert os.path.exists(segment)
        time.sleep(0.3)  # in the middle of the counter requests
        proc.send_signal(signum)
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread
            proc.wait(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
        while (line := lines.get_nowait()) is not None:
            seen.append(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=TIMEOUT)
        proc.stdout.close()
    output = "".join(seen)
    print(output)
    assert proc.returncode == 128 + signum, output
    assert f"stopped by signal {int(signum)}" in output
    assert "RESULT" not in output
    assert_cleaned_up(output, dirs=[os.path.dirname(segment)])


def make_observations(demo, *, shared: bool):
    """A 2-worker run: what a shared cache and per-worker caches would show."""
    pids = [101, 102]
    counter, counts = [], {101: 0, 102: 0}
    for i in range(10):
        pid = pids[i % 2]
        counts[pid] += 1
        counter.append({"pid": pid, "count": i + 1 if shared else counts[pid]})
    served = [pids[i % 2] for i in range(10)]
    rendered = [101] * 10 if shared else served
    final = [
        {"pid": pid, "count": 10 if shared else 5, "list_renders": 1, "master_pid": 100}
        for pid in pids
    ]
    return demo.Observations(
        master_pid=100,
        counter_requests=10,
        counter=counter,
        served_by=served,
        rendered_by=rendered,
        states=final,
        final_states=final,
    )


def test_checks_accept_one_shared_cache(capsys):
    demo = load_demo()
    report = demo.RunReport("shared")
    demo.analyse(report, make_observations(demo, shared=True), preload=True)
    assert report.failures == []


def test_checks_reject_per_worker_caches(capsys):
    demo = load_demo()
    report = demo.RunReport("shared")
    demo.analyse(report, make_observations(demo, shared=False), preload=True)
    failed = "\n".join(report.failures)
    assert "each of the counts 1..10 returned exactly once" in failed
    assert "final count == 10" in failed
    assert "list page rendered once for all workers" in failed
    # The same observations are only notes in a contrast run.
    report = demo.RunReport("fast")
    demo.analyse(report, make_observations(demo, shared=False), preload=True)
    assert report.failures == []
    assert "UNEXPECTED" not in "\n".join(report.lines)


def test_checks_reject_a_single_worker(capsys):
    demo = load_demo()
    obs = make_observations(demo, shared=True)
    obs.counter = [dict(r, pid=101) for r in obs.counter]
    obs.served_by = [101] * len(obs.served_by)
    report = demo.RunReport("shared")
    demo.analyse(report, obs, preload=False)
    assert report.failures == [
        "counter requests served by 1 worker (> 1)",
        "list page served by 1 worker (> 1)",
    ]


def test_the_demo_is_a_safe_gunicorn_config():
    """--preload runs use the demo as gunicorn's config file: its only
    top-level name that is a gunicorn setting must be the when_ready hook."""
    demo = load_demo()
    settings = {setting.name for setting in gunicorn.config.KNOWN_SETTINGS}
    assert {name for name in vars(demo) if name in settings} == {"when_ready"}
