#!/usr/bin/env bash
# The extra interpreters the tests run on: CPython 3.14 and a free-threaded CPython
# (PEP 703, built with --disable-gil), neither of which Debian 12 has.
#
#   bash scripts/interpreters.sh ensure            build what is missing (cached), print the root
#   bash scripts/interpreters.sh python NAME       the interpreter's path inside the root
#                                                  (NAME: 3.14 or ft, the free-threaded one)
#   bash scripts/interpreters.sh run CMD...        run CMD inside the root, in this checkout
#
# How they are obtained (only PyPI and Debian's archive are reachable from here):
#   * a `debootstrap --variant=minbase` root of Debian forky (testing), made with sid's
#     debootstrap script (Debian 12's debootstrap has none for forky), in which apt installs
#     python3.14, python3.14-dev, python3.14-venv, gcc and the free-threaded build's
#     dependencies.  Testing's Release file can be past its Valid-Until date, so apt in the
#     root runs with Acquire::Check-Valid-Until "false"; the host's CA bundle is copied in
#     so pip in the root trusts what the host trusts.
#   * no Debian suite has a free-threaded binary package, so the free-threaded interpreter
#     is compiled in that root from Debian's CPython source (`apt-get source`): python3.14's
#     if the archive serves it (a 3.14t), else python3.13's (a 3.13t), with
#     `./configure --disable-gil` and `make -j2` (no PGO/LTO: 3-12 minutes on 2 cores),
#     installed to /opt/python-ft inside the root.
#
# Cache: everything lives OUTSIDE the checkout, in ${FASTCACHE_CACHE_DIR:-~/.cache/django-fastcache}
# (~1.2 GB), so fresh clones on the same machine (CI's) reuse it and a rerun skips the build.
# Each part is built in a *.partial directory and renamed into place only when complete
# (the chroot) or gets a marker file when complete (the free-threaded build), so a build
# that was interrupted is thrown away and redone; an flock on interpreters.lock keeps two
# runs from building at once.  `rm -rf` the cache directory to start over.
#
# `run` enters the root in a private mount namespace (unshare), with this checkout, /tmp,
# /dev and /proc bind-mounted at the same paths, so the mounts vanish with the command and
# paths (the checkout, DJANGO_FASTCACHE_SHM_DIR) are the same inside and out.  Needs root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FASTCACHE_CACHE_DIR:-$HOME/.cache/django-fastcache}"
CHROOT="$CACHE/forky"
MIRROR="${FASTCACHE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FT_PREFIX=/opt/python-ft
# Bump when the root must be made anew (a root made by an older script is rebuilt, and the
# free-threaded build in it with it); a package merely added to ROOT_PACKAGES is installed
# into an existing root by `ensure` instead.
ROOT_VERSION=3
ROOT_PACKAGES=(
    python3.14 python3.14-dev python3.14-venv
    gcc g++ make libc6-dev dpkg-dev xz-utils ca-certificates
    # the free-threaded build's modules that the tests and Django need
    libssl-dev zlib1g-dev libffi-dev libsqlite3-dev libbz2-dev liblzma-dev libexpat1-dev
    # ThreadSanitizer runtime for FASTCACHE_SANITIZE=thread builds
    libtsan2
    # the servers TieredCache's tests start on loopback ports of their own
    redis-server memcached
)

log() { echo "interpreters: $*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "needs root (debootstrap, chroot, mount namespaces)"
        exit 1
    fi
}

# Refuse to delete a directory that still has something mounted under it (the checkout!).
safe_rm() {
    local dir="$1"
    [ -e "$dir" ] || return 0
    if awk -v d="$(readlink -f "$dir")" 'index($5, d "/") == 1 || $5 == d { found=1 } END { exit !found }' /proc/self/mountinfo; then
        log "refusing to remove $dir: something is mounted under it"
        exit 1
    fi
    rm -rf --one-file-system "$dir"
}

# Run a command in ROOTDIR with the checkout, /tmp, /dev and /proc mounted, in a private
# mount namespace so nothing stays mounted afterwards.
in_root() {
    local rootdir="$1"
    shift
    unshare --mount --propagation private -- bash -s "$rootdir" "$ROOT" "$@" <<'EOS'
set -euo pipefail
r="$1"; src="$2"; shift 2
mount --rbind /dev "$r/dev"
mount -t proc proc "$r/proc" 2>/dev/null || mount --rbind /proc "$r/proc"
mount --bind /tmp "$r/tmp"
mkdir -p "$r$src"
mount --bind "$src" "$r$src"
cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
exec chroot "$r" /usr/bin/env -i \
    HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    bash -c 'cd "$0" && exec "$@"' "$src" "$@"
EOS
}

# Packages installed into the root must not start their services (redis-server,
# memcached): policy-rc.d's 101 is "action forbidden" for invoke-rc.d.
no_services() {
    [ -e "$1/usr/sbin/policy-rc.d" ] && return 0
    mkdir -p "$1/usr/sbin"
    printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"
    chmod 755 "$1/usr/sbin/policy-rc.d"
}

