"""Wire types of the JSON-RPC 2.0 protocol, shared by the SDK and the daemon.

One message per line: compact UTF-8 JSON followed by ``\\n``. Envelopes are decoded
first with ``params``/``result`` left raw, so a request whose params are bad still
gets an answer carrying its id.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

MAX_LINE = 16 * 2**20  # a longer line is refused with -32600 and the connection closed
# What a client reads from the daemon: its answers are not held to the requests' limit (a pull of
# a million files answers with one line of about 100 MB).
MAX_ANSWER_LINE = 2**30

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")

Id = int | str | None


class ErrorObject(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    data: dict[str, Any] | None = None


# Not omit_defaults: every message must carry "jsonrpc": "2.0" (JSON-RPC 2.0 requires it);
# optional members are UNSET, which msgspec always leaves out.
class Request(msgspec.Struct):
    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")
    id: Id | msgspec.UnsetType = msgspec.UNSET
    jsonrpc: str = "2.0"


class Message(msgspec.Struct):
    """Anything the daemon sends: a response (``id``) or a notification (``method``)."""

    jsonrpc: str = "2.0"
    id: Id | msgspec.UnsetType = msgspec.UNSET
    method: str | msgspec.UnsetType = msgspec.UNSET
    params: Any = msgspec.UNSET
    result: Any = msgspec.UNSET
    error: ErrorObject | msgspec.UnsetType = msgspec.UNSET


class RunningFile(msgspec.Struct):
    """One file in flight of a many-file job (a pipe's pull or push)."""

    name: str
    bytes_done: int = 0
    bytes_total: int = 0


class ProgressEvent(msgspec.Struct, omit_defaults=False):
    """Progress of one job, pushed as the params of ``job.progress``."""

    job_id: str
    transfer_id: str = ""
    file_name: str = ""
    file_index: int = 0
    file_count: int = 1
    bytes_done: int = 0
    bytes_total: int = 0
    chunk_index: int = 0
    chunk_count: int = 0
    rate_bps: float = 0.0
    # file_index counts the files finished; running names those in flight (many-file jobs).
    running: list[RunningFile] = msgspec.field(default_factory=list)

    @property
    def percent(self) -> float:
        if self.bytes_total <= 0:
            return 100.0 if self.bytes_done >= self.bytes_total else 0.0
        return min(100.0, 100.0 * self.bytes_done / self.bytes_total)

    @property
    def rate_mbps(self) -> float:
        return self.rate_bps / 1e6


class JobInfo(msgspec.Struct, omit_defaults=False):
    """A job as ``job.get``/``job.list`` return it and ``job.finished`` announces it."""

    id: str
    kind: str
    state: str
    created_at: float
    updated_at: float
    params: dict[str, Any] = {}
    result: Any = None
    error: ErrorObject | None = None
    progress: ProgressEvent | None = None

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


class Status(msgspec.Struct):
    version: str
    pid: int
    uptime_s: float
    socket_path: str
    home: str
    jobs: dict[str, int]
    log_path: str = ""  # the daemon's log file (`pipedaemon log` shows it)


encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(Request)
message_decoder = msgspec.json.Decoder(Message)


def line_buffer(msg: Any) -> bytearray:
    """Compact JSON plus the newline that ends a message, in the buffer it was encoded into (no
    copy: an answer may hold a whole pull's list of files, ~100 MB at a million)."""
    buf = bytearray()
    encoder.encode_into(msg, buf)
    buf += b"\n"
    return buf


def encode_line(msg: Any) -> bytes:
    """Compact JSON plus the newline that ends a message."""
    return bytes(line_buffer(msg))


class FileResult(NamedTuple):
    local_path: str
    size: int


class UploadResult(msgspec.Struct):
    key: str
    size: int
    etag: str | None = None
    checksum: str | None = None
    elapsed_s: float = 0.0
    remote: str = ""


class DownloadResult(msgspec.Struct):
    key: str
    size: int
    files: list[FileResult]
    etag: str | None = None
    elapsed_s: float = 0.0
    stat: dict[str, Any] = {}


class ObjectInfo(msgspec.Struct):
    """An object as listings and stat report it (names relative to the bucket or root)."""

    name: str
    size: int = 0
    modified_at: float | None = None
    etag: str | None = None
    is_dir: bool = False
