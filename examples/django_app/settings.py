"""Settings of the example project: as few as Django and DRF need. No database, no sessions, no
``django.contrib.auth``: who is signed in is Clerk's session token (examples/clerk_session.py)."""

from __future__ import annotations

import os
import secrets

# nothing in this project signs anything (no sessions, no CSRF tokens, no messages): a key per process will do
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

ROOT_URLCONF = "examples.django_app.urls"
WSGI_APPLICATION = "examples.django_app.wsgi.application"
INSTALLED_APPS: list[str] = []  # DRF, as used here, needs none (it is in INSTALLED_APPS for its HTML pages)
MIDDLEWARE = ["cache.authz.django.DeniedMiddleware"]  # a Denied a view lets through (check_org_role) is JSON too
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

REST_FRAMEWORK = {
    # the user is the app's user callable (the Clerk session), not a DRF authenticator: with one listed that
    # authenticates no one, DRF would turn every refusal into "Authentication credentials were not provided."
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,  # else DRF builds django.contrib.auth's AnonymousUser
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