build_root() {
    local partial="$CHROOT.partial"
    safe_rm "$partial"
    log "debootstrap: Debian forky into $partial (sid's script)"
    local script=/usr/share/debootstrap/scripts/sid
    if ! command -v debootstrap >/dev/null || [ ! -e "$script" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
    fi
    debootstrap --variant=minbase forky "$partial" "$MIRROR" "$script" >&2
    echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99no-valid-until"
    printf 'deb %s forky main\ndeb-src %s forky main\n' "$MIRROR" "$MIRROR" \
        >"$partial/etc/apt/sources.list"
    mkdir -p "$partial/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$partial/etc/ssl/certs/host-ca-certificates.crt"
    no_services "$partial"
    log "apt: ${ROOT_PACKAGES[*]}"
    in_root "$partial" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null && apt-get clean' \
        _ "${ROOT_PACKAGES[@]}" >&2
    # The host's bundle again: installing ca-certificates may have rewritten the directory.
    cp /etc/ssl/certs/ca-certificates.crt "$partial/etc/ssl/certs/host-ca-certificates.crt"
    echo "$ROOT_VERSION" >"$partial/.fastcache-root-version"
    mv "$partial" "$CHROOT"
}

# The free-threaded CPython, built inside the root from Debian's source package.
build_ft() {
    local work=/build/python-ft
    log "free-threaded CPython: fetching Debian's source"
    # shellcheck disable=SC2016
    in_root "$CHROOT" bash -euo pipefail -c '
        work="$1"; prefix="$2"
        rm -rf "$work" "$prefix" && mkdir -p "$work" && cd "$work"
        apt-get update -qq
        src=""
        for pkg in python3.14 python3.13; do
            if apt-get source --download-only -qq "$pkg" >/dev/null 2>&1; then src=$pkg; break; fi
        done
        [ -n "$src" ] || { echo "interpreters: no python3.14/python3.13 source in the archive" >&2; exit 1; }
        echo "interpreters: building a free-threaded $src from $(ls ./*.dsc)" >&2
        # The upstream tarball as released (Debian patches are for its own packaging).
        mkdir tree && tar -xf ./*.orig.tar.* -C tree --strip-components=1
        cd tree
        ./configure --disable-gil --prefix="$prefix" --without-ensurepip \
            --disable-test-modules >/dev/null
        make -j2 >/dev/null 2>make.err || { tail -50 make.err >&2; exit 1; }
        make install >/dev/null 2>&1
        ln -sf "$(ls "$prefix"/bin/python3.*t | head -1)" "$prefix/bin/python-ft"
        "$prefix/bin/python-ft" -c "import sys, sysconfig, ssl, sqlite3, ctypes, bz2, lzma, zlib
assert sysconfig.get_config_var(\"Py_GIL_DISABLED\") == 1, \"not a free-threaded build\"
print(\"interpreters: built\", sys.version, file=sys.stderr)"
        cd / && rm -rf "$work"
    ' _ "$work" "$FT_PREFIX" >&2
    touch "$CHROOT$FT_PREFIX/.complete"
}

ensure() {
    need_root
    mkdir -p "$CACHE"
    exec 9>"$CACHE/interpreters.lock"
    if ! flock -w 3600 9; then
        log "timed out waiting for another build ($CACHE/interpreters.lock)"
        exit 1
    fi
    if [ "$(cat "$CHROOT/.fastcache-root-version" 2>/dev/null)" != "$ROOT_VERSION" ]; then
        safe_rm "$CHROOT"
        build_root
    else
        log "cached: $CHROOT ($(in_root "$CHROOT" python3.14 -V))"
        # A package added to ROOT_PACKAGES since the root was made is installed into
        # it here, without remaking the root or the free-threaded build.
        local missing
        missing="$(in_root "$CHROOT" sh -c 'for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || printf "%s " "$p"; done' \
            _ "${ROOT_PACKAGES[@]}")"
        if [ -n "$missing" ]; then
            no_services "$CHROOT"
            log "apt: $missing(added since the root was made)"
            # shellcheck disable=SC2086  # a list of package names
            in_root "$CHROOT" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "$@" >/dev/null && apt-get clean' \
                _ $missing >&2
        fi
    fi
    if [ ! -e "$CHROOT$FT_PREFIX/.complete" ]; then
        build_ft
    else
        log "cached: $CHROOT$FT_PREFIX ($(in_root "$CHROOT" "$FT_PREFIX/bin/python-ft" -VV))"
    fi
    flock -u 9
    echo "$CHROOT"
}

case "${1:-}" in
    ensure) ensure ;;
    python)
        case "${2:-}" in
            3.14) echo /usr/bin/python3.14 ;;
            ft) echo "$FT_PREFIX/bin/python-ft" ;;
            *) log "python: NAME is 3.14 or ft"; exit 2 ;;
        esac
        ;;
    run)
        shift
        need_root
        [ -e "$CHROOT/.fastcache-root-version" ] || { log "no root yet: run '$0 ensure'"; exit 1; }
        in_root "$CHROOT" "$@"
        ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
