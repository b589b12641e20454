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

from pipedaemon_sdk import errors as E

from .backends.base import TransientError

log = logging.getLogger("pipedaemon.retry")
T = TypeVar("T")

ATTEMPTS = 5
BASE_DELAY = 0.2
MAX_DELAY = 5.0


def backoff(attempt: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Delay before retry ``attempt`` (0-based): full-jitter exponential backoff."""
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


async def retry(fn: Callable[[], Awaitable[T]], *, what: str, attempts: int = ATTEMPTS,
                budget_s: float | None = 20.0, base: float = BASE_DELAY) -> T:
    """Run ``fn``; on TransientError try again, at most ``attempts`` times within ``budget_s``."""
    start = time.monotonic()
    for attempt in range(attempts):
        try:
            return await fn()
        except TransientError as exc:
            delay = backoff(attempt, base)
            spent = time.monotonic() - start
            last = attempt == attempts - 1 or (budget_s is not None and spent + delay > budget_s)
            if last:
                raise E.StorageError(
                    f"{what}: {exc.message} (gave up after {attempt + 1} attempts in {spent:.1f} s)",
                    {**exc.data, "attempts": attempt + 1}) from exc
            log.info("%s: %s; retry %d in %.2f s", what, exc.message, attempt + 1, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
