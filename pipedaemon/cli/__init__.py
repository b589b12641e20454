"""The ``pipedaemon`` command line: a thin face over the SDK.

Exit status 0 only on success: 1 for an error the daemon answered, 3 when the
daemon cannot be reached, 2 for bad usage (click's own).
"""

from __future__ import annotations

import importlib

from .common import main_group

# Each module adds its commands to the group when imported.
for _mod in ("daemon_cmds", "storage_cmds", "pipe_cmds", "meta_cmds", "diag_cmds", "schedule_cmds",
             "share_cmds", "d6tpipe_cmds"):
    importlib.import_module(f"{__name__}.{_mod}")


def main() -> None:
    main_group(prog_name="pipedaemon")


__all__ = ["main", "main_group"]
