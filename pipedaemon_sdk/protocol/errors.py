"""Error codes of the wire protocol and the exceptions the SDK raises for them.

The daemon raises these same classes; its RPC layer turns them into JSON-RPC error
objects, and the SDK turns error objects back into the matching class.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

NOT_FOUND = 1001
ALREADY_EXISTS = 1002
INVALID_SETTINGS = 1003
AUTH_FAILED = 1004
PERMISSION_DENIED = 1005
CONFLICT = 1006
CANCELLED = 1007
STORAGE_ERROR = 1008
CHECKSUM_MISMATCH = 1009
UNSAFE_PATH = 1010
BUSY = 1011


class DaemonError(Exception):
    """A coded error answered by the daemon (`code`, `message`, `data`)."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str, data: dict[str, Any] | None = None, *, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.data: dict[str, Any] = data or {}

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __reduce__(self) -> Any:
        return (_rebuild, (self.code, self.message, self.data))


class ParseError(DaemonError):
    code = PARSE_ERROR


class InvalidRequestError(DaemonError):
    code = INVALID_REQUEST


class MethodNotFoundError(DaemonError):
    code = METHOD_NOT_FOUND


class InvalidParamsError(DaemonError):
    code = INVALID_PARAMS


class InternalError(DaemonError):
    code = INTERNAL_ERROR


class NotFoundError(DaemonError):
    code = NOT_FOUND


class AlreadyExistsError(DaemonError):
    code = ALREADY_EXISTS


class InvalidSettingsError(DaemonError):
    code = INVALID_SETTINGS


class AuthFailedError(DaemonError):
    code = AUTH_FAILED


class PermissionDeniedError(DaemonError):
    code = PERMISSION_DENIED


class ConflictError(DaemonError):
    code = CONFLICT


class CancelledError(DaemonError):
    code = CANCELLED


class StorageError(DaemonError):
    code = STORAGE_ERROR


class ChecksumMismatchError(DaemonError):
    code = CHECKSUM_MISMATCH


class UnsafePathError(DaemonError):
    code = UNSAFE_PATH


class BusyError(DaemonError):
    code = BUSY


ERROR_CLASSES: dict[int, type[DaemonError]] = {
    cls.code: cls
    for cls in (
        ParseError, InvalidRequestError, MethodNotFoundError, InvalidParamsError,
        InternalError, NotFoundError, AlreadyExistsError, InvalidSettingsError,
        AuthFailedError, PermissionDeniedError, ConflictError, CancelledError,
        StorageError, ChecksumMismatchError, UnsafePathError, BusyError,
    )
}

ERROR_NAMES: dict[int, str] = {
    PARSE_ERROR: "ParseError", INVALID_REQUEST: "InvalidRequest",
    METHOD_NOT_FOUND: "MethodNotFound", INVALID_PARAMS: "InvalidParams",
    INTERNAL_ERROR: "InternalError", NOT_FOUND: "NotFound", ALREADY_EXISTS: "AlreadyExists",
    INVALID_SETTINGS: "InvalidSettings", AUTH_FAILED: "AuthFailed",
    PERMISSION_DENIED: "PermissionDenied", CONFLICT: "Conflict", CANCELLED: "Cancelled",
    STORAGE_ERROR: "StorageError", CHECKSUM_MISMATCH: "ChecksumMismatch",
    UNSAFE_PATH: "UnsafePath", BUSY: "Busy",
}


def error_from_code(code: int, message: str, data: dict[str, Any] | None = None) -> DaemonError:
    """The exception for an error object received on the wire."""
    cls = ERROR_CLASSES.get(code, DaemonError)
    return cls(message, data, code=code)


def _rebuild(code: int, message: str, data: dict[str, Any]) -> DaemonError:
    return error_from_code(code, message, data)


class DaemonTimeoutError(TimeoutError):
    """A request or a job did not finish within its timeout."""


class DaemonConnectionError(ConnectionError):
    """The daemon could not be reached, or went away during a request."""


class DaemonStoppedError(DaemonConnectionError):
    """The daemon was asked to stop (``pipedaemon stop``, SIGTERM, idle) while we followed a job:
    the job was checkpointed and resumes when a daemon starts again. Not a crash: do not restart it."""
