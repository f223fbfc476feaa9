#!/usr/bin/env bash
# ThreadSanitizer proof of the free-threaded build: the extension built with
# -fsanitize=thread (FASTCACHE_SANITIZE=thread) on the free-threaded CPython of
# scripts/interpreters.sh, running the concurrency tests and the storm of
# tests/test_free_threading.py (every operation, options, KEY_PREFIX, VERSION and
# TIMEOUT reassigned at run time, clear; no fork) on every backend.  It must end
# with no report: TSan makes the process exit with status 66 on any.
#
#   bash scripts/tsan.sh            (root; scripts/test.sh runs it as a stage)
#
# What TSan sees, and what it is told:
#   * only the extension is instrumented; the interpreter is not (no TSan build of
#     CPython can be had here), so TSan checks the extension's own accesses.  The
#     extension's own synchronisation is all visible to it: the table lock
#     (pthread, intercepted), the handle's spinlock and every shared word
#     (compiler atomics).  It uses no CPython lock (critical section, PyMutex),
#     which TSan could not see in an uninstrumented interpreter.
#   * a shared table's reads without the lock are a seqlock: their reads race
#     with a writer by design and are validated afterwards (fc_get_optimistic),
#     so they are ignored (OPT_READS_BEGIN in csrc/fc_table.c); their writes are
#     checked.
#   * the interceptors (malloc, memcpy...) ignore calls made by the uninstrumented
#     interpreter (ignore_noninstrumented_modules=1): without it, memory CPython
#     passes between threads through synchronisation TSan cannot see looks raced
#     (csrc/tsan.supp says more).  csrc/tsan.supp suppresses nothing; it may only
#     ever hold reports whose racing frames are all in CPython, each justified.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv-tsan-ft"
export DJANGO_FASTCACHE_SHM_DIR="${DJANGO_FASTCACHE_SHM_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fastcache-tsan-shm.XXXXXX")}"

in_root() {
    bash "$ROOT/scripts/interpreters.sh" run \
        env DJANGO_FASTCACHE_SHM_DIR="$DJANGO_FASTCACHE_SHM_DIR" "$@"
}

bash scripts/interpreters.sh ensure >/dev/null
py="$(bash scripts/interpreters.sh python ft)"
in_root env PYTHON="$py" REQUIREMENTS="$ROOT/requirements/test-freethreaded.txt" \
    bash scripts/bootstrap.sh "$VENV" --tsan
libtsan="$(in_root gcc -print-file-name=libtsan.so)"
# halt_on_error=0: every report is printed; exitcode=66 makes any report fail
# the run.  TSan needs the layout of a non-randomised address space on recent
# kernels (its shadow memory): setarch -R.
opts="halt_on_error=0 exitcode=66 second_deadlock_stack=1 history_size=4 ignore_noninstrumented_modules=1"
opts="$opts suppressions=$ROOT/csrc/tsan.supp"
# Reports go to files (pytest captures the test processes' stderr), printed below.
reports="$(mktemp -d "${TMPDIR:-/tmp}/fastcache-tsan.XXXXXX")"
opts="$opts log_path=$reports/report"
echo "tsan.sh: LD_PRELOAD=$libtsan TSAN_OPTIONS=$opts"
rc=0
in_root env LD_PRELOAD="$libtsan" TSAN_OPTIONS="$opts" \
    setarch "$(uname -m)" -R "$VENV/bin/python" -P -m pytest -q -p no:cacheprovider \
    tests/test_concurrency.py tests/test_free_threading.py || rc=$?
n=$(cat "$reports"/report.* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer' || true)
cat "$reports"/report.* 2>/dev/null || true
rm -rf "$reports"
echo "tsan.sh: $n ThreadSanitizer report(s); pytest exit $rc"
[ "$rc" -eq 0 ] && [ "$n" -eq 0 ]
