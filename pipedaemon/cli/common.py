"""Shared pieces of the CLI: the group, the client, output and error handling."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

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


def handle_errors(fn: F) -> F:
    """Turn SDK errors into a one-line message and a non-zero exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DaemonError as err:
            detail = f" ({json.dumps(err.data, sort_keys=True)})" if err.data else ""
            click.echo(f"error: {err.message}{detail} [code {err.code}]", err=True)
            sys.exit(1)
        except (DaemonConnectionError, DaemonTimeoutError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


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
