"""Optional backend capability: metadata the storage itself holds beside an object.

S3 has a native place (user metadata ``x-amz-meta-*`` and object tags): what the
daemon writes there other tools see, and what they wrote the daemon reads back.
SFTP, FTP and local folders have none; the daemon keeps their metadata in its own
store. A backend offers the capability through ``native_metadata(backend)``, so the
backend's own file keeps only a narrow hook (the ``extra`` arguments of one write).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import msgspec

from .base import Backend, Entry


class Native(msgspec.Struct):
    """What the storage holds: user metadata (names without prefix), tags, and the object."""

    meta: dict[str, str]
    tags: dict[str, str]
    entry: Entry


class NativeMetadata(ABC):
    @abstractmethod
    async def read(self, path: str) -> Native:
        """The object's metadata and tags; NotFoundError if there is no object."""

    @abstractmethod
    async def write(
        self, path: str, meta: dict[str, str], tags: dict[str, str], if_etag: str | None
    ) -> Entry:
        """Replace the object's metadata and tags, its bytes untouched; ConflictError when the
        object is no longer ``if_etag``. The entry of the object afterwards."""

    @abstractmethod
    def upload_args(self, meta: dict[str, str], tags: dict[str, str]) -> dict[str, Any]:
        """The backend's extra arguments of one upload's write (or multipart start) that carry
        the metadata and tags: passed with that upload alone, so two uploads of one path at
        the same moment never exchange their metadata."""


def native_metadata(backend: Backend) -> NativeMetadata | None:
    if backend.protocol == "s3":
        from .s3meta import S3Metadata

        return S3Metadata(backend)  # type: ignore[arg-type]
    return None
