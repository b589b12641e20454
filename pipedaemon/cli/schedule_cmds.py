"""``pipedaemon schedule``, ``watch`` and ``mirror``: the daemon working on its own (docs/schedules.md)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
import msgspec

from pipedaemon_sdk import PipeClient

from .common import client, emit, handle_errors, main_group
from .progress import Bar, human_bytes


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _schedule_text(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    when = f"every {s['every']}" if s.get("every") is not None else f"at {s.get('at')}"
    jitter = f" ±{s['jitter']}" if s.get("jitter") is not None else ""
    return f"{s.get('action', 'check')} {when}{jitter}"


def _row_line(r: dict[str, Any]) -> str:
    err = f"  error: {r['last_error']['message']}" if r.get("last_error") else ""
    state = "running" if r["running"] else (r.get("last_status") or "never run")
    failed = f" ({r['failures']} failed)" if r["failures"] else ""
    return (f"{r['pipe']}\t{_schedule_text(r['schedule'])}\tnext {_when(r['next_run'])}\t"
            f"last {_when(r['last_run'])} {state}{failed}{err}")


@main_group.group("schedule")
def schedule_group() -> None:
    """Pipes the daemon checks, pulls, pushes or mirrors on its own."""


@schedule_group.command("list")
@click.pass_context
@handle_errors
def schedule_list(ctx: click.Context) -> None:
    """Scheduled pipes: what, when next, how the last run went."""
    rows = client(ctx).schedules()
    emit(ctx, rows, lambda rs: "\n".join(_row_line(r) for r in rs) or "no schedules")


@schedule_group.command("set")
@click.argument("pipe")
@click.option("--every", default=None, help="Period: 30s, 15m, 2h, 1d.")
@click.option("--at", "at", default=None, help="HH:MM, local time, daily.")
@click.option("--action", type=click.Choice(["check", "pull", "push", "mirror"]), default="check",
              show_default=True, help="check: scan and report changes; pull/push/mirror: run that job.")
@click.option("--jitter", default=None, help="Up to this much later, at random (e.g. 1m).")
@click.pass_context
@handle_errors
def schedule_set(ctx: click.Context, pipe: str, every: str | None, at: str | None, action: str,
                 jitter: str | None) -> None:
    """Give PIPE a schedule (replacing its old one)."""
    spec = {k: v for k, v in (("every", every), ("at", at), ("action", action), ("jitter", jitter))
            if v is not None}
    out = client(ctx).set_schedule(pipe, spec)
    emit(ctx, out, lambda r: f"{r['pipe']}: {_schedule_text(r['schedule'])}")


@schedule_group.command("rm")
@click.argument("pipe")
@click.pass_context
@handle_errors
def schedule_rm(ctx: click.Context, pipe: str) -> None:
    """Remove PIPE's schedule."""
    out = client(ctx).remove_schedule(pipe)
    emit(ctx, out, lambda r: f"{r['pipe']}: " + ("schedule removed" if r["removed"] else "had no schedule"))


@schedule_group.command("run-now")
@click.argument("pipe")
@click.pass_context
@handle_errors
def schedule_run_now(ctx: click.Context, pipe: str) -> None:
    """Run PIPE's schedule now (not while its previous run is still going)."""
    out = client(ctx).run_schedule_now(pipe)
    emit(ctx, out, lambda r: f"{r['pipe']}: " + ("started" if r["started"] else "still running its last run"))


def _event_line(ev: Any) -> str:
    if ev.kind == "job.finished" and ev.job is not None:
        err = f": {ev.job.error.message}" if ev.job.error else ""
        return f"#{ev.id} {ev.pipe}: {ev.job.kind} {ev.job.state}{err} (job {ev.job.id})"
    if ev.kind == "schedule.failed":
        msg = (ev.error or {}).get("message", "")
        return f"#{ev.id} {ev.pipe}: scheduled {ev.action} failed ({ev.failures} in a row): {msg}"
    parts = [f"{len(getattr(ev, k))} {k}" for k in ("new", "modified", "gone") if getattr(ev, k)]
    names = ", ".join((ev.new + ev.modified + ev.gone)[:5])
    return f"#{ev.id} {ev.pipe}: {', '.join(parts)}: {names}"


@main_group.command("watch")
@click.option("--pipe", "pipes", multiple=True, help="Only this pipe (repeat for more).")
@click.option("--since", type=int, default=None, help="First the stored events after this id.")
@click.option("--count", type=int, default=0, help="Stop after this many events (0: run until stopped).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line.")
@click.pass_context
@handle_errors
def watch_cmd(ctx: click.Context, pipes: tuple[str, ...], since: int | None, count: int,
              as_json: bool) -> None:
    """Print change events as they happen: files new, modified or gone remotely, scheduled jobs'
    ends, failed scheduled runs."""
    if as_json:
        ctx.obj["json"] = True
    c: PipeClient = client(ctx)
    seen = 0
    with c.watch(pipes=list(pipes) or None, since=since) as w:
        if w.missed:
            click.echo(f"warning: events after #{since} were pruned; some are missing", err=True)
        try:
            for ev in w:
                if ctx.obj.get("json"):
                    click.echo(json.dumps(msgspec.to_builtins(ev), sort_keys=True))
                else:
                    click.echo(_event_line(ev))
                seen += 1
                if count and seen >= count:
                    break
        except KeyboardInterrupt:
            pass


def run_mirror(c: PipeClient, src: str, dst: str, **kw: Any) -> dict[str, Any]:
    bar = Bar()
    try:
        return c.mirror(src, dst, on_progress=bar, **kw)
    finally:
        bar.close()


def mirror_text(r: dict[str, Any]) -> str:
    s = r["summary"]
    how = " (copied by the storage)" if r.get("server_side") else ""
    lines = [f"{f['action']}: {f['filename']}" for f in r["files"]]
    lines += [f"deleted: {n}" for n in r["deleted"]]
    lines.append(f"{s['copied']} copied ({human_bytes(s['bytes'])}){how}, {s['unchanged'] + s['adopted']} "
                 f"unchanged, {s['deleted']} deleted")
    return "\n".join(lines)


@main_group.command("mirror")
@click.argument("src", metavar="SRC_REMOTE:folder/")
@click.argument("dst", metavar="DST_REMOTE:folder/")
@click.option("--mode", type=click.Choice(["default", "new", "mod", "all"]), default="default",
              show_default=True, help="default: new and changed; new: only new; mod: only changed; all.")
@click.option("--include", default=None, help="Only names matching (glob; '|' separates several).")
@click.option("--exclude", default=None, help="Not names matching.")
@click.option("--delete", is_flag=True, help="Also delete destination files the source no longer has.")
@click.pass_context
@handle_errors
def mirror_cmd(ctx: click.Context, src: str, dst: str, mode: str, include: str | None, exclude: str | None,
               delete: bool) -> None:
    """Copy new and changed files from one remote folder to another, through the daemon (no local copy)."""
    out = run_mirror(client(ctx), src, dst, mode=mode, include=include, exclude=exclude, delete=delete)
    emit(ctx, out, mirror_text)
