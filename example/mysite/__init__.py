"""The example project around the shop app."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def use_checkout() -> None:
    """Let the example run from a source checkout (after build_ext --inplace).

    The checkout is appended to sys.path, so an installed django-fastcache
    still takes precedence.
    """
    if REPO_ROOT not in sys.path and os.path.isdir(
        os.path.join(REPO_ROOT, "django_fastcache")
    ):
        sys.path.append(REPO_ROOT)
