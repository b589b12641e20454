"""Storage commands: ``remote add|list|show|rm|check`` and ``ls|stat|cp|rm`` on ``REMOTE:PATH``.

PATH is relative to the remote's root (DESIGN.md's addressing rule); a plain path
(or one starting with ``/``, ``./``, ``../`` or ``~``) is local. Secrets reach the
daemon only from a file, the environment or a hidden prompt, never from argv.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import typing
from pathlib import Path
from typing import Any, NamedTuple

import click
import msgspec

from pipedaemon_sdk import PipeClient
from pipedaemon_sdk.protocol.wire import DownloadResult, UploadResult

from .common import client, complete_operand, complete_remote, emit, handle_errors, main_group
from .follow import detach_option, run_job
from .progress import human_bytes

OPERAND_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127}):(.*)$", re.S)
LOCAL_PREFIXES = ("/", "./", "../", "~")
# Credential fields of every protocol: refused in --option so a secret never sits in argv.
SECRET_FIELDS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "password",
                 "passphrase", "private_key", "credentials"}


class Operand(NamedTuple):
    remote: str | None  # None: a local path
    path: str

    def __str__(self) -> str:
        return self.path if self.remote is None else f"{self.remote}:{self.path}"


def parse_operand(text: str) -> Operand:
    """``REMOTE:PATH`` or a local path (``./a:b`` and ``/x:y`` are local)."""
    if text.startswith(LOCAL_PREFIXES) or text in (".", ".."):
        return Operand(None, text)
    m = OPERAND_RE.match(text)
    return Operand(m[1], m[2]) if m else Operand(None, text)


def remote_operand(text: str) -> Operand:
    op = parse_operand(text)
    if op.remote is None:
        raise click.BadParameter(f"{text!r} is not REMOTE:PATH (a local path was given)")
    return op


def _params(c: PipeClient, **kw: Any) -> dict[str, Any]:
    return {"profile": c.profile, **kw}


# -- remote add: settings from options, credentials from files/env/prompt ---------------------
def _accepts_bool(typ: Any) -> bool:
    return typ is bool or bool in typing.get_args(typ)


def option_value(protocol: str, key: str, text: str) -> Any:
    """``text`` converted to the type the protocol's option has; unknown keys left to the daemon."""
    from ..settings import SCHEMAS

    schema = SCHEMAS.get(protocol)
    types = {f.name: f.type for f in msgspec.structs.fields(schema[0])} if schema else {}
    typ = types.get(key)
    if typ is None:
        return text  # the daemon refuses it with 1003 naming the field
    if _accepts_bool(typ) and text.lower() in ("true", "false", "yes", "no"):
        return text.lower() in ("true", "yes")
    try:
        return msgspec.convert(text, typ, strict=False)
    except msgspec.ValidationError:
        return text


def parse_options(protocol: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--option")
        if key.lower() in SECRET_FIELDS:
            raise click.BadParameter(
                f"{key} is a credential: give it with --credentials-file, --credentials-env or --ask, "
                "never on the command line", param_hint="--option")
        out[key] = option_value(protocol, key, value)
    return out


def _put(creds: dict[str, Any], dotted: str, value: Any) -> None:
    """``read.password`` goes into the read set; ``password`` into the single set."""
    mode, sep, key = dotted.partition(".")
    if sep and mode in ("read", "write"):
        creds.setdefault(mode, {})[key] = value
    else:
        creds[dotted] = value


def _load_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{path} is neither JSON nor YAML: {exc}",
                                     param_hint="--credentials-file") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold a mapping of credential fields",
                                 param_hint="--credentials-file")
    return data


def _from_env(prefix: str) -> dict[str, Any]:
    """``PREFIX_PASSWORD`` -> password; ``PREFIX_READ_X``/``PREFIX_WRITE_X`` -> a read/write set."""
    creds: dict[str, Any] = {}
    for name, value in sorted(os.environ.items()):
        if not name.startswith(prefix) or name == prefix:
            continue
        key = name[len(prefix):].lower()
        for mode in ("read", "write"):
            if key.startswith(mode + "_"):
                key = f"{mode}.{key[len(mode) + 1:]}"
        _put(creds, key, value)
    if not creds:
        raise click.BadParameter(f"no environment variable starts with {prefix!r}",
                                 param_hint="--credentials-env")
    return creds


