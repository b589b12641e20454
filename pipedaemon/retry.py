"""Retries for transient storage failures: exponential backoff with jitter.

The engine owns this policy; backends only say what is transient (TransientError).
Auth, permission and not-found errors are never retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pipedaemon_sdk.protocol import errors as E

from .backends.base import TransientError

log = logging.getLogger("pipedaemon.retry")
T = TypeVar("T")

ATTEMPTS = 5
BASE_DELAY = 0.2
MAX_DELAY = 5.0


def backoff(attempt: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Delay before retry ``attempt`` (0-based): full-jitter exponential backoff."""
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


class Attempts:
    """The one retry policy, for a storage call the engine repeats itself (a read resumed from
    the offset it reached): bounded in count and time, exponential backoff with full jitter."""

    def __init__(self, what: str, attempts: int = ATTEMPTS, budget_s: float | None = 20.0,
                 base: float = BASE_DELAY) -> None:
        self.what, self.attempts, self.budget_s, self.base = what, attempts, budget_s, base
        self.failures = 0
        self.start = self.began = time.monotonic()

    def progressed(self) -> None:
        """The call moved forward since its last failure: its time budget starts again (a long
        read is not cut for its length), its count does not (a server feeding a few bytes per
        connection cannot keep it retrying for ever)."""
        self.start = time.monotonic()

    async def failed(self, exc: TransientError) -> None:
        """Sleep before the next attempt, or raise 1008 when the attempts or time are spent."""
        delay = backoff(self.failures, self.base)
        spent = time.monotonic() - self.start
        self.failures += 1
        if self.failures >= self.attempts or (self.budget_s is not None and spent + delay > self.budget_s):
            took = time.monotonic() - self.began
            raise E.StorageError(
                f"{self.what}: {exc.message} (gave up after {self.failures} attempts in {took:.1f} s)",
                {**exc.data, "attempts": self.failures}) from exc
        log.info("%s: %s; retry %d in %.2f s", self.what, exc.message, self.failures, delay)
        await asyncio.sleep(delay)


async def retry(fn: Callable[[], Awaitable[T]], *, what: str, attempts: int = ATTEMPTS,
                budget_s: float | None = 20.0, base: float = BASE_DELAY) -> T:
    """Run ``fn``; on TransientError try again, at most ``attempts`` times within ``budget_s``."""
    policy = Attempts(what, attempts, budget_s, base)
    while True:
        try:
            return await fn()
        except TransientError as exc:
            await policy.failed(exc)
