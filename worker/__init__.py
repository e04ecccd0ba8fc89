"""The RQ worker that warms `user-orgs:*` keys again after the intake invalidated them."""
