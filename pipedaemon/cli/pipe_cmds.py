"""Pipe commands: ``pipe upsert|list|show|rm|config|move-repo``, ``pull``, ``push``, ``files``,
``orphans``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pipedaemon_sdk import SyncResult

from .common import client, complete_pipe, emit, handle_errors, main_group
from .follow import detach_option, run_job
from .progress import human_bytes

MODES = ["default", "new", "mod", "all"]


def _load(path: Path, option: str = "--file") -> Any:
    """A JSON or YAML file's content (by extension; YAML also reads JSON); bad syntax named."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"{path} is not valid JSON: {exc}", param_hint=option) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise click.BadParameter(f"{path} is not valid YAML{at}: {problem}", param_hint=option) from None


def _pick(data: Any, name: str | None, what: str, path: Path) -> Any:
    """``data`` itself, or its entry ``name`` (files holding several pipes by name)."""
    if name is None:
        return data
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} does not map names to {what}, so --name {name} cannot pick "
                                 "an entry of it")
    if name not in data:
        raise click.BadParameter(f"no entry {name!r} in the {what} file {path} (it has: "
                                 f"{', '.join(map(str, sorted(data, key=str))) or 'nothing'})")
    return data[name]


def _settings_items(data: Any, name: str | None, path: Path) -> list[Any]:
    """The pipes a settings file holds: one, a list, or (with --name) one of a mapping by name."""
    if name is not None and isinstance(data, dict):
        data = {"name": name, **data}  # in a file of pipes by name, the key is the name
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict):
            raise click.BadParameter(f"{path} must hold a pipe's settings (a mapping) or a list of them, "
                                     f"not {type(item).__name__}", param_hint="--file")
    if name is None and len(items) == 1 and "name" not in items[0] and items[0] and all(
            isinstance(v, dict) for v in items[0].values()):
        raise click.BadParameter(f"{path} maps names to pipes ({', '.join(sorted(items[0]))}); pick one "
                                 "with --name", param_hint="--file")
    return items


@main_group.group("pipe")
def pipe_group() -> None:
    """Pipes: named datasets on a remote, pulled and pushed by what changed."""


@pipe_group.command("upsert")
@click.option("--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pipe settings (.json or .yaml): one pipe, a list of pipes, or pipes by name with --name.")
@click.option("--credentials-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Credentials of a self-hosted pipe, kept out of the settings file (and version control).")
@click.option("--name", default=None, help="Take this entry of a file that maps names to settings.")
@click.pass_context
@handle_errors
def pipe_upsert(ctx: click.Context, file: Path, credentials_file: Path | None, name: str | None) -> None:
    """Create or replace pipes from a settings file."""
    items = _settings_items(_pick(_load(file), name, "settings", file), name, file)
    if credentials_file is not None:
        creds = _pick(_load(credentials_file, "--credentials-file"), name, "credentials", credentials_file)
        if isinstance(creds, dict) and "credentials" in creds:
            creds = creds["credentials"]
        if len(items) != 1:
            raise click.BadParameter("--credentials-file needs a file with exactly one pipe")
        items = [{**items[0], "credentials": creds}]
    c = client(ctx)
    out = [c.upsert_pipe(s) for s in items]
    emit(ctx, out, lambda rs: "\n".join(f"{'created' if r['created'] else 'updated'} pipe {r['name']}"
                                        for r in rs))


@pipe_group.command("list")
@click.option("--long", "long_", is_flag=True, help="Settings too.")
@click.pass_context
@handle_errors
def pipe_list(ctx: click.Context, long_: bool) -> None:
    """List the profile's pipes."""
    pipes = client(ctx).list_pipes(names_only=not long_)
    if long_:
        emit(ctx, pipes, lambda ps: "\n".join(
            f"{p['name']:<24} {p.get('remote') or p.get('self_hosted_by') or '?':<16} {p.get('dirpath', '')}"
            if "error" not in p else f"{p['name']:<24} error: {p['error']['message']}" for p in ps)
            or "no pipes")
    else:
        emit(ctx, pipes, lambda ps: "\n".join(ps) or "no pipes")


