"""Durable notes that let a restarted daemon continue a file where it stopped.

One slot per (job, target file): a note (what is being moved, the temporary name
or the multipart upload id) and one row per finished chunk, so recording a chunk
costs one small insert whatever the file's size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from ..state import State


class ResumeSlot:
    def __init__(self, state: State, job_id: str, target: str, stopping: Any = None) -> None:
        self.state = state
        self.job_id = job_id
        self.target = target
        self._stopping = stopping  # callable: is the daemon stopping (keep partial work)?

    def keep_partial(self) -> bool:
        """True while the daemon shuts down: partial work stays for the next daemon."""
        return bool(self._stopping and self._stopping())

    async def load(self) -> tuple[dict[str, Any] | None, dict[int, Any]]:
        row = await self.state.fetchone(
            "SELECT note FROM transfer_resume WHERE job_id=? AND target=?", (self.job_id, self.target))
        if row is None:
            return None, {}
        rows = await self.state.fetchall(
            "SELECT idx, info FROM transfer_done WHERE job_id=? AND target=?", (self.job_id, self.target))
        return msgspec.json.decode(row[0]), {i: msgspec.json.decode(info) for i, info in rows}

    async def start(self, note: dict[str, Any]) -> None:
        """Begin afresh: store the note and forget chunks of any earlier attempt."""
        await self.state.execute("DELETE FROM transfer_done WHERE job_id=? AND target=?",
                                 (self.job_id, self.target))
        await self.state.execute(
            "INSERT OR REPLACE INTO transfer_resume(job_id, target, note) VALUES (?,?,?)",
            (self.job_id, self.target, msgspec.json.encode(note)))

    async def mark(self, idx: int, info: Any = None) -> None:
        await self.state.execute(
            "INSERT OR REPLACE INTO transfer_done(job_id, target, idx, info) VALUES (?,?,?,?)",
            (self.job_id, self.target, idx, msgspec.json.encode(info)))

    async def clear(self) -> None:
        await self.state.execute("DELETE FROM transfer_done WHERE job_id=? AND target=?",
                                 (self.job_id, self.target))
        await self.state.execute("DELETE FROM transfer_resume WHERE job_id=? AND target=?",
                                 (self.job_id, self.target))


@contextlib.asynccontextmanager
async def kept_or_discarded(resume: ResumeSlot | None,
                            discard: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """One file's move under its slot: done, the slot is cleared; failed, the partial copy is
    discarded and the slot cleared, unless the daemon is stopping (the next daemon resumes)."""
    try:
        yield
    except BaseException:
        if resume is None or not resume.keep_partial():
            await asyncio.shield(discard())
            if resume is not None:
                await asyncio.shield(resume.clear())
        raise
    if resume is not None:
        await resume.clear()


async def forget_job(state: State, job_id: str) -> None:
    await state.execute("DELETE FROM transfer_done WHERE job_id=?", (job_id,))
    await state.execute("DELETE FROM transfer_resume WHERE job_id=?", (job_id,))
