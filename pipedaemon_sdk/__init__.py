"""Light client for the pipedaemon transfer daemon.

Depends on msgspec and the standard library only; importing it stays fast.

This module is the SDK's flat face: every public name is here (``__all__``). The protocol
names (errors, wire Structs) load with the package; the clients, jobs, streams and pipes load
on first use (PEP 562 ``__getattr__``), so ``import pipedaemon_sdk.protocol.errors`` (as the
daemon does) never loads the client, its jobs, autostart or asyncio.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .protocol.errors import (
    AlreadyExistsError,
    AuthFailedError,
    BusyError,
    CancelledError,
    ChecksumMismatchError,
    ConflictError,
    DaemonConnectionError,
    DaemonError,
    DaemonStoppedError,
    DaemonTimeoutError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    InvalidSettingsError,
    MethodNotFoundError,
    NotFoundError,
    ParseError,
    PermissionDeniedError,
    StorageError,
    UnsafePathError,
)
from .protocol.wire import DownloadResult, JobInfo, ObjectInfo, ProgressEvent, Status, UploadResult

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from ._async.client import AsyncPipeClient
    from ._async.job import AsyncJob
    from ._async.streams import AsyncObjectStream
    from ._async.watch import AsyncWatch
    from ._common import ProgressCallback
    from ._events import Event
    from ._sync.client import PipeClient
    from ._sync.job import Job
    from ._sync.streams import ObjectStream
    from ._sync.watch import Watch
    from .datastore import Bucket, Datastore
    from .pipe import Pipe, PipeLocal, SyncResult

__version__ = "0.1.0"

# name -> the private module that defines it (imported on first access)
# (AsyncX in _async/, written once; X in _sync/, generated from it by tools/unasync.py)
_LAZY = {
    "AsyncPipeClient": "._async.client", "PipeClient": "._sync.client",
    "AsyncJob": "._async.job", "Job": "._sync.job",
    "AsyncObjectStream": "._async.streams", "ObjectStream": "._sync.streams",
    "AsyncWatch": "._async.watch", "Watch": "._sync.watch", "Event": "._events",
    "ProgressCallback": "._common",
    "Bucket": ".datastore", "Datastore": ".datastore",
    "Pipe": ".pipe", "PipeLocal": ".pipe", "SyncResult": ".pipe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AlreadyExistsError", "AsyncJob", "AsyncObjectStream", "AsyncPipeClient", "AsyncWatch",
    "AuthFailedError", "Bucket", "BusyError", "CancelledError", "ChecksumMismatchError",
    "ConflictError", "DaemonConnectionError", "DaemonError", "DaemonStoppedError",
    "DaemonTimeoutError", "Datastore", "DownloadResult", "Event", "InternalError",
    "InvalidParamsError", "InvalidRequestError", "InvalidSettingsError", "Job", "JobInfo",
    "MethodNotFoundError", "NotFoundError", "ObjectInfo", "ObjectStream", "ParseError",
    "PermissionDeniedError", "Pipe", "PipeClient", "PipeLocal", "ProgressCallback", "ProgressEvent",
    "Status", "StorageError", "SyncResult", "UnsafePathError", "UploadResult", "Watch", "__version__",
]
