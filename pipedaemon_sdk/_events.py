"""``client.watch()``: the daemon's change events as an iterator (blocking) or async iterator.

This module holds what both flavours share (the Event, how notifications become events, the
backlog and the last id seen); the iterators are ``AsyncWatch`` (``_async/watch.py``) and the
``Watch`` generated from it.

A watch has a connection of its own, subscribed with ``daemon.watch``. It yields
:class:`Event` s in id order: first those after ``since`` (when given), then each new
one as the daemon sends it. Ids only grow; ``watch.missed`` is true when events after
``since`` were already pruned, and a gap between two ids means events were lost
meanwhile (``client.events(since=...)`` gives them while they are retained).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .protocol.wire import JobInfo

WATCH_KEY = "\x00watch"  # the queue of a connection's watch notifications
WATCH_METHODS = ("pipe.changed", "schedule.failed")


class Event(msgspec.Struct, omit_defaults=True):
    """``pipe.changed``: new, modified and gone file names (relative to the pipe; counts exact,
    names capped at 1,000 each); ``job.finished``: a scheduled job's end (``job``);
    ``schedule.failed``: a scheduled run failed (``action``, ``error``, ``failures`` in a row,
    ``next_run``, and ``job_id`` when the run was a job)."""

    id: int
    kind: str
    profile: str
    pipe: str | None = None
    time: float = 0.0
    new: list[str] = []
    modified: list[str] = []
    gone: list[str] = []
    counts: dict[str, int] = {}
    job: JobInfo | None = None
    action: str | None = None
    error: dict[str, Any] | None = None
    failures: int = 0
    next_run: float | None = None
    job_id: str | None = None


def is_watch_message(method: Any, params: Any) -> bool:
    return method in WATCH_METHODS or (
        method == "job.finished" and isinstance(params, dict) and "event_id" in params
    )


def to_event(method: str, params: dict[str, Any]) -> Event:
    if method == "job.finished" and "event_id" in params:
        job = {k: v for k, v in params.items() if k not in ("event_id", "pipe", "profile", "scheduled")}
        params = {
            "id": params["event_id"],
            "kind": "job.finished",
            "profile": params.get("profile", ""),
            "pipe": params.get("pipe"),
            "time": params.get("updated_at", 0.0),
            "job": job,
        }
    return msgspec.convert(params, Event)


def events_of(answer: dict[str, Any]) -> list[Event]:
    return [msgspec.convert(e, Event) for e in answer.get("events", [])]


class WatchBase:
    """A watch's state: the events answered with ``daemon.watch`` and the last id yielded."""

    def __init__(self, client: Any, params: dict[str, Any]) -> None:
        self.client = client
        self.params = params
        self.last_id = params.get("since") or 0
        self.missed = False
        self._backlog: list[Event] = []
        self._conn: Any = None

    def _opened(self, answer: dict[str, Any]) -> None:
        self.missed = not answer.get("complete", True)
        self._backlog = events_of(answer)
        if self.params.get("since") is None:
            self.last_id = answer.get("last_id", 0)

    def _from_backlog(self) -> Event | None:
        """The next of the stored events answered by daemon.watch, if any is left."""
        while self._backlog:
            ev = self._take(self._backlog.pop(0))
            if ev is not None:
                return ev
        return None

    def _take(self, item: Any) -> Event | None:
        """The event of a queued notification, or None for one already yielded."""
        ev = item if isinstance(item, Event) else to_event(*item)
        if ev.id <= self.last_id:
            return None
        self.last_id = ev.id
        return ev
