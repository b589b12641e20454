"""d6tpipe's exceptions, each also one of pipedaemon's typed errors.

``except d6tpipe.exceptions.PullError`` works as in d6tpipe, and so does
``except pipedaemon_sdk.ConflictError`` (code 1006, ``data`` naming the files).
Where d6tpipe raises ValueError, FileNotFoundError or NotImplementedError, the
errors raised here are those too.
"""

from __future__ import annotations

from ..protocol.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidParamsError,
    InvalidSettingsError,
    MethodNotFoundError,
    NotFoundError,
    PermissionDeniedError,
)


class PullError(ConflictError):
    """A pull would overwrite local files changed since their last sync (pass ``merge_mode``)."""


class PushError(ConflictError):
    """A push while the remote has changes not pulled yet (run ``pull`` first)."""


class ResourceExistsError(AlreadyExistsError):
    """Creating a pipe (``api.cnxn.pipes.post``) whose name is taken."""


class InvalidValueError(InvalidParamsError, ValueError):
    """A bad mode, merge mode, direction or pipe name (d6tpipe: ValueError)."""


class ReadOnlyError(PermissionDeniedError, ValueError):
    """A write (push, remote delete) on a pipe whose role is ``read`` (d6tpipe: ValueError)."""


class PipeNotFoundError(NotFoundError, OSError):
    """An unknown pipe (d6tpipe's local mode: IOError 'name Not found')."""


class LocalFileMissingError(NotFoundError, FileNotFoundError):
    """A named local file that is not there (``ignore_errors=True`` skips it)."""


class LocalModeOnlyError(InvalidSettingsError, NotImplementedError):
    """d6tpipe's cloud repo API (APIClient, tokens, registration): pipedaemon runs the local mode."""


class PermissionsUnavailableError(MethodNotFoundError, NotImplementedError):
    """The daemon has no pipe permissions (``pipe.upsert_permissions``): it is older than the
    shared daemon that has them."""


__all__ = ["InvalidValueError", "LocalFileMissingError", "LocalModeOnlyError", "PermissionsUnavailableError",
           "PipeNotFoundError", "PullError", "PushError", "ReadOnlyError", "ResourceExistsError"]
