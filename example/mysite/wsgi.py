"""WSGI entry point: gunicorn mysite.wsgi (from the example/ directory)."""

import os

from django.core.wsgi import get_wsgi_application

from mysite import use_checkout

use_checkout()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