def gather_credentials(file: Path | None, env_prefix: str | None,
                       ask: tuple[str, ...]) -> dict[str, Any] | None:
    """None when no source was given: the daemon keeps the stored credentials."""
    if file is None and not env_prefix and not ask:
        return None
    creds: dict[str, Any] = _load_file(file) if file else {}
    if env_prefix:
        for mode, value in _from_env(env_prefix).items():
            if isinstance(value, dict) and isinstance(creds.get(mode), dict):
                creds[mode].update(value)
            else:
                creds[mode] = value
    for key in ask:
        _put(creds, key, click.prompt(key, hide_input=True, err=True))
    return creds


@main_group.group()
def remote() -> None:
    """Registered storage: S3, SFTP, FTP(S) and local folders, with daemon-held credentials."""


@remote.command("add")
@click.argument("name")
@click.option("--protocol", required=True, help="s3, sftp, ftp or local.")
@click.option("--location", default=None, help="The S3 bucket, or the SFTP/FTP host.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A protocol option (remotepath, endpoint_url, port, known_hosts, tls...); repeatable.")
@click.option("--credentials-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A JSON or YAML file of credential fields (or read:/write: sets).")
@click.option("--credentials-env", metavar="PREFIX",
              help="Take credentials from environment variables PREFIX<FIELD> (PREFIXREAD_<FIELD>...).")
@click.option("--ask", multiple=True, metavar="FIELD",
              help="Prompt (hidden) for this credential field, e.g. password or write.aws_secret_access_key.")
@click.pass_context
@handle_errors
def remote_add(ctx: click.Context, name: str, protocol: str, location: str | None, options: tuple[str, ...],
               credentials_file: Path | None, credentials_env: str | None, ask: tuple[str, ...]) -> None:
    """Register (or update) remote NAME; credentials left out keep the stored ones."""
    settings: dict[str, Any] = {"name": name, "protocol": protocol,
                                "options": parse_options(protocol, options)}
    if location is not None:
        settings["location"] = location
    creds = gather_credentials(credentials_file, credentials_env, ask)
    if creds is not None:
        settings["credentials"] = creds
    out = client(ctx).upsert_remote(settings)
    emit(ctx, out, lambda r: f"{'added' if r['created'] else 'updated'} remote {r['name']}")


def _remote_line(r: dict[str, Any]) -> str:
    return f"{r['name']:<24} {r['protocol']:<6} {r['root']}"


@remote.command("list")
@click.pass_context
@handle_errors
def remote_list(ctx: click.Context) -> None:
    """The registered remotes (secrets shown as ***)."""
    rows = client(ctx).list_remotes(names_only=False)
    emit(ctx, rows, lambda rs: "\n".join(map(_remote_line, rs)) or "no remotes")


def _show(r: dict[str, Any]) -> str:
    lines = [f"name:        {r['name']}", f"protocol:    {r['protocol']}",
             f"location:    {r['location'] or '-'}", f"root:        {r['root']}", "options:"]
    lines += [f"  {k}: {v}" for k, v in sorted(r["options"].items())]
    creds = r["credentials"]
    if not isinstance(creds, dict):  # sealed with another key
        return "\n".join([*lines, f"credentials: {creds} ({r.get('credentials_error', 'unreadable')})"])
    lines.append("credentials:" + ("" if creds else " (none stored)"))
    lines += [f"  {k}: {json.dumps(v) if isinstance(v, dict) else v}" for k, v in sorted(creds.items())]
    return "\n".join(lines)


@remote.command("show")
@click.argument("name", shell_complete=complete_remote)
@click.pass_context
@handle_errors
def remote_show(ctx: click.Context, name: str) -> None:
    """One remote's settings (secrets shown as ***)."""
    emit(ctx, client(ctx).get_remote(name), _show)


@remote.command("rm")
@click.argument("name", shell_complete=complete_remote)
@click.pass_context
@handle_errors
def remote_rm(ctx: click.Context, name: str) -> None:
    """Forget remote NAME and its credentials (nothing on the storage is touched)."""
    emit(ctx, client(ctx).delete_remote(name), lambda r: f"removed remote {r['name']}")


def _check_text(r: dict[str, Any]) -> str:
    write = {True: "yes", False: "no", None: "not tried"}[r["can_write"]]
    text = (f"{r['remote']}: {'ok' if r['ok'] else 'FAILED'}  endpoint {r['endpoint'] or '-'}  "
            f"read {'yes' if r['can_read'] else 'no'}  write {write}")
    if r["error"]:
        text += f"\nerror: {r['error']['message']} [code {r['error']['code']}]"
    return text


