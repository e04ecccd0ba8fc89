"""A Django project whose views are guarded by the user's role in the org the URL names, in each of
Django's view kinds (<org>: the org's id, org_..., or its slug):

    GET /orgs/<org>/dashboard          any member   a function view (@require_org_role)
    GET /orgs/<org>/settings           org:admin    a function view
    GET /cbv/orgs/<org>/dashboard      any member   a class-based view (method_decorator)
    GET /cbv/orgs/<org>/settings       org:admin    a class-based view
    GET /async/orgs/<org>/dashboard    any member   an async view (awaits cache.aio; serve it with ASGI)
    GET /async/orgs/<org>/settings     org:admin    an async view
    GET /api/orgs/<org>/dashboard      any member   a DRF APIView (OrgRolePermission)
    GET /api/orgs/<org>/settings       org:admin    a DRF APIView

Run it (from the repository root) with the usual REDIS_URL, CLERK_SECRET_KEY, CLERK_API_URL, and
CLERK_JWT_KEY (optionally CLERK_AUTHORIZED_PARTIES, PORT, DJANGO_ALLOWED_HOSTS), under gunicorn (WSGI):

    CLERK_SECRET_KEY=sk_... CLERK_JWT_KEY="$(cat clerk-public.pem)" python -m examples.django_app

or under an ASGI server, which runs the async views on its event loop (uvicorn is not a dependency of
this project: ``pip install uvicorn``):

    CLERK_SECRET_KEY=sk_... CLERK_JWT_KEY="$(cat clerk-public.pem)" uvicorn examples.django_app.asgi:application

Requests carry Clerk's session token (``__session`` cookie or ``Authorization: Bearer``), verified
by examples/clerk_session.py; refusals are JSON ``{"error", "message"}`` (cache.authz lists them).
docs/django.md walks through it.
"""
