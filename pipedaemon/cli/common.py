"""Shared pieces of the CLI: the group, the client, output and error handling."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import msgspec

from pipedaemon_sdk import DaemonConnectionError, DaemonError, DaemonTimeoutError, PipeClient

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", envvar="PIPEDAEMON_SOCKET", default=None,
              help="Daemon socket (default: $XDG_RUNTIME_DIR/pipedaemon/pipedaemon.sock).")
@click.option("--profile", envvar="PIPEDAEMON_PROFILE", default="default", show_default=True,
              help="Profile whose remotes, pipes and files to use.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.version_option(package_name="pipedaemon")
@click.pass_context
def main_group(ctx: click.Context, socket_path: str | None, profile: str, as_json: bool) -> None:
    """pipedaemon: move data files between this machine and remote storage."""
    ctx.obj = {"socket": socket_path, "profile": profile, "json": as_json}


def client(ctx: click.Context, auto_start: bool = True) -> PipeClient:
    c = PipeClient(socket_path=ctx.obj["socket"], profile=ctx.obj["profile"], auto_start=auto_start)
    ctx.call_on_close(c.close)
    return c.connect()


def _json_wanted() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.obj and ctx.obj.get("json"))


def fail(kind: str, message: str, status: int, code: int | None = None,
         data: dict[str, Any] | None = None) -> NoReturn:
    """Report an error and exit: one line on stderr, and with --json an object on stdout too."""
    if _json_wanted():
        click.echo(json.dumps({"error": {"kind": kind, "code": code, "message": message, "data": data or {}}},
                              sort_keys=True, default=str))
    detail = f" ({json.dumps(data, sort_keys=True, default=str)})" if data else ""
    click.echo(f"error: {message}{detail}" + (f" [code {code}]" if code is not None else ""), err=True)
    sys.exit(status)


def handle_errors(fn: F) -> F:
    """Turn SDK errors into a one-line message and a non-zero exit status (1 daemon error,
    3 no daemon, 130 Ctrl-C); with --json the error is also a JSON object on stdout."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DaemonError as err:
            fail("daemon", err.message, 1, err.code, err.data)
        except DaemonConnectionError as err:
            fail("connection", str(err), 3)
        except DaemonTimeoutError as err:
            fail("timeout", str(err), 3)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(130)
        except click.ClickException as err:
            if _json_wanted():
                usage = {"kind": "usage", "code": None, "message": err.format_message(), "data": {}}
                click.echo(json.dumps({"error": usage}, sort_keys=True))
            raise

    return wrapper  # type: ignore[return-value]


# -- shell completion: names the daemon knows, asked without starting one --------------------------
def _names(ctx: click.Context, method: str) -> list[str]:
    root = ctx.find_root().params
    try:
        with PipeClient(socket_path=root.get("socket_path"), profile=root.get("profile"), auto_start=False,
                        request_timeout_s=2.0) as c:
            names = c.call(method, {"profile": c.profile, "names_only": True})
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []
    return [n for n in names if isinstance(n, str)]


def _job_ids(ctx: click.Context, states: tuple[str, ...]) -> list[str]:
    """Ids of the daemon's jobs in ``states`` (all when empty), newest first; never starts one."""
    root = ctx.find_root().params
    try:
        with PipeClient(socket_path=root.get("socket_path"), profile=root.get("profile"), auto_start=False,
                        request_timeout_s=2.0) as c:
            jobs = [j for s in states for j in c.jobs(state=s)] if states else c.jobs(limit=100)
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []
    return [j.id for j in jobs]


def complete_job(ctx: click.Context, param: Any, incomplete: str) -> list[Any]:
    """Any job's id (``jobs JOB_ID``)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(i) for i in _job_ids(ctx, ()) if i.startswith(incomplete)]


def complete_live_job(ctx: click.Context, param: Any, incomplete: str) -> list[Any]:
    """Ids of the jobs that can still be cancelled: running or queued."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(i) for i in _job_ids(ctx, ("running", "queued")) if i.startswith(incomplete)]


def complete_remote(ctx: click.Context, param: Any, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(n) for n in _names(ctx, "remote.list") if n.startswith(incomplete)]


def complete_pipe(ctx: click.Context, param: Any, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(n) for n in _names(ctx, "pipe.list") if n.startswith(incomplete)]


def complete_operand(ctx: click.Context, param: Any, incomplete: str) -> list[Any]:
    """``REMOTE:`` for remote names; local paths are left to the shell."""
    from click.shell_completion import CompletionItem

    if ":" in incomplete or incomplete.startswith(("/", ".", "~")):
        return [CompletionItem(incomplete, type="file")]
    items = [CompletionItem(f"{n}:") for n in _names(ctx, "remote.list") if n.startswith(incomplete)]
    return items or [CompletionItem(incomplete, type="file")]


def emit(ctx: click.Context, value: Any, human: Callable[[Any], str] | None = None) -> None:
    """Print ``value`` as JSON with --json, else through ``human``."""
    if ctx.obj.get("json") or human is None:
        click.echo(json.dumps(msgspec.to_builtins(value), indent=None if ctx.obj.get("json") else 2,
                              sort_keys=True, default=str))
    else:
        click.echo(human(value))


def parse_size(text: str) -> int:
    """``8MiB``, ``5MB``, ``1048576`` -> bytes."""
    units = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
             "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30}
    s = text.strip().lower()
    num = s.rstrip("kmgib")
    unit = s[len(num):]
    try:
        if unit not in units:
            raise ValueError
        return int(float(num) * units[unit])
    except ValueError:
        raise click.BadParameter(f"not a size: {text!r} (try 8MiB or 1048576)") from None


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        return value if isinstance(value, int) else parse_size(str(value))
