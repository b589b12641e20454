"""``pipedaemon jobs --watch``: running jobs live until none run; each one's end stays on screen.

On a terminal, rich draws one line per job (fit to the width, redrawn in place): files
done / total for a many-file job, and its rate in files/s and MB/s; a job's final line is
printed above them as it ends. With ``--json`` each poll prints one JSON object per running
job, and each job that ended one object with its final state. Elsewhere (a pipe, a file)
each running job gets a plain line every ``every_s`` seconds while it advances, and its
final line when it ends.

Cheap on a job of a million files: one ``job.list`` per state every POLL_S, whose answer
carries each job's latest (coalesced) progress; rates come from the difference between
polls, never from per-file events.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import Any

import click
import msgspec

from pipedaemon_sdk import JobInfo, NotFoundError, PipeClient, ProgressEvent

from .progress import _progress, console, files_label, human_bytes, job_summary, short

POLL_S = 0.5
WINDOW_S = 5.0  # rates are measured over the polls of the last few seconds
EVERY_S = 10.0  # plain output: a line per running job this often


class Speed:
    """Files/s and bytes/s of one job, from the progress seen at successive polls."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, ev: ProgressEvent) -> None:
        self.samples.append((now, ev.file_index, ev.bytes_done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= WINDOW_S:
            self.samples.popleft()

    def _span(self) -> tuple[float, int, int] | None:
        if len(self.samples) < 2:
            return None
        (t0, f0, b0), (t1, f1, b1) = self.samples[0], self.samples[-1]
        return (t1 - t0, f1 - f0, b1 - b0) if t1 > t0 else None

    def files_per_s(self) -> float | None:
        span = self._span()
        return max(0.0, span[1] / span[0]) if span else None

    def bytes_per_s(self, ev: ProgressEvent) -> float | None:
        if ev.rate_bps > 0:
            return ev.rate_bps  # the daemon's own rate when it tells one
        span = self._span()
        return max(0.0, span[2] / span[0]) if span else None


def speed_text(ev: ProgressEvent, speed: Speed) -> str:
    """``412 files/s 0.4 MB/s`` (files/s only for many-file jobs); empty until a rate is known."""
    parts = []
    fps = speed.files_per_s()
    if ev.file_count > 1 and fps is not None:
        parts.append(f"{fps:,.0f} files/s" if fps >= 10 else f"{fps:.1f} files/s")
    bps = speed.bytes_per_s(ev)
    if bps is not None:
        parts.append(f"{bps / 1e6:.1f} MB/s")
    return " ".join(parts)


def plain_line(j: JobInfo, speed: Speed) -> str:
    """One running job as a line of text: files done / total, bytes, rates."""
    ev = j.progress
    parts = [j.id, j.kind, j.state]
    if ev is not None:
        if ev.file_count > 1:
            parts.append(files_label(ev))
        if ev.bytes_total > 0:
            parts.append(f"{human_bytes(ev.bytes_done)} / {human_bytes(ev.bytes_total)}")
        rates = speed_text(ev, speed)
        if rates:
            parts.append(rates)
    return "  ".join(parts)


def _running(c: PipeClient) -> list[JobInfo]:
    return c.jobs(state="running") + c.jobs(state="queued")


def _ended(c: PipeClient, job_id: str) -> JobInfo | None:
    try:
        return c.job(job_id).info
    except NotFoundError:
        return None


def watch(c: PipeClient, as_json: bool, every_s: float = EVERY_S) -> None:
    if as_json:
        _watch_json(c)
    elif sys.stdout.isatty():
        _watch_tty(c)
    else:
        _watch_plain(c, every_s)


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


def _watch_plain(c: PipeClient, every_s: float) -> None:
    seen: set[str] = set()
    speeds: dict[str, Speed] = {}
    shown: dict[str, tuple[float, int, int]] = {}  # job id -> (when, files, bytes) of its last line
    while True:
        running = _running(c)
        now = time.monotonic()
        ids = {j.id for j in running}
        for j in running:
            if j.id not in seen:
                click.echo(f"{j.id}  {j.kind}  {j.state}")
                shown[j.id] = (now, -1, -1)
            ev = j.progress
            if ev is None:
                continue
            speed = speeds.setdefault(j.id, Speed())
            speed.add(now, ev)
            when, files, done = shown[j.id]
            if now - when >= every_s and (ev.file_index, ev.bytes_done) != (files, done):
                click.echo(plain_line(j, speed))
                shown[j.id] = (now, ev.file_index, ev.bytes_done)
        for jid in sorted(seen - ids):
            speeds.pop(jid, None)
            shown.pop(jid, None)
            final = _ended(c, jid)
            if final is not None:
                click.echo(job_summary(final))
        seen = ids
        if not running:
            click.echo("no running jobs")
            return
        time.sleep(POLL_S)


def _label(j: JobInfo) -> str:
    """A live line's label: the job and where it stands (a many-file job: its files, not its kind)."""
    ev = j.progress
    files = files_label(ev) if ev else ""
    state = j.state if j.state != "running" else ""
    return " ".join(x for x in (j.id[:8], state, files or j.kind) if x)


def _watch_tty(c: PipeClient) -> None:
    con = console(sys.stdout)
    progress = _progress(con)
    tasks: dict[str, Any] = {}
    speeds: dict[str, Speed] = {}
    width = max(12, con.width // 3)
    with progress:
        while True:
            running = _running(c)
            now = time.monotonic()
            ids = {j.id for j in running}
            for jid in [k for k in tasks if k not in ids]:
                progress.remove_task(tasks.pop(jid))
                speeds.pop(jid, None)
                final = _ended(c, jid)
                if final is not None:
                    progress.console.print(job_summary(final), markup=False, highlight=False)
            for j in running:
                ev = j.progress
                label = short(_label(j), width)
                if j.id not in tasks:
                    tasks[j.id] = progress.add_task(label, total=None, rate="")
                total = max(ev.bytes_total, 1) if ev else None
                rates = {}
                if ev is not None:
                    speed = speeds.setdefault(j.id, Speed())
                    speed.add(now, ev)
                    rates = {"rate": speed_text(ev, speed)}
                progress.update(tasks[j.id], description=label, completed=ev.bytes_done if ev else 0,
                                total=total, **rates)
            if not running:
                break
            time.sleep(POLL_S)
    con.print("no running jobs", highlight=False)
