"""``python -m examples.django_app``: the project under gunicorn (WSGI), on 127.0.0.1:$PORT (8000)."""

from __future__ import annotations

import os
import sys

from gunicorn.app.wsgiapp import run

if __name__ == "__main__":
    sys.argv = [
        "gunicorn",
        "--bind",
        f"127.0.0.1:{os.environ.get('PORT', '8000')}",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "examples.django_app.wsgi:application",
    ]
    run(prog="python -m examples.django_app")
