"""Real redis-server and memcached processes for the tests and the benchmarks.

Used by tests/conftest.py (the ``redis_server`` / ``memcached_server``
session fixtures) and by bench/bench_shared.py and bench/bench_tiered.py.
The servers are Debian packages: installed with apt-get when missing and we
are root (scripts/test.sh installs them in its setup stage), started on free
127.0.0.1 ports with their files in a temporary directory, and always stopped:
by the caller (fixture teardown, try/finally), atexit, and for a parent killed
outright (SIGKILL) by a watchdog.  Each server runs under `sh` in its own
process group, with a reader of a pipe whose only write end is ours: on EOF
(we closed it, or we died) the reader signals the whole group.  sh itself
waits for the server, so it exits when the server does.  (A parent-death
signal would not do: memcached drops root with setuid(), which clears it.)

This module must not import Django or the package: the benchmarks load it
before configuring anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

WATCHDOG = 'exec 3<&0; "$@" & srv=$!; { read _eof <&3; kill -TERM 0; } & wait $srv'

_children: list[subprocess.Popen[bytes]] = []


def log(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the watchdog stops its server
        proc.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    _kill_group(proc)  # anything left in the group (normally nothing)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def stop_servers() -> None:
    """Stop every server this process started."""
    while _children:
        _stop(_children.pop())


SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin",
                             "/sbin", "/bin"])


def which(binary: str) -> str | None:
    return shutil.which(binary, path=SBIN_PATH)


def ensure_server_binaries() -> tuple[str | None, float]:
    """None when memcached and redis-server are there (installing them with
    apt-get if we can), else why not; and the seconds spent installing."""
    missing = [pkg for pkg in ("memcached", "redis-server") if which(pkg) is None]
    if not missing:
        return None, 0.0
    if which("apt-get") is None:
        return (f"{' and '.join(missing)} not installed and apt-get is not "
                "available: install them"), 0.0
    if os.geteuid() != 0:
        return (f"{' and '.join(missing)} not installed and not running as root: "
                f"run `sudo apt-get install -y {' '.join(missing)}` first"), 0.0
    log(f"servers: installing {' '.join(missing)} with apt-get ...", end="")
    t0 = time.monotonic()
    # Keep the packages' maintainer scripts from starting their system
    # services (the standard policy-rc.d "101: action forbidden"): we run
    # our own servers on our own ports and leave nothing behind.
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        proc = subprocess.run(
            ["sh", "-c", "apt-get update -qq && apt-get install -y -qq "
             + " ".join(missing)],
            env=env, capture_output=True, text=True,
        )
    finally:
        if created:
            os.unlink(policy)
    spent = time.monotonic() - t0
    log(f" {spent:.1f} s")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return "apt-get install failed: " + " / ".join(tail), spent
    still = [pkg for pkg in missing if which(pkg) is None]
    if still:
        return f"apt-get ran but {' and '.join(still)} is still missing", spent
    return None, spent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(port: int, probe: bytes, timeout: float = 0.5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(probe)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _answers(port: int, probe: bytes, expect: bytes) -> bool:
    try:
        return _ask(port, probe).startswith(expect)
    except OSError:
        return False


@dataclass
class Server:
    name: str  # "redis" or "memcached"
    port: int
    version: str
    proc: subprocess.Popen[bytes]
    workdir: str
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}" if self.name == "redis" else (
            f"127.0.0.1:{self.port}"
        )

    def pid(self) -> int:
        """The server process's own pid (asked from the server)."""
        if self.name == "redis":
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"INFO server\r\n")
                reply = b""
                while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            line = reply.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
            return int(line)
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        line = reply.split(b"STAT pid ", 1)[1].split(b"\r\n", 1)[0]
        return int(line)

    def stop(self) -> None:
        if self.proc in _children:
            _children.remove(self.proc)
        _stop(self.proc)

    def kill(self) -> None:
        """SIGKILL the server (its port then refuses connections)."""
        os.kill(self.pid(), signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.stop()

    def restart(self) -> None:
        """Start the server again on the same port (after kill() or stop())."""
        fresh = start_server(self.name, self.workdir, port=self.port, extra=self.extra)
        self.proc, self.version = fresh.proc, fresh.version


def server_env() -> dict[str, str]:
    """The environment without what the sanitizer test stage sets for Python
    (the ASan runtime preloaded into redis-server or memcached is not ours
    to test, and their own allocators do not mix with it)."""
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "PYTHONMALLOC", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env.pop(name, None)
    return env


def start_server(name: str, workdir: str, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> Server:
    """Start redis-server ("redis") or memcached on 127.0.0.1 (a free port
    unless one is given; extra: more server arguments) and wait until it
    answers."""
    binary = which("memcached" if name == "memcached" else "redis-server")
    if binary is None:
        raise RuntimeError(f"{name} is not installed")
    if name == "memcached":
        version = subprocess.run([binary, "-V"], capture_output=True,
                                 text=True, env=server_env()).stdout.strip()
        probe, expect = b"version\r\n", b"VERSION "
    else:
        out = subprocess.run([binary, "--version"], capture_output=True,
                             text=True, env=server_env()).stdout.split()
        version = "redis " + next((w[2:] for w in out if w.startswith("v=")), "?")
        probe, expect = b"PING\r\n", b"+PONG"
    last_error = ""
    for _attempt in range(3 if port is None else 20):
        # Another process may grab a free port first; a given port may still
        # be in TIME_WAIT from the killed server for a moment.
        use_port = free_port() if port is None else port
        if name == "memcached":
            cmd = [binary, "-l", "127.0.0.1", "-p", str(use_port), "-U", "0"]
            if os.geteuid() == 0:  # memcached refuses to run as root without -u
                cmd += ["-u", "memcache" if _user_exists("memcache") else "nobody"]
        else:
            cmd = [binary, "--port", str(use_port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", workdir]
        cmd += list(extra)
        logfile = os.path.join(workdir, f"{name}-{use_port}.log")
        with open(logfile, "ab") as out_f:
            proc = subprocess.Popen(["sh", "-c", WATCHDOG, "sh", *cmd],
                                    stdin=subprocess.PIPE, stdout=out_f,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=server_env())
        _children.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(use_port, probe, expect):
                return Server(name, use_port, version, proc, workdir, tuple(extra))
            time.sleep(0.05)
        _children.remove(proc)
        _kill_group(proc)
        proc.wait()
        with open(logfile, errors="replace") as f:
            last_error = " / ".join(f.read().strip().splitlines()[-3:])
        if port is not None:
            time.sleep(0.25)
    raise RuntimeError(f"{name} did not answer on 127.0.0.1: {last_error or '?'}")


def _user_exists(user: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


# pytest fixtures (tests import them from here; pytest is only needed then).
def _server_fixture(name: str):  # noqa: ANN202
    import pytest

    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):  # noqa: ANN001, ANN202
        if which("memcached" if name == "memcached" else "redis-server") is None:
            reason, _spent = ensure_server_binaries()
            if which("memcached" if name == "memcached" else "redis-server") is None:
                # A failure, never a skip: scripts/test.sh installs them.
                pytest.fail(f"{name} server needed by the tests is missing: {reason}")
        server = start_server(name, str(tmp_path_factory.mktemp(f"{name}-server")))
        try:
            yield server
        finally:
            server.stop()

    return fixture


redis_server = _server_fixture("redis")
memcached_server = _server_fixture("memcached")
