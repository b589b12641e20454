"""Progress bars for a terminal; silence when output is not one."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from pipedaemon_sdk import ProgressEvent


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def bar_line(ev: ProgressEvent, width: int = 28) -> str:
    filled = int(width * ev.percent / 100)
    name = ev.file_name if len(ev.file_name) <= 30 else "…" + ev.file_name[-29:]
    files = f" {ev.file_index + 1}/{ev.file_count}" if ev.file_count > 1 else ""
    return (f"{name:<30}{files} [{'#' * filled}{'.' * (width - filled)}] {ev.percent:5.1f}% "
            f"{human_bytes(ev.bytes_done)}/{human_bytes(ev.bytes_total)} {human_bytes(ev.rate_bps)}/s")


class Bar:
    """A one-line bar redrawn in place, at most 10 times a second."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._shown = False

    def __call__(self, ev: ProgressEvent) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and ev.percent < 100:
            return
        self._last = now
        self.stream.write("\r\x1b[2K" + bar_line(ev))
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
