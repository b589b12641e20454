"""Light client for the pipedaemon transfer daemon.

Depends on msgspec and the standard library only; importing it stays fast.
"""

from .client import AsyncPipeClient, PipeClient
from .errors import (
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
from .job import AsyncJob, Job
from .pipe import Pipe, PipeLocal, SyncResult
from .wire import JobInfo, ProgressEvent, Status

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError", "AsyncJob", "AsyncPipeClient", "AuthFailedError", "BusyError",
    "CancelledError", "ChecksumMismatchError", "ConflictError", "DaemonConnectionError",
    "DaemonError", "DaemonStoppedError", "DaemonTimeoutError", "InternalError", "InvalidParamsError",
    "InvalidRequestError", "InvalidSettingsError", "Job", "JobInfo", "MethodNotFoundError",
    "NotFoundError", "ParseError", "PermissionDeniedError", "Pipe", "PipeClient", "PipeLocal",
    "ProgressEvent", "Status", "StorageError", "SyncResult", "UnsafePathError", "__version__",
]
