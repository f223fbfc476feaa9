#!/usr/bin/env python
"""Show that every gunicorn worker sees one SharedMemoryCache.

    python gunicorn_demo.py                      # 4 workers, 400 requests
    python gunicorn_demo.py --workers 3 --requests 120 --preload
    python gunicorn_demo.py --backends shared    # skip the FastCache contrast

For each backend (FASTCACHE_BACKEND=shared, then fast for contrast) the script
starts ``python -m gunicorn mysite.wsgi -w N`` in this directory, on a
listening socket it opened on a free 127.0.0.1 port (handed over as fd://,
so no other program can take the port in between), with a private
DJANGO_FASTCACHE_SHM_DIR.  When every worker answers it sends, from a few
client threads over loopback only:

  * half of --requests to /demo/counter/, which does cache.incr() on one key
    and answers {"pid": <worker>, "count": <new value>};
  * the other half to /demo/list/, the shop's list page under @cache_page,
    whose responses say which worker rendered the page (X-Rendered-By, kept
    in the cached copy) and which one sent it (X-Served-By); each render
    also bumps a counter kept in the cache.  The first list request goes
    alone, so the page is not rendered by several workers racing for it.

With ``shared`` the invariants are: more than one worker served each kind of
request, the counts returned were exactly 1..N (each increment seen once, no
increment lost between workers) and the final count is N, and the list page
was rendered exactly once for all workers.  With --preload (gunicorn imports
the app in the master before forking) the master also writes its PID into
the cache before the workers exist, and every worker must read it back.  The
script exits 1 if one of these fails, 2 if a server could not be run.

The ``fast`` run is the contrast: each worker has its own table, so each
counts on its own (1..k per PID, every count lower than N) and renders the
list page once for itself.

gunicorn is always stopped (SIGTERM to its process group, SIGKILL after a
grace period; on Linux it also gets SIGTERM if this script dies) and the
segment directory is removed.

This module is also the gunicorn config file of the --preload runs
(``-c gunicorn_demo.py``): gunicorn reads ``when_ready`` from it and ignores
the rest, so no other top-level name here may be a gunicorn setting name.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
MASTER_KEY = "demo:master-pid"  # shop.demo.MASTER_KEY
STARTUP_SECONDS = 30.0
STOP_SECONDS = 10.0
REQUEST_SECONDS = 10.0


# --------------------------------------------------------------------------
# gunicorn hook (this file is the config of --preload runs)


def when_ready(server: Any) -> None:  # server: gunicorn.arbiter.Arbiter
    """In the master, after the app was loaded and before any worker forks:
    with --preload, open the cache here so the workers inherit the mapping,
    and leave the master's PID in it for the workers to read back."""
    if not server.cfg.preload_app:
        return
    from django.core.cache import cache

    cache.set(MASTER_KEY, os.getpid(), timeout=None)


# --------------------------------------------------------------------------
# Client side


@dataclass
class Reply:
    path: str
    status: int
    headers: dict[str, str]
    body: bytes
    error: str | None = None

    def json(self) -> dict:
        return json.loads(self.body)


