"""The webhook intake: a Flask app that records Clerk's Svix-signed events.

Imports are lazy so that ``python -m webhook`` can set up prometheus-client's
multiprocess directory before any metric is created.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhook.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from webhook.app import create_app

        return create_app
    raise AttributeError(name)
