"""``client.watch()``: the daemon's change events as an iterator (Watch) or async iterator
(AsyncWatch). What both share is in ``_events.py``; AsyncWatch is written in ``_async/watch.py``
and Watch generated from it (``tools/unasync.py``)."""

from ._async.watch import AsyncWatch
from ._events import WATCH_KEY, WATCH_METHODS, Event, events_of, is_watch_message, to_event
from ._sync.watch import Watch

__all__ = ["WATCH_KEY", "WATCH_METHODS", "AsyncWatch", "Event", "Watch", "events_of", "is_watch_message",
           "to_event"]