@pipe_group.command("show")
@click.argument("name", shell_complete=complete_pipe)
@click.pass_context
@handle_errors
def pipe_show(ctx: click.Context, name: str) -> None:
    """A pipe's effective settings (credentials as ***) and local folder."""
    emit(ctx, client(ctx).get_pipe(name), lambda p: json.dumps(p, indent=2, sort_keys=True, default=str))


@pipe_group.command("rm")
@click.argument("name", shell_complete=complete_pipe)
@click.pass_context
@handle_errors
def pipe_rm(ctx: click.Context, name: str) -> None:
    """Forget a pipe (its files stay, locally and remotely)."""
    emit(ctx, client(ctx).delete_pipe(name), lambda r: f"deleted pipe {r['name']}")


@pipe_group.command("config")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
              help="Change a key: filerepo, scan_ttl_s, parallel_files, bwlimit_bps.")
@click.pass_context
@handle_errors
def pipe_config(ctx: click.Context, pairs: tuple[str, ...]) -> None:
    """Show (or change) the profile's config."""
    c = client(ctx)
    if pairs:
        update: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
            try:
                update[key] = json.loads(value)
            except ValueError:
                update[key] = value  # a bare string such as a path
        config = c.update_profile_config(update)
    else:
        config = c.get_profile_config()
    emit(ctx, config, lambda cfg: "\n".join(f"{k:<15} {v}" for k, v in sorted(cfg.items())))


@pipe_group.command("move-repo")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
@handle_errors
def pipe_move_repo(ctx: click.Context, path: Path) -> None:
    """Move the profile's local pipe files to PATH and use it from now on."""
    emit(ctx, client(ctx).move_repo(path), lambda r: f"filerepo {r['old']} -> {r['filerepo']}")


# -- pull and push --------------------------------------------------------------------------------
def _summary(verb: str, result: Any, preview: bool) -> str:
    lines = [f"  {r['action']:<9} {r['filename']}  ({human_bytes(r['size'])})" for r in result]
    s = getattr(result, "summary", {})
    head = (f"{'would ' + verb if preview else verb + 'ed'} {len(result)} file(s), "
            f"{human_bytes(sum(r['size'] for r in result))}")
    for label, items in (("conflict", result.conflicts), ("kept", result.kept), ("skipped", result.skipped)):
        if items:
            head += f"; {len(items)} {label}"
            lines += [f"  {label:<9} {r['filename']}" for r in items]
    if result.conflicts:
        lines.append("conflicts changed on both sides and were not moved; use --merge-mode keep|overwrite")
    if s.get("elapsed_s") is not None:
        head += f" in {s['elapsed_s']:.1f} s"
    out = [head, *lines]
    for doc, text in getattr(result, "docs", {}).items():
        out += ["", f"--- {doc} ---", text.rstrip()]
    return "\n".join(out)


def _sync_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--pipe", "pipe_name", required=True, help="Pipe name.", shell_complete=complete_pipe),
        detach_option,
        click.option("--preview", is_flag=True, help="Show what would move; move nothing."),
        click.option("--include", default=None, help="Only files matching these globs ('*.csv|*.xls')."),
        click.option("--exclude", default=None, help="Skip files matching these globs."),
        click.option("--mode", type=click.Choice(MODES), default="default", show_default=True,
                     help="default: new and modified; new; mod: modified only; all."),
        click.option("--nrecent", type=int, default=0, help="Only the N newest files (negative: oldest)."),
        click.option("--merge-mode", type=click.Choice(["keep", "overwrite"]), default=None,
                     help="Files changed on both sides: keep the destination's, or overwrite it."),
        click.option("--no-cache", is_flag=True, help="List the remote afresh instead of using the cache."),
        click.option("--file", "files", multiple=True, help="Only these files (repeatable); forces them."),
        click.option("--record", is_flag=True, help="Link each moved file to the version it came from."),
        click.option("--profile", default=None, help="Profile (d6tpipe's place; the group's works too)."),
    ]):
        f = opt(f)
    return f


