"""d6tpipe's command line under ``pipedaemon``, with its option placement:
``create --pipe X``, ``list remote|local``, ``scan remote|local [--no-cache]``,
``profiles list|dir``, each taking ``--profile`` after the command as d6tpipe's do.
``pull``/``push --pipe X --profile P [--preview]`` are in pipe_cmds.py.

Results print as d6tpipe prints them (JSON, indented, keys sorted); ``--json`` on the
group prints them on one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import client, handle_errors, main_group

PROFILE = click.option("--profile", "profile", default=None,
                       help="Profile name (d6tpipe's place for it; the group's --profile works too).")


def _client(ctx: click.Context, profile: str | None) -> Any:
    if profile:
        ctx.obj["profile"] = profile
    return client(ctx)


def _dump(ctx: click.Context, value: Any) -> None:
    click.echo(json.dumps(value, indent=None if ctx.obj.get("json") else 4, sort_keys=True, default=str))


@main_group.command("create")
@click.option("--pipe", "pipe_name", required=True, help="Pipe name.")
@click.option("--remote", default=None, help="The remote it reads and writes.")
@click.option("--parent", default=None, help="A pipe whose settings it inherits.")
@click.option("--dir", "folder", default=None, help="Sub-folder of the remote (options.dir).")
@PROFILE
@click.pass_context
@handle_errors
def create_cmd(ctx: click.Context, pipe_name: str, remote: str | None, parent: str | None, folder: str | None,
               profile: str | None) -> None:
    """Create a pipe (or update the keys given) and print its settings.

    d6tpipe's cloud made managed storage for a bare name; here a pipe names its storage:
    --remote, --parent, or a settings file with `pipe upsert`.
    """
    c = _client(ctx, profile)
    given: dict[str, Any] = {k: v for k, v in (("remote", remote), ("parent", parent)) if v}
    if folder is not None:
        given["options"] = {"dir": folder}
    if pipe_name in c.list_pipes():
        own = c.get_pipe(pipe_name)["own"]
        if given:
            c.upsert_pipe({**own, **given, "options": {**own.get("options", {}), **given.get("options", {})}})
    else:
        c.upsert_pipe({"name": pipe_name, **given})
    _dump(ctx, c.get_pipe(pipe_name)["settings"])


@main_group.group("list")
def list_group() -> None:
    """Pipes: `list remote` (all the profile's), `list local` (those with local files)."""


@list_group.command("remote")
@PROFILE
@click.pass_context
@handle_errors
def list_remote(ctx: click.Context, profile: str | None) -> None:
    """The profile's pipes."""
    _dump(ctx, sorted(_client(ctx, profile).list_pipes()))


@list_group.command("local")
@PROFILE
@click.pass_context
@handle_errors
def list_local(ctx: click.Context, profile: str | None) -> None:
    """Pipes whose local folder holds files."""
    c = _client(ctx, profile)
    names = []
    for name in c.list_pipes():
        folder = Path(c.get_pipe(name)["dirpath"])
        if folder.is_dir() and any(folder.iterdir()):
            names.append(name)
    _dump(ctx, sorted(names))


@main_group.group("scan")
def scan_group() -> None:
    """A pipe's files: `scan remote` (the daemon's cached listing), `scan local`."""


@scan_group.command("remote")
@click.option("--pipe", "pipe_name", required=True, help="Pipe name.")
@PROFILE
@click.option("--no-cache", is_flag=True, help="List the remote afresh.")
@click.pass_context
@handle_errors
def scan_remote(ctx: click.Context, pipe_name: str, profile: str | None, no_cache: bool) -> None:
    """Names of the pipe's remote files."""
    _dump(ctx, _client(ctx, profile).pipe(pipe_name).scan_remote(cached=not no_cache))


@scan_group.command("local")
@click.option("--pipe", "pipe_name", required=True, help="Pipe name.")
@PROFILE
@click.pass_context
@handle_errors
def scan_local(ctx: click.Context, pipe_name: str, profile: str | None) -> None:
    """Names of the pipe's local files (with the pipe's filters, as d6tpipe's)."""
    pipe = _client(ctx, profile).pipe(pipe_name)
    opts = pipe.settings.get("options", {})
    _dump(ctx, pipe.scan_local(include=opts.get("include"), exclude=opts.get("exclude")))


@main_group.group("profiles")
def profiles_group() -> None:
    """Profiles: `profiles list`, `profiles dir`."""


@profiles_group.command("list")
@click.pass_context
@handle_errors
def profiles_list(ctx: click.Context) -> None:
    """Profiles that have remotes, pipes or config, with their local folders."""
    c = client(ctx)
    out = {}
    for name in c.list_profiles():
        ctx.obj["profile"] = name
        out[name] = {"filerepo": client(ctx).get_profile_config()["filerepo"]}
    _dump(ctx, out)


@profiles_group.command("dir")
@PROFILE
@click.pass_context
@handle_errors
def profiles_dir(ctx: click.Context, profile: str | None) -> None:
    """The profile's local repo folder."""
    repo = _client(ctx, profile).get_profile_config()["filerepo"]
    if ctx.obj.get("json"):
        _dump(ctx, {"filerepo": repo})
    else:
        click.echo(f"Local repo: {repo}")
