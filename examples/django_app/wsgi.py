"""The WSGI application (gunicorn: ``examples.django_app.wsgi:application``)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
application = get_wsgi_application()

from examples.django_app import views  # noqa: E402,F401  (a bad setting is refused at start-up, not at a request)
