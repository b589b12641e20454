"""Change events: what scans found changed, and scheduled jobs' ends, with an increasing id.

Every event is stored with an id from SQLite's AUTOINCREMENT (never reused, so ids only
grow), the newest ``RETENTION`` kept. A subscriber (``daemon.watch``) gets each new event
as a notification on its connection: ``pipe.changed`` (params: the event) or
``job.finished`` (params: the job's JobInfo plus ``event_id``, ``pipe``, ``profile``) or
``schedule.failed`` (params: the event: ``action``, ``error``, ``failures``, ``next_run``,
``job_id``). A
gap in the ids it sees means it missed events (it was disconnected); ``daemon.events``
or ``daemon.watch(since=...)`` gives what it missed, and says when events older than
the retained ones were asked for (``complete: false``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from pipedaemon_sdk.protocol.wire import Message, encode_line

from .rpc import Context, Methods, Params

if TYPE_CHECKING:
    from .server import Connection
    from .state import State

log = logging.getLogger("pipedaemon.events")
MAX_ID = 2**63 - 1  # the largest id SQLite holds
RETENTION = 10_000  # events kept for `since` queries
PRUNE_EVERY = 100
MAX_NAMES = 1000  # file names carried in one event per kind (the counts are always exact)


class Subscriber:
    __slots__ = ("conn", "pipes", "profile")

    def __init__(self, conn: Connection, profile: str, pipes: set[str] | None) -> None:
        self.conn, self.profile, self.pipes = conn, profile, pipes

    def wants(self, event: dict[str, Any]) -> bool:
        return event["profile"] == self.profile and (self.pipes is None or event.get("pipe") in self.pipes)


class Events:
    def __init__(self, state: State) -> None:
        self.state = state
        self.subs: dict[int, Subscriber] = {}
        self._lock = asyncio.Lock()  # ids go out in the order they were given
        self._since_prune = 0

    async def publish(
        self, kind: str, profile: str, pipe: str | None, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Store an event and send it to the subscribers that want it; the event."""
        async with self._lock:
            now = time.time()
            async with self.state.tx() as tx:  # (State.fetchall reads the last commit only)
                rows = await tx.fetchall(
                    "INSERT INTO events(kind, profile, pipe, time, data) VALUES (?,?,?,?,?) RETURNING id",
                    (kind, profile, pipe, now, msgspec.json.encode(data)),
                )
            event = {"id": rows[0][0], "kind": kind, "profile": profile, "pipe": pipe, "time": now, **data}
            self._send(event)
            self._since_prune += 1
            if self._since_prune >= PRUNE_EVERY:
                self._since_prune = 0
                await self.state.execute(
                    "DELETE FROM events WHERE id <= ?", (event["id"] - RETENTION,)
                )
        return event

    async def changed(
        self, profile: str, pipe: str, new: list[str], modified: list[str], gone: list[str]
    ) -> dict[str, Any]:
        data = {
            "counts": {"new": len(new), "modified": len(modified), "gone": len(gone)},
            "new": sorted(new)[:MAX_NAMES],
            "modified": sorted(modified)[:MAX_NAMES],
            "gone": sorted(gone)[:MAX_NAMES],
        }
        return await self.publish("pipe.changed", profile, pipe, data)

    def _send(self, event: dict[str, Any]) -> None:
        line = encode_line(Message(method=event["kind"], params=notification(event)))
        for key, sub in list(self.subs.items()):
            if sub.conn.closed:
                self.subs.pop(key, None)
            elif sub.wants(event):
                sub.conn.send(line)

    def subscribe(self, conn: Connection, profile: str, pipes: set[str] | None) -> None:
        self.subs[id(conn)] = Subscriber(conn, profile, pipes)

    async def since(self, profile: str, since: int, pipes: set[str] | None, limit: int) -> dict[str, Any]:
        rows = await self.state.fetchall(
            "SELECT id, kind, profile, pipe, time, data FROM events WHERE profile=? AND id > ? "
            "ORDER BY id LIMIT ?",
            (profile, since, limit + 1 if pipes is None else 1_000_000),
        )
        first = await self.state.fetchone("SELECT MIN(id), MAX(id) FROM events")
        events = [
            {"id": i, "kind": k, "profile": p, "pipe": n, "time": t, **msgspec.json.decode(d)}
            for i, k, p, n, t, d in rows
            if pipes is None or n in pipes
        ]
        more = len(events) > limit
        oldest, last = (first[0] or 0), (first[1] or 0)
        # Complete unless events after `since` were pruned: the oldest kept must follow it.
        complete = since >= oldest - 1 or oldest == 0
        return {
            "events": events[:limit],
            "last_id": last,
            "oldest_id": oldest,
            "complete": complete,
            "more": more,
        }


def notification(event: dict[str, Any]) -> dict[str, Any]:
    """A job.finished event goes out as the job's JobInfo (what job.finished always carries)."""
    if event["kind"] != "job.finished":
        return event
    return {
        **event["job"],
        "event_id": event["id"],
        "pipe": event["pipe"],
        "profile": event["profile"],
        "scheduled": True,
    }



# -- RPC ---------------------------------------------------------------------------------------
class Watch(Params):
    profile: str = "default"
    pipes: list[str] | None = None
    since: int | None = None
    limit: int = 1000


METHODS = Methods()


@METHODS.rpc("daemon.watch", Watch)
async def daemon_watch(ctx: Context, p: Watch) -> dict[str, Any]:
    """Send this connection pipe.changed, scheduled job.finished and schedule.failed events from now on;
    with since, also answer the events after that id."""
    bus = ctx.daemon.events
    pipes = set(p.pipes) if p.pipes is not None else None
    if ctx.conn is not None:
        bus.subscribe(ctx.conn, p.profile, pipes)
    since = p.since if p.since is not None else None
    if since is None:
        last = await ctx.daemon.state.fetchone("SELECT MAX(id) FROM events")
        return {"watching": True, "last_id": last[0] or 0, "events": [], "complete": True}
    out = await bus.since(p.profile, min(max(since, 0), MAX_ID), pipes, max(1, min(p.limit, 10_000)))
    return {"watching": True, **out}


class EventsSince(Params):
    profile: str = "default"
    since: int = 0
    pipes: list[str] | None = None
    limit: int = 1000


@METHODS.rpc("daemon.events", EventsSince)
async def daemon_events(ctx: Context, p: EventsSince) -> dict[str, Any]:
    """Events after an id (oldest first): what a watcher missed; complete=false if some were pruned."""
    pipes = set(p.pipes) if p.pipes is not None else None
    since = min(max(p.since, 0), MAX_ID)  # (a larger int does not fit SQLite's)
    return await ctx.daemon.events.since(p.profile, since, pipes, max(1, min(p.limit, 10_000)))
