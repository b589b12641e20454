"""Daemon-wide limits: concurrent streams (global and per remote) and bandwidth.

Every chunk the engine moves holds one global stream slot and one of its remote's
for as long as it is in flight, and passes its bytes through the daemon's and
its job's token buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger("pipedaemon.limits")
MAX_BPS = 1 << 50  # a bandwidth limit above a petabyte per second is no limit: larger is refused


class TokenBucket:
    """Bytes per second with a one-second burst; 0 means unlimited."""

    def __init__(self, rate: float = 0) -> None:
        self.rate = float(rate)
        self._tokens = self.rate
        self._stamp = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate) - n
        self._stamp = now
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


def env_int(name: str, default: int, low: int = 0, high: int = 1 << 40) -> int:
    """An integer setting from the environment; a value that is not one, or out of
    ``low..high``, is logged and the default used (a typo must not stop the daemon)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        log.warning("%s=%r is not a whole number from %d to %d; using %d", name, raw, low, high, default)
        return default
    return value


class Limits:
    def __init__(self, max_streams: int | None = None, remote_streams: int | None = None,
                 bwlimit_bps: int | None = None) -> None:
        self.max_streams = max_streams or env_int("PIPEDAEMON_MAX_STREAMS", 16, 1, 1024)
        self.remote_streams = remote_streams or env_int("PIPEDAEMON_REMOTE_STREAMS", 8, 1, 1024)
        rate = bwlimit_bps if bwlimit_bps is not None else env_int("PIPEDAEMON_BWLIMIT", 0, 0, MAX_BPS)
        self.bucket = TokenBucket(rate)
        self._global = asyncio.Semaphore(self.max_streams)
        self._remotes: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def stream(self, remote_key: str) -> AsyncIterator[None]:
        sem = self._remotes.get(remote_key)
        if sem is None:
            sem = self._remotes[remote_key] = asyncio.Semaphore(self.remote_streams)
        async with self._global, sem:
            yield

    def update(self, max_streams: int | None, remote_streams: int | None, bwlimit_bps: int | None) -> None:
        # New semaphores apply to chunks that start from now on; running ones finish as they are.
        if max_streams:
            self.max_streams = max_streams
            self._global = asyncio.Semaphore(max_streams)
        if remote_streams:
            self.remote_streams = remote_streams
            self._remotes.clear()
        if bwlimit_bps is not None:
            self.bucket.rate = float(bwlimit_bps)

    def describe(self) -> dict[str, Any]:
        return {"max_streams": self.max_streams, "remote_streams": self.remote_streams,
                "bwlimit_bps": int(self.bucket.rate)}
