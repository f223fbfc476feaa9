"""Build script for the _fastcache C extension.

Environment switches:
  FASTCACHE_DEBUG=1     -O0 -g3, assertions and the table invariant checker on.
  FASTCACHE_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer build
                        (run with LD_PRELOAD=$(gcc -print-file-name=libasan.so)
                        and PYTHONMALLOC=malloc).
  FASTCACHE_SANITIZE=thread
                        ThreadSanitizer build, for a free-threaded CPython (run with
                        LD_PRELOAD=$(gcc -print-file-name=libtsan.so); scripts/tsan.sh).
"""

import os

from setuptools import Extension, setup

debug = os.environ.get("FASTCACHE_DEBUG") == "1"
sanitize = os.environ.get("FASTCACHE_SANITIZE") == "1"
tsan = os.environ.get("FASTCACHE_SANITIZE") == "thread"

# The C files share functions with each other (fc_binding.h); only PyInit
# (PyMODINIT_FUNC) is exported from the shared object.
cflags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers",
          "-fvisibility=hidden"]
ldflags = []
macros = [("_GNU_SOURCE", "1")]
if debug or sanitize:
    cflags += ["-O0", "-g3", "-UNDEBUG"]
    macros.append(("FC_DEBUG", "1"))
elif tsan:
    # FC_TSAN: tell ThreadSanitizer which reads race by design (a shared
    # table's seqlock reads, validated afterwards: csrc/fc_table.c).
    # -Wno-tsan: TSan does not model the two standalone fences of the lock-free
    # reads (fc_table.c); what they order is validated by seq, whose reads and
    # writes TSan does see.
    cflags += ["-O1", "-g", "-UNDEBUG", "-fsanitize=thread", "-fno-omit-frame-pointer",
               "-Wno-tsan"]
    ldflags += ["-fsanitize=thread"]
    macros.append(("FC_TSAN", "1"))
else:
    cflags += ["-O2"]
if sanitize:
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer"]
    cflags += san
    ldflags += san

setup(
    ext_modules=[
        Extension(
            "django_fastcache._fastcache",
            sources=["csrc/fc_table.c", "csrc/fc_shm.c", "csrc/fc_codec.c",
                     "csrc/fc_store.c", "csrc/fc_keys.c", "csrc/fc_values.c",
                     "csrc/fc_expiry.c", "csrc/fc_handle.c", "csrc/fc_module.c"],
            depends=["csrc/fc_table.h", "csrc/fc_shm.h", "csrc/fc_codec.h",
                     "csrc/fc_binding.h"],
            include_dirs=["csrc"],
            define_macros=macros,
            extra_compile_args=cflags,
            extra_link_args=ldflags,
            libraries=["pthread"],
        )
    ],
)
