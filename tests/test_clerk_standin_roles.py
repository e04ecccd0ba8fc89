"""The Clerk stand-in's roles and permissions speak Clerk's rules and JSON (the ground a permission cache stands on).

Read over real HTTP, as the cache would read them: memberships carry their role's permissions live,
``role.updated`` names no member, the delete events carry only an id, a held role cannot be deleted.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from devstack.clerk_standin import ClerkStandIn
from devstack.clerk_standin.shapes import StandInConflict, StandInError
from tests.support import CLERK_KEY

ALICE = "user_2rolesalice0000000000000"


def get(clerk: ClerkStandIn, path: str, **params: Any) -> Any:
    response = requests.get(
        f"{clerk.url}/v1/{path}", params=params, headers={"Authorization": f"Bearer {CLERK_KEY}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    return response.json()


def permissions_read(clerk: ClerkStandIn, user_id: str) -> dict[str, list[str]]:
    memberships = get(clerk, f"users/{user_id}/organization_memberships", limit=100)["data"]
    return {m["organization"]["id"]: m["permissions"] for m in memberships}


def test_the_default_roles_carry_system_permissions_and_list_as_clerk_lists_them(clerk: ClerkStandIn) -> None:
    roles = get(clerk, "organization_roles", limit=100)
    assert roles["total_count"] == len(roles["data"]) == 2
    by_key = {r["key"]: r for r in roles["data"]}
    assert set(by_key) == {"org:admin", "org:member"}
    admin = by_key["org:admin"]
    assert admin["object"] == "role" and admin["id"].startswith("role_") and admin["is_creator_eligible"] is True
    assert {"org:sys_memberships:manage", "org:sys_profile:delete"} <= {p["key"] for p in admin["permissions"]}
    assert all(p["type"] == "system" and p["object"] == "permission" for p in admin["permissions"])
    assert get(clerk, f"organization_roles/{admin['id']}") == admin
    first = get(clerk, "organization_roles", limit=1, offset=1)
    assert first["total_count"] == 2 and len(first["data"]) == 1
    system = get(clerk, "organization_permissions", limit=100)["data"]
    assert all(p["key"].startswith("org:sys_") for p in system)


def test_a_membership_reads_its_roles_permissions_live(clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Roles Inc")["data"]["id"]
    created = clerk.create_permission("org:invoices:create")
    assert created["type"] == "permission.created" and created["data"]["key"] == "org:invoices:create"
    clerk.create_permission("org:invoices:read")
    role = clerk.create_role("org:accountant", "Accountant", ["org:invoices:create", "org:invoices:read"])
    assert role["type"] == "role.created"
    assert [p["key"] for p in role["data"]["permissions"]] == ["org:invoices:create", "org:invoices:read"]
    clerk.add_membership(ALICE, org, "org:accountant")
    assert permissions_read(clerk, ALICE)[org] == ["org:invoices:create", "org:invoices:read"]

    updated = clerk.update_role("org:accountant", permissions=["org:invoices:read"])
    assert updated["type"] == "role.updated" and [p["key"] for p in updated["data"]["permissions"]] == [
        "org:invoices:read"
    ]
    assert "members" not in updated["data"] and ALICE not in str(updated)  # it names no member, as Clerk's
    assert permissions_read(clerk, ALICE)[org] == ["org:invoices:read"]

    renamed = clerk.update_permission("org:invoices:read", new_key="org:invoices:view")
    assert renamed["type"] == "permission.updated" and renamed["data"]["key"] == "org:invoices:view"
    assert permissions_read(clerk, ALICE)[org] == ["org:invoices:view"]

    deleted = clerk.delete_permission("org:invoices:view")
    assert deleted["type"] == "permission.deleted"
    assert deleted["data"] == {"object": "permission", "id": renamed["data"]["id"], "deleted": True}  # id only
    assert permissions_read(clerk, ALICE)[org] == []


def test_a_role_cannot_be_deleted_while_held_and_its_deletion_names_only_its_id(clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Held Inc")["data"]["id"]
    clerk.create_permission("org:reports:read")
    role_id = clerk.create_role("org:auditor", "Auditor", ["org:reports:read"])["data"]["id"]
    clerk.add_membership(ALICE, org, "org:auditor")
    with pytest.raises(StandInConflict):
        clerk.delete_role("org:auditor")
    clerk.update_membership(ALICE, org, "org:member")  # members moved off the role first, as Clerk requires
    deleted = clerk.delete_role("org:auditor")
    assert deleted["type"] == "role.deleted"
    assert deleted["data"] == {"object": "role", "id": role_id, "slug": None, "deleted": True}
    assert "org:auditor" not in {r["key"] for r in get(clerk, "organization_roles", limit=100)["data"]}
    with pytest.raises(StandInConflict):
        clerk.delete_role("org:member")  # a default role stays


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        ("create_permission", "org:sys_profile:grant"),  # org:sys_* is Clerk's own
        ("create_permission", "invoices:create"),
        ("create_permission", "org:Invoices:create"),
    ],
)
def test_keys_out_of_clerks_format_are_refused(clerk: ClerkStandIn, make: str, arg: str) -> None:
    with pytest.raises(StandInError) as refused:
        getattr(clerk, make)(arg)
    assert refused.value.status == 422


def test_a_role_nobody_created_is_made_on_first_use_with_permissions_of_its_own(clerk: ClerkStandIn) -> None:
    org = clerk.create_org("Billing Inc")["data"]["id"]
    clerk.add_membership(ALICE, org, "org:billing")
    assert permissions_read(clerk, ALICE)[org] == [
        "org:sys_memberships:read",
        "org:billing:read",
        "org:billing:manage",
    ]
    assert "org:billing" in {r["key"] for r in get(clerk, "organization_roles", limit=100)["data"]}
