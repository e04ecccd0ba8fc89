"""The small fixed world seed_sample() creates; its ids are exported so tests and demos need not repeat literals."""

SAMPLE_ORG_IDS: dict[str, str] = {
    "acme": "org_2acme0000000000000000000",
    "globex": "org_2globex00000000000000000",
    "initech": "org_2initech0000000000000000",
}
SAMPLE_USER_IDS: dict[str, str] = {
    "alice": "user_2alice000000000000000000000",
    "bob": "user_2bob00000000000000000000000",
    "carol": "user_2carol000000000000000000000",
}

PROFILES: dict[str, tuple[str, str]] = {
    "alice": ("Alice", "Anderson"),
    "bob": ("Bob", "Brown"),
    "carol": ("Carol", "Clark"),
}
ORG_NAMES: dict[str, str] = {"acme": "Acme Inc", "globex": "Globex", "initech": "Initech"}
MEMBERSHIPS: list[tuple[str, str, str]] = [
    ("alice", "acme", "org:admin"),
    ("alice", "globex", "org:member"),
    ("bob", "acme", "org:member"),
    ("bob", "initech", "org:admin"),
    ("carol", "acme", "org:billing"),
    ("carol", "globex", "org:admin"),
]
