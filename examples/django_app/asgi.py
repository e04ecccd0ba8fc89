"""The ASGI application (uvicorn: ``examples.django_app.asgi:application``): async views run on the
server's event loop, sync ones in Django's thread."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
application = get_asgi_application()

from examples.django_app import views  # noqa: E402,F401  (a bad setting is refused at start-up, not at a request)
