"""Print the flags that embed the running interpreter in a C program.

    python3 py_embed_flags.py --cflags    -I<include dir>
    python3 py_embed_flags.py --ldflags   -L<libdir> -Wl,-rpath,<libdir> -lpython3.X ...

Used by csrc/tests/Makefile for test_codec.  When this interpreter has no
libpython to link against (a build without --enable-shared whose static
library was not installed), it prints nothing on stdout and says why on
stderr: the Makefile then stops with an error, rather than skip the test.
"""

import os
import sys
import sysconfig


def main() -> int:
    var = sysconfig.get_config_var
    if sys.argv[1:] == ["--cflags"]:
        include = sysconfig.get_path("include")
        if not os.path.isfile(os.path.join(include, "Python.h")):
            print(f"py_embed_flags: no Python.h in {include}", file=sys.stderr)
            return 1
        print(f"-I{include}")
        return 0
    if sys.argv[1:] != ["--ldflags"]:
        print("usage: py_embed_flags.py --cflags | --ldflags", file=sys.stderr)
        return 2
    libdir = var("LIBDIR") or ""
    name = "python" + (var("LDVERSION") or "")
    found = [
        f
        for f in (f"lib{name}.so", f"lib{name}.a")
        if os.path.isfile(os.path.join(libdir, f))
    ]
    if not found:
        print(
            f"py_embed_flags: {sys.executable} has no lib{name}.so or lib{name}.a in "
            f"{libdir!r}: cannot embed it",
            file=sys.stderr,
        )
        return 1
    # LINKFORSHARED exports libpython's symbols from the program when linked
    # statically, for the stdlib's extension modules (_datetime, _decimal).
    extra = [var(k) or "" for k in ("LIBS", "SYSLIBS", "LINKFORSHARED")]
    print(" ".join([f"-L{libdir}", f"-Wl,-rpath,{libdir}", f"-l{name}", *extra]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
