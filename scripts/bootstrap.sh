#!/usr/bin/env bash
# Create a virtualenv with the test requirements and this checkout's extension built into it.
#
#   bash scripts/bootstrap.sh VENV_DIR [--sanitize | --tsan | --debug]
#
# The venv is recreated from scratch (--clear) so a run never depends on what an earlier one
# left behind.  The extension is built out of tree, inside the venv, and linked in with a .pth
# file (see scripts/build_ext.py for why not `pip install .`).  Afterwards run Python from the
# repository root with -P, so the checkout's unbuilt django_fastcache/ cannot shadow the build:
#
#   VENV_DIR/bin/python -P -m pytest tests/ -q
#   VENV_DIR/bin/python scripts/django_suite.py
#
# Environment: PYTHON (interpreter to create the venv from, default python3),
#              REQUIREMENTS (default requirements/test.txt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ $# -lt 1 ]; then
    echo "usage: bash scripts/bootstrap.sh VENV_DIR [--sanitize | --tsan | --debug]" >&2
    exit 2
fi
venv="$1"
shift

PYTHON="${PYTHON:-python3}"
REQUIREMENTS="${REQUIREMENTS:-$ROOT/requirements/test.txt}"

echo "bootstrap: creating $venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
"$PYTHON" -m venv --clear "$venv"

echo "bootstrap: installing $REQUIREMENTS"
# The environment must not leak into pip: an ASan LD_PRELOAD would slow it to a crawl.
env -u LD_PRELOAD -u PYTHONMALLOC \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"

"$venv/bin/python" "$ROOT/scripts/build_ext.py" "$@"