@remote.command("check")
@click.argument("name", shell_complete=complete_remote)
@click.option("--no-write-probe", is_flag=True, help="Only connect and list; write nothing.")
@click.pass_context
@handle_errors
def remote_check(ctx: click.Context, name: str, no_write_probe: bool) -> None:
    """Connect, list the root and (unless --no-write-probe) write and delete a probe file."""
    r = client(ctx).check_remote(name, write_probe=not no_write_probe)
    emit(ctx, r, _check_text)
    if not r["ok"]:
        sys.exit(1)


# -- objects ---------------------------------------------------------------------------------
def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _entry_line(e: dict[str, Any], name: str, long: bool) -> str:
    if e["is_dir"]:
        name = name.rstrip("/") + "/"
    if not long:
        return name
    size = "-" if e["is_dir"] else str(e["size"])
    return f"{size:>14}  {_when(e['modified_at'])}  {(e['etag'] or '-'):<34}  {name}"


def _list(c: PipeClient, op: Operand, recursive: bool) -> tuple[list[dict[str, Any]], str]:
    """Entries under PATH (a folder) or PATH itself (an object); and the folder they are relative to."""
    path = op.path
    if path and not path.endswith("/"):
        folder = path + "/"
        found = c.call("object.list", _params(c, remote=op.remote, prefix=folder, recursive=recursive))
        if found:
            return found, folder
        entry = c.call("object.stat", _params(c, remote=op.remote, key=path))  # 1001 if nothing is there
        return ([], folder) if entry["is_dir"] else ([entry], path.rpartition("/")[0] + "/" * ("/" in path))
    return c.call("object.list", _params(c, remote=op.remote, prefix=path, recursive=recursive)), path


@main_group.command("ls")
@click.argument("target", metavar="REMOTE:PATH", shell_complete=complete_operand)
@click.option("-r", "--recursive", is_flag=True, help="Everything below, not just one level.")
@click.option("-l", "--long", "long", is_flag=True, help="Size, modified time and etag too.")
@click.pass_context
@handle_errors
def ls_cmd(ctx: click.Context, target: str, recursive: bool, long: bool) -> None:
    """List a folder of a remote (names relative to it; --json gives keys relative to the root)."""
    op = remote_operand(target)
    entries, folder = _list(client(ctx), op, recursive)
    entries.sort(key=lambda e: e["name"])
    emit(ctx, entries, lambda es: "\n".join(_entry_line(e, e["name"][len(folder):], long) for e in es))


@main_group.command("stat")
@click.argument("target", metavar="REMOTE:PATH", shell_complete=complete_operand)
@click.pass_context
@handle_errors
def stat_cmd(ctx: click.Context, target: str) -> None:
    """Size, modified time and etag of one object."""
    op = remote_operand(target)
    c = client(ctx)
    e = c.call("object.stat", _params(c, remote=op.remote, key=op.path))
    emit(ctx, e, lambda e: (f"key:      {e['name']}\nsize:     {e['size']} ({human_bytes(e['size'])})\n"
                            f"modified: {_when(e['modified_at'])}\netag:     {e['etag'] or '-'}\n"
                            f"folder:   {'yes' if e['is_dir'] else 'no'}"))


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _into(key: str, name: str) -> str:
    """A destination key ending in '/' (or empty: the root) receives the source's base name."""
    return key + name if key == "" or key.endswith("/") else key


def _upload(ctx: click.Context, c: PipeClient, src: str, dst: Operand, detach: bool) -> dict[str, Any] | None:
    path = Path(src).expanduser()
    if not path.is_file():
        raise click.BadParameter(f"{src} is not a file (cp copies one file)", param_hint="SRC")
    key = _into(dst.path, path.name)
    info = run_job(ctx, lambda: c.upload(path, remote=dst.remote, key=key, wait=False), detach=detach)
    if info is None:
        return None
    res = msgspec.convert(info.result, UploadResult)
    return {"from": str(path.resolve()), "to": f"{dst.remote}:{res.key}", "size": res.size, "etag": res.etag}


