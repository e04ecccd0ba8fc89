"""A Django project whose views are guarded by the user's role, or a permission, in the org the URL
names, in each of Django's view kinds (<org>: the org's id, org_..., or its slug):

    GET /orgs/<org>/dashboard             any member            a function view (@require_org_role)
    GET /orgs/<org>/settings              org:admin             a function view
    GET /orgs/<org>/invoices/new          org:invoices:create   a function view (@require_org_permission)
    GET /cbv/orgs/<org>/...               the same three        class-based views (method_decorator)
    GET /async/orgs/<org>/...             the same three        async views (await cache.aio; serve them with ASGI)
    GET /api/orgs/<org>/...               the same three        DRF APIViews (OrgRolePermission, OrgPermission)

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
