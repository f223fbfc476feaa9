#!/usr/bin/env python3
"""Build the _fastcache extension out of tree and link the build into this venv.

    python scripts/build_ext.py [--sanitize | --tsan | --debug] [--build-base DIR]

Run it with the Python of the virtualenv that should import the build (the
test scripts and tox do).  It

1. builds the package (Python files + the C extension) with
   ``python setup.py build`` into a build directory owned by that venv
   (default: ``<venv>/fastcache-build``), always from scratch;
2. writes ``<site-packages>/django_fastcache-build.pth`` pointing at it, so
   every interpreter of the venv - pytest, Django's runtests.py and its
   subprocesses - imports this build;
3. imports ``django_fastcache._fastcache`` in a fresh interpreter and checks
   it came from that build directory.

Why not ``pip install .`` or ``pip install -e .``: pip builds in the source
tree's ``build/`` directory, and setuptools skips recompiling an extension
whose output is newer than its sources - so a sanitizer build can silently
reuse the plain one (or the reverse).  Two venvs (plain and ASan) building
from one checkout need separate build directories, which ``setup.py build
--build-base`` gives directly.  And ``build_ext --inplace`` would drop a .so
into the working tree, where a sanitizer build cannot live next to a plain
one.

The checkout's own ``django_fastcache/`` directory must not shadow the build:
run Python with ``-P`` (PYTHONSAFEPATH) from the repository root, as
scripts/test.sh and tox.ini do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PTH_NAME = "django_fastcache-build.pth"


def asan_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a FASTCACHE_SANITIZE=1 build must be imported with.

    The ASan runtime has to be the first library loaded, before the
    interpreter; CPython's own allocator hides heap errors from ASan, so
    PYTHONMALLOC=malloc.  Leak detection is off: the interpreter itself
    "leaks" plenty at exit.
    """
    libasan = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    if not os.path.isabs(libasan):
        sys.exit("build_ext.py: gcc does not know libasan.so (install libasan)")
    env = dict(env)
    env.update(
        LD_PRELOAD=libasan,
        PYTHONMALLOC="malloc",
        ASAN_OPTIONS=env.get("ASAN_OPTIONS", "detect_leaks=0"),
        UBSAN_OPTIONS=env.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
    )
    return env


def tsan_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a FASTCACHE_SANITIZE=thread build must be imported with:
    the TSan runtime loaded before the interpreter (see scripts/tsan.sh)."""
    libtsan = subprocess.run(
        ["gcc", "-print-file-name=libtsan.so"], capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    if not os.path.isabs(libtsan):
        sys.exit("build_ext.py: gcc does not know libtsan.so (install libtsan2)")
    env = dict(env)
    env["LD_PRELOAD"] = libtsan
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    flavour = parser.add_mutually_exclusive_group()
    flavour.add_argument("--sanitize", action="store_true",
                         help="ASan+UBSan build (FASTCACHE_SANITIZE=1)")
    flavour.add_argument("--tsan", action="store_true",
                         help="ThreadSanitizer build (FASTCACHE_SANITIZE=thread)")
    flavour.add_argument("--debug", action="store_true",
                         help="-O0 -g3 with asserts (FASTCACHE_DEBUG=1)")
    parser.add_argument("--build-base", type=Path,
                        help="build directory (default: <venv>/fastcache-build)")
    parser.add_argument("--allow-system", action="store_true",
                        help="allow linking into a non-virtualenv Python")
    args = parser.parse_args()

    if sys.prefix == sys.base_prefix and not args.allow_system:
        sys.exit(f"build_ext.py: {sys.executable} is not a virtualenv; "
                 "refusing to write a .pth into the system site-packages "
                 "(use --allow-system to insist)")

    build_base = (args.build_base or Path(sys.prefix) / "fastcache-build").resolve()
    build_lib = build_base / "lib"
    # From scratch every time: the build takes seconds and stale objects from
    # a different flavour are exactly what this script exists to avoid.
    shutil.rmtree(build_base, ignore_errors=True)

    # Set the flavour switches explicitly, so a FASTCACHE_SANITIZE=1 left in
    # the caller's shell cannot turn the plain build into an ASan one.
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTCACHE_SANITIZE", "FASTCACHE_DEBUG", "LD_PRELOAD")}
    if args.sanitize:
        env["FASTCACHE_SANITIZE"] = "1"
    if args.tsan:
        env["FASTCACHE_SANITIZE"] = "thread"
    if args.debug:
        env["FASTCACHE_DEBUG"] = "1"
    flavour_name = ("sanitize" if args.sanitize else "tsan" if args.tsan
                    else "debug" if args.debug else "release")
    print(f"build_ext.py: building {flavour_name} extension into {build_base}",
          flush=True)
    subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build",
         "--build-base", str(build_base),
         "--build-lib", str(build_lib),
         "--build-temp", str(build_base / "temp"),
         "--force"],
        cwd=ROOT, env=env, check=True,
    )

    site_packages = Path(sysconfig.get_paths()["purelib"])
    if (site_packages / "django_fastcache").exists():
        sys.exit(f"build_ext.py: {site_packages}/django_fastcache exists (a pip "
                 "install?); it would hide the fresh build - pip uninstall it")
    (site_packages / PTH_NAME).write_text(f"{build_lib}\n")

    # Check in a fresh interpreter, run from outside the checkout so its
    # django_fastcache/ cannot shadow the build, that the import resolves to
    # the fresh build and the module loads.
    check_env = asan_env(env) if args.sanitize else tsan_env(env) if args.tsan else env
    check_env.pop("PYTHONPATH", None)
    probe = ("import django_fastcache._fastcache as m, django_fastcache as p; "
             "print(m.__file__); print(p.__file__)")
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=build_base, env=check_env,
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        sys.exit("build_ext.py: the fresh build does not import")
    files = out.stdout.split()
    if not all(Path(f).resolve().is_relative_to(build_lib) for f in files):
        sys.exit(f"build_ext.py: import resolved outside {build_lib}: {files}")
    print(f"build_ext.py: OK, {files[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
