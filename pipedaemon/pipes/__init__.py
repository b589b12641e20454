"""Pipes: d6tpipe's named data pipes, run by the daemon, with cached remote scans.

- settings.py: pipe settings, parent inheritance, profile config
- store.py: pipes and config in SQLite, resolving a pipe, the PipeLocal mirror
- scan.py: remote listings cached in SQLite and shared between pipes
- syncstate.py: each file's state at its last sync
- plan.py: what a pull or push moves (modes, files, nrecent, conflicts)
- service.py / sync.py / manage.py: views, the pull and push jobs, deletes and imports
- rpc.py: the ``pipe.*`` methods
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import rpc  # noqa: F401 - registers the pipe.* methods and job kinds
from .service import Pipes

if TYPE_CHECKING:
    from ..server import Daemon


async def start_service(daemon: Daemon) -> None:
    pipes = Pipes(daemon)
    await pipes.open()
    daemon.services["pipes"] = pipes
