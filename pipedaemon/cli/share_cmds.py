"""``pipedaemon share grant|revoke|list``: permissions on a shared daemon's pipes and remotes."""

from __future__ import annotations

from typing import Any

import click

from pipedaemon_sdk import PipeClient

from .common import emit, handle_errors, main_group

SHARED_SOCKET = "/run/pipedaemon/shared.sock"


def _client(ctx: click.Context) -> PipeClient:
    # A shared daemon runs as its own account and is never started by a client.
    c = PipeClient(socket_path=ctx.obj["socket"] or SHARED_SOCKET, profile=ctx.obj["profile"], shared=True)
    ctx.call_on_close(c.close)
    return c.connect()


def _show(r: dict[str, Any]) -> str:
    kind = "pipe" if "pipe" in r else "remote"
    lines = [f"{kind} {r[kind]}  owner {r['owner'] or '(operator)'}"]
    lines += [f"  {g['username']:<20} {g['role']:<6} (by {g['granted_by']})" for g in r["permissions"]]
    return "\n".join(lines if r["permissions"] else [*lines, "  no grants: only the owner"])


def _upsert(c: PipeClient, name: str, remote: bool, settings: dict[str, Any]) -> Any:
    if remote:
        return c.call("remote.upsert_permissions", {"profile": c.profile, "name": name, "settings": settings})
    return c.upsert_permissions(name, settings)


@main_group.group()
def share() -> None:
    """Grant, revoke and list who may use a shared daemon's pipes (--socket: the shared socket,
    default /run/pipedaemon/shared.sock)."""


@share.command("grant")
@click.argument("name")
@click.argument("username")
@click.argument("role", type=click.Choice(["read", "write", "admin"]))
@click.option("--remote", is_flag=True, help="NAME is a remote, not a pipe.")
@click.pass_context
@handle_errors
def grant(ctx: click.Context, name: str, username: str, role: str, remote: bool) -> None:
    """Give USERNAME (or "public": everyone who can connect) ROLE on pipe NAME."""
    emit(ctx, _upsert(_client(ctx), name, remote, {"username": username, "role": role}), _show)


@share.command("revoke")
@click.argument("name")
@click.argument("username")
@click.option("--remote", is_flag=True, help="NAME is a remote, not a pipe.")
@click.pass_context
@handle_errors
def revoke(ctx: click.Context, name: str, username: str, remote: bool) -> None:
    """Take USERNAME's role on pipe NAME away (their next request is refused)."""
    emit(ctx, _upsert(_client(ctx), name, remote, {"username": username, "role": None}), _show)


@share.command("list")
@click.argument("name")
@click.option("--remote", is_flag=True, help="NAME is a remote, not a pipe.")
@click.pass_context
@handle_errors
def list_(ctx: click.Context, name: str, remote: bool) -> None:
    """Show pipe NAME's owner and grants (its owner and admins only)."""
    c = _client(ctx)
    out = (c.call("remote.list_permissions", {"profile": c.profile, "name": name}) if remote
           else c.list_permissions(name))
    emit(ctx, out, _show)