def _sync(ctx: click.Context, direction: str, pipe_name: str, preview: bool, include: str | None,
          exclude: str | None, mode: str, nrecent: int, merge_mode: str | None, no_cache: bool,
          files: tuple[str, ...], detach: bool, record: bool = False, profile: str | None = None) -> None:
    if profile:
        ctx.obj["profile"] = profile
    pipe = client(ctx).pipe(pipe_name, mode=mode)
    kw: dict[str, Any] = {"files": list(files) or None, "include": include, "exclude": exclude,
                          "nrecent": nrecent, "merge_mode": merge_mode, "cached": not no_cache}
    if preview:
        result = getattr(pipe, f"{direction}_preview")(**kw)
    else:
        info = run_job(ctx, lambda: getattr(pipe, direction)(wait=False, record=record, **kw),
                       detach=detach,
                       label=f"{direction} {pipe_name}")
        if info is None:
            return
        result = SyncResult.of(info.result)
    raw = {"files": list(result), "conflicts": result.conflicts, "kept": result.kept,
           "skipped": result.skipped, "docs": result.docs, "summary": result.summary, "preview": preview}
    emit(ctx, raw, lambda _: _summary(direction, result, preview))


@main_group.command("pull")
@_sync_options
@click.pass_context
@handle_errors
def pull_cmd(ctx: click.Context, **kw: Any) -> None:
    """Download a pipe's new and changed files."""
    _sync(ctx, "pull", **kw)


@main_group.command("push")
@_sync_options
@click.pass_context
@handle_errors
def push_cmd(ctx: click.Context, **kw: Any) -> None:
    """Upload a pipe's new and changed local files."""
    _sync(ctx, "push", **kw)


def _file_lines(rows: list[dict[str, Any]]) -> str:
    import time

    def when(r: dict[str, Any]) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(r["modified_at"] or 0))

    return "\n".join(f"{human_bytes(r['size']):>10}  {when(r)}  {r['filename']}" for r in rows) or "no files"


@main_group.command("files")
@click.option("--pipe", "pipe_name", required=True, help="Pipe name.", shell_complete=complete_pipe)
@click.option("--include", default=None)
@click.option("--exclude", default=None)
@click.option("--sortby", type=click.Choice(["filename", "modified_at", "size"]), default="filename")
@click.option("--remote", "remote", is_flag=True, help="The remote's files (the daemon's cached listing).")
@click.option("--no-cache", is_flag=True, help="With --remote: list afresh.")
@click.pass_context
@handle_errors
def files_cmd(ctx: click.Context, pipe_name: str, include: str | None, exclude: str | None, sortby: str,
              remote: bool, no_cache: bool) -> None:
    """A pipe's local files (or, with --remote, its remote files)."""
    pipe = client(ctx).pipe(pipe_name)
    if remote:
        rows = pipe.scan_remote(attributes=True, cached=not no_cache, sortby=sortby, include=include,
                                exclude=exclude)
    else:
        rows = pipe.scan_local(include=include, exclude=exclude, attributes=True, sortby=sortby)
    emit(ctx, rows, _file_lines)


@main_group.command("orphans")
@click.option("--pipe", "pipe_name", required=True, help="Pipe name.", shell_complete=complete_pipe)
@click.option("--direction", type=click.Choice(["local", "remote", "both"]), default="local",
              show_default=True, help="local: files only here; remote: files only on the remote.")
@click.option("--delete", is_flag=True, help="Delete them (without it they are only listed).")
@click.option("--no-cache", is_flag=True, help="List the remote afresh.")
@click.pass_context
@handle_errors
def orphans_cmd(ctx: click.Context, pipe_name: str, direction: str, delete: bool, no_cache: bool) -> None:
    """Files present on one side only; --delete removes them."""
    pipe = client(ctx).pipe(pipe_name)
    rows = pipe.remove_orphans(direction=direction, dryrun=not delete, cached=not no_cache)
    emit(ctx, rows, lambda rs: "\n".join(f"{r['action']:<12} {r['side']:<6} {r['filename']}" for r in rs)
         or "no orphans")
