#!/usr/bin/env bash
# The test command of this project:  bash scripts/test.sh
#
# From a fresh clone (only python3 and gcc assumed) it builds everything it needs and runs,
# stopping at the first failing stage:
#   setup      fresh venv .venv-test, requirements/test.txt, the extension built into it;
#              redis-server and memcached from apt when missing (TieredCache tests)
#   lint       ruff check (Python: package, tests, scripts, bench, example); clang-format
#              --dry-run --Werror on csrc/ (.clang-format), installed with apt if missing
#   C tests    make -C csrc/tests test test-sanitize [test-valgrind]
#   pytest     our test suite
#   Django     Django's own cache test suite with LocMemCache replaced by FastCache, then
#              by SharedMemoryCache, and Django's cache middleware, cache_page and
#              {% cache %} by django_fastcache's drop-ins; BaseCacheTests on
#              TieredCache over RedisCache
#   interpreters
#              scripts/interpreters.sh ensure: the Debian forky root with CPython 3.14 and
#              a free-threaded CPython, made once and cached outside the checkout
#   wheels     scripts/wheels.sh: sdist, a manylinux wheel per CPython found (3.11-3.13,
#              and 3.14 + 3.13t from the root), each installed into a fresh venv and used
#   sanitize   a second venv with an ASan+UBSan build, pytest and the Django suite again
#   3.14, free-threaded
#              scripts/interpreters.sh makes (once; cached outside the checkout) a Debian
#              forky root with CPython 3.14 and a free-threaded CPython built in it; each
#              gets a fresh venv, the extension built, pytest and the Django suite on both
#              backends.  The free-threaded run keeps the GIL off by the module's own
#              declaration (no PYTHON_GIL, no warning filtered: a test asserts it).
#   TSan       scripts/tsan.sh: a ThreadSanitizer build on the free-threaded CPython,
#              the concurrency tests and a storm of every operation; any report fails
#
# Environment:
#   FASTCACHE_SKIP_SANITIZE=1  skip the sanitizer stage (quick local runs; CI keeps it on)
#   FASTCACHE_SKIP_INTERPRETERS=1  skip the 3.14 and free-threaded stages (quick local runs)
#   FASTCACHE_CACHE_DIR        where scripts/interpreters.sh keeps its root
#                              (default ~/.cache/django-fastcache)
#   PYTHON                     interpreter to build the venvs from (default python3, >= 3.11)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv-test"
SAN_VENV="$ROOT/.venv-test-sanitize"
SKIP_SANITIZE="${FASTCACHE_SKIP_SANITIZE:-0}"
SKIP_INTERPRETERS="${FASTCACHE_SKIP_INTERPRETERS:-0}"
# A sanitizer build switch left in the shell must not leak into the plain stages; the
# build helper sets it itself where wanted.
unset FASTCACHE_SANITIZE FASTCACHE_DEBUG LD_PRELOAD PYTHONMALLOC

# SharedMemoryCache segments made by the tests live in a private directory, never in the
# user's /dev/shm where a real site's cache may be.
DJANGO_FASTCACHE_SHM_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fastcache-test-shm.XXXXXX")"
export DJANGO_FASTCACHE_SHM_DIR

stage_name="startup"
passed=()   # "name (Ns)" for every finished stage, for the summary
notes=()    # anything that did not run, so the summary never hides it

banner() {
    printf '\n======== %s  [%s, %ds elapsed] ========\n' "$1" "$(date +%H:%M:%S)" "$SECONDS"
}

