"""Progress on a terminal, drawn by rich: fits the width, redraws in place, one line per
running file for many-file jobs, an ETA, and a final line that stays. Silence when the
output is not a terminal."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from pipedaemon_sdk import JobInfo, ProgressEvent

# Sizes in decimal units, as rates are: ProgressEvent.rate_mbps is rate_bps / 1e6 (docs/sdk.md),
# and rich's speed column says MB/s for 10^6 bytes/s, so a size beside a rate is in the same MB.
UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units (1 MB = 10^6 bytes), the units of every rate shown."""
    for unit in UNITS:
        if abs(n) < 1000 or unit == UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} {UNITS[-1]}"


def rate(ev: ProgressEvent) -> str:
    """The daemon's rate as the SDK gives it: ``rate_mbps`` (rate_bps / 1e6), in MB/s."""
    return f"{ev.rate_mbps:.1f} MB/s"


def files_label(ev: ProgressEvent) -> str:
    """``3/4 files`` counts files finished (the daemon's file_index), never more than the total."""
    return f"{min(ev.file_index, ev.file_count)}/{ev.file_count} files" if ev.file_count > 1 else ""


def short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def console(stream: TextIO | None = None) -> Any:
    from rich.console import Console

    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=False)


def _progress(con: Any) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    # Ratio 1 on the label: the label takes what the other columns leave, so a line never wraps.
    return Progress(TextColumn("{task.description}", table_column=None), BarColumn(bar_width=None),
                    TaskProgressColumn(), DownloadColumn(binary_units=False),
                    _rate_column(),
                    TimeRemainingColumn(compact=True), console=con, transient=False,
                    refresh_per_second=8, expand=True)


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.table import Column
    from rich.text import Text

    class Rate(ProgressColumn):
        """The daemon's rate (a task's ``rate`` field, from ``rate``): blank until it tells one."""

        def render(self, task: Any) -> Text:
            return Text(str(task.fields.get("rate", "")), style="progress.data.speed")

    return Rate(table_column=Column(no_wrap=True))  # "412 files/s 0.4 MB/s" stays on one line


class Bar:
    """``on_progress`` for one job: its total, and one line per running file (pipes)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, label: str = "") -> None:
        stream = stream or sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self.label = label
        self._con = console(stream) if self.enabled else None
        self._p: Any = None
        self._main: Any = None
        self._files: dict[str, Any] = {}

    def _label_width(self) -> int:
        return max(12, (self._con.width if self._con else 80) // 3)

    def __call__(self, ev: ProgressEvent) -> None:
        if not self.enabled or (self._p is None and ev.bytes_total <= 0 and ev.file_count <= 1):
            return  # nothing to draw yet (a job that moves nothing draws nothing)
        if self._p is None:
            self._p = _progress(self._con)
            self._p.start()
            self._main = self._p.add_task("", total=max(ev.bytes_total, 1), rate="")
        w = self._label_width()
        if ev.file_count > 1:
            head = " ".join(x for x in (self.label, files_label(ev)) if x)
        else:
            head = ev.file_name or self.label
        self._p.update(self._main, description=short(head, w), completed=ev.bytes_done,
                       total=max(ev.bytes_total, 1), **({"rate": rate(ev)} if ev.rate_bps > 0 else {}))
        self._files_update(ev, w)

    def _files_update(self, ev: ProgressEvent, w: int) -> None:
        running = {f.name: f for f in ev.running} if ev.file_count > 1 else {}
        for name in list(self._files):
            if name not in running:
                self._p.remove_task(self._files.pop(name))
        for name, f in running.items():
            if name not in self._files:
                self._files[name] = self._p.add_task("", total=max(f.bytes_total, 1), rate="")
            self._p.update(self._files[name], description="  " + short(name, w - 2),
                           completed=f.bytes_done, total=max(f.bytes_total, 1))

    def close(self, final: JobInfo | None = None) -> None:
        """Stop redrawing; the job's last line stays on the screen."""
        if self._p is None:
            return
        for tid in self._files.values():
            self._p.remove_task(tid)
        self._files.clear()
        if final is not None and final.progress is not None:
            ev = final.progress
            done = ev.bytes_done if final.state != "succeeded" else max(ev.bytes_done, ev.bytes_total)
            self._p.update(self._main, completed=done, total=max(ev.bytes_total, 1))
        self._p.stop()
        self._p = None


def job_summary(j: JobInfo) -> str:
    """One line for a finished job: id, kind, outcome, bytes, files, time."""
    ev = j.progress
    size = f"  {human_bytes(ev.bytes_done)}" if ev and ev.bytes_total else ""
    files = f"  {files_label(ev)}" if ev and ev.file_count > 1 else ""
    took = f"  in {max(0.0, j.updated_at - j.created_at):.1f} s"
    err = f"  {j.error.message} [code {j.error.code}]" if j.error else ""
    return f"{j.id}  {j.kind}  {j.state}{size}{files}{took}{err}"
