#!/usr/bin/env bash
# The README's main command: set up a fresh virtualenv, build and install
# django-fastcache, run the demo (low-level API, @cache_page, {% cache %},
# SharedMemoryCache across processes, speed against LocMemCache), a short
# load test of the example site on each backend, then the quick benchmark
# suite.  Pass --full for the full benchmark suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-demo
echo "== setting up $VENV (Django 5.2, django-fastcache built from this checkout)"
"$PY" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements/bench.txt
"$VENV/bin/python" -m pip install -q .
# Run from outside the checkout so the installed package (with its built
# extension) is what gets imported.
here=$(pwd)
cd /tmp
"$here/$VENV/bin/python" "$here/scripts/demo.py"
echo "== example site: load test, LocMemCache vs FastCache vs SharedMemoryCache"
"$here/$VENV/bin/python" "$here/example/loadtest.py" --backends locmem,fast,shared --seconds 3
if [ "${1:-}" = "--full" ]; then
    "$here/$VENV/bin/python" "$here/bench/bench.py"
else
    "$here/$VENV/bin/python" "$here/bench/bench.py" --quick
fi
