"""Where a pull writes, and what it may overwrite: the safe local targets of many names.

Kept apart from the Runner (sync.py), which asks these for each file it moves.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from pipedaemon_sdk.protocol import errors as E

from .. import safepath
from .service import clean


class Changed(Exception):
    """The destination changed after the plan was made: a conflict now."""


class Targets:
    """``safepath.local_target`` for the many names of one pull.

    The same checks (no name leaves the folder, no linked folder or file leads out
    of it), with the folder and each parent folder resolved once instead of once
    per file: resolving walks every path component, which cost more than a small
    download.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.base = folder.resolve()
        self.checked: set[Path] = set()

    def __call__(self, name: str, writing: bool = True) -> Path:
        rel = clean(name)
        if writing:
            safepath.check_local_lengths(name, rel)  # (ENAMETOOLONG escaped as an OSError: -32603)
        target = Path(f"{self.base}/{rel}")
        self._check_parent(name, target.parent)
        if target.is_symlink():
            return safepath.local_target(self.folder, name)  # the full check, and its error
        return target

    def with_stat(self, name: str, writing: bool = True) -> tuple[Path, os.stat_result | None]:
        """The target to write (or read) and the file there now (None: nothing), in one lstat
        when it is no link (the common case), as ``__call__`` then ``stat`` would tell."""
        rel = clean(name)
        if writing:
            safepath.check_local_lengths(name, rel)
        target = Path(f"{self.base}/{rel}")
        self._check_parent(name, target.parent)
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            return target, None
        if not stat.S_ISLNK(st.st_mode):
            return target, st
        target = safepath.local_target(self.folder, name)  # the full check, and its error
        try:
            return target, target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return target, None

    def _check_parent(self, name: str, parent: Path) -> None:
        if parent not in self.checked:
            real = parent.resolve()
            if real != self.base and self.base not in real.parents:
                raise E.UnsafePathError(f"unsafe name {name!r}: a folder on the way is a link out of the "
                                        "pipe's folder", {"path": name})
            self.checked.add(parent)


def check_local_unchanged(st: os.stat_result | None, planned: Any, target: Path) -> None:
    """The local file (``st``: as it is now) is still what the plan saw (else the user edited it
    meanwhile)."""
    if st is None:
        return  # nothing there (any more): nothing of the user's to lose
    if planned is None or (st.st_size, st.st_mtime_ns) != (planned.size, planned.mtime_ns):
        raise Changed(str(target))
