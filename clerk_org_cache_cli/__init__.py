"""The operator's command line, ``clerk-org-cache``: a package of its own, above ``service/``.

It drives the cache and the worker's queue as an operator would; nothing imports it but
its entry point and the dev stack, so ``service/`` (which the processes share) stays below it.
"""
