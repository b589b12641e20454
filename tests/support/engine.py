"""Helpers for the transfer engine tests: daemons we can kill, remotes, files."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from pipedaemon_sdk import PipeClient
from tests.support.spine import kill9


def make_file(path: Path, size: int, seed: int = 1) -> str:
    """A file of ``size`` pseudo-random bytes; its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    block = hashlib.sha512(str(seed).encode()).digest() * 16384  # 1 MiB, varied per seed
    with open(path, "wb") as f:
        left = size
        i = 0
        while left:
            piece = bytes([(i + seed) % 251]) + block[1:min(len(block), left)]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
            i += 1
    return h.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def wait_progress(client: PipeClient, job_id: str, percent: float, timeout: float = 120) -> None:
    """Block until the job has moved ``percent`` of its bytes (it must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.job(job_id).refresh()
        if info.state not in ("queued", "running"):
            raise AssertionError(f"job ended before {percent}%: {info.state} {info.error}")
        if info.progress and info.progress.bytes_total and info.progress.percent >= percent:
            return
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {percent}%")


def kill_daemon(client: PipeClient) -> None:
    pid = client.status().pid
    client.close()
    kill9(pid)


def temp_leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".pdpart" in p.name] if folder.exists() else []


def env_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
