"""A shared daemon's users and roles: who may connect, and what each method needs.

``pipedaemon serve --shared`` runs one daemon as its own service account on a socket
its group may reach. Each request acts as the connecting user, named from the peer
credentials (``SO_PEERCRED``) and put on the request's Context: params never name the
acting user. The Guard runs every request: ``access_rules.RULES`` maps each method to the role it
needs on the pipe or remote it names (``read`` < ``write`` < ``admin`` < owner); a
method missing from it is refused (default deny). A pipe or remote the user has no
role on is 1001, exactly as one that does not exist; a role too low is 1005 naming the
role needed. The daemon's own account (and root) is the operator: every method.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipedaemon_sdk.protocol import errors as E

from .acl import PUBLIC, RANK, Acl, Target
from .audit import Audit
from .rpc import Context, Method, RawReply

if TYPE_CHECKING:
    from .server import Daemon

log = logging.getLogger("pipedaemon.access")


@dataclass
class SharedOptions:
    """How a shared daemon admits users: the members of ``group``."""

    group: str

    @property
    def gid(self) -> int:
        return grp.getgrnam(self.group).gr_gid

    def open_socket(self, path: Path) -> None:
        """Socket 0660 and its own folder 0750, both of the socket group."""
        folder = path.parent
        if folder.stat().st_uid == os.getuid() and folder.name.startswith("pipedaemon"):
            os.chown(folder, -1, self.gid)
            folder.chmod(0o750)
        os.chown(path, -1, self.gid)
        path.chmod(0o660)

    def admit(self, uid: int | None) -> str | None:
        """The user name of a peer that may connect, or None (not in the group, no such user)."""
        if uid is None:
            return None
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            return None
        if uid in (0, os.getuid()):
            return pw.pw_name
        try:
            group = grp.getgrgid(self.gid)
        except KeyError:
            return None
        if pw.pw_gid == group.gr_gid or pw.pw_name in group.gr_mem:
            return pw.pw_name
        return None


Check = Callable[["Guard", str, Any, "Target | None"], Awaitable[None]]
After = Callable[["Guard", str, Any, "Target | None", Any], Awaitable[Any]]


@dataclass
class Rule:
    """What a method needs: a role on its target (None: anyone who connects), or a check of
    its own; ``after`` sees the result (records owners, filters lists)."""

    role: str | None = None
    target: Callable[[Any], Target | None] | None = None
    check: Check | None = None
    after: After | None = None


def not_found(t: Target) -> E.NotFoundError:
    kind, profile, name = t
    return E.NotFoundError(f"no such {kind}: {name}", {kind: name, "profile": profile})


class Guard:
    def __init__(self, daemon: Daemon, rules: dict[str, Rule]) -> None:
        self.daemon = daemon
        self.rules = rules  # access_rules.RULES: given here, as that table refers to the Guard
        self.acl = Acl(daemon.state)
        self.audit = Audit(daemon.home / "audit.log")
        self.operators = {pwd.getpwuid(os.getuid()).pw_name, "root"}

    async def run(self, method: Method, params: Any, ctx: Context) -> Any:
        user = ctx.user or ""
        rule = self.rules.get(method.name)
        target = rule.target(params) if rule is not None and rule.target is not None else None
        outcome, nbytes = "ok", 0
        try:
            if user not in self.operators:
                profile = getattr(params, "profile", None)
                if isinstance(profile, str) and "/" in profile:  # "<p>/pipes": self-hosted pipes' own
                    raise E.PermissionDeniedError(f"profile {profile!r} is the daemon's own",
                                                  {"field": "profile", "role": "operator"})
                if rule is None:
                    raise E.PermissionDeniedError(
                        f"{method.name} is not open to users of a shared daemon (operator only)",
                        {"method": method.name, "role": "operator"})
                if rule.check is not None:
                    await rule.check(self, user, params, target)
                elif rule.role is not None and target is not None:
                    await self.need(user, target, rule.role)
            result = await method.handler(ctx, params)
            if rule is not None and rule.after is not None:
                result = await rule.after(self, user, params, target, result)
            nbytes = _bytes(params, result)
            return result
        except E.DaemonError as err:
            outcome = f"error {err.code}"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            if method.name != "daemon.ping":
                self.audit.record(user, method.name, target, getattr(params, "key", None), nbytes, outcome)

    # -- roles ---------------------------------------------------------------------------
    def is_operator(self, user: str) -> bool:
        return user in self.operators

    async def rank(self, user: str, t: Target) -> int:
        """The user's best role on ``t`` (on a pipe: also its parents', as in d6tpipe); 0 for none."""
        if self.is_operator(user):
            return RANK["owner"]
        kind, profile, name = t
        names = await self._chain(profile, name) if kind == "pipe" else [name]
        return await self.acl.best(kind, profile, names, user)

    async def _chain(self, profile: str, name: str) -> list[str]:
        own = await self.daemon.pipes.store.own_all(profile)
        chain, cur = [], name
        while isinstance(cur, str) and cur not in chain:
            chain.append(cur)
            cur = (own.get(cur) or {}).get("parent")
        return chain

    async def need(self, user: str, t: Target, role: str) -> None:
        have = await self.rank(user, t)
        if have == 0:
            raise not_found(t)
        if have < RANK[role]:
            kind, _, name = t
            held = next(r for r, n in RANK.items() if n == have)
            raise E.PermissionDeniedError(f"the {role} role is needed on {kind} {name} (you have {held})",
                                          {"role": role, kind: name, "have": held})

    async def exists(self, t: Target) -> bool:
        kind, profile, name = t
        if kind == "remote":
            try:
                await self.daemon.remotes.get(profile, name)
            except E.NotFoundError:
                return False
            return True
        return name in await self.daemon.pipes.store.names(profile)

    async def visible(self, user: str, kind: str, profile: str, names: list[str]) -> set[str]:
        return {n for n in names if await self.rank(user, (kind, profile, n)) > 0}


def _bytes(params: Any, result: Any) -> int:
    if isinstance(result, RawReply) and isinstance(result.header, dict):
        return int(result.header.get("length") or 0)
    size = getattr(params, "size", None)
    return size if isinstance(size, int) else 0



__all__ = ["PUBLIC", "Guard", "Rule", "SharedOptions"]
