"""Owners and grants of pipes and remotes on a shared daemon (table ``share_acl``)."""

from __future__ import annotations

import time
from typing import Any

ROLES = ("read", "write", "admin")
RANK = {"read": 1, "write": 2, "admin": 3, "owner": 4}
PUBLIC = "public"  # every user who can connect
Target = tuple[str, str, str]  # kind ("pipe" | "remote"), profile, name


class Acl:
    def __init__(self, state: Any) -> None:
        self.state = state

    async def best(self, kind: str, profile: str, names: list[str], user: str) -> int:
        marks = ",".join("?" * len(names))
        rows = await self.state.fetchall(
            f"SELECT username, role FROM share_acl WHERE kind=? AND profile=? AND name IN ({marks}) "
            "AND username IN (?, ?)", (kind, profile, *names, user, PUBLIC))
        return max((RANK.get(role, 0) for u, role in rows if u == user or role != "owner"), default=0)

    async def owner(self, t: Target) -> str | None:
        row = await self.state.fetchone(
            "SELECT username FROM share_acl WHERE kind=? AND profile=? AND name=? AND role='owner'", t)
        return row[0] if row else None

    async def set_owner(self, t: Target, user: str) -> None:
        await self.forget(t)  # a new object of an old name starts with no grants
        await self.grant(t, user, "owner", user)

    async def grant(self, t: Target, username: str, role: str, by: str) -> None:
        await self.state.execute(
            "INSERT INTO share_acl(kind, profile, name, username, role, granted_by, updated_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT(kind, profile, name, username) DO UPDATE SET "
            "role=excluded.role, granted_by=excluded.granted_by, updated_at=excluded.updated_at",
            (*t, username, role, by, time.time()))

    async def revoke(self, t: Target, username: str) -> bool:
        n = await self.state.execute(
            "DELETE FROM share_acl WHERE kind=? AND profile=? AND name=? AND username=? AND role!='owner'",
            (*t, username))
        return n > 0

    async def forget(self, t: Target) -> None:
        await self.state.execute("DELETE FROM share_acl WHERE kind=? AND profile=? AND name=?", t)

    async def rows(self, t: Target) -> list[dict[str, Any]]:
        found = await self.state.fetchall(
            "SELECT username, role, granted_by, updated_at FROM share_acl WHERE kind=? AND profile=? "
            "AND name=? ORDER BY role='owner' DESC, username", t)
        return [{"username": u, "role": r, "granted_by": b, "updated_at": at} for u, r, b, at in found]
