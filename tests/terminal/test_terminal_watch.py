"""``pipedaemon jobs --watch`` on a many-file job (issue 15): files done / total and a rate in
files/s and MB/s, redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from pipedaemon_sdk import PipeClient
from tests.support.terminal import Tty, add_local, pd

FILES = 240
SIZE = 4 << 10
FILES_DONE = re.compile(rf"\b(\d+)/{FILES} files\b")
FILES_RATE = re.compile(r"\b\d[\d,.]* files/s\b")
MB_RATE = re.compile(r"\b\d+\.\d MB/s\b")


def start_slow_pull(tmp_path: Path) -> str:
    """A pull of FILES small files held to a few seconds by the profile's bandwidth limit: its job id."""
    src = tmp_path / "r"
    for i in range(FILES):
        (src / f"d{i % 8}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 8}" / f"f{i:04d}.bin").write_bytes(bytes([i % 251]) * SIZE)
    add_local("many", src)
    with PipeClient() as c:
        c.update_profile_config({"filerepo": str(tmp_path / "repo"), "bwlimit_bps": 160 << 10})
        c.upsert_pipe({"name": "many", "remote": "many"})
        return c.pipe("many").pull(wait=False).id  # type: ignore[no-any-return]


def test_watch_plain_lines_show_files_and_rates(tmp_path: Path) -> None:
    job_id = start_slow_pull(tmp_path)
    out = pd("jobs", "--watch", "--every", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    progress = [line for line in lines if line.startswith(job_id) and "running" in line and "files" in line]
    assert progress, out.stdout
    done = [int(FILES_DONE.search(line)[1]) for line in progress]  # type: ignore[index]
    assert all(0 <= d <= FILES for d in done) and done == sorted(done), done
    assert any(FILES_RATE.search(line) and MB_RATE.search(line) for line in progress), progress
    assert "\r" not in out.stdout and "\x1b" not in out.stdout, "plain lines: nothing redrawn"
    final = [line for line in lines if line.startswith(job_id) and "succeeded" in line]
    assert final and f"{FILES}/{FILES} files" in final[-1], out.stdout
    assert lines[-1] == "no running jobs"


def test_watch_on_a_terminal_redraws_files_and_rates(tmp_path: Path) -> None:
    job_id = start_slow_pull(tmp_path)
    t = Tty(["jobs", "--watch"]).start()
    assert t.finish() == 0, t.text
    drawn = [line for line in t.screen_lines() if line.startswith(job_id[:8]) and "━" in line]
    assert drawn, t.text
    assert any(FILES_DONE.search(line) for line in drawn), drawn[-3:]
    assert any(FILES_RATE.search(line) and MB_RATE.search(line) for line in drawn), drawn[-3:]
    assert all(len(line) <= 80 for line in drawn), [line for line in drawn if len(line) > 80][:2]
    assert "\r" in t.text or "\x1b[" in t.text, "redrawn in place"
    final = [line for line in t.screen_lines() if line.startswith(job_id) and "succeeded" in line]
    assert final and f"{FILES}/{FILES} files" in final[-1], t.text