def fetch(port: int, path: str) -> Reply:
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_SECONDS)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Reply(path, response.status, headers, body)
    except (OSError, http.client.HTTPException) as exc:
        return Reply(path, 0, {}, b"", f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def fetch_all(port: int, paths: list[str], threads: int) -> list[Reply]:
    """GET every path, ``threads`` at a time; answers in the order of paths."""
    results: list[Reply | None] = [None] * len(paths)
    indices = itertools.count()  # next() of a count is atomic under the GIL

    def work() -> None:
        while not _signalled:
            i = next(indices)
            if i >= len(paths):
                return
            results[i] = fetch(port, paths[i])

    workers = [
        threading.Thread(target=work, name=f"client-{n}", daemon=True)
        for n in range(min(threads, len(paths)))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        while worker.is_alive():
            worker.join(0.1)
            stop_if_signalled()
    stop_if_signalled()
    return results  # type: ignore[return-value]  # every slot is filled


# --------------------------------------------------------------------------
# The gunicorn server


def _has_gunicorn_setting(name: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(setting.name == name for setting in KNOWN_SETTINGS)


def _die_with_parent() -> None:
    """preexec_fn: on Linux, SIGTERM the gunicorn master if this script dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Gunicorn:
    """``python -m gunicorn mysite.wsgi`` in its own process group."""

    def __init__(
        self, backend: str, workers: int, preload: bool, shm_dir: str, log_level: str
    ) -> None:
        self.backend = backend
        self.log_level = log_level
        self.workers = workers
        self.preload = preload
        self.shm_dir = shm_dir
        self.log_path = os.path.join(shm_dir, "gunicorn.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.extra_args: list[str] = []  # more gunicorn options (pageload.py)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((HOST, 0))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            fd = listener.fileno()
            cmd = [
                sys.executable, "-m", "gunicorn", "mysite.wsgi",
                "--workers", str(self.workers),
                "--bind", f"fd://{fd}",
                "--graceful-timeout", "5",
                "--log-level", self.log_level,
            ]  # fmt: skip
            if _has_gunicorn_setting("control_socket_disable"):
                # gunicorn >= 25.1 opens a control socket at one per-user path
                # (~/.gunicorn/gunicorn.ctl): concurrent demos would clash.
                cmd.append("--no-control-socket")
            if self.preload:
                cmd += ["--preload", "--config", os.path.abspath(__file__)]
            cmd += self.extra_args
            env = dict(os.environ)
            env.update(
                FASTCACHE_BACKEND=self.backend,
                DJANGO_FASTCACHE_SHM_DIR=self.shm_dir,
                DJANGO_SETTINGS_MODULE="mysite.settings",
                PYTHONUNBUFFERED="1",
            )
            env.pop("GUNICORN_CMD_ARGS", None)
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    cmd,
                    cwd=HERE,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
        finally:
            listener.close()  # gunicorn has its own copy

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self) -> Reply:
        """Poll /demo/state/ until it answers 200; raise if gunicorn exits."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early\n{self.log_tail()}")
            reply = fetch(self.port, "/demo/state/")
            if reply.status == 200:
                return reply
            if reply.status:  # answered, but not 200: the app is broken
                raise RuntimeError(
                    f"/demo/state/ answered {reply.status}\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gunicorn did not answer in {STARTUP_SECONDS:.0f} s\n"
                    + self.log_tail()
                )
            time.sleep(0.05)
            stop_if_signalled()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=STOP_SECONDS)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                # The master still exists, so its group id is still ours.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        else:
            proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                text = log.read().splitlines()[-lines:]
        except OSError:
            return "(no gunicorn log)"
        return "gunicorn log:\n" + "\n".join("  | " + line for line in text)


# --------------------------------------------------------------------------
# One run: collect, then check


@dataclass
class Observations:
    """What one run saw; analyse() turns it into checks."""

    master_pid: int
    counter_requests: int
    counter: list[dict]  # the /demo/counter/ answers: {"pid", "count"}
    served_by: list[int]  # per /demo/list/ response: X-Served-By
    rendered_by: list[int]  # per /demo/list/ response: X-Rendered-By
    states: list[dict]  # /demo/state/ answers, during warm-up and at the end
    final_states: list[dict]  # /demo/state/ answers at the end
    stats: dict | None = None  # /stats/ "stats" (fastcache backends)


@dataclass
class RunReport:
    backend: str
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)

    def check(self, ok: bool, what: str) -> None:
        """A shared-run invariant: PASS/FAIL with the reason."""
        self.say(f"  [{'PASS' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)

    def note(self, expected: bool, what: str) -> None:
        """A contrast-run observation: does not change the exit status."""
        self.say(f"  [{'as expected' if expected else 'UNEXPECTED'}] {what}")


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def _pids(counter: Counter[int]) -> str:
    return ", ".join(f"{pid}: {n}" for pid, n in sorted(counter.items()))


def analyse(report: RunReport, obs: Observations, *, preload: bool) -> None:
    """Report what the run saw; for ``shared``, check the invariants."""
    strict = report.backend == "shared"
    n = obs.counter_requests
    by_pid = Counter(r["pid"] for r in obs.counter)
    counts = sorted(r["count"] for r in obs.counter)
    per_pid: dict[int, list[int]] = {}
    for r in obs.counter:
        per_pid.setdefault(r["pid"], []).append(r["count"])
    final_counts = sorted({s["count"] for s in obs.final_states})

    report.say(f"counter: requests served by pid   {_pids(by_pid)}")
    if strict:
        report.say(
            f"counter: values returned {counts[0] if counts else '-'}.."
            f"{counts[-1] if counts else '-'}; "
            f"final count read by workers {final_counts}"
        )
        report.check(
            len(by_pid) > 1, f"counter requests served by {_workers(len(by_pid))} (> 1)"
        )
        report.check(
            counts == list(range(1, n + 1)),
            f"each of the counts 1..{n} returned exactly once "
            "(no increment lost or repeated across workers)",
        )
        report.check(
            bool(obs.final_states) and final_counts == [n],
            f"final count == {n} == number of counter requests",
        )
    else:
        for pid, values in sorted(per_pid.items()):
            values.sort()
            report.say(
                f"counter: pid {pid} counted {values[0]}..{values[-1]} "
                f"({len(values)} increments)"
            )
        own = all(v == list(range(1, len(v) + 1)) for v in per_pid.values())
        report.note(
            own and (len(by_pid) == 1 or counts[-1] < n),
            f"each worker counts on its own: highest count seen "
            f"{counts[-1] if counts else 0} of {n} requests",
        )

    served = Counter(obs.served_by)
    rendered = Counter(obs.rendered_by)
    renders = sorted({s["list_renders"] for s in obs.final_states})
    report.say(f"list:    responses served by pid   {_pids(served)}")
    report.say(f"list:    responses rendered by pid {_pids(rendered)}")
    if strict:
        report.check(
            len(served) > 1, f"list page served by {_workers(len(served))} (> 1)"
        )
        report.check(
            len(rendered) == 1 and renders == [1],
            "list page rendered once for all workers "
            f"(renderers {sorted(rendered)}, render counter in the cache: {renders})",
        )
    else:
        report.note(
            obs.rendered_by == obs.served_by and set(renders) <= {0, 1},
            f"list page rendered {len(rendered)} times, once by each worker "
            "that served it, from its own cache",
        )

    if preload:
        seen = sorted({s["master_pid"] for s in obs.states}, key=str)
        if strict:
            report.check(
                seen == [obs.master_pid],
                f"--preload: the master ({obs.master_pid}) wrote its pid into the "
                f"cache before forking; every worker reads {seen}",
            )
        else:
            report.note(
                seen == [obs.master_pid],
                "--preload: each worker starts from a copy of the master's table "
                f"(master pid read back: {seen})",
            )

    if obs.stats is not None:
        stats = obs.stats
        lookups = stats["hits"] + stats["misses"]
        rate = f"{stats['hits'] / lookups:.0%}" if lookups else "-"
        scope = "the shared table" if strict else "the worker that answered /stats/"
        report.say(
            f"stats of {scope}: hits {stats['hits']}, misses {stats['misses']}, "
            f"sets {stats['sets']}, hit rate {rate}"
        )


def _ok(replies: list[Reply], what: str, server: Gunicorn) -> list[Reply]:
    bad = [r for r in replies if r.status != 200]
    if bad:
        first = bad[0]
        raise RuntimeError(
            f"{what}: {len(bad)} of {len(replies)} failed, first: "
            f"{first.path} -> {first.error or first.status}\n{server.log_tail()}"
        )
    return replies


def collect(
    server: Gunicorn, report: RunReport, args: argparse.Namespace
) -> Observations:
    counter_n = args.requests // 2
    list_n = args.requests - counter_n
    started = time.monotonic()
    server.start()
    server.wait_ready()
    ready = time.monotonic() - started

    # Warm-up: read-only probes until every worker has answered once.
    first_state: dict[int, dict] = {}
    states: list[dict] = []
    probes = 0
    # Without --preload each worker imports Django after the fork, so on a
    # busy machine the first one answers well before the last.
    deadline = started + STARTUP_SECONDS
    while (
        len(first_state) < args.workers
        and probes < args.max_probes
        and time.monotonic() < deadline
    ):
        if probes:
            time.sleep(0.05)  # workers still booting: do not spin
            stop_if_signalled()
        batch = fetch_all(server.port, ["/demo/state/"] * args.threads, args.threads)
        probes += len(batch)
        for reply in batch:
            if reply.status == 200:
                state = reply.json()
                states.append(state)
                first_state.setdefault(state["pid"], state)
    report.say(
        f"gunicorn master {server.pid} on {HOST}:{server.port}, answering after "
        f"{ready:.1f} s; {len(first_state)} of {args.workers} workers seen in {probes} "
        f"probes (pids {', '.join(map(str, sorted(first_state)))})"
    )
    segments = [
        n for n in os.listdir(server.shm_dir) if n.startswith("django_fastcache.")
    ]
    if segments:
        path = os.path.join(server.shm_dir, segments[0])
        report.say(f"segment: {path} ({os.path.getsize(path) >> 20} MiB)")

    # (a) the counter.
    counter = _ok(
        fetch_all(server.port, ["/demo/counter/"] * counter_n, args.threads),
        "counter requests",
        server,
    )
    # (b) the @cache_page list page: one request alone, then the rest.
    listing = [fetch(server.port, "/demo/list/")]
    stop_if_signalled()
    listing += fetch_all(server.port, ["/demo/list/"] * (list_n - 1), args.threads)
    _ok(listing, "list requests", server)
    # Afterwards: what the workers read back, and the backend's counters.
    final = _ok(
        fetch_all(server.port, ["/demo/state/"] * args.threads, args.threads),
        "state requests",
        server,
    )
    final_states = [r.json() for r in final]
    stats_reply = fetch(server.port, "/stats/")
    stop_if_signalled()
    return Observations(
        master_pid=server.pid,
        counter_requests=counter_n,
        counter=[r.json() for r in counter],
        served_by=[int(r.headers["x-served-by"]) for r in listing],
        rendered_by=[int(r.headers["x-rendered-by"]) for r in listing],
        states=states + final_states,
        final_states=final_states,
        stats=stats_reply.json().get("stats") if stats_reply.status == 200 else None,
    )


def run_backend(backend: str, args: argparse.Namespace) -> RunReport:
    report = RunReport(backend)
    counter_n = args.requests // 2
    report.say(
        f"\n== FASTCACHE_BACKEND={backend}: gunicorn -w {args.workers}"
        f"{' --preload' if args.preload else ''}, {counter_n} counter + "
        f"{args.requests - counter_n} list requests "
        f"from {args.threads} client threads =="
    )
    stop_if_signalled()
    shm_dir = tempfile.mkdtemp(
        prefix="fastcache-gunicorn-demo-",
        dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
    )
    server = Gunicorn(backend, args.workers, args.preload, shm_dir, args.log_level)
    started = time.monotonic()
    try:
        obs = collect(server, report, args)
        analyse(report, obs, preload=args.preload)
    except (RuntimeError, ValueError, KeyError) as exc:  # incl. a garbled reply
        report.say(f"  [ERROR] {type(exc).__name__}: {exc}")
        report.errors.append(str(exc).splitlines()[0])
    finally:
        server.stop()
        shutil.rmtree(shm_dir, ignore_errors=True)
    report.say(
        f"run time {time.monotonic() - started:.1f} s; gunicorn stopped, "
        f"{shm_dir} removed"
    )
    return report


# --------------------------------------------------------------------------


_signalled = 0  # the number of the SIGTERM or SIGINT received, if any


def _on_signal(signum: int, frame: object) -> None:
    # Only take note.  Raising here (as the default SIGINT handler does) could
    # interrupt the main thread inside a lock operation of threading and leave
    # the lock broken: a RuntimeError instead of the exit, or a hang.
    global _signalled
    _signalled = signum


def stop_if_signalled() -> None:
    """Called where it is safe to unwind (the finally blocks stop gunicorn)."""
    if _signalled:
        raise SystemExit(128 + _signalled)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=4, help="gunicorn workers (>= 2)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=400,
        help="counter + list requests per backend (half each)",
    )
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument(
        "--preload",
        action="store_true",
        help="gunicorn --preload: the app (and the cache) opened "
        "in the master before the workers fork",
    )
    parser.add_argument(
        "--backends",
        default="shared,fast",
        help="FASTCACHE_BACKEND values to run, comma-separated "
        "(shared is checked; fast and locmem are the contrast)",
    )
    parser.add_argument(
        "--max-probes",
        type=int,
        default=2000,
        help="at most this many warm-up requests (to /demo/state/, read-only) "
        f"while waiting up to {STARTUP_SECONDS:.0f} s for every worker to answer",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="gunicorn's log level (its log is shown when a run fails)",
    )
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be at least 2 (the point is several workers)")
    if args.requests < 4 or args.requests > 100_000:
        parser.error("--requests must be between 4 and 100000")
    if not 1 <= args.threads <= 64:
        parser.error("--threads must be between 1 and 64")
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backend_list) - {"shared", "fast", "locmem"}
    if unknown or not args.backend_list:
        parser.error(f"--backends: unknown {sorted(unknown)}; use shared, fast, locmem")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        print("gunicorn is not installed: pip install gunicorn", file=sys.stderr)
        return 2
    try:
        reports = [run_backend(backend, args) for backend in args.backend_list]
        stop_if_signalled()
    except SystemExit:  # gunicorn was stopped on the way out
        print(f"\nstopped by signal {_signalled}", file=sys.stderr)
        raise
    print()
    status = 0
    for report in reports:
        if report.errors:
            print(f"RESULT {report.backend}: ERROR - {report.errors[0]}")
            status = 2
        elif report.backend == "shared" and report.failures:
            print(f"RESULT shared: FAILED - {'; '.join(report.failures)}")
            status = max(status, 1)
        elif report.backend == "shared":
            print("RESULT shared: OK - all workers saw one cache")
        else:
            print(f"RESULT {report.backend}: contrast run done (one cache per worker)")
    return status


if __name__ == "__main__":
    sys.exit(main())
