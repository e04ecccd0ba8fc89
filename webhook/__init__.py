"""The webhook intake: a Flask app that records Clerk's Svix-signed events."""

from webhook.app import create_app

__all__ = ["create_app"]
