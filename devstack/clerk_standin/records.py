"""The rows the model keeps, as plain records, so shapes.py can render them without knowing the model."""

from dataclasses import dataclass


@dataclass
class Org:
    id: str
    name: str
    slug: str
    image_url: str | None
    created_at: int
    updated_at: int


@dataclass
class User:
    id: str
    identifier: str
    first_name: str | None
    last_name: str | None


@dataclass
class Membership:
    id: str
    user_id: str
    org_id: str
    role: str
    created_at: int
    updated_at: int
    seq: int  # creation order; breaks created_at ties deterministically


@dataclass
class Permission:
    id: str
    key: str  # org:<feature>:<action>; org:sys_* for Clerk's system permissions
    name: str
    description: str
    type: str  # "system" or "custom"
    created_at: int
    updated_at: int


@dataclass
class Role:
    id: str
    key: str  # org:<role>
    name: str
    description: str | None
    permission_ids: list[str]  # in the order they were given
    created_at: int
    updated_at: int
    seq: int  # creation order; breaks created_at ties deterministically
