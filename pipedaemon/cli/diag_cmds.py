"""Seeing what the daemon does: ``pipedaemon log [-f]`` and ``pipedaemon doctor``."""

from __future__ import annotations

import os
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from pipedaemon_sdk import DaemonConnectionError, DaemonError, DaemonTimeoutError, PipeClient
from pipedaemon_sdk.protocol.paths import default_socket_path, home_dir, home_holder

from .common import emit, handle_errors, main_group


@main_group.command("log")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as the daemon writes them.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=50, show_default=True,
              help="How many of the last lines to show first.")
@handle_errors
def log_cmd(follow: bool, lines: int) -> None:
    """Show the daemon's log ($PIPEDAEMON_HOME/daemon.log): jobs, errors, retries, restarts."""
    path = home_dir() / "daemon.log"
    if not path.is_file():
        click.echo(f"error: no log at {path} yet (no daemon ran with this PIPEDAEMON_HOME)", err=True)
        sys.exit(1)
    with open(path, "rb") as f:
        tail = f.read().decode("utf-8", "replace").splitlines()[-lines:] if lines else []
        for line in tail:
            click.echo(line)
        if follow:
            try:
                _follow(path, f)
            except KeyboardInterrupt:
                return


def _follow(path: Path, f: object) -> None:
    """Print what is appended; start over when the log is rotated (a new file under the name)."""
    fh = f
    ino = os.fstat(fh.fileno()).st_ino  # type: ignore[attr-defined]
    while True:
        chunk = fh.read()  # type: ignore[attr-defined]
        if chunk:
            click.echo(chunk.decode("utf-8", "replace"), nl=False)
            continue
        time.sleep(0.2)
        try:
            if path.stat().st_ino != ino:
                fh = open(path, "rb")
                ino = os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            continue


# -- doctor ---------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _private_folder(name: str, path: Path, must_exist: bool) -> Check:
    if not path.exists():
        return Check(name, not must_exist, f"{path} does not exist yet (made on first start)",
                     "" if not must_exist else f"mkdir -m 700 -p {path}")
    if not path.is_dir():
        return Check(name, False, f"{path} is not a folder", f"move {path} away, or choose another path")
    st = path.stat()
    if st.st_uid != os.getuid():
        return Check(name, False, f"{path} belongs to uid {st.st_uid}, not to you",
                     "use a folder of your own")
    if st.st_mode & 0o022:
        return Check(name, False, f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})",
                     f"chmod go-w {path}")
    return Check(name, True, f"{path} (mode {stat.S_IMODE(st.st_mode):o})")


def _file_mode(name: str, path: Path) -> Check | None:
    if not path.exists():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(name, False, f"{path} is readable by others (mode {mode:o})", f"chmod 600 {path}")
    return Check(name, True, f"{path} (mode {mode:o})")


def _units() -> Check:
    folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
    have = [n for n in ("pipedaemon.service", "pipedaemon.socket") if (folder / n).is_file()]
    if not have:
        return Check("systemd units", True, f"not installed in {folder} (started on demand)",
                     "optional: pipedaemon install-service")
    if len(have) == 1:
        return Check("systemd units", False, f"only {have[0]} is in {folder}", "pipedaemon install-service")
    if os.environ.get("PIPEDAEMON_SOCKET"):
        return Check("systemd units", False, "installed, but PIPEDAEMON_SOCKET is set: clients will "
                     "not reach the socket-activated daemon",
                     "unset PIPEDAEMON_SOCKET, or edit ListenStream= to match")
    return Check("systemd units", True, f"installed in {folder}")


def _daemon(sock: Path, profile: str) -> list[Check]:
    from .. import __version__

    try:
        with PipeClient(socket_path=sock, profile=profile, auto_start=False, request_timeout_s=10) as c:
            st = c.status()
            out = [Check("daemon", True, f"pid {st.pid} answers on {st.socket_path}")]
            same = st.version == __version__
            out.append(Check("versions", same, f"client {__version__}, daemon {st.version}",
                             "" if same else "pipedaemon stop (the next command starts the new one)"))
            out += [_remote(c, name) for name in c.list_remotes()]
            return out
    except (DaemonConnectionError, DaemonTimeoutError) as exc:
        holder = home_holder(home_dir())
        if holder and holder.get("socket") and holder.get("socket") != str(sock):
            return [Check("daemon", False, f"a daemon (pid {holder.get('pid')}) serves this home on "
                          f"{holder.get('socket')}, not on {sock}",
                          f"export PIPEDAEMON_SOCKET={holder.get('socket')}")]
        return [Check("daemon", True, f"not running ({exc}); it starts on first use",
                      "optional: pipedaemon serve, or pipedaemon install-service")]


def _remote(c: PipeClient, name: str) -> Check:
    try:
        r = c.check_remote(name, write_probe=False)
    except DaemonError as err:
        return Check(f"remote {name}", False, f"{err.message} [code {err.code}]",
                     f"pipedaemon remote show {name}; fix it with pipedaemon remote add {name} ...")
    if r["ok"]:
        return Check(f"remote {name}", True, f"reachable ({r['endpoint']})")
    e = r["error"] or {}
    return Check(f"remote {name}", False, f"{e.get('message')} [code {e.get('code')}]",
                 f"pipedaemon remote check {name}; fix it with pipedaemon remote add {name} ...")


@main_group.command()
@click.pass_context
@handle_errors
def doctor(ctx: click.Context) -> None:
    """Check the daemon, versions, home and socket permissions, every remote and the systemd units,
    with a fix for each problem found (exit 1 if there is one)."""
    home = home_dir()
    sock = Path(ctx.obj["socket"] or default_socket_path())
    checks = [_private_folder("home", home, must_exist=False),
              _private_folder("socket folder", sock.parent, must_exist=False)]
    checks += [c for c in (_file_mode("state", home / "state.db"), _file_mode("socket", sock),
                           _file_mode("log", home / "daemon.log")) if c is not None]
    checks += _daemon(sock, ctx.obj["profile"])
    checks.append(_units())
    bad = [c for c in checks if not c.ok]
    emit(ctx, {"ok": not bad, "checks": [asdict(c) for c in checks]}, lambda _: "\n".join(
        [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" + (f"\n      fix: {c.fix}" if not c.ok else "")
         for c in checks] + [f"{len(bad)} problem(s) found" if bad else "no problems found"]))
    if bad:
        sys.exit(1)