summary() {
    local rc=$?
    rm -rf "$DJANGO_FASTCACHE_SHM_DIR"
    local notes_text=""
    if [ ${#notes[@]} -gt 0 ]; then notes_text="; NOT RUN: $(IFS=';'; echo "${notes[*]}")"; fi
    echo
    if [ "$rc" -eq 0 ]; then
        echo "test.sh: PASSED in ${SECONDS}s: $(IFS=','; echo "${passed[*]}")${notes_text}"
    else
        echo "test.sh: FAILED in stage '$stage_name' (exit $rc) after ${SECONDS}s;" \
             "passed before it: ${passed[*]:-none}${notes_text}"
    fi
}
trap summary EXIT

# stage NAME COMMAND...: run one stage under a banner; set -e ends the script if it fails.
stage() {
    stage_name="$1"
    shift
    banner "$stage_name"
    local t0=$SECONDS
    "$@"
    passed+=("$stage_name ($((SECONDS - t0))s)")
}

check_python() {
    # pytest runs with -P (below), which needs 3.11.
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "test.sh: $PYTHON is older than 3.11; set PYTHON=python3.11 or newer" >&2
        return 1
    }
}

# Install a Debian package if missing.  Returns non-zero if it could not be installed.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else return 1; fi
    fi
    command -v apt-get >/dev/null || return 1
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

c_tests() {
    if [ ! -f csrc/tests/Makefile ]; then
        # The C table tests are optional only while they do not exist; say so loudly.
        echo "WARNING: csrc/tests/Makefile not found; the C table tests were not run" >&2
        notes+=("C table tests (no csrc/tests/Makefile)")
        return 0
    fi
    command -v make >/dev/null || apt_install make || {
        echo "test.sh: 'make' is missing and could not be installed" >&2
        return 1
    }
    make -C csrc/tests test test-sanitize
    # valgrind catches what ASan cannot (uninitialised reads); it is worth an apt-get, but a
    # machine without it (no apt, no root) still runs everything else.
    if ! command -v valgrind >/dev/null; then
        echo "test.sh: valgrind not installed; trying apt-get install valgrind"
        apt_install valgrind || true
    fi
    if command -v valgrind >/dev/null; then
        make -C csrc/tests test-valgrind
    else
        echo "WARNING: valgrind unavailable (apt-get failed); skipping make test-valgrind" >&2
        notes+=("C tests under valgrind (valgrind not installable)")
    fi
}

# pytest from the repository root with -P: without it the checkout's django_fastcache/ (no
# compiled module, or a stale in-place one) would be imported instead of the venv's build,
# and the FastCache tests would be skipped or test the wrong binary.
run_pytest() {
    local python="$1" rc=0
    shift
    "$@" "$python" -P -m pytest tests/ -q || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "test.sh: pytest collected no tests (exit 5): treated as a failure" >&2
    fi
    return "$rc"
}

# Django's suite runs twice: LocMemCache replaced by FastCache, then by
# SharedMemoryCache (whose segments go to the private directory below).  Both
# runs also rebind Django's cache middleware and cache_page to django_fastcache's
# drop-ins (--pages): the same test modules, so the page tests (cache,
# decorators.test_cache, template_tests...test_cache, sessions_tests) run on
# the drop-ins without a third run.
run_django_suite() {
    local python="$1"
    shift
    "$@" "$python" scripts/django_suite.py --backend django_fastcache.FastCache --pages
    "$@" "$python" scripts/django_suite.py --backend django_fastcache.SharedMemoryCache --pages
    "$@" "$python" scripts/django_suite.py --tiered
}

# The environment an ASan-instrumented extension needs: the ASan runtime loaded before
# anything else, and CPython's allocator off so ASan sees every heap block.  Leak checking
# is off (the interpreter keeps memory until exit); UBSan stops at the first report.
asan_env() {
    local libasan
    libasan="$(gcc -print-file-name=libasan.so)"
    if [ ! -e "$libasan" ]; then
        echo "test.sh: gcc has no libasan.so" >&2
        return 1
    fi
    echo "LD_PRELOAD=$libasan PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0" \
         "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"
}

sanitize() {
    local vars
    vars="$(asan_env)"
    bash scripts/bootstrap.sh "$SAN_VENV" --sanitize
    echo "--- pytest under ASan/UBSan ($vars)"
    # shellcheck disable=SC2086  # $vars is a list of NAME=value words for env
    run_pytest "$SAN_VENV/bin/python" env $vars
    echo "--- Django's cache suite under ASan/UBSan"
    # shellcheck disable=SC2086
    run_django_suite "$SAN_VENV/bin/python" env $vars
}

lint() {
    "$VENV/bin/ruff" check .
    command -v clang-format >/dev/null || apt_install clang-format || true
    if command -v clang-format >/dev/null; then
        clang-format --dry-run --Werror csrc/*.c csrc/*.h csrc/tests/*.c csrc/tests/*.h
        echo "clang-format: csrc/ is formatted ($(clang-format --version))"
    else
        echo "WARNING: clang-format unavailable (apt-get failed); C formatting not checked" >&2
        notes+=("clang-format check (clang-format not installable)")
    fi
}

# ---- Extra interpreters: CPython 3.14 and free-threaded CPython --------------------------
# They live in a Debian forky root (scripts/interpreters.sh); commands run there in this
# checkout, at the same path, with the same private segment directory.
in_root() {
    bash "$ROOT/scripts/interpreters.sh" run \
        env DJANGO_FASTCACHE_SHM_DIR="$DJANGO_FASTCACHE_SHM_DIR" "$@"
}

# interpreter_suite NAME: fresh venv .venv-test-NAME from that interpreter, the extension
# built into it, then pytest and Django's suite on both backends.
interpreter_suite() {
    local name="$1" py venv="$ROOT/.venv-test-$1" req="$ROOT/requirements/test.txt"
    py="$(bash "$ROOT/scripts/interpreters.sh" python "$name")"
    if [ "$name" = ft ]; then req="$ROOT/requirements/test-freethreaded.txt"; fi
    in_root env PYTHON="$py" REQUIREMENTS="$req" bash scripts/bootstrap.sh "$venv"
    in_root "$venv/bin/python" -P -c 'import sys, sysconfig, django_fastcache
print("interpreter:", sys.version.replace(chr(10), " "),
      "| free-threaded:", bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
      "| GIL enabled:", getattr(sys, "_is_gil_enabled", lambda: True)())'
    run_pytest "$venv/bin/python" in_root
    run_django_suite "$venv/bin/python" in_root
}

# redis-server and memcached: the TieredCache tests (pytest, Django suite --tiered)
# start their own on free loopback ports.  Missing and not installable is a failure.
servers() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v memcached >/dev/null || [ -x /usr/bin/memcached ] || missing+=(memcached)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "test.sh: installing ${missing[*]} for the TieredCache tests"
    # Keep the packages from starting their system services (policy-rc.d "101: action
    # forbidden"): the tests run their own servers on free ports.
    local policy=/usr/sbin/policy-rc.d created=0 rc=0
    if [ "$(id -u)" -eq 0 ] && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
    fi
    apt_install "${missing[@]}" || rc=$?
    if [ "$created" -eq 1 ]; then rm -f "$policy"; fi
    if [ "$rc" -ne 0 ]; then
        echo "test.sh: ${missing[*]} missing and could not be installed (apt-get)" >&2
        return 1
    fi
}

setup() {
    check_python
    servers
    bash scripts/bootstrap.sh "$VENV"
}

stage "setup: venv + build" setup
stage "lint: ruff + clang-format" lint
stage "C table tests" c_tests
stage "pytest" run_pytest "$VENV/bin/python"
stage "Django cache suite" run_django_suite "$VENV/bin/python"
# The interpreters root first: wheels.sh builds cp314 and cp313t wheels in it.
if [ "$SKIP_INTERPRETERS" != "1" ]; then
    stage "interpreters: Debian forky root, CPython 3.14, free-threaded CPython" \
        bash scripts/interpreters.sh ensure
fi
stage "wheels: sdist, manylinux wheels, install check" bash scripts/wheels.sh
if [ "$SKIP_SANITIZE" = "1" ]; then
    echo
    echo "WARNING: FASTCACHE_SKIP_SANITIZE=1: sanitizer stage skipped" >&2
    notes+=("sanitizer stage (FASTCACHE_SKIP_SANITIZE=1)")
else
    stage "sanitize (ASan+UBSan): pytest + Django suite" sanitize
fi
if [ "$SKIP_INTERPRETERS" = "1" ]; then
    echo
    echo "WARNING: FASTCACHE_SKIP_INTERPRETERS=1: 3.14 and free-threaded stages skipped" >&2
    notes+=("3.14 and free-threaded stages (FASTCACHE_SKIP_INTERPRETERS=1)")
else
    stage "CPython 3.14: pytest + Django suite" interpreter_suite 3.14
    stage "free-threaded CPython: pytest + Django suite" interpreter_suite ft
    stage "free-threaded CPython under ThreadSanitizer: concurrency tests + storm" \
        bash scripts/tsan.sh
fi
