"""Provenance: directed links between object versions, and walks over them.

- refs.py: ``remote:key`` / ``pipe:name/file`` refs and the versions they name
- graph.py: the links in the daemon's state, relationships and lineage (cycles ended)
- rpc.py: ``provenance.link`` / ``provenance.relationships`` / ``provenance.lineage``
- record.py: what a pull or push with ``record=True`` links
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import rpc  # noqa: F401 - registers the methods
from .graph import Graph

if TYPE_CHECKING:
    from ..server import Daemon


async def start_service(daemon: Daemon) -> None:
    daemon.services["provenance"] = Graph(daemon.state)
