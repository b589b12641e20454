"""Metadata beside the data (title, description, alias, tags, a free dict) on any object a
remote holds and on pipe files.

- fields.py: the record, how an update merges, the storage's limits
- service.py: the daemon's store and the storage's own place (S3 user metadata and tags)
- rpc.py: ``object.get_metadata`` / ``object.set_metadata``, ``pipe.get_metadata`` / ``pipe.set_metadata``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import rpc  # noqa: F401 - registers the methods
from .service import MetaService

if TYPE_CHECKING:
    from ..server import Daemon


async def start_service(daemon: Daemon) -> None:
    svc = MetaService(daemon)
    daemon.services["metadata"] = svc
    daemon.services["remotes"].listeners.append(svc.forget)
