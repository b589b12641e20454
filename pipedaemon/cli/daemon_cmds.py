"""Commands about the daemon itself and its jobs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from pipedaemon_sdk import JobInfo
from pipedaemon_sdk.protocol.paths import default_socket_path, home_dir

from .common import SizeType, client, complete_job, complete_live_job, emit, handle_errors, main_group
from .follow import run_job


@main_group.command()
@click.option("--socket", "socket_path", default=None, help="Socket to serve (default as the SDK's).")
@click.option("--idle-timeout", type=float, default=None,
              help="Exit after this many idle seconds; 0 never (default: never, 1800 when auto-started).")
@click.option("--detached", is_flag=True, hidden=True, help="Started by the SDK: log to the file only.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--reset-state", is_flag=True,
              help="If the state database is damaged, move it aside and start with an empty state.")
@click.option("--shared", is_flag=True,
              help="Serve every user of the socket's group, each as themselves (docs/sharing.md); "
                   "socket default /run/pipedaemon/shared.sock.")
@click.option("--group", default=None, help="With --shared: the socket's group (default: our own group).")
@click.pass_context
def serve(ctx: click.Context, socket_path: str | None, idle_timeout: float | None, detached: bool,
          log_level: str, reset_state: bool, shared: bool, group: str | None) -> None:
    """Run the daemon in the foreground (systemd and the SDK start it this way)."""
    import logging

    from .. import log
    from ..server import serve as run
    from ..startup import StartupError, check_home

    options = None
    if shared:
        import grp

        from ..access import SharedOptions

        options = SharedOptions(group or grp.getgrgid(os.getgid()).gr_name)
        socket_path = socket_path or ctx.obj["socket"] or "/run/pipedaemon/shared.sock"
    elif group is not None:
        raise click.UsageError("--group goes with --shared")
    sock = Path(socket_path or ctx.obj["socket"] or default_socket_path())
    home = home_dir()
    try:
        check_home(home)  # before the log, which lives in the home
    except StartupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    log.setup(home, to_stderr=not detached, level=getattr(logging, log_level.upper()))
    if idle_timeout is None:
        idle_timeout = 1800.0 if detached else 0.0
    sys.exit(run(sock, home, idle_timeout, reset_state, options))


@main_group.command()
@click.pass_context
@handle_errors
def status(ctx: click.Context) -> None:
    """Show whether the daemon runs, and what it is doing."""
    c = client(ctx, auto_start=False)
    st = c.status()
    emit(ctx, st, lambda s: (
        f"pipedaemon {s.version}  pid {s.pid}  up {s.uptime_s:.0f} s\n"
        f"socket {s.socket_path}\nhome   {s.home}\nlog    {s.log_path or Path(s.home) / 'daemon.log'}\n"
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
    c = client(ctx)
    info = run_job(ctx, lambda: c.hash_file(file, algorithm=algorithm, part_size=part_size, wait=False),
                   detach=False)
    assert info is not None
    result = info.result
    emit(ctx, {"path": str(file.resolve()), **result}, lambda r: f"{r[algorithm]}  {file}")


def _job_line(j: JobInfo) -> str:
    prog = f"  {j.progress.percent:5.1f}%" if j.progress and j.state == "running" else ""
    err = f"  {j.error.message}" if j.error else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.created_at))
    return f"{j.id}  {j.kind:<12} {j.state:<10} {when}{prog}{err}"


@main_group.command()
@click.option("--watch", is_flag=True,
              help="Live progress of running jobs until none run: files done / total, files/s and "
                   "MB/s; each one's final line stays (with --json: one JSON object per line).")
@click.option("--every", "every_s", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              metavar="SECONDS",
              help="With --watch and no terminal: a progress line per running job this often.")
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--limit", type=int, default=50, show_default=True)
@click.argument("job_ids", metavar="[JOB_ID]...", nargs=-1, shell_complete=complete_job)
@click.pass_context
@handle_errors
def jobs(ctx: click.Context, watch: bool, every_s: float, state: str | None, limit: int,
         job_ids: tuple[str, ...]) -> None:
    """List jobs, newest first (or watch the running ones); with JOB_IDs, only those."""
    c = client(ctx)
    if job_ids and watch:
        raise click.UsageError("--watch follows every running job; leave out the JOB_IDs")
    if not watch:
        found = [c.job(i).info for i in job_ids] if job_ids else c.jobs(state=state, limit=limit)
        emit(ctx, found, lambda js: "\n".join(map(_job_line, js)) or "no jobs")
        return
    from .watch import watch

    watch(c, ctx.obj["json"], every_s)


@main_group.command()
@click.argument("job_id", shell_complete=complete_live_job)
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

    env_sock = os.environ.get("PIPEDAEMON_SOCKET")
    if env_sock:
        click.echo(f"warning: PIPEDAEMON_SOCKET is set ({env_sock}), but pipedaemon.socket listens on "
                   "$XDG_RUNTIME_DIR/pipedaemon/pipedaemon.sock: clients using PIPEDAEMON_SOCKET will not "
                   "reach the socket-activated daemon (unset it, or edit ListenStream= to match)", err=True)
    paths = install_units(dest)
    for p in paths:
        click.echo(f"wrote {p}")
    click.echo("now run:\n  systemctl --user daemon-reload\n"
               "  systemctl --user enable --now pipedaemon.socket\n"
               "  systemctl --user status pipedaemon.socket pipedaemon.service")
