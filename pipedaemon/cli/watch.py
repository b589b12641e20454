"""``pipedaemon jobs --watch``: running jobs live until none run; each one's end stays on screen.

On a terminal, rich draws one line per job (fit to the width, redrawn in place) and
prints a job's final line above them as it ends. With ``--json`` each poll prints one
JSON object per running job, and each job that ended one object with its final state.
Elsewhere (a pipe, a file) only the jobs' final lines are printed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
import msgspec

from pipedaemon_sdk import JobInfo, NotFoundError, PipeClient

from .progress import _progress, console, files_label, job_summary, rate, short

POLL_S = 0.5


def _running(c: PipeClient) -> list[JobInfo]:
    return c.jobs(state="running") + c.jobs(state="queued")


def _ended(c: PipeClient, job_id: str) -> JobInfo | None:
    try:
        return c.job(job_id).info
    except NotFoundError:
        return None


def watch(c: PipeClient, as_json: bool) -> None:
    if as_json:
        _watch_json(c)
    elif sys.stdout.isatty():
        _watch_tty(c)
    else:
        _watch_plain(c)


def _line(obj: Any) -> None:
    click.echo(json.dumps(msgspec.to_builtins(obj), sort_keys=True, default=str))


def _watch_json(c: PipeClient) -> None:
    seen: set[str] = set()
    while True:
        running = _running(c)
        ids = {j.id for j in running}
        for jid in sorted(seen - ids):
            final = _ended(c, jid)
            if final is not None:
                _line(final)
        for j in running:
            _line(j)
        seen = ids
        if not running:
            return
        time.sleep(POLL_S)


def _watch_plain(c: PipeClient) -> None:
    seen: set[str] = set()
    while True:
        running = _running(c)
        ids = {j.id for j in running}
        for j in running:
            if j.id not in seen:
                click.echo(f"{j.id}  {j.kind}  {j.state}")
        for jid in sorted(seen - ids):
            final = _ended(c, jid)
            if final is not None:
                click.echo(job_summary(final))
        seen = ids
        if not running:
            click.echo("no running jobs")
            return
        time.sleep(POLL_S)


def _watch_tty(c: PipeClient) -> None:
    con = console(sys.stdout)
    progress = _progress(con)
    tasks: dict[str, Any] = {}
    width = max(12, con.width // 3)
    with progress:
        while True:
            running = _running(c)
            ids = {j.id for j in running}
            for jid in [k for k in tasks if k not in ids]:
                progress.remove_task(tasks.pop(jid))
                final = _ended(c, jid)
                if final is not None:
                    progress.console.print(job_summary(final), markup=False, highlight=False)
            for j in running:
                ev = j.progress
                label = short(" ".join(x for x in (j.id[:8], j.kind, j.state if j.state != "running" else "",
                                                   files_label(ev) if ev else "") if x), width)
                if j.id not in tasks:
                    tasks[j.id] = progress.add_task(label, total=None, rate="")
                total = max(ev.bytes_total, 1) if ev else None
                speed = {"rate": rate(ev)} if ev and ev.rate_bps > 0 else {}
                progress.update(tasks[j.id], description=label, completed=ev.bytes_done if ev else 0,
                                total=total, **speed)
            if not running:
                break
            time.sleep(POLL_S)
    con.print("no running jobs", highlight=False)
