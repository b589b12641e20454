"""What the SDK's two flavours share, written once: the end-of-connection marker, the progress
callback type, how a job's outcome and events decode, the framing of stream connections, and
the settings every client holds. ``_async/`` (and the ``_sync/`` generated from it) build on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from .protocol.errors import DaemonConnectionError, DaemonStoppedError, error_from_code
from .protocol.paths import default_socket_path
from .protocol.wire import JobInfo, Message, ProgressEvent, Request, encode_line, message_decoder

log = logging.getLogger("pipedaemon_sdk")

CLOSED = object()  # put on a connection's job and watch queues when it ends

ProgressCallback = Callable[[ProgressEvent], object]
"""``on_progress``: called with each ProgressEvent, in the caller's thread or task; what it returns
is ignored and what it raises is logged (the job goes on)."""

Convert = Callable[[Any], Any] | None  # how an RPC's raw answer becomes the method's value

PIECE = 1 << 20  # how much of an object's bytes one send or read moves
STREAM_LIMIT = 1 << 24  # the longest line an object stream's answer may have


def call_safely(cb: ProgressCallback | None, ev: ProgressEvent) -> None:
    """Run a user's progress callback; its failure is logged, never propagated."""
    if cb is None:
        return
    try:
        cb(ev)
    except Exception:
        log.exception("on_progress callback raised; the job goes on")


def outcome(info: JobInfo) -> JobInfo:
    """The finished job, or its error raised."""
    if info.state == "succeeded":
        return info
    if info.error is not None:
        raise error_from_code(info.error.code, info.error.message, info.error.data)
    raise error_from_code(1007 if info.state == "cancelled" else -32603, f"job {info.id} {info.state}")


def lost(job_id: str, conn: Any) -> DaemonConnectionError:
    """The error for a connection that ended while following ``job_id``."""
    if getattr(conn, "stopping", False):
        return DaemonStoppedError(f"the daemon was asked to stop while following job {job_id}; the job is "
                                  "checkpointed and resumes when the daemon starts again")
    return DaemonConnectionError(f"lost the daemon while following job {job_id}")


def decode_job_event(item: Any) -> ProgressEvent | JobInfo:
    """A queued ``job.progress`` (ProgressEvent) or ``job.finished`` (JobInfo) notification."""
    method, params = item
    if method == "job.progress":
        return msgspec.convert(params, ProgressEvent)
    return msgspec.convert(params, JobInfo)


# -- stream connections (object bytes, never inside JSON) ----------------------------------
def request_line(method: str, params: dict[str, Any], rid: int = 1) -> bytes:
    return encode_line(Request(method=method, params=msgspec.Raw(encode_line(params)[:-1]), id=rid))


def parse_header(line: bytes) -> Any:
    if not line.endswith(b"\n"):
        raise DaemonConnectionError("the daemon closed the stream before answering")
    msg: Message = message_decoder.decode(line)
    if msg.error is not msgspec.UNSET:
        raise error_from_code(msg.error.code, msg.error.message, msg.error.data)
    return msg.result


def check_data(data: Any, length: int) -> None:
    """Refuse before connecting what cannot work: the daemon would start a write only to abort it."""
    if length < 0:
        raise ValueError(f"length must be >= 0, not {length}")
    if isinstance(data, (bytes, bytearray, memoryview)) and memoryview(data).nbytes < length:
        raise ValueError(f"data holds {memoryview(data).nbytes} bytes, fewer than length={length}")
    if not isinstance(data, (bytes, bytearray, memoryview)) and not hasattr(data, "read"):
        raise TypeError(f"data must be bytes or a readable binary file, not {type(data).__name__}")


def pieces(data: Any, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``data`` (bytes or a readable binary file) in pieces of PIECE."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        if len(view) < length:
            raise ValueError(f"data holds {len(view)} bytes, fewer than length={length}")
        for off in range(0, length, PIECE):
            yield bytes(view[off:min(off + PIECE, length)])
        return
    left = length
    while left:
        piece = data.read(min(PIECE, left))
        if not piece:
            raise ValueError(f"data ended {left} bytes before length={length}")
        left -= len(piece)
        yield piece


class ClientSettings:
    """What both clients hold: where the daemon is, the profile and the timeouts."""

    def __init__(self, socket_path: str | os.PathLike[str] | None = None, profile: str | None = None,
                 auto_start: bool = True, start_timeout_s: float = 10.0,
                 request_timeout_s: float = 30.0, shared: bool = False) -> None:
        self.socket_path = Path(socket_path) if socket_path else default_socket_path()
        self.profile = profile if profile is not None else (os.environ.get("PIPEDAEMON_PROFILE") or "default")
        # shared: a shared daemon (docs/sharing.md) runs as its own account, so its uid is not
        # ours; it is never started by a client.
        self.shared = shared
        self.auto_start = auto_start and not shared
        self.start_timeout_s = start_timeout_s
        self.request_timeout_s = request_timeout_s

    def _p(self, **kw: Any) -> dict[str, Any]:
        return {"profile": self.profile, **kw}
