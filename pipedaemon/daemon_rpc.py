"""The ``daemon.*`` methods about the daemon itself: ping, status, methods, shutdown, its
stream and bandwidth limits, and finishing the janitor's clean-ups now."""

from __future__ import annotations

import os
import time
from typing import Any

from pipedaemon_sdk.protocol import errors as E
from pipedaemon_sdk.protocol.wire import Status

from .rpc import Context, Methods, NoParams, Params
from .transfer.limits import MAX_BPS

METHODS = Methods()


@METHODS.rpc("daemon.ping")
async def daemon_ping(ctx: Context, p: Params) -> dict[str, Any]:
    """Answer at once: is the daemon alive."""
    return {"pong": True, "time": time.time()}


@METHODS.rpc("daemon.status")
async def daemon_status(ctx: Context, p: Params) -> Status:
    """Version, pid, uptime, socket, home and job counts."""
    return ctx.daemon.status()


@METHODS.rpc("daemon.methods")
async def daemon_methods(ctx: Context, p: Params) -> list[dict[str, Any]]:
    """Every method with its parameter schema."""
    return ctx.daemon.methods.describe()


@METHODS.rpc("daemon.shutdown")
async def daemon_shutdown(ctx: Context, p: Params) -> dict[str, Any]:
    """Stop: running jobs finish or are checkpointed, then the daemon exits 0."""
    ctx.daemon.stop()  # the answer is queued before the connections close
    return {"stopping": True, "pid": os.getpid()}


class LimitParams(Params):
    max_streams: int | None = None
    remote_streams: int | None = None
    bwlimit_bps: int | None = None


@METHODS.rpc("daemon.limits", LimitParams)
async def daemon_limits(ctx: Context, p: LimitParams) -> dict[str, Any]:
    """Read, or change, the daemon's stream and bandwidth limits (until it restarts)."""
    for field in ("max_streams", "remote_streams"):
        v = getattr(p, field)
        if v is not None and not 1 <= v <= 1024:
            raise E.InvalidParamsError(f"{field} must be between 1 and 1024", {"field": field})
    if p.bwlimit_bps is not None and not 0 <= p.bwlimit_bps <= MAX_BPS:  # (a float holds no 400-digit int)
        raise E.InvalidParamsError(f"bwlimit_bps must be between 0 (unlimited) and {MAX_BPS}",
                                   {"field": "bwlimit_bps"})
    limits = ctx.daemon.limits
    limits.update(p.max_streams, p.remote_streams, p.bwlimit_bps)
    return limits.describe()


@METHODS.rpc("daemon.cleanup", NoParams)
async def daemon_cleanup(ctx: Context, p: NoParams) -> dict[str, Any]:
    """Finish now the clean-ups left to the janitor (multipart aborts, temporary files, S3 strays); counts."""
    return await ctx.daemon.janitor.sweep()
