#!/usr/bin/env python
"""Django's command-line utility for the example shop.

FASTCACHE_BACKEND=fast python manage.py runserver   # or shared / locmem
"""

import os
import sys

from mysite import use_checkout


def main() -> None:
    use_checkout()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
