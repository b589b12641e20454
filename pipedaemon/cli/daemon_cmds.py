"""Commands about the daemon itself and its jobs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from pipedaemon_sdk import JobInfo, PipeClient
from pipedaemon_sdk.paths import default_socket_path, home_dir

from .common import SizeType, client, emit, handle_errors, main_group
from .progress import Bar, bar_line


@main_group.command()
@click.option("--socket", "socket_path", default=None, help="Socket to serve (default as the SDK's).")
@click.option("--idle-timeout", type=float, default=None,
              help="Exit after this many idle seconds; 0 never (default: never, 1800 when auto-started).")
@click.option("--detached", is_flag=True, hidden=True, help="Started by the SDK: log to the file only.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def serve(ctx: click.Context, socket_path: str | None, idle_timeout: float | None, detached: bool,
          log_level: str) -> None:
    """Run the daemon in the foreground (systemd and the SDK start it this way)."""
    import logging

    from .. import log
    from ..server import serve as run

    sock = Path(socket_path or ctx.obj["socket"] or default_socket_path())
    home = home_dir()
    log.setup(home, to_stderr=not detached, level=getattr(logging, log_level.upper()))
    if idle_timeout is None:
        idle_timeout = 1800.0 if detached else 0.0
    sys.exit(run(sock, home, idle_timeout))


@main_group.command()
@click.pass_context
@handle_errors
def status(ctx: click.Context) -> None:
    """Show whether the daemon runs, and what it is doing."""
    c = client(ctx, auto_start=False)
    st = c.status()
    emit(ctx, st, lambda s: (
        f"pipedaemon {s.version}  pid {s.pid}  up {s.uptime_s:.0f} s\n"
        f"socket {s.socket_path}\nhome   {s.home}\n"
        f"jobs   " + ", ".join(f"{k} {v}" for k, v in sorted(s.jobs.items()))))


@main_group.command()
@click.pass_context
@handle_errors
def stop(ctx: click.Context) -> None:
    """Stop the daemon: running jobs are checkpointed and resume on its next start."""
    from pipedaemon_sdk import DaemonConnectionError

    try:
        c = client(ctx, auto_start=False)
    except DaemonConnectionError:
        emit(ctx, {"stopped": False, "running": False}, lambda _: "the daemon is not running")
        return
    pid = c.shutdown()["pid"]
    for _ in range(300):  # wait until it is gone, so `stop; serve` works
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    emit(ctx, {"stopped": True, "pid": pid}, lambda r: f"stopped pid {r['pid']}")


@main_group.command("hash")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--algorithm", type=click.Choice(["md5", "sha256", "s3etag"]), default="sha256",
              show_default=True)
@click.option("--part-size", type=SizeType(), default="8MiB", show_default=True,
              help="Part size for s3etag (as the upload would use).")
@click.pass_context
@handle_errors
def hash_cmd(ctx: click.Context, file: Path, algorithm: str, part_size: int) -> None:
    """Hash a local file: md5, sha256, or the ETag S3 would give it."""
    bar = Bar()
    try:
        result = client(ctx).hash_file(file, algorithm=algorithm, part_size=part_size, on_progress=bar)
    finally:
        bar.close()
    emit(ctx, {"path": str(file.resolve()), **result}, lambda r: f"{r[algorithm]}  {file}")


def _job_line(j: JobInfo) -> str:
    prog = f"  {j.progress.percent:5.1f}%" if j.progress and j.state == "running" else ""
    err = f"  {j.error.message}" if j.error else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at))
    return f"{j.id}  {j.kind:<12} {j.state:<10} {when}{prog}{err}"


@main_group.command()
@click.option("--watch", is_flag=True, help="Live progress bars for running jobs until none run.")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, watch: bool, state: str | None, limit: int) -> None:
    """List jobs, newest first (or watch the running ones)."""
    c = client(ctx)
    if not watch:
        emit(ctx, c.jobs(state=state, limit=limit), lambda js: "\n".join(map(_job_line, js)) or "no jobs")
        return
    _watch(c, ctx.obj["json"])


def _watch(c: PipeClient, as_json: bool) -> None:
    import json

    import msgspec

    shown = 0
    tty = sys.stdout.isatty()
    while True:
        running = c.jobs(state="running") + c.jobs(state="queued")
        if as_json:
            click.echo(json.dumps(msgspec.to_builtins(running)))
        else:
            lines = [f"{j.id} {j.kind:<10} " + (bar_line(j.progress) if j.progress else j.state)
                     for j in running] or ["no running jobs"]
            if tty and shown:
                sys.stdout.write(f"\x1b[{shown}F\x1b[J")
            click.echo("\n".join(lines))
            shown = len(lines)
        if not running:
            return
        time.sleep(0.5)


@main_group.command()
@click.argument("job_id")
@click.pass_context
@handle_errors
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job: it stops, and its temporary files and partial uploads are removed."""
    info = client(ctx).cancel(job_id)
    emit(ctx, info, _job_line)


@main_group.command("install-service")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the units (default ~/.config/systemd/user).")
@click.pass_context
def install_service(ctx: click.Context, dest: Path | None) -> None:
    """Write the systemd user units and print how to enable them."""
    from ..systemd import install_units

    paths = install_units(dest)
    for p in paths:
        click.echo(f"wrote {p}")
    click.echo("now run:\n  systemctl --user daemon-reload\n"
               "  systemctl --user enable --now pipedaemon.socket\n"
               "  systemctl --user status pipedaemon.socket pipedaemon.service")