def _download(ctx: click.Context, c: PipeClient, src: Operand, dst: str,
              detach: bool) -> dict[str, Any] | None:
    dest = os.path.expanduser(dst)
    info = run_job(ctx, lambda: c.download(remote=src.remote, key=src.path, dest=dest, wait=False),
                   detach=detach)
    if info is None:
        return None
    res = msgspec.convert(info.result, DownloadResult)
    return {"from": f"{src.remote}:{res.key}", "to": res.files[0].local_path, "size": res.size,
            "etag": res.etag}


def _copy(ctx: click.Context, c: PipeClient, src: Operand, dst: Operand,
          detach: bool) -> dict[str, Any] | None:
    key = _into(dst.path, _base(src.path))

    def start() -> Any:
        info = c.call("transfer.copy", _params(c, remote=src.remote, key=src.path, dst_remote=dst.remote,
                                               dst_key=key))
        return c.job(info["id"])

    done = run_job(ctx, start, detach=detach)
    if done is None:
        return None
    res = done.result
    return {"from": str(src), "to": f"{dst.remote}:{res['name']}", "size": res["size"], "etag": res["etag"]}


@main_group.command("cp")
@click.argument("src", shell_complete=complete_operand)
@click.argument("dst", shell_complete=complete_operand)
@click.option("-r", "--recursive", is_flag=True,
              help="Copy a folder remote -> remote (what differs; see `pipedaemon mirror`).")
@detach_option
@click.pass_context
@handle_errors
def cp_cmd(ctx: click.Context, src: str, dst: str, recursive: bool, detach: bool) -> None:
    """Copy one file: local -> REMOTE:PATH (upload), REMOTE:PATH -> local (download), or remote -> remote.

    A destination ending in '/' (or a local folder) keeps the source's name. Ctrl-C cancels
    the copy (exit 130); --detach leaves it running in the daemon. With -r, copy the folder
    SRC_REMOTE:folder/ to DST_REMOTE:folder/ (remote to remote, through the daemon).
    """
    s, d = parse_operand(src), parse_operand(dst)
    if s.remote is None and d.remote is None:
        raise click.UsageError("one side of cp must be REMOTE:PATH (use ./name for a local name with ':')")
    if recursive:
        if s.remote is None or d.remote is None:
            raise click.UsageError("cp -r copies remote folders to remote folders; for a local folder use "
                                   "a pipe (pipedaemon pipe pull/push) or a remote of protocol local")
        from .schedule_cmds import mirror_text, run_mirror

        emit(ctx, run_mirror(client(ctx), src, dst), mirror_text)
        return
    if s.remote is not None and (s.path == "" or s.path.endswith("/")):
        raise click.BadParameter(f"{src} names a folder; cp copies one object (cp -r copies a folder)",
                                 param_hint="SRC")
    c = client(ctx)
    if s.remote is None:
        out = _upload(ctx, c, s.path, d, detach)
    elif d.remote is None:
        out = _download(ctx, c, s, d.path, detach)
    else:
        out = _copy(ctx, c, s, d, detach)
    if out is not None:
        emit(ctx, out, lambda r: f"{r['from']} -> {r['to']} ({human_bytes(r['size'])})")


@main_group.command("rm")
@click.argument("targets", nargs=-1, required=True, metavar="REMOTE:PATH...",
                shell_complete=complete_operand)
@click.option("--yes", "-y", is_flag=True,
              help="Delete without asking (required when stdin is not a terminal).")
@click.pass_context
@handle_errors
def rm_cmd(ctx: click.Context, targets: tuple[str, ...], yes: bool) -> None:
    """Delete objects. If one of a remote's objects is missing, none of that remote's is deleted."""
    ops = [remote_operand(t) for t in targets]
    by_remote: dict[str, list[str]] = {}
    for op in ops:
        assert op.remote is not None
        by_remote.setdefault(op.remote, []).append(op.path)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to delete without --yes (stdin is not a terminal to ask on)")
        listing = "\n".join(f"  {op}" for op in ops)
        click.confirm(f"delete {len(ops)} object(s)?\n{listing}\n", abort=True, err=True)
    c = client(ctx)
    deleted: list[str] = []
    for name, keys in by_remote.items():
        res = c.call("object.delete", _params(c, remote=name, key=keys))
        deleted += [f"{name}:{k}" for k in res["deleted"]]
    emit(ctx, {"deleted": deleted}, lambda r: "\n".join(f"deleted {d}" for d in r["deleted"]))
