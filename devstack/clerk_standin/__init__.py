"""A local stand-in for Clerk's Backend API, for tests, benchmarks and the dev stack.

A real HTTP server on 127.0.0.1 (server.py) backed by an in-memory model of orgs,
users and memberships (model.py) whose mutations return the webhook envelopes Clerk
would send (shapes.py), with failures, latency and held reads on demand (faults.py).
Paths, paging rules and JSON follow /work/shared/reference/clerk-and-svix.md.
"""

from devstack.clerk_standin.faults import Gate
from devstack.clerk_standin.sample import SAMPLE_ORG_IDS, SAMPLE_USER_IDS
from devstack.clerk_standin.standin import ClerkStandIn

__all__ = ["SAMPLE_ORG_IDS", "SAMPLE_USER_IDS", "ClerkStandIn", "Gate"]
